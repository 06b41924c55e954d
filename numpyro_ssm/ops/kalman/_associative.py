r"""The parallel-in-time Kalman filter: associative elements and their combination.

The associative scan of Särkkä & García-Fernández (2021), in the square-root form of Yaghoobi,
Corenflos, Hassan & Särkkä (2022): element ``t`` is the pair
``p(z_t | z_{t-1}, y_t) = N(A z_{t-1} + b, U Uᵀ)`` and
``p(y_t | z_{t-1}) ∝ exp(-|Zᵀ z_{t-1} - u|² / 2)``, combined by ``lax.associative_scan`` in
``O(log T)`` depth; the predictions and the per-step log-likelihoods are then read off the
filtered moments, vectorized over time.

**Precision far from zero.** The likelihood part is carried as a square-root information pair
``(Z, u)`` (information matrix ``J = Z Zᵀ``, information vector ``η = Z u``), not as ``(J, η)``
or ``(Z, η)``. Combining ``e1`` then ``e2`` needs ``η₂ - J₂ b₁ = Z₂ (u₂ - Z₂ᵀ b₁)``: a whitened
innovation of ``y`` at the state ``b₁``, small whatever the level of the data. The earlier form
``b₁ + C₁ η₂`` added a term of size ``|y| / S`` (huge when the one-step innovation variance
``S`` is tiny: a noiseless level observed with little noise) to one of size ``|y|`` and lost
``log10(1/S)`` digits, relative to the level of the data (see
``tests/ops/kalman/test_far_from_zero.py``). The new ``u`` of a combination comes out of the
same triangularizations as ``Z``, with ``u`` appended as one more row (as in a square-root
information filter), so no rotation is formed explicitly.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.kalman._steps import (
    _condition,
    _Filtered,
    _gain,
    _log_likelihood,
    _masked_emission,
    _mT,
    _mv,
    _predict,
)
from numpyro_ssm.ops.kalman.params import _EMISSION, _TRANSITION, _map_time, _Model, _split_time
from numpyro_ssm.ops.linalg import solve_lower, tria
from numpyro_ssm.ops.scan import prefix_scan


class _FilterElement(NamedTuple):
    A: jax.Array  # (S, S), or (S, 1) zeros in a compact prefix
    b: jax.Array  # (S,)
    U: jax.Array  # (S, S)
    u: jax.Array  # (S,), or (1,): the information vector is Z u
    Z: jax.Array  # (S, S), or (1, 1)


def _rotate_with(Z, u):
    """``(Z', u')`` with ``Z' Z'ᵀ = Z Zᵀ`` and ``Z' u' = Z u``, ``Z'`` square lower-triangular.

    One triangularization of ``Z`` with ``uᵀ`` appended as a last row: the orthogonal factor that
    triangularizes ``Z`` carries ``u`` along.
    """
    S = Z.shape[-2]
    L = tria(jnp.concatenate([Z, u[..., None, :]], axis=-2))
    return L[..., :S, :S], L[..., S, :S]


def _filter_element(F, chol_Q, b, H, chol_R, d, y, observed):
    """Element ``t``: ``p(z_t | z_{t-1}, y_t)`` and the information ``y_t`` carries on z_{t-1}."""
    S = F.shape[0]
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    chol_S, cross, chol_C = _condition(chol_Q, H_m, chol_R_m)
    gain = _gain(chol_S, cross)
    resid = y_m - H_m @ b
    HF = H_m @ F
    A = F - gain @ HF
    mean = b + gain @ resid
    Z = solve_lower(chol_S, HF).T  # Fᵀ Hᵀ chol_S⁻ᵀ, (S, D)
    u = solve_lower(chol_S, resid)  # the whitened residual, (D,)
    D = Z.shape[1]
    if D <= S:
        Z, u = jnp.pad(Z, ((0, 0), (0, S - D))), jnp.pad(u, (0, S - D))
    else:
        Z, u = _rotate_with(Z, u)
    return _FilterElement(A, mean, chol_C, u, Z)


def _filter_combine(e1: _FilterElement, e2: _FilterElement) -> _FilterElement:
    """Associative combination of filtering elements (earlier ``e1``, later ``e2``).

    With ``C₁ = U₁ U₁ᵀ``, ``J₂ = Z₂ Z₂ᵀ`` and the whitened innovation ``r = u₂ - Z₂ᵀ b₁``, one
    triangularization of ``[[U₁ᵀ Z₂, I], [Z₂, 0], [rᵀ, 0]]`` gives the blocks ``ξ₁₁, ξ₂₁, ξ₂₂``
    of Yaghoobi et al. and the row ``(ρ₁, ρ₂)`` with ``ξ₁₁ ρ₁ = U₁ᵀ Z₂ r`` and
    ``ξ₂₂ ρ₂ = (I + J₂ C₁)⁻¹ Z₂ r``. Then ``b = A₂ (b₁ + U₁ ξ₁₁⁻ᵀ ρ₁) + b₂`` and
    ``(Z, u)`` come from ``[A₁ᵀ ξ₂₂, Z₁]`` with ``(ρ₂, u₁)`` appended (:func:`_rotate_with`).
    """
    S = e2.b.shape[-1]
    batch = e2.b.shape[:-1]
    dtype = e2.b.dtype
    eye = jnp.broadcast_to(jnp.eye(S, dtype=dtype), batch + (S, S))
    zeros = jnp.zeros(batch + (S, S), dtype)
    r = e2.u - _mv(_mT(e2.Z), e1.b)
    xi = jnp.concatenate(
        [
            jnp.concatenate([_mT(e1.U) @ e2.Z, eye], axis=-1),
            jnp.concatenate([e2.Z, zeros], axis=-1),
            jnp.concatenate([r, jnp.zeros(batch + (S,), dtype)], axis=-1)[..., None, :],
        ],
        axis=-2,
    )
    xi = tria(xi)
    xi11, xi21, xi22 = xi[..., :S, :S], xi[..., S : 2 * S, :S], xi[..., S : 2 * S, S : 2 * S]
    rho1, rho2 = xi[..., 2 * S, :S], xi[..., 2 * S, S : 2 * S]
    tmp = _mT(solve_lower(xi11, _mT(e1.U)))  # U1 xi11⁻ᵀ
    d_inv = eye - tmp @ _mT(xi21)  # (I + C1 J2)⁻¹
    A = e2.A @ d_inv @ e1.A
    b = _mv(e2.A, e1.b + _mv(tmp, rho1)) + e2.b
    U = tria(jnp.concatenate([e2.A @ tmp, e2.U], axis=-1))
    Z, u = _rotate_with(
        jnp.concatenate([_mT(e1.A) @ xi22, e1.Z], axis=-1),
        jnp.concatenate([rho2, e1.u], axis=-1),
    )
    return _FilterElement(A, b, U, u, Z)


def _parallel_filter(model: _Model, y, observed) -> _Filtered:
    T, S = y.shape[0], model.m0.shape[0]
    dtype = model.m0.dtype
    emission0 = {
        k: (model.varying[k][0] if k in model.varying else model.static[k]) for k in _EMISSION
    }
    e1 = _filter_element(
        jnp.zeros((S, S), dtype),
        model.chol_P0,
        model.m0,
        **emission0,
        y=y[0],
        observed=observed[0],
    )
    first = e1._replace(
        A=jnp.zeros((S, 1), dtype), u=jnp.zeros((1,), dtype), Z=jnp.zeros((1, 1), dtype)
    )
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    e_static, e_varying = _split_time(model, _EMISSION, 1, T - 1)
    static = {**t_static, **e_static}
    inputs = {**t_varying, **e_varying, "y": y[1:], "observed": observed[1:]}
    out = prefix_scan(
        _filter_combine,
        lambda v: _filter_element(**static, **v),
        first,
        inputs,
        parallel=True,
    )
    means, chols = out.b, out.U
    pred_means, pred_chols = _map_time(
        _predict, t_static, {**t_varying, "m": means[:-1], "chol_P": chols[:-1]}
    )
    pred_means = jnp.concatenate([model.m0[None], pred_means])
    pred_chols = jnp.concatenate([model.chol_P0[None], pred_chols])
    e_static, e_varying = _split_time(model, _EMISSION, 0, T)
    log_liks = _map_time(
        _log_likelihood,
        e_static,
        {
            **e_varying,
            "m_pred": pred_means,
            "chol_P_pred": pred_chols,
            "y": y,
            "observed": observed,
        },
    )
    return _Filtered(means, chols, pred_means, pred_chols, log_liks)

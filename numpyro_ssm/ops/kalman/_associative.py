r"""The parallel-in-time Kalman filter: associative elements and their combination.

The associative scan of Särkkä & García-Fernández (2021), in the square-root form of Yaghoobi,
Corenflos, Hassan & Särkkä (2022): element ``t`` is the pair
``p(z_t | z_{t-1}, y_t) = N(A z_{t-1} + b, U Uᵀ)`` and
``p(y_t | z_{t-1}) ∝ N_info(z_{t-1}; η, Z Zᵀ)``, combined by ``lax.associative_scan`` in
``O(log T)`` depth; the predictions and the per-step log-likelihoods are then read off the
filtered moments, vectorized over time.
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
    eta: jax.Array  # (S,), or (1,)
    Z: jax.Array  # (S, S), or (1, 1)


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
    eta = Z @ solve_lower(chol_S, resid)
    D = Z.shape[1]
    Z = jnp.pad(Z, ((0, 0), (0, S - D))) if D <= S else tria(Z)
    return _FilterElement(A, mean, chol_C, eta, Z)


def _filter_combine(e1: _FilterElement, e2: _FilterElement) -> _FilterElement:
    """Associative combination of filtering elements (earlier ``e1``, later ``e2``)."""
    S = e2.b.shape[-1]
    batch = e2.b.shape[:-1]
    eye = jnp.broadcast_to(jnp.eye(S, dtype=e2.b.dtype), batch + (S, S))
    zeros = jnp.zeros(batch + (S, S), e2.b.dtype)
    xi = jnp.concatenate(
        [
            jnp.concatenate([_mT(e1.U) @ e2.Z, eye], axis=-1),
            jnp.concatenate([e2.Z, zeros], axis=-1),
        ],
        axis=-2,
    )
    xi = tria(xi)
    xi11, xi21, xi22 = xi[..., :S, :S], xi[..., S:, :S], xi[..., S:, S:]
    tmp = _mT(solve_lower(xi11, _mT(e1.U)))  # U1 xi11⁻ᵀ
    d_inv = eye - tmp @ _mT(xi21)  # (I + C1 J2)⁻¹
    A = e2.A @ d_inv @ e1.A
    b = _mv(e2.A @ d_inv, e1.b + _mv(e1.U, _mv(_mT(e1.U), e2.eta))) + e2.b
    U = tria(jnp.concatenate([e2.A @ tmp, e2.U], axis=-1))
    eta = _mv(_mT(e1.A) @ _mT(d_inv), e2.eta - _mv(e2.Z, _mv(_mT(e2.Z), e1.b))) + e1.eta
    Z = tria(jnp.concatenate([_mT(e1.A) @ xi22, e1.Z], axis=-1))
    return _FilterElement(A, b, U, eta, Z)


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
        A=jnp.zeros((S, 1), dtype), eta=jnp.zeros((1,), dtype), Z=jnp.zeros((1, 1), dtype)
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

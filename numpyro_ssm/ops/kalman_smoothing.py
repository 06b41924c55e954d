r"""Square-root RTS smoother, forward-filter backward-sample, and prior sampling (pure JAX).

The model and the argument conventions are those of :mod:`numpyro_ssm.ops.kalman`.

**Smoother.** Given the filtered ``N(m_t, U_t U_tᵀ)``, the backward conditional is
``p(z_t | z_{t+1}, y_{1:t}) = N(E_t z_{t+1} + g_t, L_t L_tᵀ)``, read off one triangularization of
``[[F_t U_t, chol Q_t], [U_t, 0]]``. These affine Gaussian maps compose associatively
(Särkkä & García-Fernández 2021): ``(E_1, g_1, L_1) ∘ (E_2, g_2, L_2) =
(E_1 E_2, E_1 g_2 + g_1, tria([E_1 L_2, L_1]))``. A suffix scan seeded with the last filtered
Gaussian (``E = 0``) yields every smoothed marginal: sequentially this is the RTS recursion,
with ``lax.associative_scan`` it has ``O(log T)`` depth.

**Sampler.** The same backward maps with noise drawn up front, ``z_t = E_t z_{t+1} + g_t + L_t
ε_t``, compose as affine maps ``(E, h)``: one more suffix scan per draw.

**Prior sampling** is the forward affine recursion ``z_{t+1} = F_t z_t + b_t + chol Q_t ε_t``,
again a prefix scan; it is reparameterized (differentiable in every parameter).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops._kalman_common import (
    _EMISSION,
    _TRANSITION,
    _covariance,
    _inputs,
    _map_time,
    _mv,
    _prepare,
    _split_time,
)
from numpyro_ssm.ops.kalman import GaussianPosterior, _filter
from numpyro_ssm.ops.linalg import solve_lower_transpose, tria
from numpyro_ssm.ops.scan import prefix_scan

__all__ = ["kalman_posterior_sample", "kalman_smoother", "lgssm_sample"]


class _SmootherElement(NamedTuple):
    E: jax.Array  # (S, S), or (S, 1) zeros in a compact suffix
    g: jax.Array  # (S,)
    L: jax.Array  # (S, S)


def _smoother_element(F, chol_Q, b, m, chol_P):
    """Backward conditional ``p(z_t | z_{t+1}, y_{1:t})`` from the filtered ``N(m, chol_P)``."""
    S = m.shape[0]
    top = jnp.concatenate([F @ chol_P, chol_Q], axis=1)
    bottom = jnp.concatenate([chol_P, jnp.zeros((S, S), m.dtype)], axis=1)
    phi = tria(jnp.concatenate([top, bottom], axis=0))
    chol_pred, cross, chol_cond = phi[:S, :S], phi[S:, :S], phi[S:, S:]
    gain = solve_lower_transpose(chol_pred, cross.T).T
    return _SmootherElement(gain, m - gain @ (F @ m + b), chol_cond)


def _smoother_combine(e1: _SmootherElement, e2: _SmootherElement) -> _SmootherElement:
    """Compose backward maps: ``e1`` (earlier time) after ``e2`` (later time)."""
    return _SmootherElement(
        e1.E @ e2.E, _mv(e1.E, e2.g) + e1.g, tria(jnp.concatenate([e1.E @ e2.L, e1.L], axis=-1))
    )


def _affine_combine(e1, e2):
    """Compose ``x -> A x + c`` maps; ``combine(earlier, later)`` applies ``earlier`` last.

    Used backward (``z_t = E z_{t+1} + h``) where ``earlier`` is the earlier time step.
    """
    (A1, c1), (A2, c2) = e1, e2
    return A1 @ A2, _mv(A1, c2) + c1


def _backward_elements(model, filtered):
    T = filtered.means.shape[0]
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    return _map_time(
        _smoother_element,
        t_static,
        {**t_varying, "m": filtered.means[:-1], "chol_P": filtered.chols[:-1]},
    )


def _run_filter(args, observations, obs_mask, parallel):
    model, y, observed = _inputs(args, observations, obs_mask)
    return model, _filter(model, y, observed, parallel)


@functools.partial(jax.jit, static_argnames=("parallel",))
def kalman_smoother(
    initial_mean: jax.Array,
    initial_scale_tril: jax.Array,
    transition_matrix: jax.Array,
    transition_scale_tril: jax.Array,
    emission_matrix: jax.Array,
    emission_scale_tril: jax.Array,
    observations: jax.Array,
    *,
    transition_bias: jax.Array | None = None,
    emission_bias: jax.Array | None = None,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> GaussianPosterior:
    """Square-root Rauch–Tung–Striebel smoother (after the filter): every field set.

    Args:
        initial_mean: shape ``(S,)``, ``E[z_1]``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular factor of ``Cov[z_1]``.
        transition_matrix: shape ``(S, S)`` or ``(T-1, S, S)``, ``F_t``.
        transition_scale_tril: shape ``(S, S)`` or ``(T-1, S, S)``, factor of ``Q_t``.
        emission_matrix: shape ``(D, S)`` or ``(T, D, S)``, ``H_t``.
        emission_scale_tril: shape ``(D, D)`` or ``(T, D, D)``, factor of ``R_t``.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        transition_bias: shape ``(S,)`` or ``(T-1, S)``, ``b_t``; zeros by default.
        emission_bias: shape ``(D,)`` or ``(T, D)``, ``d_t``; zeros by default.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        parallel: associative scans (``O(log T)`` depth) for the filter and the smoother.

    Returns:
        A :class:`~numpyro_ssm.ops.GaussianPosterior` with filtered, predicted and smoothed
        moments, lag-one smoothed cross-covariances and the log marginal.
    """
    args = (
        initial_mean,
        initial_scale_tril,
        transition_matrix,
        transition_scale_tril,
        emission_matrix,
        emission_scale_tril,
        transition_bias,
        emission_bias,
    )
    model, f = _run_filter(args, observations, obs_mask, parallel)
    S = f.means.shape[1]
    back = _backward_elements(model, f)
    last = _SmootherElement(jnp.zeros((S, 1), f.means.dtype), f.means[-1], f.chols[-1])
    out = prefix_scan(_smoother_combine, lambda e: e, last, back, parallel=parallel, reverse=True)
    smoothed_covs = _covariance(out.L)
    return GaussianPosterior(
        log_marginal=jnp.sum(f.log_likelihoods),
        filtered_means=f.means,
        filtered_covariances=_covariance(f.chols),
        predicted_means=f.predicted_means,
        predicted_covariances=_covariance(f.predicted_chols),
        log_likelihood_increments=f.log_likelihoods,
        smoothed_means=out.g,
        smoothed_covariances=smoothed_covs,
        smoothed_cross_covariances=back.E @ smoothed_covs[1:],
    )


def _sample_shape_map(fn, key, sample_shape):
    """``fn(key)`` for ``prod(sample_shape)`` split keys, stacked to ``sample_shape + ...``."""
    sample_shape = tuple(sample_shape)
    n = 1
    for s in sample_shape:
        n *= s
    out = jax.vmap(fn)(jax.random.split(key, n))
    return jax.tree.map(lambda a: a.reshape(sample_shape + a.shape[1:]), out)


@functools.partial(jax.jit, static_argnames=("sample_shape", "parallel"))
def kalman_posterior_sample(
    key: jax.Array,
    initial_mean: jax.Array,
    initial_scale_tril: jax.Array,
    transition_matrix: jax.Array,
    transition_scale_tril: jax.Array,
    emission_matrix: jax.Array,
    emission_scale_tril: jax.Array,
    observations: jax.Array,
    *,
    transition_bias: jax.Array | None = None,
    emission_bias: jax.Array | None = None,
    obs_mask: jax.Array | None = None,
    sample_shape: tuple[int, ...] = (),
    parallel: bool = False,
) -> jax.Array:
    """Draw state paths from ``p(z_{1:T} | y_{1:T})`` (forward filter, backward sample).

    Args:
        key: a JAX PRNG key.
        initial_mean: shape ``(S,)``, ``E[z_1]``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular factor of ``Cov[z_1]``.
        transition_matrix: shape ``(S, S)`` or ``(T-1, S, S)``, ``F_t``.
        transition_scale_tril: shape ``(S, S)`` or ``(T-1, S, S)``, factor of ``Q_t``.
        emission_matrix: shape ``(D, S)`` or ``(T, D, S)``, ``H_t``.
        emission_scale_tril: shape ``(D, D)`` or ``(T, D, D)``, factor of ``R_t``.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        transition_bias: shape ``(S,)`` or ``(T-1, S)``, ``b_t``; zeros by default.
        emission_bias: shape ``(D,)`` or ``(T, D)``, ``d_t``; zeros by default.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        sample_shape: leading shape of the draws.
        parallel: associative scans for the filter and the backward pass.

    Returns:
        Shape ``sample_shape + (T, S)``: joint posterior draws of the state path.
    """
    args = (
        initial_mean,
        initial_scale_tril,
        transition_matrix,
        transition_scale_tril,
        emission_matrix,
        emission_scale_tril,
        transition_bias,
        emission_bias,
    )
    model, f = _run_filter(args, observations, obs_mask, parallel)
    T, S = f.means.shape
    back = _backward_elements(model, f)

    def draw(k):
        eps = jax.random.normal(k, (T, S), f.means.dtype)
        last = (jnp.zeros((S, 1), f.means.dtype), f.means[-1] + f.chols[-1] @ eps[-1])
        return prefix_scan(
            _affine_combine,
            lambda v: (v[0].E, v[0].g + v[0].L @ v[1]),
            last,
            (back, eps[:-1]),
            parallel=parallel,
            reverse=True,
        )[1]

    return _sample_shape_map(draw, key, sample_shape)


@functools.partial(jax.jit, static_argnames=("num_steps", "sample_shape", "parallel"))
def lgssm_sample(
    key: jax.Array,
    initial_mean: jax.Array,
    initial_scale_tril: jax.Array,
    transition_matrix: jax.Array,
    transition_scale_tril: jax.Array,
    emission_matrix: jax.Array,
    emission_scale_tril: jax.Array,
    *,
    num_steps: int,
    transition_bias: jax.Array | None = None,
    emission_bias: jax.Array | None = None,
    sample_shape: tuple[int, ...] = (),
    parallel: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Reparameterized draws of states and observations from the model (the prior).

    Args:
        key: a JAX PRNG key.
        initial_mean: shape ``(S,)``, ``E[z_1]``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular factor of ``Cov[z_1]``.
        transition_matrix: shape ``(S, S)`` or ``(T-1, S, S)``, ``F_t``.
        transition_scale_tril: shape ``(S, S)`` or ``(T-1, S, S)``, factor of ``Q_t``.
        emission_matrix: shape ``(D, S)`` or ``(T, D, S)``, ``H_t``.
        emission_scale_tril: shape ``(D, D)`` or ``(T, D, D)``, factor of ``R_t``.
        num_steps: ``T``.
        transition_bias: shape ``(S,)`` or ``(T-1, S)``, ``b_t``; zeros by default.
        emission_bias: shape ``(D,)`` or ``(T, D)``, ``d_t``; zeros by default.
        sample_shape: leading shape of the draws.
        parallel: associative scan for the state recursion.

    Returns:
        ``(states, observations)`` of shapes ``sample_shape + (T, S)`` and
        ``sample_shape + (T, D)``.
    """
    T = int(num_steps)
    model = _prepare(
        initial_mean,
        initial_scale_tril,
        transition_matrix,
        transition_scale_tril,
        emission_matrix,
        emission_scale_tril,
        transition_bias,
        emission_bias,
        T,
    )
    S = model.m0.shape[0]
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    e_static, e_varying = _split_time(model, _EMISSION, 0, T)
    D = model.varying.get("H", model.static.get("H")).shape[-2]
    dtype = model.m0.dtype

    def draw(k):
        k_state, k_obs = jax.random.split(k)
        eps = jax.random.normal(k_state, (T, S), dtype)
        first = (jnp.zeros((S, 1), dtype), model.m0 + model.chol_P0 @ eps[0])

        def element(v):
            p = {**t_static, **v}
            return p["F"], p["b"] + p["chol_Q"] @ p["eps"]

        states = prefix_scan(
            lambda e1, e2: _affine_combine(e2, e1),
            element,
            first,
            {**t_varying, "eps": eps[1:]},
            parallel=parallel,
        )[1]
        noise = jax.random.normal(k_obs, (T, D), dtype)
        obs = _map_time(
            lambda H, chol_R, d, z, e: H @ z + d + chol_R @ e,
            e_static,
            {**e_varying, "z": states, "e": noise},
        )
        return states, obs

    return _sample_shape_map(draw, key, sample_shape)

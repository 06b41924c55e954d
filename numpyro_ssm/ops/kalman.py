r"""Square-root Kalman filter for linear-Gaussian state space models (pure JAX).

The model, for ``t = 1, ..., T`` with state dimension ``S`` and observation dimension ``D``:

.. math::

    z_1 &\sim \mathcal N(m_0, P_0), \\
    z_{t+1} &= F_t z_t + b_t + w_t, \quad w_t \sim \mathcal N(0, Q_t), \quad t = 1, ..., T-1, \\
    y_t &= H_t z_t + d_t + v_t, \quad v_t \sim \mathcal N(0, R_t).

Every covariance enters and travels as a lower-triangular square root (``P = U Uᵀ``); updates
stack factors and triangularize them (:func:`numpyro_ssm.ops.linalg.tria`).

**Two schedules.** ``parallel=False`` runs the sequential square-root filter of
:mod:`numpyro_ssm.ops._kalman_serial`: one ``lax.scan`` whose step conditions and predicts with
two triangularizations. ``parallel=True`` runs the associative scan of Särkkä &
García-Fernández (2021) in the square-root form of Yaghoobi, Corenflos, Hassan & Särkkä (2022):
element ``t`` is the pair ``p(z_t | z_{t-1}, y_t) = N(A z_{t-1} + b, U Uᵀ)`` and
``p(y_t | z_{t-1}) ∝ N_info(z_{t-1}; η, Z Zᵀ)``, combined by ``lax.associative_scan`` in
``O(log T)`` depth; the predictions and the per-step log-likelihoods are then read off the
filtered moments, vectorized over time. The tests hold the two schedules equal.

**Gradients.** :func:`kalman_log_marginal` returns ``log p(y_{1:T})`` alone; with either
schedule its derivative is one backward smoothing recursion (sequential or associative) instead
of autodiff through the scan (see :mod:`numpyro_ssm.ops._kalman_gradient`).
:class:`numpyro_ssm.LinearGaussianSSM` uses it.

**Time-varying parameters** carry a leading time axis: ``T-1`` for the transition parameters
(``F_t, Q_t, b_t`` act between steps ``t`` and ``t+1``), ``T`` for the emission ones. A leading
axis of length 1, or none, means homogeneous.

**Missing data.** ``obs_mask[t, i] = False`` or a NaN in ``y[t, i]`` marks an entry missing.
A missing entry's row of ``H_t``, ``d_t`` and of the residual is zeroed, and its row and column
of the innovation covariance are replaced by those of the identity: the entry then carries
exactly no information and contributes exactly 0 to the log-likelihood (no dummy variances).
NaNs are replaced before any arithmetic, so gradients stay finite.

**Batches.** These functions take one sequence (no batch axes). They are pure and
``jax.vmap``-able; :class:`numpyro_ssm.LinearGaussianSSM` vmaps them over its batch shape.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops._kalman_common import (
    _EMISSION,
    _TRANSITION,
    _covariance,
    _Filtered,
    _inputs,
    _log_likelihood,
    _map_time,
    _masked_emission,
    _Model,
    _mT,
    _mv,
    _predict,
    _split_time,
)
from numpyro_ssm.ops._kalman_gradient import log_marginal_jvp
from numpyro_ssm.ops._kalman_serial import serial_filter, serial_log_marginal
from numpyro_ssm.ops.linalg import solve_lower, solve_lower_transpose, tria
from numpyro_ssm.ops.scan import prefix_scan

__all__ = ["GaussianPosterior", "kalman_filter", "kalman_log_marginal"]


class GaussianPosterior(NamedTuple):
    """Gaussian filtering / smoothing results for one sequence of ``T`` steps, state dim ``S``.

    Attributes:
        log_marginal: shape ``()``, ``log p(y_{1:T})``.
        filtered_means: shape ``(T, S)``, ``E[z_t | y_{1:t}]``.
        filtered_covariances: shape ``(T, S, S)``, ``Cov[z_t | y_{1:t}]``.
        predicted_means: shape ``(T, S)``, ``E[z_t | y_{1:t-1}]`` (row 0 is the initial mean).
        predicted_covariances: shape ``(T, S, S)``, ``Cov[z_t | y_{1:t-1}]``.
        log_likelihood_increments: shape ``(T,)``, ``log p(y_t | y_{1:t-1})``; they sum to
            ``log_marginal``. A fully missing step contributes 0.
        smoothed_means: shape ``(T, S)``, ``E[z_t | y_{1:T}]``; ``None`` from the filter.
        smoothed_covariances: shape ``(T, S, S)``, ``Cov[z_t | y_{1:T}]``; ``None`` from the
            filter.
        smoothed_cross_covariances: shape ``(T-1, S, S)``, ``Cov[z_t, z_{t+1} | y_{1:T}]``
            (lag one, ``[t, i, j] = Cov(z_t[i], z_{t+1}[j])``); ``None`` from the filter.
    """

    log_marginal: jax.Array
    filtered_means: jax.Array
    filtered_covariances: jax.Array
    predicted_means: jax.Array
    predicted_covariances: jax.Array
    log_likelihood_increments: jax.Array
    smoothed_means: jax.Array | None = None
    smoothed_covariances: jax.Array | None = None
    smoothed_cross_covariances: jax.Array | None = None


def _condition(H_m, chol_R_m, chol_Q):
    """Square-root conditioning of ``x ~ N(., Q)`` on ``H x + noise(R)``.

    Returns ``(chol_S, K, chol_C)``: the innovation factor ``(D, D)``, the gain ``(S, D)`` and
    the factor of the conditional covariance ``(S, S)``.
    """
    D, S = H_m.shape
    top = jnp.concatenate([H_m @ chol_Q, chol_R_m], axis=1)
    bottom = jnp.concatenate([chol_Q, jnp.zeros((S, chol_R_m.shape[1]), H_m.dtype)], axis=1)
    psi = tria(jnp.concatenate([top, bottom], axis=0))
    chol_S, cross, chol_C = psi[:D, :D], psi[D:, :D], psi[D:, D:]
    gain = solve_lower_transpose(chol_S, cross.T).T
    return chol_S, gain, chol_C


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
    chol_S, gain, chol_C = _condition(H_m, chol_R_m, chol_Q)
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


def _filter(model: _Model, y, observed, parallel) -> _Filtered:
    if not parallel:
        return serial_filter(model, y, observed)
    return _parallel_filter(model, y, observed)


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


@jax.custom_jvp
def _parallel_log_marginal(model: _Model, y, observed):
    """``log p(y_{1:T})`` by the associative scan; its derivative is a second, backward one."""
    return jnp.sum(_parallel_filter(model, y, observed).log_likelihoods)


_parallel_log_marginal.defjvp(log_marginal_jvp(_parallel_filter, parallel=True))


@functools.partial(jax.jit, static_argnames=("parallel",))
def kalman_filter(
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
    """Square-root Kalman filter: filtered and predicted moments and the log marginal.

    Args:
        initial_mean: shape ``(S,)``, ``m_0 = E[z_1]``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular ``U_0`` with
            ``Cov[z_1] = U_0 U_0ᵀ``. Zeros on the diagonal (exactly known states) are allowed.
        transition_matrix: shape ``(S, S)`` or ``(T-1, S, S)``, ``F_t`` in
            ``z_{t+1} = F_t z_t + b_t + w_t``.
        transition_scale_tril: shape ``(S, S)`` or ``(T-1, S, S)``, lower-triangular factor of
            ``Q_t = Cov[w_t]``; may be rank-deficient (e.g. a noiseless level).
        emission_matrix: shape ``(D, S)`` or ``(T, D, S)``, ``H_t`` in
            ``y_t = H_t z_t + d_t + v_t``.
        emission_scale_tril: shape ``(D, D)`` or ``(T, D, D)``, lower-triangular factor of
            ``R_t = Cov[v_t]``, positive definite.
        observations: shape ``(T, D)``, ``y_{1:T}``; NaN marks a missing entry.
        transition_bias: shape ``(S,)`` or ``(T-1, S)``, ``b_t`` (controls: ``b_t = B u_t``);
            zeros by default.
        emission_bias: shape ``(D,)`` or ``(T, D)``, ``d_t``; zeros by default.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed. ``(T, 1)`` masks whole
            steps.
        parallel: run the associative scan (``O(log T)`` depth) instead of the sequential one.

    Returns:
        A :class:`GaussianPosterior` with the smoothed fields set to ``None``.

    Raises:
        ValueError: on inconsistent shapes, naming the argument and the shapes.
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
    model, y, observed = _inputs(args, observations, obs_mask)
    f = _filter(model, y, observed, parallel)
    return GaussianPosterior(
        log_marginal=jnp.sum(f.log_likelihoods),
        filtered_means=f.means,
        filtered_covariances=_covariance(f.chols),
        predicted_means=f.predicted_means,
        predicted_covariances=_covariance(f.predicted_chols),
        log_likelihood_increments=f.log_likelihoods,
    )


@functools.partial(jax.jit, static_argnames=("parallel",))
def kalman_log_marginal(
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
) -> jax.Array:
    """``log p(y_{1:T})`` alone, with a fast derivative; arguments as :func:`kalman_filter`.

    The gradient (and any JVP) with respect to every argument is one backward recursion over
    the filtered moments rather than autodiff through the scan, which makes ``value_and_grad``
    a small multiple of the value's cost; with ``parallel=True`` that recursion is an
    associative scan too. Higher derivatives work as well.

    Sequentially, a series of at least 512 steps with time-invariant parameters stops updating
    the covariance once one step changes it by no more than 64 units in the last place, as
    statsmodels' filter does, and runs the mean recursion alone after that (after the last
    missing entry, where the covariance recursion changes); the value and the gradient agree
    with the full filter to rounding.

    Returns:
        Shape ``()``: the sum of :attr:`GaussianPosterior.log_likelihood_increments`.

    Raises:
        ValueError: on inconsistent shapes, naming the argument and the shapes.
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
    model, y, observed = _inputs(args, observations, obs_mask)
    if parallel:
        return _parallel_log_marginal(model, y, observed)
    return serial_log_marginal(model, y, observed)

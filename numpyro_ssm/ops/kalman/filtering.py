r"""Kalman filtering: filtered and predicted moments, and the log-marginal with a fast derivative.

**Two schedules**, chosen in :func:`_filter` and :func:`_log_marginal` only.
``parallel=False`` runs the sequential square-root filter: one ``lax.scan`` carries the
predicted ``N(m_t, U_t U_tᵀ)``; step ``t`` conditions on ``y_t`` with one triangularization of
``[[H U, chol R], [U, 0]]`` (innovation factor, gain and filtered factor at once), adds
``log p(y_t | y_{1:t-1})``, and predicts with one more, ``tria([F U_f, chol Q])``. The loop
keeps only predicted moments (the filtered ones are recomputed after it, vectorized), so with
one observation entry it conditions without the first triangularization: Potter's rank-one
square-root update gives a factor of ``P_f`` that is square but not triangular, which the
prediction's triangularization accepts (``_steps._update_to_predict``). The value alone goes
further: Potter's update takes a factor of any width, so the prediction appends ``chol Q``'s
columns without triangularizing, and one triangularization serves four steps
(``_steps._deferred_steps``); so does the pass the gradient runs above 4 states with a thin
noise factor (``_steps.defers_gradient_pass``), keeping each step's wide predicted factor
(zero-padded to one width).
``parallel=True`` runs the associative scan of :mod:`numpyro_ssm.ops.kalman._associative`.
The tests hold the two schedules equal.

**Gradients.** :func:`kalman_log_marginal` returns ``log p(y_{1:T})`` alone; with either
schedule its derivative is one backward smoothing recursion (sequential or associative) instead
of autodiff through the scan (:mod:`numpyro_ssm.ops.kalman._gradient`). On a long series of a
time-invariant model the sequential value stops updating the covariance once it has settled
(:mod:`numpyro_ssm.ops.kalman._steady`).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.kalman._associative import _parallel_filter
from numpyro_ssm.ops.kalman._gradient import log_marginal_jvp
from numpyro_ssm.ops.kalman._steady import settles, steady_log_marginal, steady_predicted
from numpyro_ssm.ops.kalman._steps import (
    _DEFER,
    _covariance,
    _deferred_steps,
    _Filtered,
    _predict,
    _update,
    _update_to_predict,
    defer_every,
    defers_gradient_pass,
)
from numpyro_ssm.ops.kalman.params import (
    _EMISSION,
    _TRANSITION,
    LGSSMParams,
    _inputs,
    _Model,
    _per_step,
    _split_time,
    accepts_legacy_arguments,
    sparsity_pattern,
)

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


def _forward(model: _Model, y, observed, keep_moments, pattern=None):
    """One sequential pass: the per-step log-liks, and (``keep_moments``) the predicted moments.

    ``pattern``: the zeros of a time-invariant ``F`` and ``H``
    (:class:`~numpyro_ssm.ops.kalman.params.Pattern`), for the log-liks alone with one
    observation entry; None for dense ones.

    Returns:
        ``log_liks (T,)``, or ``(predicted_means (T, S), predicted_chols (T, S, S),
        log_liks (T,))`` with ``keep_moments``.
    """
    T, D = y.shape
    if not keep_moments and D == 1 and T > _DEFER:
        return _deferred_pass(model, y, observed, pattern=pattern)
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    e_static, e_varying = _split_time(model, _EMISSION, 0, T)

    def step(carry, inputs):
        m, chol_P = carry
        emission = {**e_static, **{k: inputs[k] for k in e_varying}}
        # only the predicted moments leave the loop: the filtered factor need not be triangular
        m_f, chol_f, log_lik = _update_to_predict(
            m, chol_P, **emission, y=inputs["y"], observed=inputs["observed"]
        )
        transition = {**t_static, **{k: inputs[k] for k in t_varying}}
        carry = _predict(**transition, m=m_f, chol_P=chol_f)
        return carry, ((m, chol_P, log_lik) if keep_moments else log_lik)

    inputs = {
        **t_varying,
        **{k: v[: T - 1] for k, v in e_varying.items()},
        "y": y[: T - 1],
        "observed": observed[: T - 1],
    }
    (m, chol_P), out = lax.scan(step, (model.m0, model.chol_P0), inputs)
    last = {**e_static, **{k: v[T - 1] for k, v in e_varying.items()}}
    _, _, log_lik = _update_to_predict(m, chol_P, **last, y=y[T - 1], observed=observed[T - 1])
    if not keep_moments:
        return jnp.concatenate([out, log_lik[None]])
    return tuple(
        jnp.concatenate([stacked, final[None]])
        for stacked, final in zip(out, (m, chol_P, log_lik), strict=True)
    )


def _deferred_pass(model: _Model, y, observed, keep=False, pattern=None):
    """:func:`_forward` for one observation entry, by ``_steps._deferred_steps``.

    Returns:
        ``log_liks (T,)``, or with ``keep`` ``(predicted_means (T, S), predicted_factors
        (T, S, W), log_liks (T,))``, ``W = _steps.deferred_width(S, q)``.
    """
    T = y.shape[0]
    every = defer_every(pattern)
    n = -(-T // every) * every
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    e_static, e_varying = _split_time(model, _EMISSION, 0, T)

    def grouped(x, value=None):
        # every step runs update and prediction; the steps past the end (and the prediction
        # after step T) only change the final state, which nothing reads
        pad = [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        x = (
            jnp.pad(x, pad, mode="edge")
            if value is None
            else jnp.pad(x, pad, constant_values=value)
        )
        return x.reshape((n // every, every) + x.shape[1:])

    def group(carry, inputs):
        steps = [
            {**t_static, **e_static, **{k: v[i] for k, v in inputs.items()}} for i in range(every)
        ]
        (m, U, _), out = _deferred_steps(*carry, steps, keep=keep, pattern=pattern)
        return (m, U), out

    inputs = {k: grouped(v) for k, v in {**t_varying, **e_varying}.items()}
    inputs["y"] = grouped(y, 0.0)
    inputs["observed"] = grouped(observed, False)
    _, out = lax.scan(group, (model.m0, model.chol_P0), inputs)
    ungroup = lambda x: x.reshape((n,) + x.shape[2:])[:T]  # noqa: E731
    return tuple(map(ungroup, out)) if keep else ungroup(out)


def _serial_filter(model: _Model, y, observed) -> _Filtered:
    """Filtered and predicted moments and per-step log-likelihoods, sequentially.

    The scan emits only the predicted moments and the log-liks; the filtered moments are
    recomputed after it, vectorized. Emitting them from the loop body too measured 5-10x slower
    on the CPU than this second, fused pass.
    """
    m_p, chol_p, log_liks = _forward(model, y, observed, keep_moments=True)
    em = _per_step(model, _EMISSION, 0, y.shape[0])
    m_f, chol_f, _ = jax.vmap(_update)(m_p, chol_p, em["H"], em["chol_R"], em["d"], y, observed)
    return _Filtered(m_f, chol_f, m_p, chol_p, log_liks)


def _predicted_moments(model: _Model, y, observed) -> _Filtered:
    """The pass the gradient needs: predicted moments and log-liks, no filtered moments.

    The gradient (:mod:`numpyro_ssm.ops.kalman._gradient`) derives what it needs of the
    filtered moments from the predicted ones, so the vectorized re-triangularization of
    :func:`_serial_filter` is skipped. With one observation entry the steps triangularize every
    ``_DEFER`` steps where that saves LAPACK calls (``_steps.defers_gradient_pass``), and the
    pass keeps wide predicted factors (``_steps._Filtered``).
    """
    T, D = y.shape
    chol_Q = model.varying.get("chol_Q", model.static.get("chol_Q"))
    if D == 1 and T > _DEFER and defers_gradient_pass(*chol_Q.shape[-2:]):
        return _Filtered(None, None, *_deferred_pass(model, y, observed, keep=True))
    m_p, chol_p, log_liks = _forward(model, y, observed, keep_moments=True)
    return _Filtered(None, None, m_p, chol_p, log_liks)


def _predicted_only(model: _Model, y, observed) -> _Filtered:
    """:func:`_predicted_moments`, or its settled form for a long time-invariant series.

    The settled form stops updating the covariance once it has settled
    (:mod:`numpyro_ssm.ops._kalman_steady`).
    """
    if settles(model, y):
        return _settled_predicted(model, y, observed)
    return _predicted_moments(model, y, observed)


@jax.custom_jvp
def _settled_predicted(model: _Model, y, observed) -> _Filtered:
    """:func:`steady_predicted`, whose derivative is that of the full filter.

    Only second derivatives of the log-marginal differentiate this pass. Its settled form runs
    in a ``lax.while_loop``, which reverse mode cannot differentiate; the full filter's scan
    can, and agrees with it to rounding.
    """
    return steady_predicted(model, y, observed)


@_settled_predicted.defjvp
def _settled_predicted_jvp(primals, tangents):
    return jax.jvp(_predicted_moments, primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _serial_log_marginal(model: _Model, y, observed, pattern=None):
    """``log p(y_{1:T})`` by the sequential filter; its derivative is one backward recursion.

    On a long series of a time-invariant model the filter stops updating the covariance once
    it has settled (:mod:`numpyro_ssm.ops._kalman_steady`), for the value and the derivative.
    ``pattern`` (the zeros of ``F`` and ``H``, or None) serves the value's pass; the
    derivative's pass takes them dense.
    """
    if settles(model, y):
        return steady_log_marginal(model, y, observed, pattern)
    return jnp.sum(_forward(model, y, observed, keep_moments=False, pattern=pattern))


_serial_rule = log_marginal_jvp(_predicted_only, parallel=False)
_serial_log_marginal.defjvp(lambda pattern, primals, tangents: _serial_rule(primals, tangents))


@jax.custom_jvp
def _parallel_log_marginal(model: _Model, y, observed):
    """``log p(y_{1:T})`` by the associative scan; its derivative is a second, backward one."""
    return jnp.sum(_parallel_filter(model, y, observed).log_likelihoods)


_parallel_log_marginal.defjvp(log_marginal_jvp(_parallel_filter, parallel=True))


def _filter(model: _Model, y, observed, parallel) -> _Filtered:
    """The filter of one sequence, by the chosen schedule."""
    if parallel:
        return _parallel_filter(model, y, observed)
    return _serial_filter(model, y, observed)


def _log_marginal(model: _Model, y, observed, parallel, pattern=None):
    """``log p(y_{1:T})`` of one sequence, by the chosen schedule, with the one-pass derivative.

    ``pattern``: :func:`~numpyro_ssm.ops.kalman.params.sparsity_pattern` (serial).
    """
    if parallel:
        return _parallel_log_marginal(model, y, observed)
    return _serial_log_marginal(model, y, observed, pattern)


@accepts_legacy_arguments(0)
@functools.partial(jax.jit, static_argnames=("parallel",))
def kalman_filter(
    params: LGSSMParams,
    observations: jax.Array,
    *,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> GaussianPosterior:
    """Square-root Kalman filter: filtered and predicted moments and the log marginal.

    Args:
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams` (shapes there; build one
            with :func:`~numpyro_ssm.ops.lgssm_params`).
        observations: shape ``(T, D)``, ``y_{1:T}``; NaN marks a missing entry.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed. ``(T, 1)`` masks whole
            steps. A missing entry carries exactly no information and contributes exactly 0 to
            the log-likelihood (no dummy variances); NaNs are replaced before any arithmetic,
            so gradients stay finite.
        parallel: run the associative scan (``O(log T)`` depth) instead of the sequential one.

    Returns:
        A :class:`GaussianPosterior` with the smoothed fields set to ``None``.

    Raises:
        ValueError: on inconsistent shapes, naming the argument and the shapes.
        TypeError: for complex inputs, or ``params`` that is not an ``LGSSMParams``.
    """
    model, y, observed = _inputs(params, observations, obs_mask, "kalman_filter")
    return _filtered_posterior(_filter(model, y, observed, parallel))


def _filtered_posterior(f: _Filtered) -> GaussianPosterior:
    """The filter's fields of a :class:`GaussianPosterior` (smoothed ones ``None``)."""
    return GaussianPosterior(
        log_marginal=jnp.sum(f.log_likelihoods),
        filtered_means=f.means,
        filtered_covariances=_covariance(f.chols),
        predicted_means=f.predicted_means,
        predicted_covariances=_covariance(f.predicted_chols),
        log_likelihood_increments=f.log_likelihoods,
    )


@accepts_legacy_arguments(0)
def kalman_log_marginal(
    params: LGSSMParams,
    observations: jax.Array,
    *,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> jax.Array:
    """``log p(y_{1:T})`` alone, with a fast derivative; arguments as :func:`kalman_filter`.

    The gradient (and any JVP) with respect to every parameter and the observations is one
    backward recursion over the filtered moments rather than autodiff through the scan, which
    makes ``value_and_grad`` a small multiple of the value's cost; with ``parallel=True`` that
    recursion is an associative scan too. Higher derivatives work as well.

    Sequentially, a series of at least 512 steps with time-invariant parameters stops updating
    the covariance once one step changes it by no more than 64 units in the last place, as
    statsmodels' filter does, and runs the mean recursion alone after that (after the last
    missing entry, where the covariance recursion changes); the value and the gradient agree
    with the full filter to rounding. A transition matrix that is concrete where this function
    is called (not traced: the fixed trends and seasonals of a structural model, a fixed
    companion form) and whose rows mostly copy one entry is applied by slices of the factor and
    small products of its other rows, with a triangularization every 8 steps instead of 4, in
    the value's sequential pass with one observation entry; so is a concrete emission row with
    at most half its entries nonzero (``ops/kalman/params.py``, ``sparsity_pattern``): exact,
    and faster on the CPU.

    Args:
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        parallel: run the associative scans instead of the sequential ones.

    Returns:
        Shape ``()``: the sum of :attr:`GaussianPosterior.log_likelihood_increments`.

    Raises:
        ValueError: on inconsistent shapes, naming the argument and the shapes.
        TypeError: for complex inputs, or ``params`` that is not an ``LGSSMParams``.
    """
    pattern = sparsity_pattern(params)
    return _kalman_log_marginal(params, observations, obs_mask, parallel, pattern)


@functools.partial(jax.jit, static_argnames=("parallel", "pattern"))
def _kalman_log_marginal(params, observations, obs_mask, parallel, pattern):
    model, y, observed = _inputs(params, observations, obs_mask, "kalman_log_marginal")
    return _log_marginal(model, y, observed, parallel, pattern)

r"""Nonlinear smoothers: one pass after the filter, iterated passes, and the MAP path.

**One pass** (``smoother_iterations=0``): the Rauch–Tung–Striebel smoother of the model that the
filter linearized. The transition ``t → t+1`` is relinearized for the filtered ``N(m_t, P_t)``
(vectorized over time; the same regression the filter's prediction used) and the Kalman ops'
backward pass runs on it, serially or as an associative scan (``parallel=True``). This is the
extended (Taylor) and the unscented / Gauss–Hermite / cubature RTS smoother.

**Iterated** (``smoother_iterations=k``): ``k`` passes of
:func:`~numpyro_ssm.ops.nonlinear.iterated.relinearize`, each linearizing transition and
emission around the previous pass's smoothed marginals and running the Kalman filter and
smoother of the linearized model. The first pass starts from the one-pass smoother, or from
``initial_trajectory``; everything after that start is parallel-in-time with
``parallel=True``. The reported posterior (and log-marginal) is the last pass's.

The schedule is decided here only: the one-pass filter is sequential whatever ``parallel`` says
(it linearizes around its own predictions); ``parallel`` applies to every smoothing pass.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.kalman._steps import _Filtered
from numpyro_ssm.ops.kalman.filtering import GaussianPosterior
from numpyro_ssm.ops.kalman.filtering import _log_marginal as _kalman_log_marginal
from numpyro_ssm.ops.kalman.params import _Model as _KalmanModel
from numpyro_ssm.ops.kalman.smoothing import _smoothed_factors, _smoothed_posterior
from numpyro_ssm.ops.nonlinear import iterated
from numpyro_ssm.ops.nonlinear.filtering import _check_iterations, _filter, _forward
from numpyro_ssm.ops.nonlinear.params import _inputs, _Model
from numpyro_ssm.ops.nonlinear.rules import Taylor, get_rule

__all__ = [
    "PosteriorMode",
    "nonlinear_log_marginal",
    "nonlinear_posterior_mode",
    "nonlinear_smoother",
]


def _filter_linearization(model: _Model, rule, f: _Filtered) -> _KalmanModel:
    """The filter's transitions, relinearized for its filtered moments, as a Kalman model."""
    F, chol_Q, b = iterated.transitions_at(model, rule, f.means, f.chols)
    p = model.params
    varying = {"F": F, "chol_Q": chol_Q, "b": b}
    return _KalmanModel({}, varying, jnp.asarray(p.initial_mean), p.initial_scale_tril)


def _one_pass(model: _Model, rule, y, observed, iterations):
    """The filter and its linearized transitions: ``(kalman_model, filtered)``."""
    f = _filter(model, rule, y, observed, iterations)
    return _filter_linearization(model, rule, f), f


def _start(model: _Model, rule, y, observed, iterations, initial_trajectory, parallel):
    """The trajectory the first iterated pass linearizes around: ``(means, chols)``."""
    if initial_trajectory is not None:
        return _trajectory(model, initial_trajectory)
    kmodel, f = _one_pass(model, rule, y, observed, iterations)
    _, out = _smoothed_factors(kmodel, f, parallel)
    return out.g, out.L


def _trajectory(model: _Model, initial_trajectory):
    """``(means (T, S), chols (T, S, S))`` from ``means`` or ``(means, scale_trils)``."""
    T, S = model.num_steps, model.state_dim
    dtype = model.dtype
    if isinstance(initial_trajectory, tuple | list):
        means, chols = (jnp.asarray(a, dtype) for a in initial_trajectory)
    else:
        means = jnp.asarray(initial_trajectory, dtype)
        chols = jnp.broadcast_to(jnp.asarray(model.params.initial_scale_tril, dtype), (T, S, S))
    if means.shape != (T, S) or chols.shape != (T, S, S):
        raise ValueError(
            f"initial_trajectory must be means of shape (T, S) = ({T}, {S}) or a pair (means, "
            f"scale_trils) with scale_trils of shape ({T}, {S}, {S}), got {means.shape} and "
            f"{chols.shape}."
        )
    return means, chols


def _check_smoother_args(smoother_iterations, initial_trajectory, fn_name):
    if int(smoother_iterations) != smoother_iterations or smoother_iterations < 0:
        raise ValueError(
            f"{fn_name}: smoother_iterations must be an integer >= 0, got {smoother_iterations!r}."
        )
    if initial_trajectory is not None and smoother_iterations == 0:
        raise ValueError(
            f"{fn_name}: initial_trajectory is where the iterated smoother starts; give "
            "smoother_iterations >= 1 with it."
        )
    return int(smoother_iterations)


def _last_pass(model: _Model, rule, y, observed, args):
    """The Kalman model and filter output of the last pass, by the schedule in ``args``."""
    iterations, passes, initial_trajectory, parallel = args
    if passes == 0:
        return _one_pass(model, rule, y, observed, iterations)
    means, chols = _start(model, rule, y, observed, iterations, initial_trajectory, parallel)
    means, chols = iterated.iterate(model, rule, y, observed, means, chols, passes - 1, parallel)
    return iterated.kalman_pass(model, rule, y, observed, means, chols, parallel)


_STATIC = ("method", "update_iterations", "smoother_iterations", "parallel")


@functools.partial(jax.jit, static_argnames=_STATIC)
def nonlinear_smoother(
    params,
    observations: jax.Array,
    *,
    method="ekf",
    inputs=None,
    obs_mask: jax.Array | None = None,
    update_iterations: int = 1,
    smoother_iterations: int = 0,
    initial_trajectory=None,
    parallel: bool = False,
) -> GaussianPosterior:
    """Nonlinear Gaussian smoother, one pass or iterated, serial or parallel-in-time.

    Args:
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams` or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        method: the linearization rule (``"ekf"``, ``"ukf"``, ``"ghkf"``, ``"ckf"`` or a rule).
        inputs: pytree with leading time axis ``T``, or None.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        update_iterations: emission linearizations per filter step (one-pass filter only).
        smoother_iterations: 0 for the one-pass smoother; ``k >= 1`` for ``k`` passes of the
            iterated (posterior-linearization / extended) smoother (module docstring).
        initial_trajectory: where the first iterated pass linearizes: means ``(T, S)`` (then
            every ``Σ_t`` is ``P_0``), or ``(means, scale_trils (T, S, S))``. None starts from
            the one-pass smoother, which is sequential; a given trajectory makes every pass
            parallel with ``parallel=True``.
        parallel: associative scans for every smoothing pass.

    Returns:
        A :class:`~numpyro_ssm.ops.GaussianPosterior`: the last pass's filtered, predicted and
        smoothed moments, lag-one cross-covariances, and its approximate log-marginal.
    """
    rule = get_rule(method)
    iterations = _check_iterations(update_iterations, "nonlinear_smoother")
    passes = _check_smoother_args(smoother_iterations, initial_trajectory, "nonlinear_smoother")
    model, y, observed = _inputs(params, observations, obs_mask, inputs, "nonlinear_smoother")
    args = (iterations, passes, initial_trajectory, parallel)
    kmodel, f = _last_pass(model, rule, y, observed, args)
    return _smoothed_posterior(kmodel, f, parallel)


@functools.partial(jax.jit, static_argnames=_STATIC)
def nonlinear_log_marginal(
    params,
    observations: jax.Array,
    *,
    method="ekf",
    inputs=None,
    obs_mask: jax.Array | None = None,
    update_iterations: int = 1,
    smoother_iterations: int = 0,
    initial_trajectory=None,
    parallel: bool = False,
) -> jax.Array:
    """The approximate ``log p(y_{1:T})`` alone; arguments as :func:`nonlinear_smoother`.

    With ``smoother_iterations=0`` it is the filter's (only the per-step terms leave its scan);
    with ``k >= 1`` it is the Kalman log-marginal of the model linearized by the last pass (for
    the Taylor rule at the MAP path, a Laplace approximation with the Gauss–Newton curvature).
    Gradients are by autodiff through every pass.

    Returns:
        Shape ``()``.
    """
    rule = get_rule(method)
    iterations = _check_iterations(update_iterations, "nonlinear_log_marginal")
    passes = _check_smoother_args(smoother_iterations, initial_trajectory, "nonlinear_log_marginal")
    model, y, observed = _inputs(params, observations, obs_mask, inputs, "nonlinear_log_marginal")
    if passes == 0:
        return jnp.sum(_forward(model, rule, y, observed, iterations, keep_moments=False))
    means, chols = _start(model, rule, y, observed, iterations, initial_trajectory, parallel)
    means, chols = iterated.iterate(model, rule, y, observed, means, chols, passes - 1, parallel)
    if model.generalized:
        _, f = iterated.kalman_pass(model, rule, y, observed, means, chols, parallel)
        return jnp.sum(f.log_likelihoods)
    kmodel = iterated.kalman_model(model, rule, means, chols)
    return _kalman_log_marginal(kmodel, y, observed, parallel)


class PosteriorMode(NamedTuple):
    """What :func:`nonlinear_posterior_mode` returns.

    Attributes:
        path: shape ``(T, S)``, the MAP state path (where converged).
        num_iterations: shape ``()``, the Gauss–Newton passes run.
        converged: shape ``()``, bool: the last pass moved the path by at most ``tolerance``.
    """

    path: jax.Array
    num_iterations: jax.Array
    converged: jax.Array


@functools.partial(jax.jit, static_argnames=("max_iterations", "parallel"))
def nonlinear_posterior_mode(
    params,
    observations: jax.Array,
    *,
    inputs=None,
    obs_mask: jax.Array | None = None,
    max_iterations: int = 100,
    tolerance: float | None = None,
    initial_trajectory=None,
    parallel: bool = False,
) -> PosteriorMode:
    """The MAP state path ``argmax_z p(z_{1:T} | y_{1:T})``: the iterated extended smoother.

    Each pass linearizes by Taylor around the previous path and runs the Kalman smoother, a
    Gauss–Newton step on the joint log density (Bell 1994); at its fixed point the gradient of
    the log density vanishes. For generalized emissions the emission's curvature is Fisher's
    (``Jᵀ Cov[y | z]⁻¹ J``) and the fixed point solves the score equations of an
    exponential-family emission, hence is the MAP there too. Plain Gauss–Newton has no line
    search: on strongly nonlinear models it may not converge (see ``converged``).

    Args:
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams` or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        inputs: pytree with leading time axis ``T``, or None.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        max_iterations: at most this many passes after the start.
        tolerance: stop when ``max |Δz| / (1 + max |z|)`` falls to this; default ``1e-10`` in
            float64, ``1e-5`` in float32.
        initial_trajectory: the starting path ``(T, S)``; None starts from the extended
            Kalman smoother.
        parallel: associative scans for every pass.

    Returns:
        A :class:`PosteriorMode`.
    """
    rule = Taylor()
    model, y, observed = _inputs(params, observations, obs_mask, inputs, "nonlinear_posterior_mode")
    if tolerance is None:
        tolerance = 1e-10 if model.dtype == jnp.float64 else 1e-5
    if initial_trajectory is not None and not isinstance(initial_trajectory, tuple | list):
        initial_trajectory = (initial_trajectory, None)
    if initial_trajectory is not None:
        T, S = model.num_steps, model.state_dim
        means = jnp.asarray(initial_trajectory[0], model.dtype)
        if means.shape != (T, S):
            raise ValueError(
                f"nonlinear_posterior_mode: initial_trajectory must have shape (T, S) = "
                f"({T}, {S}), got {means.shape}."
            )
        chols = jnp.zeros((T, S, S), model.dtype)
    else:
        means, chols = _start(model, rule, y, observed, 1, None, parallel)
    path, _, k, converged = iterated.converge(
        model, rule, y, observed, means, chols, max_iterations, tolerance, parallel
    )
    return PosteriorMode(path, k, converged)

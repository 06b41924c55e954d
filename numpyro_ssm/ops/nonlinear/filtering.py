r"""The nonlinear Gaussian filter: one driver for every linearization rule and emission kind.

One ``lax.scan`` carries the predicted ``N(m_t, U_t U_tᵀ)``. Step ``t`` linearizes the
emission for it and conditions on ``y_t`` (:func:`~numpyro_ssm.ops.nonlinear._steps.update`,
optionally iterated), then linearizes the transition for the filtered belief and predicts
(:func:`~numpyro_ssm.ops.nonlinear._steps.predict`). The rule is an argument (``method``):
``"ekf"`` (Taylor), ``"ukf"`` (unscented), ``"ghkf"`` (Gauss–Hermite), ``"ckf"`` (spherical
cubature), or a rule object with its own settings.

The filter linearizes around its own predictions, so it is sequential by nature; the smoothers
of :mod:`~numpyro_ssm.ops.nonlinear.smoothing` parallelize everything after it.

**The log-likelihood is an approximation.** ``log_marginal`` sums the filter's one-step
predictive terms. With Gaussian emissions each is ``log N(y_t; ŷ_t, S_t)``, the predictive
density of the *linearized* model (exact for a linear-Gaussian model; its error grows with the
curvature of ``f`` and ``h`` over the spread of the belief). With generalized emissions it is
the importance-weighted cubature of the exact one-step predictive integral, see
:func:`~numpyro_ssm.ops.nonlinear._steps.generalized_log_likelihood`.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.kalman._steps import _Filtered
from numpyro_ssm.ops.kalman.filtering import GaussianPosterior, _filtered_posterior
from numpyro_ssm.ops.nonlinear import _steps
from numpyro_ssm.ops.nonlinear.params import (
    _emission_noise_at,
    _input_at,
    _inputs,
    _Model,
)
from numpyro_ssm.ops.nonlinear.rules import Taylor, get_rule

__all__ = ["nonlinear_filter", "nonlinear_predict", "nonlinear_predictive_moments"]


def _check_iterations(update_iterations, fn_name):
    if int(update_iterations) != update_iterations or update_iterations < 1:
        raise ValueError(
            f"{fn_name}: update_iterations must be an integer >= 1, got {update_iterations!r}."
        )
    return int(update_iterations)


def _time_slices(model: _Model, y, observed):
    """Per-step scan inputs: ``y``, mask, ``u_t`` and ``u_{t+1}``, time-varying noise factors."""
    T = model.num_steps
    xs = {"y": y[: T - 1], "observed": observed[: T - 1]}
    if model.inputs is not None:
        xs["u"] = jax.tree.map(lambda x: x[: T - 1], model.inputs)
        xs["u_next"] = jax.tree.map(lambda x: x[1:], model.inputs)
    if model.chol_Q.ndim == 3:
        xs["chol_Q"] = model.chol_Q
    if model.chol_R is not None and model.chol_R.ndim == 3:
        xs["chol_R"] = model.chol_R[: T - 1]
    return xs


def _forward(model: _Model, rule, y, observed, iterations, keep_moments):
    """The filter's scan: per-step log-liks, and (``keep_moments``) every moment.

    Returns:
        ``log_liks (T,)``, or a :class:`~numpyro_ssm.ops.kalman._steps._Filtered`.
    """
    T = model.num_steps
    p = model.params

    def step(carry, xs):
        m, chol_P = carry
        u, u_next = xs.get("u"), xs.get("u_next")
        chol_R = xs.get("chol_R", model.chol_R)
        m_f, chol_f, log_lik = _steps.update(
            model,
            rule,
            m,
            chol_P,
            xs["y"],
            xs["observed"],
            u,
            chol_R,
            iterations,
            to_predict=not keep_moments,
        )
        chol_Q = xs.get("chol_Q", model.chol_Q)
        carry = _steps.predict(model, rule, m_f, chol_f, u_next, chol_Q, wide)
        out = (m, chol_P, m_f, chol_f, log_lik) if keep_moments else log_lik
        return carry, out

    init = (jnp.asarray(p.initial_mean), jnp.asarray(p.initial_scale_tril, p.initial_mean.dtype))
    # The EKF's log-marginal pass with several entries: the update triangularizes the stack of
    # the emission and the predicted factor anyway (a factor of any width), so the prediction
    # leaves [J U_f, chol_Q] wide and one triangularization a step does the work of two.
    # (One entry takes Potter's update instead, which keeps the factor's width.)
    wide = (
        not keep_moments and isinstance(rule, Taylor) and not model.generalized and y.shape[1] > 1
    )
    if wide:  # the carry has the prediction's width from the start
        m0, U0 = init
        pad = jnp.zeros((U0.shape[0], model.chol_Q.shape[-1]), U0.dtype)
        init = (m0, jnp.concatenate([U0, pad], axis=1))
    if not keep_moments:
        # Reverse mode recomputes each step from the carry instead of stacking its residuals.
        step = jax.checkpoint(step)
    (m, chol_P), out = lax.scan(step, init, _time_slices(model, y, observed))
    last = _steps.update(
        model,
        rule,
        m,
        chol_P,
        y[T - 1],
        observed[T - 1],
        _input_at(model.inputs, T - 1),
        _emission_noise_at(model, T - 1),
        iterations,
    )
    if not keep_moments:
        return jnp.concatenate([out, last[2][None]])
    m_p, chol_p, m_f, chol_f, log_liks = (
        jnp.concatenate([stacked, final[None]])
        for stacked, final in zip(out, (m, chol_P, *last), strict=True)
    )
    return _Filtered(m_f, chol_f, m_p, chol_p, log_liks)


def _filter(model: _Model, rule, y, observed, iterations) -> _Filtered:
    return _forward(model, rule, y, observed, iterations, keep_moments=True)


@functools.partial(jax.jit, static_argnames=("method", "update_iterations"))
def nonlinear_filter(
    params,
    observations: jax.Array,
    *,
    method="ekf",
    inputs=None,
    obs_mask: jax.Array | None = None,
    update_iterations: int = 1,
) -> GaussianPosterior:
    """Square-root nonlinear Gaussian filter (EKF, UKF, GHKF, CKF; iterated or not; CMGF).

    Args:
        params: the model, a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams`
            (additive Gaussian emissions) or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams` (any emission with
            known conditional moments: conditional-moments Gaussian filtering).
        observations: shape ``(T, D)``; NaN marks a missing entry.
        method: ``"ekf"``, ``"ukf"``, ``"ghkf"``, ``"ckf"`` or a rule object
            (:mod:`~numpyro_ssm.ops.nonlinear.rules`).
        inputs: pytree whose leaves have a leading time axis of length ``T`` (``u_t``), or
            None.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed. A missing entry
            contributes nothing (generalized emissions: the emission's ``log_prob_fn`` decides
            how entries combine).
        update_iterations: linearizations of the emission per step: 1 is the plain filter,
            more is the iterated extended (Taylor) or posterior-linearization filter.

    Returns:
        A :class:`~numpyro_ssm.ops.GaussianPosterior` (smoothed fields ``None``); its
        ``log_marginal`` is the filter's approximate ``log p(y_{1:T})`` (module docstring).

    Raises:
        ValueError: on inconsistent shapes, a function returning the wrong shape, or an unknown
            method, naming the argument.
    """
    rule = get_rule(method)
    iterations = _check_iterations(update_iterations, "nonlinear_filter")
    model, y, observed = _inputs(params, observations, obs_mask, inputs, "nonlinear_filter")
    return _filtered_posterior(_filter(model, rule, y, observed, iterations))


@functools.partial(jax.jit, static_argnames=("num_steps", "method"))
def nonlinear_predictive_moments(params, *, num_steps: int, method="ekf", inputs=None):
    """Moments of the states and observations under the model alone, propagated by the rule.

    The filter with every observation missing predicts ``z_t`` step after step; the rule then
    gives the mean and covariance of ``y_t`` (for generalized emissions with the expected
    conditional covariance: the law of total variance under the Gaussian approximation). Exact
    for a linear-Gaussian model, otherwise approximate like the filter itself.

    Args:
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams` or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams`.
        num_steps: ``T``.
        method: the linearization rule.
        inputs: pytree with leading time axis ``T``, or None.

    Returns:
        ``(state_means (T, S), state_covariances (T, S, S), observation_means (T, D),
        observation_covariances (T, D, D))``.
    """
    from numpyro_ssm.ops.nonlinear.iterated import emissions_at
    from numpyro_ssm.ops.nonlinear.params import _prepare

    rule = get_rule(method)
    model = _prepare(params, num_steps, inputs, "nonlinear_predictive_moments")
    T, D = model.num_steps, model.obs_dim
    y = jnp.zeros((T, D), model.dtype)
    f = _filter(model, rule, y, jnp.zeros((T, D), bool), 1)
    H, chol_noise, d = emissions_at(model, rule, f.predicted_means, f.predicted_chols)
    HL = H @ f.predicted_chols
    obs_cov = HL @ jnp.swapaxes(HL, -1, -2) + chol_noise @ jnp.swapaxes(chol_noise, -1, -2)
    obs_mean = jnp.einsum("tds,ts->td", H, f.predicted_means) + d
    state_cov = f.predicted_chols @ jnp.swapaxes(f.predicted_chols, -1, -2)
    return f.predicted_means, state_cov, obs_mean, obs_cov


def nonlinear_predict(params, mean, scale_tril, *, method="ekf", input=None, transition_scale_tril):
    """One prediction step: ``z_{t+1} | y_{1:t}`` from ``z_t | y_{1:t} ~ N(mean, L Lᵀ)``.

    Args:
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams` or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams` (its
            ``transition_fn`` and ``params`` are used).
        mean: shape ``(S,)``.
        scale_tril: shape ``(S, S)``, lower-triangular factor of the covariance.
        method: the linearization rule.
        input: ``u_{t+1}``, one time slice of the inputs, or None.
        transition_scale_tril: shape ``(S, S)``, the factor of ``Q_t``.

    Returns:
        ``(mean (S,), scale_tril (S, S))`` of the predicted Gaussian.
    """
    return _steps.predict_from(
        params, get_rule(method), mean, scale_tril, input, transition_scale_tril
    )

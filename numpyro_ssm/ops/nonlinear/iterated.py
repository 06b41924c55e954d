r"""Linearize around a whole trajectory, then smooth: the iterated and parallel smoothers.

Given Gaussian marginals ``N(μ_t, Σ_t)`` of every state (a *trajectory*), the rule linearizes
the transition ``t → t+1`` for ``N(μ_t, Σ_t)`` and the emission of step ``t`` for the same
Gaussian. The result is a time-varying linear-Gaussian model (:func:`linearize_model`, an
:class:`~numpyro_ssm.ops.LGSSMParams`) whose filter and smoother are the Kalman ops', serial or
parallel-in-time: every step of the linearization is independent of the others, so the whole
pass has ``O(log T)`` depth with ``parallel=True`` (Yaghoobi, Corenflos, Hassan & Särkkä 2021;
in square-root form, Yaghoobi et al. 2022).

Iterating, with each pass linearizing around the previous pass's smoothed marginals, is the
iterated posterior-linearization smoother (García-Fernández, Svensson & Särkkä 2017) for the
sigma-point rules and the iterated extended Kalman smoother (Bell 1994) for the Taylor rule: a
Gauss–Newton method on the joint log density, whose fixed point is the MAP path (the Taylor rule
uses only the means). Serial and parallel passes around the same trajectory agree to rounding.
"""

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.kalman.filtering import _filter as _kalman_filter
from numpyro_ssm.ops.kalman.params import LGSSMParams
from numpyro_ssm.ops.kalman.params import _prepare as _kalman_prepare
from numpyro_ssm.ops.kalman.smoothing import _smoothed_factors
from numpyro_ssm.ops.nonlinear import _steps
from numpyro_ssm.ops.nonlinear.params import _Model

__all__ = ["linearize_trajectory"]


def _transition_inputs(model: _Model):
    """``u_{t+1}`` for the ``T - 1`` transitions, or None."""
    return None if model.inputs is None else jax.tree.map(lambda x: x[1:], model.inputs)


def _per_step_noise(chol, length):
    return jnp.broadcast_to(chol, (length,) + chol.shape[-2:]) if chol.ndim == 2 else chol


def transitions_at(model: _Model, rule, means, chols):
    """``(F, chol_Q, b)``, each with a leading axis ``T - 1``: transition ``t`` for ``N(μ_t, Σ_t)``.

    Args:
        model: the checked model.
        rule: the linearization rule.
        means: shape ``(T, S)`` (the last row is not used).
        chols: shape ``(T, S, S)``, lower-triangular factors of ``Σ_t``.
    """
    T = model.num_steps

    def one(m, chol, u_next, chol_Q):
        return _steps.transition_linearization(model, rule, m, chol, u_next, chol_Q)

    u_next = _transition_inputs(model)
    in_axes = (0, 0, None if u_next is None else 0, 0)
    chol_Q = _per_step_noise(model.chol_Q, T - 1)
    return jax.vmap(one, in_axes)(means[: T - 1], chols[: T - 1], u_next, chol_Q)


def emissions_at(model: _Model, rule, means, chols):
    """``(H, chol_R, d)``, each with a leading axis ``T``: the emission for ``N(μ_t, Σ_t)``."""
    T = model.num_steps

    def one(m, chol, u, chol_R):
        return _steps.emission_linearization(model, rule, m, chol, u, chol_R)

    chol_R = None if model.chol_R is None else _per_step_noise(model.chol_R, T)
    in_axes = (0, 0, None if model.inputs is None else 0, None if chol_R is None else 0)
    H, chol_noise, d = jax.vmap(one, in_axes)(means, chols, model.inputs, chol_R)
    return H, chol_noise, d


def linearized_model(model: _Model, rule, means, chols) -> LGSSMParams:
    """The time-varying :class:`~numpyro_ssm.ops.LGSSMParams` linearized around a trajectory."""
    F, chol_Q, b = transitions_at(model, rule, means, chols)
    H, chol_R, d = emissions_at(model, rule, means, chols)
    p = model.params
    return LGSSMParams(
        initial_mean=jnp.asarray(p.initial_mean),
        initial_scale_tril=jnp.asarray(p.initial_scale_tril, p.initial_mean.dtype),
        transition_matrix=F,
        transition_scale_tril=chol_Q,
        emission_matrix=H,
        emission_scale_tril=chol_R,
        transition_bias=b,
        emission_bias=d,
    )


def kalman_model(model: _Model, rule, means, chols):
    """:func:`linearized_model` as the Kalman ops hold a model (checked, split by time)."""
    return _kalman_prepare(linearized_model(model, rule, means, chols), model.num_steps, "pass")


def generalized_log_likelihoods(model: _Model, rule, f, y, observed):
    """The per-step terms of :func:`~numpyro_ssm.ops.nonlinear._steps.generalized_log_likelihood`.

    Vectorized over time from the predicted and filtered moments of a filter's output ``f``.
    """

    def one(m, chol_P, m_f, chol_f, y_t, obs_t, u):
        return _steps.generalized_log_likelihood(model, rule, m, chol_P, m_f, chol_f, y_t, obs_t, u)

    in_axes = (0, 0, 0, 0, 0, 0, None if model.inputs is None else 0)
    return jax.vmap(one, in_axes)(
        f.predicted_means, f.predicted_chols, f.means, f.chols, y, observed, model.inputs
    )


def kalman_pass(model: _Model, rule, y, observed, means, chols, parallel):
    """Linearize around ``(means, chols)`` and run the Kalman filter of the linearized model.

    Returns:
        ``(kalman_model, filtered)``: the linearized model as the Kalman ops hold it, and the
        filter's output, whose log-likelihoods are the generalized-emission terms where the
        emissions are generalized.
    """
    kmodel = kalman_model(model, rule, means, chols)
    f = _kalman_filter(kmodel, y, observed, parallel)
    if model.generalized:
        f = f._replace(log_likelihoods=generalized_log_likelihoods(model, rule, f, y, observed))
    return kmodel, f


def relinearize(model: _Model, rule, y, observed, means, chols, parallel):
    """One pass of the iterated smoother: the smoothed ``(means, chols)`` around the given ones."""
    kmodel, f = kalman_pass(model, rule, y, observed, means, chols, parallel)
    _, out = _smoothed_factors(kmodel, f, parallel)
    return out.g, out.L


def iterate(model: _Model, rule, y, observed, means, chols, num_passes, parallel):
    """``num_passes`` passes of :func:`relinearize`, in a ``lax.scan`` (differentiable)."""
    if num_passes == 0:
        return means, chols

    def body(carry, _):
        return relinearize(model, rule, y, observed, *carry, parallel), None

    (means, chols), _ = lax.scan(body, (means, chols), None, length=num_passes)
    return means, chols


def converge(model: _Model, rule, y, observed, means, chols, max_passes, tolerance, parallel):
    """Passes of :func:`relinearize` until the means move by at most ``tolerance``.

    The change is ``max |Δμ| / (1 + max |μ|)``. A ``lax.while_loop``: not reverse-mode
    differentiable.

    Returns:
        ``(means, chols, num_passes, converged)``.
    """

    def cond(state):
        k, _, _, change = state
        return (k < max_passes) & (change > tolerance)

    def body(state):
        k, means, chols, _ = state
        new_means, new_chols = relinearize(model, rule, y, observed, means, chols, parallel)
        change = jnp.max(jnp.abs(new_means - means)) / (1.0 + jnp.max(jnp.abs(new_means)))
        return k + 1, new_means, new_chols, change

    inf = jnp.asarray(jnp.inf, means.dtype)
    k, means, chols, change = lax.while_loop(cond, body, (jnp.asarray(0), means, chols, inf))
    return means, chols, k, change <= tolerance


def linearize_trajectory(params, means, scale_trils, *, method="ekf", inputs=None):
    """The linear-Gaussian model obtained by linearizing around a trajectory (module docstring).

    Transition ``t → t+1`` is linearized for ``N(means[t], Σ_t)`` and the emission of step
    ``t`` for ``N(means[t], Σ_t)``; the rule's residual covariance is added to ``Q_t`` and
    ``R_t`` (for generalized emissions, ``R_t`` is the rule's ``E[Cov[y_t | z_t]]``).

    Args:
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams` or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams`.
        means: shape ``(T, S)``, ``μ_t``.
        scale_trils: shape ``(T, S, S)``, lower-triangular factors of ``Σ_t`` (ignored by the
            Taylor rule).
        method: the linearization rule, as in
            :func:`~numpyro_ssm.ops.nonlinear.nonlinear_filter`.
        inputs: pytree with leading time axis ``T``, or None.

    Returns:
        A time-varying :class:`~numpyro_ssm.ops.LGSSMParams` (transition arrays ``(T-1, ...)``,
        emission arrays ``(T, ...)``) to pass to any Kalman op.
    """
    from numpyro_ssm.ops.nonlinear.params import _prepare
    from numpyro_ssm.ops.nonlinear.rules import get_rule

    rule = get_rule(method)
    means = jnp.asarray(means)
    model = _prepare(params, means.shape[0], inputs, "linearize_trajectory")
    return linearized_model(model, rule, means, jnp.asarray(scale_trils, means.dtype))

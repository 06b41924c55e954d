r"""The steps of the nonlinear filters: linearize, then condition or predict as a Kalman filter.

Each step linearizes the model's function for the current Gaussian belief by the chosen rule
(:mod:`~numpyro_ssm.ops.nonlinear.rules`) and runs the square-root step of
:mod:`numpyro_ssm.ops.kalman._steps` on the linearized model, so masked entries, the
innovation log-likelihood and the square-root numerics are the Kalman filter's own.

**Generalized emissions** (conditional moments, Tronarp, García-Fernández & Särkkä 2018): the
update linearizes the conditional mean ``μ(z) = E[y | z]`` and adds the expected conditional
covariance ``E[Cov[y | z]]`` (the rule's weighted sum over its points) to the residual
covariance of the regression: the effective emission noise. The per-step likelihood term is
defined in :func:`_generalized_log_likelihood`.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.kalman._steps import _update, _update_factored
from numpyro_ssm.ops.linalg import chol_logdet, solve_lower, tria
from numpyro_ssm.ops.nonlinear.params import _Model
from numpyro_ssm.ops.nonlinear.rules import (
    Taylor,
    joint_factor,
    linearize,
    regress,
    sigma_points,
)


def _with_noise(residual, chol_noise):
    """The factor of ``Ω + N`` (``N = chol_noise chol_noiseᵀ``), square ``(G, G)``."""
    if residual is None:
        return chol_noise
    return tria(jnp.concatenate([residual, chol_noise], axis=1))


def transition_linearization(model: _Model, rule, m, chol_P, u_next, chol_Q):
    """``(F, chol of Ω + Q, b)``: ``z_{t+1} ~ N(f(z_t, u_{t+1}), Q)`` for ``z_t ~ N(m, P)``."""
    p = model.params
    lin = linearize(rule, lambda z: p.transition_fn(z, u_next, p.params), m, chol_P)
    return lin.matrix, _with_noise(lin.residual, chol_Q), lin.offset


def predict(model: _Model, rule, m, chol_P, u_next, chol_Q, wide=False):
    """The predicted ``N(m', U')`` of ``z_{t+1}`` from the filtered ``N(m, chol_P)``."""
    return predict_from(model.params, rule, m, chol_P, u_next, chol_Q, wide)


def predict_from(params, rule, m, chol_P, u_next, chol_Q, wide=False):
    """:func:`predict` for a parameter container (its ``transition_fn`` and ``params``).

    ``chol_P`` may be any square factor for the Taylor rule (Potter's update gives one).
    ``wide``: ``U'`` is the stack ``[J U, chol_Q]`` itself, not triangularized: a
    factor of the predicted covariance with more columns than rows, for an update that
    triangularizes it with the emission's (:func:`update`, Taylor rule, several entries).
    """
    joint = joint_factor(rule, lambda z: params.transition_fn(z, u_next, params.params), m, chol_P)
    factor = jnp.concatenate([joint.output, chol_Q], axis=1)
    return joint.mean, factor if wide else tria(factor)


def _emission(model: _Model, rule, fit, m, chol_P, u, chol_R):
    """``(fit of the emission, chol of the effective emission noise)`` for ``z_t ~ N(m, P)``.

    ``fit`` is :func:`~numpyro_ssm.ops.nonlinear.rules.linearize` or
    :func:`~numpyro_ssm.ops.nonlinear.rules.regress`. Gaussian emissions: the regression of
    ``h`` plus ``R_t``. Generalized emissions: the regression of ``μ(z) = E[y | z]`` plus
    ``E[Cov[y | z]]`` under the rule.
    """
    p = model.params
    if not model.generalized:
        fitted = fit(rule, lambda z: p.emission_fn(z, u, p.params), m, chol_P)
        return fitted, _with_noise(fitted.residual, chol_R)

    def moments(z):
        return p.emission_moments_fn(p.emission_fn(z, u, p.params))

    fitted, chols = fit(rule, moments, m, chol_P, has_aux=True)  # chols (N, D, D)
    w = sigma_points(rule, m, chol_P).mean_weights
    N, D = chols.shape[0], chols.shape[1]
    expected = jnp.swapaxes(chols * jnp.sqrt(w)[:, None, None], 0, 1).reshape(D, N * D)
    parts = [expected] if fitted.residual is None else [expected, fitted.residual]
    return fitted, tria(jnp.concatenate(parts, axis=1))


def emission_linearization(model: _Model, rule, m, chol_P, u, chol_R):
    """``(H, chol of the effective emission noise, d)`` for ``z_t ~ N(m, P)``: :func:`_emission`."""
    lin, chol_noise = _emission(model, rule, linearize, m, chol_P, u, chol_R)
    return lin.matrix, chol_noise, lin.offset


def update(model: _Model, rule, m, chol_P, y, observed, u, chol_R, iterations, to_predict=False):
    """Condition the predicted ``N(m, chol_P)`` on ``y_t``, relinearizing ``iterations`` times.

    The first linearization is at the predicted belief itself, so the step conditions with the
    rule's factor of the joint covariance of ``(z, h(z))`` and ``ŷ``
    (:func:`~numpyro_ssm.ops.nonlinear.rules.joint_factor`; for generalized emissions ``H U``
    from :func:`~numpyro_ssm.ops.nonlinear.rules.regress`), without solving for ``H``.
    Iteration ``k > 1`` linearizes the emission for the previous iteration's posterior and
    conditions the *predicted* belief again (the iterated extended / posterior-linearization
    update: Gauss–Newton on the update for the Taylor rule).

    With ``to_predict`` (the filtered factor only feeds the Taylor rule's prediction, as in
    the log-marginal pass), a plain EKF update of one Gaussian entry is Potter's
    (:func:`~numpyro_ssm.ops.kalman._steps._update_to_predict`): the factor is square but not
    triangular, which the sigma-point rules could not take.

    Returns:
        ``(m_f, chol_f, log_lik)``: the filtered moments and ``log p(y_t | y_{1:t-1})``.
    """
    potter = to_predict and iterations == 1 and isinstance(rule, Taylor) and not model.generalized
    if model.generalized:
        reg, chol_noise = _emission(model, rule, regress, m, chol_P, u, chol_R)
        state, output, y_hat = chol_P, reg.factor, reg.mean
    else:  # the joint factor of (z, h(z)) next to chol_R: one triangularization
        p = model.params
        joint = joint_factor(rule, lambda z: p.emission_fn(z, u, p.params), m, chol_P)
        state, output, y_hat, chol_noise = joint.state, joint.output, joint.mean, chol_R
    m_lin, chol_lin, log_lik = _update_factored(
        m, state, output, chol_noise, y_hat, y, observed, to_predict=potter
    )
    for _ in range(iterations - 1):
        H, chol_noise, d = emission_linearization(model, rule, m_lin, chol_lin, u, chol_R)
        m_lin, chol_lin, log_lik = _update(m, chol_P, H, chol_noise, d, y, observed)
    if model.generalized:
        log_lik = generalized_log_likelihood(
            model, rule, m, chol_P, m_lin, chol_lin, y, observed, u
        )
    return m_lin, chol_lin, log_lik


def generalized_log_likelihood(model: _Model, rule, m, chol_P, m_f, chol_f, y, observed, u):
    r"""The per-step log-likelihood term of conditional-moments filtering.

    The one-step predictive density under the filter's Gaussian belief is
    ``p(y_t | y_{1:t-1}) ≈ ∫ p(y_t | z) N(z; m, P) dz``. Its integrand is concentrated where
    the *filtered* Gaussian ``N(m_f, P_f)`` is, so the integral is computed by the rule's
    points ``χ_i`` for ``N(m_f, P_f)``, with that Gaussian as the importance density:

    .. math::

        \log \sum_i w_i\, p(y_t \mid \chi_i)\,
            \frac{\mathcal N(\chi_i; m, P)}{\mathcal N(\chi_i; m_f, P_f)}.

    It is exact whenever the Gaussian update is (``p(y | z) N(z; m, P) ∝ N(z; m_f, P_f)``, a
    linear-Gaussian emission), for any rule. With the Taylor rule (one point, ``m_f``) it is a
    Laplace approximation of the integral at ``m_f``: exactly Laplace's with the Gauss–Newton
    (Fisher) curvature when the update is iterated to its fixed point.

    Returns:
        Shape ``()``; 0 when no entry of ``y_t`` is observed.
    """
    p = model.params
    pts = sigma_points(rule, m_f, chol_f)
    log_lik = jax.vmap(
        lambda z: p.emission_log_prob_fn(y, observed, p.emission_fn(z, u, p.params))
    )(pts.points)
    r = solve_lower(chol_P, (pts.points - m).T)  # (S, N)
    log_prior = -0.5 * jnp.sum(r * r, axis=0) - 0.5 * chol_logdet(chol_P)
    log_proposal = -0.5 * jnp.sum(pts.unit * pts.unit, axis=1) - 0.5 * chol_logdet(chol_f)
    w = pts.mean_weights
    log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    term = logsumexp(log_w + log_lik + log_prior - log_proposal)
    return jnp.where(jnp.any(observed), term, 0.0)

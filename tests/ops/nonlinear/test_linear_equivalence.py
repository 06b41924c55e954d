"""Every nonlinear method is the Kalman filter on a linear-Gaussian model (float64, 1e-10).

The model has inputs, time-varying noise, NaN-missing and masked entries and a fully missing
step. Each rule (Taylor, unscented, Gauss-Hermite, cubature) runs one-pass, with iterated
updates, and as the iterated smoother (serial and parallel): all are exact there, because every
rule's regression of a linear function is the function itself with zero residual. The reference
is :func:`numpyro_ssm.ops.kalman_smoother` (held to the dense joint Gaussian in
``tests/ops/kalman``), and gradients are compared with respect to every array of the model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm
from nonlinear_cases import (
    kalman_params,
    linear_case,
    linear_emission,
    linear_transition,
    nonlinear_params,
)

from numpyro_ssm.ops import kalman_log_marginal, kalman_posterior_sample, kalman_smoother
from numpyro_ssm.ops.nonlinear import (
    GaussHermite,
    GeneralizedGaussianParams,
    Unscented,
    nonlinear_filter,
    nonlinear_log_marginal,
    nonlinear_posterior_mode,
    nonlinear_posterior_sample,
    nonlinear_smoother,
)

TOL = dict(rtol=1e-10, atol=1e-10)
FIELDS = (
    "log_marginal",
    "filtered_means",
    "filtered_covariances",
    "predicted_means",
    "predicted_covariances",
    "log_likelihood_increments",
    "smoothed_means",
    "smoothed_covariances",
    "smoothed_cross_covariances",
)


def close(a, b, err_msg=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), err_msg=err_msg, **TOL)


@pytest.fixture(scope="module")
def case():
    theta, y, mask, inputs = linear_case()
    theta = {k: jnp.asarray(v) for k, v in theta.items()}

    @jax.jit
    def reference(theta):
        params = kalman_params(theta, inputs)
        post = kalman_smoother(params, y, obs_mask=mask)
        value, grad = jax.value_and_grad(
            lambda th: kalman_log_marginal(kalman_params(th, inputs), y, obs_mask=mask)
        )(theta)
        sample = kalman_posterior_sample(jax.random.key(3), params, y, obs_mask=mask)
        return post, value, grad, sample

    return theta, y, mask, inputs, reference(theta)


def _check_gradients(grad, ref):
    """Gradients with respect to every array; for the scale factors, their lower triangles.

    A ``*_scale_tril`` is lower-triangular by contract. The Kalman ops read it only through
    ``L Lᵀ``, the sigma-point rules also through triangular solves that ignore the upper
    triangle, so the derivative along a (structurally zero) upper entry is a convention, not
    part of the result.
    """
    for name, g in grad.items():
        want = ref[name]
        if name in ("L0", "LQ", "LR"):
            g, want = np.tril(g), np.tril(want)
        close(g, want, err_msg=f"gradient of {name}")


def _check_posterior(post, ref):
    for name in FIELDS:
        close(getattr(post, name), getattr(ref, name), err_msg=name)


RULES = ["ekf", Unscented(alpha=1.0, beta=0.0, kappa=2.0), GaussHermite(order=2), "ckf"]


@pytest.mark.parametrize("method", RULES, ids=["ekf", "ukf", "ghkf", "ckf"])
def test_every_rule_equals_the_kalman_smoother(case, method):
    theta, y, mask, inputs, (ref, ref_value, ref_grad, _) = case
    kw = dict(method=method, inputs=inputs, obs_mask=mask)

    @jax.jit
    def run(theta):
        post = nonlinear_smoother(nonlinear_params(theta), y, **kw)
        grad = jax.value_and_grad(lambda th: nonlinear_log_marginal(nonlinear_params(th), y, **kw))(
            theta
        )
        return post, grad

    post, (value, grad) = run(theta)
    _check_posterior(post, ref)
    close(value, ref_value, err_msg="log-marginal")
    _check_gradients(grad, ref_grad)


@pytest.mark.parametrize("method", ["ekf", "ckf"])
def test_one_entry_log_marginal_equals_the_kalman_filter(method):
    """``D = 1``: the EKF's log-marginal pass conditions by Potter's update (non-triangular
    factor), the sigma-point rules by the triangular one; value and gradient both equal the
    Kalman filter's, with a NaN entry, a masked step and an exactly zero noise factor."""
    theta, y, mask, inputs = linear_case(S=3, D=1, T=7)
    theta = {k: jnp.asarray(v) for k, v in theta.items()}
    theta["LQ"] = theta["LQ"].at[2].set(0.0)  # no process noise into step 3

    def ours(th):
        params = nonlinear_params(th)
        return nonlinear_log_marginal(params, y, method=method, inputs=inputs, obs_mask=mask)

    def kalman(th):
        return kalman_log_marginal(kalman_params(th, inputs), y, obs_mask=mask)

    value, grad = jax.jit(jax.value_and_grad(ours))(theta)
    ref_value, ref_grad = jax.jit(jax.value_and_grad(kalman))(theta)
    close(value, ref_value, err_msg="log-marginal")
    _check_gradients(grad, ref_grad)


@pytest.mark.parametrize("method", ["ekf", "ckf"])
def test_hessians_above_four_rows_equal_the_kalman_filters(method):
    """``jax.hessian`` where every step triangularizes a stack of more than 4 rows (one LAPACK
    QR): equal to the Kalman filter's, which ``tests/ops/kalman/test_gradient.py`` holds to
    differences of autodiff gradients. Both failed before ``ops/linalg.py``'s ``_unbatched``."""
    theta, y, mask, inputs = linear_case(S=5, D=2, T=5)
    theta = {k: jnp.asarray(v) for k, v in theta.items()}

    def ours(F):
        params = nonlinear_params(dict(theta, F=F))
        return nonlinear_log_marginal(params, y, method=method, inputs=inputs, obs_mask=mask)

    def kalman(F):
        return kalman_log_marginal(kalman_params(dict(theta, F=F), inputs), y, obs_mask=mask)

    close(jax.jit(jax.hessian(ours))(theta["F"]), jax.jit(jax.hessian(kalman))(theta["F"]))


def test_iterated_variants_equal_the_kalman_smoother(case):
    """Iterated updates, the iterated smoother (serial, parallel) and its log-marginal's gradient.

    One linearization of a linear model is exact, so every pass reproduces the Kalman smoother.
    """
    theta, y, mask, inputs, (ref, ref_value, ref_grad, _) = case
    kw = dict(inputs=inputs, obs_mask=mask)
    params = nonlinear_params(theta)
    iterated_filter = nonlinear_filter(params, y, method="ukf", update_iterations=2, **kw)
    for name in ("log_marginal", "filtered_means", "filtered_covariances"):
        close(getattr(iterated_filter, name), getattr(ref, name))
    for parallel in (False, True):
        post = nonlinear_smoother(
            params, y, method="ghkf", smoother_iterations=2, parallel=parallel, **kw
        )
        _check_posterior(post, ref)
    value, grad = jax.jit(
        jax.value_and_grad(
            lambda th: nonlinear_log_marginal(nonlinear_params(th), y, smoother_iterations=2, **kw)
        )
    )(theta)
    close(value, ref_value, err_msg="log-marginal")
    _check_gradients(grad, ref_grad)


def test_posterior_draws_and_mode_are_the_kalman_ones(case):
    theta, y, mask, inputs, (ref, _, _, ref_sample) = case
    params = nonlinear_params(theta)
    kw = dict(inputs=inputs, obs_mask=mask)
    draw = nonlinear_posterior_sample(jax.random.key(3), params, y, method="ukf", **kw)
    close(draw, ref_sample)
    mode = nonlinear_posterior_mode(params, y, **kw)
    close(mode.path, ref.smoothed_means)
    assert bool(mode.converged) and int(mode.num_iterations) <= 2


def test_generalized_emissions_with_gaussian_linear_emissions_are_the_kalman_filter(case):
    """Conditional-moments filtering with ``y | z ~ N(H z + C u + d, diag(r))`` is Kalman's.

    The likelihood term (importance-weighted cubature of the predictive integral) is exact
    here too, for every rule; per-entry masks act entry by entry.
    """
    theta, y, mask, inputs, _ = case
    theta = dict(theta, LR=jnp.broadcast_to(jnp.diag(jnp.array([0.7, 1.3])), theta["LR"].shape))
    sd = jnp.diagonal(theta["LR"], axis1=-2, axis2=-1)

    def generalized(theta):
        base = nonlinear_params(theta)
        return GeneralizedGaussianParams(
            initial_mean=base.initial_mean,
            initial_scale_tril=base.initial_scale_tril,
            transition_fn=lambda z, u, p: linear_transition(z, u["u"], p),
            transition_scale_tril=base.transition_scale_tril,
            emission_fn=lambda z, u, p: (linear_emission(z, u["u"], p), u["sd"]),
            emission_moments_fn=lambda eta: (eta[0], jnp.diag(eta[1])),
            emission_log_prob_fn=lambda y, obs, eta: jnp.sum(
                jnp.where(obs, norm.logpdf(y, eta[0], eta[1]), 0.0)
            ),
            params=base.params,
        )

    # a pytree of inputs: the noise scales ride along as a time-varying input
    u = {"u": jnp.asarray(inputs), "sd": sd}

    @jax.jit
    def run(theta):
        params = generalized(theta)
        kw = dict(inputs=u, obs_mask=mask)
        return (
            nonlinear_smoother(params, y, method="ghkf", **kw),
            nonlinear_smoother(params, y, method="ekf", smoother_iterations=2, **kw),
        )

    ref = jax.jit(lambda th: kalman_smoother(kalman_params(th, inputs), y, obs_mask=mask))(theta)
    for post in run(theta):
        _check_posterior(post, ref)

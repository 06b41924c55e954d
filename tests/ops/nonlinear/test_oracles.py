"""Nonlinear filters and smoothers against independent references.

- dynamax's extended and unscented Kalman filter and smoother and its conditional-moments
  filter, on the same model and inputs (float64, 1e-8). Convention differences: dynamax's
  ``predicted_means[t]`` is the prediction of step ``t + 1`` (ours of step ``t``), it takes
  covariances (we take square roots), and its UKF hyperparameters default to ours.
- A grid (point-mass) filter (``oracles.grid_filter_1d``) for scalar models: the reference
  ``log p(y)`` up to its discretization error, itself checked against the Kalman filter.
- The MAP path by L-BFGS on the joint log density (``oracles.map_path_lbfgs``) against the
  iterated extended smoother's fixed point.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import poisson as jax_poisson
from nonlinear_cases import pendulum_case, pendulum_emission, pendulum_transition
from oracles import grid_filter_1d, map_path_lbfgs
from scipy.stats import norm, poisson

from numpyro_ssm.ops import LGSSMParams, kalman_filter
from numpyro_ssm.ops.nonlinear import (
    GaussHermite,
    GeneralizedGaussianParams,
    NonlinearGaussianParams,
    nonlinear_filter,
    nonlinear_log_marginal,
    nonlinear_posterior_mode,
    nonlinear_smoother,
)

RTOL = dict(rtol=1e-8, atol=1e-10)


def close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **(kw or RTOL))


# ---------------------------------------------------------------------------------------------
# dynamax
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pendulum():
    params, y, states = pendulum_case(T=20)
    torque = np.random.default_rng(5).normal(size=(20, 1)) * 0.5

    def transition(z, u, p):  # a torque input drives the angular velocity
        return pendulum_transition(z, u, p) + jnp.array([0.0, p["dt"] * u[0]])

    params = NonlinearGaussianParams(
        initial_mean=params.initial_mean,
        initial_scale_tril=params.initial_scale_tril,
        transition_fn=transition,
        transition_scale_tril=params.transition_scale_tril,
        emission_fn=pendulum_emission,
        emission_scale_tril=params.emission_scale_tril,
        params=params.params,
    )
    return params, y, torque


def _dynamax_params(params):
    from dynamax.nonlinear_gaussian_ssm import ParamsNLGSSM

    cov = lambda L: L @ L.T  # noqa: E731
    return ParamsNLGSSM(
        initial_mean=params.initial_mean,
        initial_covariance=cov(params.initial_scale_tril),
        dynamics_function=lambda z, u: params.transition_fn(z, u, params.params),
        dynamics_covariance=cov(params.transition_scale_tril),
        emission_function=lambda z, u: params.emission_fn(z, u, params.params),
        emission_covariance=cov(params.emission_scale_tril),
    )


@pytest.mark.parametrize("method", ["ekf", "ukf"])
def test_against_dynamax_filter_and_smoother(pendulum, method, monkeypatch):
    """dynamax's filters and smoothers, without their diagonal boost.

    dynamax solves with ``psd_solve(A, b, diagonal_boost=1e-9)``: ``A + 1e-9 I``, which moves
    its pendulum moments by about 1e-8 (relative 5e-7). The boost is set to 0 here, so both
    sides compute the same quantities and 1e-8 holds.
    """
    from dynamax.nonlinear_gaussian_ssm import inference_ekf, inference_ukf
    from dynamax.utils.utils import psd_solve

    exact_solve = functools.partial(psd_solve, diagonal_boost=0.0)
    for module in (inference_ekf, inference_ukf):
        monkeypatch.setattr(module, "psd_solve", exact_solve)
    from dynamax.nonlinear_gaussian_ssm import (
        UKFHyperParams,
        extended_kalman_filter,
        extended_kalman_smoother,
        unscented_kalman_filter,
        unscented_kalman_smoother,
    )

    params, y, torque = pendulum
    theirs_params = _dynamax_params(params)
    y_j, u_j = jnp.asarray(y), jnp.asarray(torque)
    if method == "ekf":
        f = extended_kalman_filter(theirs_params, y_j, inputs=u_j)
        s = extended_kalman_smoother(theirs_params, y_j, inputs=u_j)
    else:
        f = unscented_kalman_filter(theirs_params, y_j, UKFHyperParams(), inputs=u_j)
        s = unscented_kalman_smoother(theirs_params, y_j, UKFHyperParams(), inputs=u_j)
    ours = nonlinear_smoother(params, y, method=method, inputs=torque)
    close(ours.log_marginal, f.marginal_loglik)
    close(ours.filtered_means, f.filtered_means)
    close(ours.filtered_covariances, f.filtered_covariances)
    close(ours.predicted_means[1:], f.predicted_means)  # theirs: prediction of step t + 1
    close(ours.predicted_covariances[1:], f.predicted_covariances)
    close(ours.smoothed_means, s.smoothed_means)
    close(ours.smoothed_covariances, s.smoothed_covariances)


POISSON = dict(a=0.9, q=0.3, c=1.0, T=25)


def _poisson_model(a, q, c, dim=1):
    """``z_{t+1} = a z_t + w``, ``y_t[i] ~ Poisson(exp(z_t[0] + c_i))``: a Poisson LDS."""
    offsets = c + 0.5 * jnp.arange(dim)
    return GeneralizedGaussianParams(
        initial_mean=jnp.zeros(1),
        initial_scale_tril=0.5 * jnp.eye(1),
        transition_fn=lambda z, u, p: a * z,
        transition_scale_tril=q * jnp.eye(1),
        emission_fn=lambda z, u, p: jnp.exp(z[0] + offsets),
        emission_moments_fn=lambda rate: (rate, jnp.diag(jnp.sqrt(rate))),
        emission_log_prob_fn=lambda y, obs, rate: jnp.sum(
            jnp.where(obs, jax_poisson.logpmf(y, rate), 0.0)
        ),
    )


@pytest.fixture(scope="module")
def poisson_data():
    a, q, c, T = (POISSON[k] for k in ("a", "q", "c", "T"))
    rng = np.random.default_rng(1)
    z = [0.0]
    for _ in range(T - 1):
        z.append(a * z[-1] + q * rng.normal())
    y = rng.poisson(np.exp(np.asarray(z) + c)).astype(float)
    return y[:, None]


def _dynamax_cmgf(y, method):
    import tensorflow_probability.substrates.jax.distributions as tfd
    from dynamax.generalized_gaussian_ssm import (
        EKFIntegrals,
        GHKFIntegrals,
        ParamsGGSSM,
        UKFIntegrals,
        conditional_moments_gaussian_filter,
    )

    a, q, c = POISSON["a"], POISSON["q"], POISSON["c"]
    params = ParamsGGSSM(
        initial_mean=jnp.zeros(1),
        initial_covariance=0.25 * jnp.eye(1),
        dynamics_function=lambda z: a * z,
        dynamics_covariance=q**2 * jnp.eye(1),
        emission_mean_function=lambda z: jnp.exp(z + c),
        emission_cov_function=lambda z: jnp.diag(jnp.exp(z + c)),
        emission_dist=lambda mean, cov: tfd.Poisson(rate=mean),
    )
    integrals = {"ekf": EKFIntegrals(), "ukf": UKFIntegrals(), "ghkf": GHKFIntegrals(order=3)}
    return conditional_moments_gaussian_filter(params, integrals[method], jnp.asarray(y))


@pytest.mark.parametrize("method", ["ekf", "ukf", "ghkf"])
def test_conditional_moments_filter_against_dynamax(poisson_data, method):
    """Same filtered moments as dynamax's CMGF; the likelihood terms differ by design.

    dynamax scores ``y_t`` with the plug-in ``Poisson(rate = E[y_t | y_{1:t-1}])``; ours
    integrates ``p(y_t | z)`` over the predicted Gaussian (``_steps.generalized_log_likelihood``).
    """
    theirs = _dynamax_cmgf(poisson_data, method)
    model = _poisson_model(POISSON["a"], POISSON["q"], POISSON["c"])
    ours = nonlinear_filter(model, poisson_data, method=method)
    close(ours.filtered_means, theirs.filtered_means)
    close(ours.filtered_covariances, theirs.filtered_covariances)


# ---------------------------------------------------------------------------------------------
# The grid filter
# ---------------------------------------------------------------------------------------------

GRID = np.linspace(-15.0, 15.0, 3001)


def test_grid_filter_is_exact_on_a_linear_model():
    """The oracle's own error: against the Kalman filter, far below the tolerances used below."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=(15, 1)) * 2.0
    y[4] = np.nan
    params = LGSSMParams(
        jnp.array([0.5]),
        jnp.eye(1),
        jnp.array([[0.9]]),
        jnp.array([[0.5]]),
        jnp.array([[1.2]]),
        jnp.array([[0.7]]),
    )
    log_marginal, densities = grid_filter_1d(
        y[:, 0],
        lambda x: norm.logpdf(x, 0.5, 1.0),
        lambda x_next, x, t: norm.logpdf(x_next, 0.9 * x, 0.5),
        lambda y_t, x, t: norm.logpdf(y_t, 1.2 * x, 0.7),
        GRID,
    )
    post = kalman_filter(params, y)
    assert abs(log_marginal - float(post.log_marginal)) < 1e-9
    h = GRID[1] - GRID[0]
    close(densities @ GRID * h, post.filtered_means[:, 0], rtol=1e-9, atol=1e-9)


def _mild_model(q=0.3, r=0.4):
    """``z' = z + 0.5 sin z + w``, ``y = z + 0.1 z² + v``: mildly nonlinear, scalar."""
    return NonlinearGaussianParams(
        initial_mean=jnp.array([0.5]),
        initial_scale_tril=jnp.eye(1),
        transition_fn=lambda z, u, p: z + 0.5 * jnp.sin(z),
        transition_scale_tril=q * jnp.eye(1),
        emission_fn=lambda z, u, p: z + 0.1 * z**2,
        emission_scale_tril=r * jnp.eye(1),
    )


def test_gaussian_filters_against_the_grid_filter():
    """Approximate ``log p(y)`` of each rule against the grid's, on a mildly nonlinear model.

    Tolerance. The grid is exact to 1e-9 here (previous test), so the differences are the
    Gaussian approximations' own. A one-pass filter replaces each one-step predictive density
    by a Gaussian; on this model (``h`` bends by ``0.2 z`` over a predictive spread of about
    0.5, ``f`` by ``0.5 sin``) that costs of order 0.01 nats per observation, so the bound is
    0.02 nats per observation (0.5 over 25 steps) and 0.1 for the filtered means. The iterated
    smoother's value (a Laplace-type approximation around the posterior) is far better, and the
    Gauss-Hermite one is held to 0.01 in total.
    """
    T, q, r = 25, 0.3, 0.4
    rng = np.random.default_rng(1)
    z = [0.5]
    for _ in range(T - 1):
        z.append(z[-1] + 0.5 * np.sin(z[-1]) + q * rng.normal())
    z = np.asarray(z)
    y = z + 0.1 * z**2 + r * rng.normal(size=T)
    log_marginal, densities = grid_filter_1d(
        y,
        lambda x: norm.logpdf(x, 0.5, 1.0),
        lambda x_next, x, t: norm.logpdf(x_next, x + 0.5 * np.sin(x), q),
        lambda y_t, x, t: norm.logpdf(y_t, x + 0.1 * x**2, r),
        GRID,
    )
    grid_means = densities @ GRID * (GRID[1] - GRID[0])
    model = _mild_model(q, r)
    for method in ("ekf", "ukf", "ghkf", "ckf"):
        post = nonlinear_filter(model, y[:, None], method=method)
        assert abs(float(post.log_marginal) - log_marginal) < 0.02 * T, method
        assert np.abs(post.filtered_means[:, 0] - grid_means).max() < 0.1, method
    iterated = nonlinear_log_marginal(model, y[:, None], method="ghkf", smoother_iterations=5)
    assert abs(float(iterated) - log_marginal) < 0.01


def test_conditional_moments_likelihood_against_the_grid_and_dynamax(poisson_data):
    """A Poisson LDS: our CMGF ``log p(y)`` is near the grid's, nearer than dynamax's plug-in.

    Tolerance: 0.01 nats per count (0.25 over 25 steps) for the Gauss-Hermite and unscented
    rules; the filtered belief is Gaussian while the true one is skewed by the log link, so
    this is the approximation's error, not the cubature's (a 10-point rule is no closer).
    """
    a, q, c, T = (POISSON[k] for k in ("a", "q", "c", "T"))
    log_marginal, _ = grid_filter_1d(
        poisson_data[:, 0],
        lambda x: norm.logpdf(x, 0.0, 0.5),
        lambda x_next, x, t: norm.logpdf(x_next, a * x, q),
        lambda y_t, x, t: poisson.logpmf(y_t, np.exp(x + c)),
        np.linspace(-10.0, 10.0, 3001),
    )
    model = _poisson_model(a, q, c)
    for method in ("ukf", "ghkf"):
        ours = float(nonlinear_filter(model, poisson_data, method=method).log_marginal)
        theirs = float(_dynamax_cmgf(poisson_data, method).marginal_loglik)
        assert abs(ours - log_marginal) < 0.01 * T, method
        assert abs(ours - log_marginal) < abs(theirs - log_marginal), method


# ---------------------------------------------------------------------------------------------
# The MAP path
# ---------------------------------------------------------------------------------------------


def test_iterated_extended_smoother_converges_to_the_map_path():
    """The fixed point of the iterated extended smoother is the L-BFGS optimum of -log p(z, y).

    The pendulum, with the angle observed through ``sin``: a strongly nonlinear emission.
    """
    params, y, states = pendulum_case(T=30, r=0.05)
    mode = nonlinear_posterior_mode(params, y)
    assert bool(mode.converged)
    p = {k: float(v) for k, v in params.params.items()}
    L0 = np.asarray(params.initial_scale_tril)
    LQ = np.asarray(params.transition_scale_tril)
    r = float(params.emission_scale_tril[0, 0]) ** 2
    dt, g = p["dt"], p["g"]

    def f(z, t):
        return np.array([z[0] + dt * z[1], z[1] - g * dt * np.sin(z[0])])

    def f_jac(z, t):
        return np.array([[1.0, dt], [-g * dt * np.cos(z[0]), 1.0]])

    def nll(y_t, z, t):
        return 0.5 * (y_t[0] - np.sin(z[0])) ** 2 / r

    def nll_grad(y_t, z, t):
        return np.array([-(y_t[0] - np.sin(z[0])) * np.cos(z[0]) / r, 0.0])

    path, grad_norm = map_path_lbfgs(
        y, np.asarray(params.initial_mean), L0 @ L0.T, f, f_jac, LQ @ LQ.T, nll, nll_grad, states
    )
    assert grad_norm < 1e-6
    close(mode.path, path, rtol=0, atol=1e-6)


def test_map_path_of_a_poisson_model(poisson_data):
    """Generalized emissions: Fisher scoring's fixed point solves the Poisson score equations."""
    a, q, c = POISSON["a"], POISSON["q"], POISSON["c"]
    mode = nonlinear_posterior_mode(_poisson_model(a, q, c), poisson_data)
    assert bool(mode.converged)

    def nll(y_t, z, t):
        return np.exp(z[0] + c) - y_t[0] * (z[0] + c)

    def nll_grad(y_t, z, t):
        return np.array([np.exp(z[0] + c) - y_t[0]])

    path, grad_norm = map_path_lbfgs(
        poisson_data,
        np.zeros(1),
        0.25 * np.eye(1),
        lambda z, t: a * z,
        lambda z, t: a * np.eye(1),
        q**2 * np.eye(1),
        nll,
        nll_grad,
        np.zeros((len(poisson_data), 1)),
    )
    assert grad_norm < 1e-6
    close(mode.path, path, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Serial and parallel, float32
# ---------------------------------------------------------------------------------------------


def test_serial_equals_parallel_on_a_nonlinear_model():
    """The parallel iterated smoother equals the serial one: same trajectories, to rounding."""
    params, y, states = pendulum_case(T=24)
    y[5] = np.nan
    kw = dict(method="ukf", smoother_iterations=3)
    a, b = (nonlinear_smoother(params, y, parallel=p, **kw) for p in (False, True))
    for name, x in a._asdict().items():
        close(getattr(b, name), x, rtol=1e-9, atol=1e-9)
    start = (jnp.asarray(states), jnp.broadcast_to(0.3 * jnp.eye(2), (24, 2, 2)))
    kw = dict(method=GaussHermite(3), smoother_iterations=2, initial_trajectory=start)
    a, b = (nonlinear_smoother(params, y, parallel=p, **kw) for p in (False, True))
    for name, x in a._asdict().items():
        close(getattr(b, name), x, rtol=1e-9, atol=1e-9)


def test_float32():
    params, y, _ = pendulum_case(T=40)
    f32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    for method in ("ekf", "ukf"):
        ref = nonlinear_smoother(params, y, method=method)
        post = nonlinear_smoother(f32, y.astype(np.float32), method=method)
        assert post.smoothed_means.dtype == jnp.float32
        close(post.log_marginal, ref.log_marginal, rtol=1e-4)
        close(post.smoothed_means, ref.smoothed_means, rtol=0, atol=1e-3)


@pytest.mark.slow
def test_float32_gradients_finite_at_100k_steps():
    params, _, _ = pendulum_case(T=2)
    T = 100_000
    y = np.sin(np.linspace(0, 300, T))[:, None].astype(np.float32) * 0.9
    f32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)

    def value(p):
        return nonlinear_log_marginal(dataclasses.replace(f32, params=p), y)

    v, g = jax.jit(jax.value_and_grad(value))(f32.params)
    assert v.dtype == jnp.float32 and np.isfinite(float(v))
    assert all(np.isfinite(float(x)) for x in jax.tree.leaves(g))

"""``NonlinearGaussianSSM`` and ``GeneralizedGaussianSSM``: oracles, the model, bad input.

The generic NumPyro contract (shapes, handlers, jit/vmap, NUTS, SVI) is in
``tests/distributions/test_contract.py`` (rows ``nonlinear-*`` and ``generalized-*``); the ops'
oracles (grid filter, dynamax, L-BFGS MAP path) are in ``tests/ops/nonlinear``. Here: both
distributions with linear functions are :class:`~numpyro_ssm.LinearGaussianSSM` (float64,
1e-10), ``sample`` simulates the nonlinear model itself, and bad input fails at construction.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints

from numpyro_ssm import GeneralizedGaussianSSM, LinearGaussianSSM, NonlinearGaussianSSM

S, D, T = 2, 2, 7
RNG = np.random.default_rng(0)
F = 0.9 * np.linalg.qr(RNG.normal(size=(S, S)))[0]
H = RNG.normal(size=(D, S))
M0 = RNG.normal(size=S)
LQ = np.tril(RNG.normal(size=(S, S))) * 0.2 + 0.5 * np.eye(S)
R_DIAG = np.array([0.6, 1.1])
Y = RNG.normal(size=(T, D)) * 2.0
Y[2, 1] = np.nan
MASK = np.ones((T, D), bool)
MASK[4, 0] = False


def linear_f(z, u, p):
    return p["F"] @ z


def linear_h(z, u, p):
    return p["H"] @ z


def normal_emission(eta):
    return dist.Normal(eta, jnp.asarray(np.sqrt(R_DIAG)))


PARAMS = {"F": jnp.asarray(F), "H": jnp.asarray(H)}


def _linear(method, parallel=False, iterations=0):
    common = dict(
        initial_cov=jnp.eye(S),
        transition_scale_tril=jnp.asarray(LQ),
        params=PARAMS,
        num_steps=T,
        obs_mask=MASK,
        method=method,
        smoother_iterations=iterations,
        parallel=parallel,
    )
    nonlinear = NonlinearGaussianSSM(
        jnp.asarray(M0), linear_f, linear_h, emission_cov=jnp.diag(R_DIAG), **common
    )
    generalized = GeneralizedGaussianSSM(
        jnp.asarray(M0), linear_f, linear_h, normal_emission, **common
    )
    return nonlinear, generalized


@pytest.fixture(scope="module")
def reference():
    lgssm = LinearGaussianSSM(
        jnp.asarray(M0),
        jnp.asarray(F),
        jnp.asarray(H),
        initial_cov=jnp.eye(S),
        transition_scale_tril=jnp.asarray(LQ),
        emission_cov=jnp.diag(R_DIAG),
        num_steps=T,
        obs_mask=MASK,
    )
    return lgssm.log_prob(Y), lgssm.smooth(Y), lgssm.log_likelihood_increments(Y)


def close(a, b, rtol=1e-10, atol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "method, parallel, iterations",
    [("ukf", False, 0), ("ekf", True, 1)],
    ids=["ukf-one-pass", "ekf-iterated-parallel"],
)
def test_linear_functions_are_the_linear_gaussian_ssm(reference, method, parallel, iterations):
    """Both families, one pass or iterated and parallel, equal the Kalman model's answers."""
    value, post, increments = reference
    for d in _linear(method, parallel, iterations):
        close(d.log_prob(Y), value)
        smoothed = d.smooth(Y)
        close(smoothed.smoothed_means, post.smoothed_means)
        close(smoothed.smoothed_covariances, post.smoothed_covariances)
        close(smoothed.filtered_means, post.filtered_means)
        if iterations:
            continue  # the protocol's latents run the same passes: checked once, one pass
        latents = d.latents(Y, ("smooth", "mode"))
        close(latents.log_likelihood_increments, increments)
        close(latents.latents["smooth"]["means"], post.smoothed_means)
        close(latents.latents["mode"][""], post.smoothed_means, rtol=1e-8, atol=1e-8)


def test_sample_simulates_the_nonlinear_model():
    """Residuals of drawn paths have the model's noise law: the draws are not linearized ones.

    ``z_{t+1} - f(z_t)`` must have mean 0 and covariance ``Q`` and ``y_t - h(z_t)`` variance
    ``R``; with 4000 draws the standard error of a variance is ``~2.2 %``, so 10 % bounds pass
    with certainty and an EKF-linearized simulation (residual variance off by ``~ 40 %`` here)
    fails.
    """
    a = 1.2  # strongly nonlinear: sin over a wide state

    def f(z, u, p):
        return jnp.stack([z[0] + 0.5 * z[1], z[1] - p["a"] * jnp.sin(z[0])])

    def h(z, u, p):
        return jnp.sin(z[:1]) + 0.1 * z[1:] ** 2

    q = np.diag([0.3, 0.5])
    d = NonlinearGaussianSSM(
        jnp.array([1.0, 0.0]),
        f,
        h,
        initial_cov=jnp.eye(2),
        transition_cov=jnp.asarray(q),
        emission_cov=jnp.array([[0.2]]),
        params={"a": a},
        num_steps=5,
    )
    z, y = d.sample_with_states(jax.random.key(0), (4000,))
    assert z.shape == (4000, 5, 2) and y.shape == (4000, 5, 1)
    p = {"a": a}
    fz = jax.vmap(jax.vmap(lambda z: f(z, None, p)))(z[:, :-1])
    hz = jax.vmap(jax.vmap(lambda z: h(z, None, p)))(z)
    w = np.asarray(z[:, 1:] - fz).reshape(-1, 2)
    v = np.asarray(y - hz).reshape(-1)
    close(w.mean(0), 0.0, atol=0.03)
    close(np.cov(w.T), q, rtol=0.1, atol=0.02)
    close(v.var(), 0.2, rtol=0.1)
    np.testing.assert_array_equal(d.sample(jax.random.key(0), (4000,)), y)


def test_generalized_poisson_counts_and_masks():
    """Poisson counts: integer draws in the support, masked entries drop out of ``log_prob``."""

    def h(z, u, p):
        return p["C"] @ z + 0.5

    d = GeneralizedGaussianSSM(
        jnp.zeros(1),
        lambda z, u, p: 0.9 * z,
        h,
        lambda eta: dist.Poisson(jnp.exp(eta)),
        initial_cov=jnp.eye(1),
        transition_cov=0.1 * jnp.eye(1),
        params={"C": jnp.array([[1.0], [-0.5]])},
        num_steps=6,
        method="ghkf",
    )
    y = d.sample(jax.random.key(1))
    assert y.shape == (6, 2) and bool(jnp.all(y >= 0)) and bool(jnp.all(y == jnp.round(y)))
    assert d.support.event_dim == 2 and bool(d.support.check(y).all())
    mask = np.ones((6, 2), bool)
    mask[3] = False
    masked = GeneralizedGaussianSSM(
        jnp.zeros(1),
        d.transition_fn,
        h,
        d.emission.emission_dist,
        initial_cov=jnp.eye(1),
        transition_cov=0.1 * jnp.eye(1),
        params=d.params,
        num_steps=6,
        method="ghkf",
        obs_mask=mask,
    )
    increments = masked.log_likelihood_increments(y)
    assert float(increments[3]) == 0.0
    changed = y.at[3].set(y[3] + 5)  # a masked step's values do not matter
    close(masked.log_prob(changed), masked.log_prob(y), rtol=1e-13)
    assert np.isfinite(float(d.log_prob(y)))


# -- bad input: a clear error at construction, naming the argument ---------------------------


def _nonlinear(**kw):
    args = dict(
        initial_mean=jnp.zeros(S),
        transition_fn=linear_f,
        emission_fn=linear_h,
        initial_cov=jnp.eye(S),
        transition_cov=jnp.eye(S),
        emission_cov=jnp.eye(D),
        params=PARAMS,
        num_steps=T,
    )
    args.update(kw)
    m0, f, h = args.pop("initial_mean"), args.pop("transition_fn"), args.pop("emission_fn")
    return NonlinearGaussianSSM(m0, f, h, **args)


class _NoMoments(dist.Distribution):
    """A distribution with a log density but no mean or variance."""

    support = constraints.real

    def __init__(self, loc):
        self.loc = loc
        super().__init__(batch_shape=jnp.shape(loc))

    def log_prob(self, value):
        return -jnp.abs(value - self.loc)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="particle"), ValueError, "method"),
        (dict(transition_fn=lambda z, u, p: z[:1]), ValueError, "transition_fn"),
        (dict(emission_fn=lambda z, u, p: jnp.ones(3)), ValueError, "emission"),
        (dict(transition_fn="F"), TypeError, "transition_fn"),
        (dict(initial_cov=jnp.eye(3)), ValueError, "initial_cov"),
        (dict(transition_cov=None), ValueError, "transition_cov"),
        (dict(num_steps=None), ValueError, "num_steps"),
        (dict(smoother_iterations=-1), ValueError, "smoother_iterations"),
        (dict(initial_mean=jnp.zeros(S) + 0j), TypeError, "initial_mean"),
        (
            dict(emission_fn=lambda z, u, p: jnp.sqrt(z), validate_args=True),
            ValueError,
            "emission_fn has a non-finite Jacobian",
        ),
    ],
    ids=[
        "method",
        "transition-shape",
        "emission-shape",
        "not-callable",
        "cov-shape",
        "missing-cov",
        "no-time",
        "iterations",
        "complex",
        "jacobian",
    ],
)
def test_bad_input_is_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        _nonlinear(**kwargs)


def test_bad_observations_and_emissions():
    d = _nonlinear()
    with pytest.raises(ValueError, match=r"\(\.\.\., 7, 2\)"):
        d.log_prob(jnp.zeros((T, D + 1)))
    with pytest.raises(ValueError, match="conditional moments"):
        GeneralizedGaussianSSM(
            jnp.zeros(1),
            lambda z, u, p: z,
            lambda z, u, p: z,
            _NoMoments,
            initial_cov=jnp.eye(1),
            transition_cov=jnp.eye(1),
            num_steps=3,
        )
    with pytest.raises(ValueError, match="batch shape"):
        GeneralizedGaussianSSM(
            jnp.zeros(1),
            lambda z, u, p: z,
            lambda z, u, p: jnp.ones((2, 2)),
            lambda eta: dist.Poisson(jnp.exp(eta)),
            initial_cov=jnp.eye(1),
            transition_cov=jnp.eye(1),
            num_steps=3,
        )

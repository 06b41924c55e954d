"""numpyro_ssm.infer: leave-future-out CV (exact and PSIS-LFO) and the PSIS building block.

The statistical tests use a linear-Gaussian model with an unknown observation offset ``d``:
``d`` enters as a constant state, so the exact LFO densities ``log p(y_t | y[:t])`` and the
posteriors ``p(d | y[:t])`` are Kalman-filter outputs, and the Monte Carlo standard errors of
both estimators follow by Gauss-Hermite quadrature.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from arviz_versions import ARVIZ_1
from numpyro.infer.util import log_density

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM
from numpyro_ssm.infer import exact_lfo, past_model, psis_lfo
from numpyro_ssm.infer.lfo._psis import psis_log_weights
from numpyro_ssm.ops import LGSSMParams, hmm_filter, kalman_filter

# -- models ---------------------------------------------------------------------------------------

K = 2
PI = np.array([0.5, 0.5])
A = np.array([[0.85, 0.15], [0.25, 0.75]])
RATES = np.array([1.5, 8.0])


def hmm_model(y):
    """A plate of Poisson HMM series sharing the rates; y has shape (series, T), int counts."""
    rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([K]).to_event(1))
    with numpyro.plate("series", y.shape[0]):
        numpyro.sample("y", DiscreteHMM(PI, A, dist.Poisson(rates), num_steps=y.shape[-1]), obs=y)


def hmm_data(num_series, num_steps, seed=0):
    rng = np.random.default_rng(seed)
    states = np.zeros((num_series, num_steps), int)
    states[:, 0] = rng.integers(0, K, num_series)
    for t in range(1, num_steps):
        states[:, t] = (rng.random(num_series) < A[states[:, t - 1], 1]).astype(int)
    return rng.poisson(RATES[states])  # int64: LFO must not need NaN-able data


PHI, Q, R, PRIOR_SD = 0.5, 0.6, 0.4, 2.0
STATIONARY_VAR = Q**2 / (1 - PHI**2)


def offset_ssm(d, num_steps):
    """AR(1) state z plus an observation offset d: y_t = z_t + d + noise."""
    eye = jnp.eye(1)
    return LinearGaussianSSM(
        jnp.zeros(1),
        PHI * eye,
        eye,
        initial_cov=STATIONARY_VAR * eye,
        transition_cov=Q**2 * eye,
        emission_cov=R**2 * eye,
        emission_bias=jnp.reshape(d, (1,)),
        num_steps=num_steps,
    )


def offset_model(y):
    d = numpyro.sample("d", dist.Normal(0.0, PRIOR_SD))
    numpyro.sample("y", offset_ssm(d, y.shape[0]), obs=y)


def offset_data(num_steps, seed=1):
    return np.array(offset_ssm(1.3, num_steps).sample(jax.random.key(seed)))


def augmented_filter(y):
    """Kalman filter of the model with d as a second, constant state: d marginalized exactly."""
    params = LGSSMParams(
        initial_mean=jnp.zeros(2),
        initial_scale_tril=jnp.diag(jnp.array([np.sqrt(STATIONARY_VAR), PRIOR_SD])),
        transition_matrix=jnp.diag(jnp.array([PHI, 1.0])),
        transition_scale_tril=jnp.diag(jnp.array([Q, 0.0])),
        emission_matrix=jnp.ones((1, 2)),
        emission_scale_tril=R * jnp.eye(1),
    )
    return kalman_filter(params, jnp.asarray(y))


def d_posterior(post, t):
    """Mean and variance of p(d | y[:t])."""
    if t == 0:
        return 0.0, PRIOR_SD**2
    return float(post.filtered_means[t - 1, 1]), float(post.filtered_covariances[t - 1, 1, 1])


def exact_posterior_fit(y, num_draws):
    """A ``fit`` drawing iid from the exact p(d | y[:t]) (conjugate), no MCMC."""
    post = augmented_filter(y)

    def fit(key, model, num_observed):
        mean, var = d_posterior(post, int(num_observed))
        return {"d": mean + np.sqrt(var) * jax.random.normal(key, (num_draws,))}

    return fit


# -- the building blocks --------------------------------------------------------------------------


@pytest.mark.arviz
def test_psis_log_weights_matches_arviz():
    rng = np.random.default_rng(0)
    for num_draws, scale in [(30, 0.5), (200, 1.0), (1000, 3.0)]:
        log_ratios = scale * rng.normal(size=num_draws)
        log_weights, k_hat = psis_log_weights(log_ratios)
        if not ARVIZ_1:
            import arviz as az

            expected_lw, expected_k = az.psislw(log_ratios)
        elif scale < 3.0:  # ArviZ 1.x: arviz-stats' PSIS takes the negated log ratios
            from arviz_stats.base import array_stats

            expected_lw, expected_k = array_stats.psislw(-log_ratios)
        else:  # its k-hat estimate differs from loo's and ArviZ 0.2x's in heavy tails
            continue
        np.testing.assert_allclose(log_weights, expected_lw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(k_hat, expected_k, rtol=1e-10)
    # too few draws for a tail of 5: no smoothing, k = inf; equal ratios: k = -inf, uniform
    assert psis_log_weights(rng.normal(size=20))[1] == np.inf
    log_weights, k_hat = psis_log_weights(np.full(50, 3.0))
    assert k_hat == -np.inf
    np.testing.assert_allclose(log_weights, -np.log(50))
    with pytest.raises(ValueError, match="log_ratios"):
        psis_log_weights(np.array([0.0, np.nan]))


def test_past_model_counts_only_the_first_steps():
    y = hmm_data(2, 12)
    rates = jnp.array([1.0, 7.0])
    increments = hmm_filter(
        PI, A, dist.Poisson(rates).log_prob(y[..., None])
    ).log_likelihood_increments  # (series, T)
    prior = dist.Gamma(2.0, 0.2).log_prob(rates).sum()
    past = past_model(hmm_model, "y", y)
    for t in [0, 5, 12]:
        lp = log_density(past, (t,), {}, {"rates": rates})[0]
        np.testing.assert_allclose(lp, prior + increments[:, :t].sum(), rtol=1e-12)
    # traced num_observed (as the NUTS fit uses it)
    lp = jax.jit(lambda t: log_density(past, (t,), {}, {"rates": rates})[0])(jnp.asarray(5))
    np.testing.assert_allclose(lp, prior + increments[:, :5].sum(), rtol=1e-12)


def constant_fit(params, num_draws=50):
    """A ``fit`` whose draws all equal ``params``: the posterior is a point mass."""

    def fit(key, model, num_observed):
        return {k: jnp.broadcast_to(v, (num_draws,) + jnp.shape(v)) for k, v in params.items()}

    return fit


@pytest.mark.parametrize("lfo", [exact_lfo, psis_lfo])
def test_lfo_with_known_parameters_equals_filter_increments(lfo):
    # HMM, a plate of 2 series, 2-step-ahead windows: the joint density of both series
    y = hmm_data(2, 16)
    rates = jnp.array([1.5, 8.0])
    out = lfo(
        hmm_model,
        y,
        key=jax.random.key(0),
        min_train=11,
        num_steps_ahead=2,
        fit=constant_fit({"rates": rates}),
    )
    increments = hmm_filter(
        PI, A, dist.Poisson(rates).log_prob(y[..., None])
    ).log_likelihood_increments.sum(0)
    np.testing.assert_array_equal(out.times, np.arange(11, 15))
    expected = [increments[t : t + 2].sum() for t in out.times]
    np.testing.assert_allclose(out.pointwise, expected, rtol=1e-8)
    np.testing.assert_allclose(out.elpd, np.sum(expected), rtol=1e-8)
    assert out.num_steps_ahead == 2
    # LGSSM, one step ahead, with a missing observation in the scored window
    y = offset_data(14)
    y[11] = np.nan
    out = lfo(offset_model, y, key=jax.random.key(0), min_train=9, fit=constant_fit({"d": 1.3}))
    ssm = offset_ssm(1.3, 14)
    params = LGSSMParams(
        initial_mean=jnp.zeros(1),
        initial_scale_tril=jnp.sqrt(STATIONARY_VAR) * jnp.eye(1),
        transition_matrix=PHI * jnp.eye(1),
        transition_scale_tril=Q * jnp.eye(1),
        emission_matrix=jnp.eye(1),
        emission_scale_tril=R * jnp.eye(1),
        emission_bias=jnp.array([1.3]),
    )
    filtered = kalman_filter(params, jnp.asarray(y))
    expected = filtered.log_likelihood_increments[9:]
    np.testing.assert_allclose(out.pointwise, expected, rtol=1e-8, atol=1e-14)
    distribution = ssm.filter(y).log_likelihood_increments[9:]  # the same through the class
    np.testing.assert_allclose(out.pointwise, distribution, rtol=1e-8, atol=1e-14)
    assert abs(out.pointwise[11 - 9]) < 1e-14  # nothing observed: log p = 0
    if lfo is exact_lfo:
        assert np.isnan(out.pareto_k).all()
        np.testing.assert_array_equal(out.refit_times, out.times)
    else:  # equal draws: equal ratios, no tail (k = -inf), no refit
        assert np.isnan(out.pareto_k[0]) and np.all(out.pareto_k[1:] == -np.inf)
        np.testing.assert_array_equal(out.refit_times, [9])


# -- statistics: both estimators agree with the exact answer within their Monte Carlo error ------

GH_NODES, GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
GH_WEIGHTS = GH_WEIGHTS / GH_WEIGHTS.sum()


def increments_given_d(y, ds):
    """log p(y_t | y[:t], d) for each d, shape (len(ds), T)."""
    return np.asarray(
        jax.vmap(lambda d: offset_ssm(d, len(y)).filter(y).log_likelihood_increments)(
            jnp.asarray(ds)
        )
    )


def normal_pdf(x, mean, var):
    return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def mc_standard_errors(y, times, fit_times, num_draws):
    """Truth and Monte Carlo standard errors of log p(y_t | y[:t]) for S iid posterior draws.

    Exact LFO averages f(d) = p(y_t | y[:t], d) over d ~ p(d | y[:t]): the delta-method SE of the
    log is sd(f) / (mean(f) sqrt(S)). PSIS-LFO reweights draws from q = p(d | y[:t*]) to
    p = p(d | y[:t]); self-normalized importance sampling has asymptotic variance
    E_q[(p/q)^2 (f - mean_p f)^2] / S (smoothing only lowers it).
    """
    post = augmented_filter(y)
    truth, se_exact, se_psis = [], [], []
    for t, t_fit in zip(times, fit_times, strict=True):
        mean, var = d_posterior(post, t)
        ds = mean + np.sqrt(var) * GH_NODES
        f = np.exp(increments_given_d(y, ds)[:, t])
        p_bar = GH_WEIGHTS @ f
        truth.append(np.log(p_bar))
        se_exact.append(np.sqrt(GH_WEIGHTS @ (f - p_bar) ** 2 / num_draws) / p_bar)
        q_mean, q_var = d_posterior(post, t_fit)
        dq = q_mean + np.sqrt(q_var) * GH_NODES
        fq = np.exp(increments_given_d(y, dq)[:, t])
        ratio = normal_pdf(dq, mean, var) / normal_pdf(dq, q_mean, q_var)
        se_psis.append(np.sqrt(GH_WEIGHTS @ (ratio**2 * (fq - p_bar) ** 2) / num_draws) / p_bar)
    np.testing.assert_allclose(truth, post.log_likelihood_increments[times], rtol=1e-10)
    return np.array(truth), np.array(se_exact), np.array(se_psis)


def test_psis_lfo_agrees_with_exact_lfo_within_monte_carlo_error():
    y = offset_data(24)
    num_draws = 1000
    fit = exact_posterior_fit(y, num_draws)
    key = jax.random.key(5)
    exact = exact_lfo(offset_model, y, key=key, min_train=14, fit=fit)
    approx = psis_lfo(offset_model, y, key=key, min_train=14, fit=fit)
    times = exact.times
    np.testing.assert_array_equal(approx.times, times)
    assert approx.refit_times[0] == 14 and len(approx.refit_times) < len(times)
    assert np.all(approx.pareto_k[1:] < 0.7)
    fit_times = np.array([approx.refit_times[approx.refit_times <= t].max() for t in times])
    truth, se_exact, se_psis = mc_standard_errors(y, times, fit_times, num_draws)
    # Each estimate is within 4 standard errors of the truth, and so is their difference
    # (conservative: both share the fits at min_train and at every refit, so they correlate).
    assert np.all(np.abs(exact.pointwise - truth) < 4 * se_exact), (exact.pointwise, truth)
    assert np.all(np.abs(approx.pointwise - truth) < 4 * se_psis + 1e-12)
    assert np.all(np.abs(approx.pointwise - exact.pointwise) < 4 * np.hypot(se_exact, se_psis))
    total_se = np.sqrt(np.sum(se_exact**2 + se_psis**2))
    assert abs(approx.elpd - exact.elpd) < 4 * total_se
    np.testing.assert_allclose(approx.pointwise[0], exact.pointwise[0], rtol=1e-12)  # same fit


def test_psis_lfo_refits_when_k_exceeds_the_threshold():
    y = offset_data(20)
    fit = exact_posterior_fit(y, 200)
    always = psis_lfo(
        offset_model, y, key=jax.random.key(0), min_train=15, fit=fit, k_threshold=-np.inf
    )
    exact = exact_lfo(offset_model, y, key=jax.random.key(0), min_train=15, fit=fit)
    np.testing.assert_array_equal(always.refit_times, always.times)
    np.testing.assert_allclose(always.pointwise, exact.pointwise, rtol=1e-12)
    never = psis_lfo(
        offset_model, y, key=jax.random.key(0), min_train=15, fit=fit, k_threshold=np.inf
    )
    np.testing.assert_array_equal(never.refit_times, [15])
    assert np.all(np.isfinite(never.pareto_k[1:]))


@pytest.mark.slow
def test_lfo_with_nuts_agrees_with_the_exact_answer():
    y = offset_data(20)
    key = jax.random.key(3)
    kw = dict(key=key, min_train=16, num_warmup=150, num_samples=150, num_chains=2)
    exact = exact_lfo(offset_model, y, **kw)
    approx = psis_lfo(offset_model, y, **kw)
    fit_times = np.array([approx.refit_times[approx.refit_times <= t].max() for t in exact.times])
    # NUTS on this one-dimensional Gaussian posterior has an effective sample size near (or
    # above) the number of draws S = 2 x 150; allow ESS = S / 4 to be safe.
    truth, se_exact, se_psis = mc_standard_errors(y, exact.times, fit_times, 2 * 150 // 4)
    assert np.all(np.abs(exact.pointwise - truth) < 4 * se_exact), (exact.pointwise, truth)
    assert np.all(np.abs(approx.pointwise - truth) < 4 * se_psis + 1e-12)
    assert abs(approx.elpd - exact.elpd) < 4 * np.sqrt(np.sum(se_exact**2 + se_psis**2))


# -- misuse ---------------------------------------------------------------------------------------


def test_lfo_errors():
    y = offset_data(10)
    fit = constant_fit({"d": 0.0})
    with pytest.raises(ValueError, match="min_train"):
        exact_lfo(offset_model, y, key=jax.random.key(0), min_train=10, fit=fit)
    with pytest.raises(ValueError, match="min_train"):
        psis_lfo(offset_model, y, key=jax.random.key(0), min_train=0, fit=fit)
    with pytest.raises(ValueError, match="min_train"):  # 8 + 3 > 10
        exact_lfo(offset_model, y, key=jax.random.key(0), min_train=8, num_steps_ahead=3, fit=fit)
    with pytest.raises(ValueError, match="num_steps_ahead"):
        exact_lfo(offset_model, y, key=jax.random.key(0), min_train=5, num_steps_ahead=0, fit=fit)
    with pytest.raises(ValueError, match="key"):
        exact_lfo(offset_model, y, key=None, min_train=5, fit=fit)
    with pytest.raises(ValueError, match="num_warmup"):
        exact_lfo(offset_model, y, key=jax.random.key(0), min_train=5)
    with pytest.raises(ValueError, match="k_threshold"):
        psis_lfo(offset_model, y, key=jax.random.key(0), min_train=5, fit=fit, k_threshold="x")
    with pytest.raises(ValueError, match="fit must return a dict"):
        exact_lfo(offset_model, y, key=jax.random.key(0), min_train=5, fit=lambda *a: [1.0])
    with pytest.raises(ValueError, match="state-space-model protocol"):
        exact_lfo(offset_model, y, key=jax.random.key(0), min_train=5, fit=fit, site="d")

"""Simulation-based calibration: the rank tests against Monte Carlo, and run_sbc end to end.

The uniformity tests are numpy only (fast). run_sbc runs twice with NUTS (slow): on a calibrated
local level model, and on a family whose ``sample`` disagrees with its ``log_prob`` (a planted
bug that SBC must catch); its ``posterior_fn`` path runs on a conjugate model (fast).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import init_to_median
from oracles import ecdf_min_tail_statistic, uniform_rank_sets
from scipy import stats

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM
from numpyro_ssm.infer import (
    SBCResult,
    ecdf_envelope,
    plot_sbc_ranks,
    rank_uniformity,
    run_sbc,
    sbc_summary,
)
from numpyro_ssm.infer.sbc import chi2_rank_test, ecdf_rank_test, scalar_ranks
from numpyro_ssm.infer.sbc._uniformity import _thresholds

# -- the uniformity tests ---------------------------------------------------------------------


@pytest.mark.parametrize("num_reps, num_draws", [(30, 99), (50, 19), (12, 200)])
def test_ecdf_pvalue_equals_monte_carlo_probability(num_reps, num_draws):
    rng = np.random.default_rng(num_reps)
    thresholds, _ = _thresholds(num_reps, num_draws, None)
    reference = ecdf_min_tail_statistic(
        uniform_rank_sets(rng, 20_000, num_reps, num_draws), num_draws, thresholds
    )
    uniform = rng.integers(0, num_draws + 1, num_reps)
    shifted = np.minimum(uniform + num_draws // 8, num_draws)
    for ranks in (uniform, shifted):
        p = ecdf_rank_test(ranks, num_draws)
        p_mc = np.mean(reference <= ecdf_min_tail_statistic(ranks, num_draws, thresholds))
        assert abs(p - p_mc) < 4 * np.sqrt(max(p_mc * (1 - p_mc), 1e-4) / 20_000), (p, p_mc)


def test_ecdf_envelope_coverage_and_agreement_with_the_pvalue():
    rng = np.random.default_rng(1)
    num_reps, num_draws, alpha = 40, 99, 0.05
    z, lower, upper = ecdf_envelope(num_reps, num_draws, alpha)
    thresholds, z_ = _thresholds(num_reps, num_draws, None)
    np.testing.assert_array_equal(z, z_)
    assert np.all(lower <= z) and np.all(z <= upper)
    sets = uniform_rank_sets(rng, 20_000, num_reps, num_draws)
    ecdf = np.sum(sets[:, None, :] < thresholds[:, None], axis=-1) / num_reps
    outside = np.any((ecdf < lower) | (ecdf > upper), axis=-1)
    # simultaneous level alpha, conservative only by the discreteness of the counts
    assert 0.8 * alpha < outside.mean() < alpha + 4 * np.sqrt(alpha * (1 - alpha) / 20_000)
    # leaving the envelope is exactly a p-value at most alpha
    for ranks, left in zip(sets[:300], outside[:300], strict=True):
        assert left == (ecdf_rank_test(ranks, num_draws) <= alpha)


def test_chi2_rank_test_equals_scipy_on_equal_bins():
    rng = np.random.default_rng(2)
    ranks = rng.integers(0, 100, 80)  # L = 99: 100 values, 10 bins of 10
    statistic, p, bins = chi2_rank_test(ranks, 99, num_bins=10)
    reference = stats.chisquare(np.bincount(ranks // 10, minlength=10))
    assert bins == 10
    np.testing.assert_allclose([statistic, p], [reference.statistic, reference.pvalue], rtol=1e-12)
    # unequal bins: each bin's expected count is proportional to its rank values
    ranks = ranks.clip(0, 98)
    statistic, p, bins = chi2_rank_test(ranks, 98, num_bins=10)
    edges = np.unique(np.round(np.linspace(0, 99, 11)).astype(int))
    observed = np.histogram(ranks, edges)[0]
    expected = 80 * np.diff(edges) / 99
    np.testing.assert_allclose(statistic, np.sum((observed - expected) ** 2 / expected))


def test_rank_tests_reject_bad_input():
    with pytest.raises(ValueError, match="0..num_draws=9"):
        rank_uniformity(np.array([0, 10]), 9)
    with pytest.raises(ValueError, match="1-d"):
        ecdf_rank_test(np.zeros((2, 2), int), 9)
    with pytest.raises(ValueError, match="alpha"):
        ecdf_envelope(10, 9, alpha=1.5)


def _fake_result(rng, num_reps=30, num_draws=49):
    ranks = {
        "a": rng.integers(0, num_draws + 1, num_reps),
        "b": rng.integers(0, num_draws + 1, (num_reps, 2, 2)),
    }
    zeros = np.zeros(num_reps)
    return SBCResult(ranks, num_draws, {}, {}, {}, zeros.astype(int), zeros, zeros)


def test_scalar_ranks_labels_and_plot():
    result = _fake_result(np.random.default_rng(3))
    labels = list(scalar_ranks(result))
    assert labels == ["a", "b[0,0]", "b[0,1]", "b[1,0]", "b[1,1]"]
    np.testing.assert_array_equal(scalar_ranks(result)["b[1,0]"], result.ranks["b"][:, 1, 0])
    assert set(sbc_summary(result)) == set(labels)
    fig = plot_sbc_ranks(result, labels=["a", "b[0,1]", "b[1,1]"], max_columns=2)
    assert len([ax for ax in fig.axes if ax.get_visible() and ax.axison]) == 6
    with pytest.raises(ValueError, match="unknown labels"):
        plot_sbc_ranks(result, labels=["c"])


# -- run_sbc with an exact posterior (posterior_fn) -------------------------------------------

NUM_OBS = 5


def normal_model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0).expand([NUM_OBS]).to_event(1), obs=y)


def conjugate_posterior(scale_factor):
    def posterior_fn(key, data):
        precision = 1.0 + NUM_OBS
        mean = jnp.sum(data["y"]) / precision
        draws = mean + scale_factor * jax.random.normal(key, (200,)) / jnp.sqrt(precision)
        return {"mu": draws}

    return posterior_fn


def test_run_sbc_with_exact_posterior_is_calibrated_and_overconfidence_is_caught():
    kwargs = dict(num_replications=300, thinning=2, observed="y")
    exact = run_sbc(
        jax.random.key(0), normal_model, posterior_fn=conjugate_posterior(1.0), **kwargs
    )
    assert exact.num_draws == 100 and exact.ranks["mu"].shape == (300,)
    assert exact.simulated["y"].shape == (300, NUM_OBS)
    assert exact.posterior_draws["mu"].shape == (300, 1, 100)
    test = sbc_summary(exact)["mu"]
    assert test.chi2_pvalue > 1e-3 and test.ecdf_pvalue > 1e-3, test
    narrow = run_sbc(
        jax.random.key(0), normal_model, posterior_fn=conjugate_posterior(0.6), **kwargs
    )
    test = sbc_summary(narrow)["mu"]
    assert test.chi2_pvalue < 1e-4 and test.ecdf_pvalue < 1e-4, test


def test_run_sbc_errors():
    with pytest.raises(ValueError, match="no free state-space-model site"):
        run_sbc(jax.random.key(0), normal_model)
    with pytest.raises(ValueError, match="not free sample sites"):
        run_sbc(jax.random.key(0), normal_model, observed="z")
    with pytest.raises(ValueError, match="multiple of thinning"):
        run_sbc(jax.random.key(0), normal_model, observed="y", num_samples=10, thinning=3)

    def discrete(y=None):
        k = numpyro.sample("k", dist.Categorical(jnp.ones(3) / 3))
        numpyro.sample("y", dist.Normal(k, 1.0), obs=y)

    with pytest.raises(ValueError, match="discrete"):
        run_sbc(jax.random.key(0), discrete, observed="y")


# -- run_sbc with NUTS ------------------------------------------------------------------------

T = 20


def local_level(y=None, num_steps=T, ssm_class=LinearGaussianSSM):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    level = numpyro.sample("level", dist.HalfNormal(1.0))
    ssm = ssm_class(
        jnp.zeros(1),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1),
        transition_scale_tril=level * jnp.eye(1),
        emission_scale_tril=sigma * jnp.eye(1),
        num_steps=num_steps,
    )
    numpyro.sample("y", ssm, obs=y)


NUTS_SETTINGS = dict(num_warmup=120, num_samples=150, thinning=3)


@pytest.mark.slow
def test_run_sbc_local_level_is_calibrated():
    # 36 replications in batches of 24: the second batch is padded and reuses the compilation
    result = run_sbc(
        jax.random.key(1), local_level, num_replications=36, batch_size=24, **NUTS_SETTINGS
    )
    assert result.num_draws == 100 and set(result.ranks) == {"sigma", "level"}
    assert result.simulated["y"].shape == (36, T, 1)
    for name, ranks in result.ranks.items():
        draws, truth = result.posterior_draws[name], result.prior_draws[name]
        assert draws.shape == (36, 2, 50)
        np.testing.assert_array_equal(ranks, np.sum(draws < truth[:, None, None], axis=(1, 2)))
    assert result.num_divergent.shape == (36,) and np.nanmax(result.max_rhat) < 1.3
    for label, test in sbc_summary(result).items():
        assert test.chi2_pvalue > 1e-3 / 2 and test.ecdf_pvalue > 1e-3 / 2, (label, test)


class ScaledSampleSSM(LinearGaussianSSM):
    """A planted bug: ``sample`` draws observations twice too large for ``log_prob``."""

    def sample(self, key, sample_shape=()):
        return 2.0 * super().sample(key, sample_shape)


@pytest.mark.slow
def test_run_sbc_catches_a_sample_log_prob_mismatch():
    started = set()

    def median_start(site=None):  # the chains start where init_strategy says
        if site is None:  # NumPyro's convention: called without a site, return a partial
            return functools.partial(median_start)
        if site["type"] == "sample" and not site["is_observed"]:
            started.add(site["name"])
        return init_to_median(site)

    result = run_sbc(
        jax.random.key(2),
        local_level,
        num_replications=24,
        num_chains=1,
        ssm_class=ScaledSampleSSM,
        init_strategy=median_start,
        **NUTS_SETTINGS,
    )
    assert started == {"sigma", "level"}
    sigma = sbc_summary(result)["sigma"]
    assert sigma.ecdf_pvalue < 1e-4, sigma
    # the data look twice as noisy as sigma says: the posterior sits above the truth
    assert np.mean(result.ranks["sigma"] < result.num_draws // 10) > 0.5


def masked_poisson_hmm(y=None, obs_mask=None):
    low = numpyro.sample("low", dist.Gamma(4.0, 2.0))
    gap = numpyro.sample("gap", dist.Gamma(6.0, 1.0))
    hmm = DiscreteHMM(
        jnp.ones(2) / 2,
        jnp.array([[0.9, 0.1], [0.2, 0.8]]),
        dist.Poisson(jnp.stack([low, low + gap])),
        obs_mask=obs_mask,
    )
    numpyro.sample("y", hmm, obs=y)


@pytest.mark.slow
def test_run_sbc_masked_poisson_hmm_is_calibrated():
    mask = jnp.arange(30) % 7 != 3  # T = 30 from the mask; steps 3, 10, 17, 24 unobserved
    result = run_sbc(
        jax.random.key(3),
        masked_poisson_hmm,
        num_replications=24,
        num_chains=1,
        obs_mask=mask,
        **NUTS_SETTINGS,
    )
    assert result.simulated["y"].shape == (24, 30)
    for label, test in sbc_summary(result).items():
        assert test.chi2_pvalue > 1e-3 / 2 and test.ecdf_pvalue > 1e-3 / 2, (label, test)

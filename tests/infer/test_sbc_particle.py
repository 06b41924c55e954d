"""Simulation-based calibration of ParticleSSM fitted by PMMH (run_sbc with pmmh_posterior_fn).

PMMH targets the exact posterior for any particle count, so data simulated by
``ParticleSSM.sample`` and fitted through the particle filter's estimate must give uniform
ranks. The calibrated run (40 replications, correlated moves, N = 32, T = 20) must pass both
rank tests at the 1e-3 level each (Bonferroni over two parameters, 2.5e-4 in the asserts
below, as in ``test_sbc.py``). It can fail: a planted bug, a ``sample`` that draws data twice
as large as the filter's emission law says, is rejected at p < 1e-4 from 24 replications.
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import ParticleSSM
from numpyro_ssm.infer import pmmh_posterior_fn, run_sbc, sbc_summary

T = 20


def transition_fn(z, u, params):
    level, _ = params
    return dist.Normal(z, level)


def emission_fn(z, u, params):
    _, sigma = params
    return dist.Normal(z, sigma)


def local_level(y=None, num_steps=T, ssm_class=ParticleSSM):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    level = numpyro.sample("level", dist.HalfNormal(1.0))
    ssm = ssm_class(
        dist.Normal(0.0, 1.0),
        transition_fn,
        emission_fn,
        (level, sigma),
        num_steps=num_steps,
        num_particles=32,
    )
    numpyro.sample("y", ssm, obs=y)


class ScaledSampleSSM(ParticleSSM):
    """A planted bug: ``sample`` draws observations twice too large for the filter."""

    def sample(self, key, sample_shape=()):
        return 2.0 * super().sample(key, sample_shape)


def run(key, num_replications, num_warmup, num_samples, thinning, ssm_class=ParticleSSM):
    posterior_fn = pmmh_posterior_fn(
        local_level,
        ssm_class=ssm_class,
        num_warmup=num_warmup,
        num_samples=num_samples,
        pmmh_options=dict(correlation=0.9),
    )
    return run_sbc(
        key,
        local_level,
        ssm_class=ssm_class,
        num_replications=num_replications,
        num_samples=num_samples,
        thinning=thinning,
        posterior_fn=posterior_fn,
    )


@pytest.mark.slow
def test_pmmh_sbc_is_calibrated():
    result = run(jax.random.key(1), 40, num_warmup=300, num_samples=1000, thinning=10)
    assert result.num_draws == 100 and set(result.ranks) == {"sigma", "level"}
    assert result.simulated["y"].shape == (40, T)
    for name, ranks in result.ranks.items():
        draws, truth = result.posterior_draws[name], result.prior_draws[name]
        assert draws.shape == (40, 1, 100) and (draws > 0).all()
        np.testing.assert_array_equal(ranks, np.sum(draws < truth[:, None, None], axis=(1, 2)))
    # the chains move: thinned draws are not one repeated value
    assert np.median(result.min_ess) > 10, result.min_ess
    for label, test in sbc_summary(result).items():
        assert test.chi2_pvalue > 1e-3 / 4 and test.ecdf_pvalue > 1e-3 / 4, (label, test)


@pytest.mark.slow
def test_pmmh_sbc_catches_a_sample_filter_mismatch():
    result = run(
        jax.random.key(2),
        24,
        num_warmup=200,
        num_samples=500,
        thinning=5,
        ssm_class=ScaledSampleSSM,
    )
    sigma = sbc_summary(result)["sigma"]
    assert sigma.ecdf_pvalue < 1e-4, sigma
    # the data look twice as noisy as sigma says: the posterior sits above the truth
    assert np.mean(result.ranks["sigma"] < result.num_draws // 10) > 0.5


def test_pmmh_posterior_fn_bad_input():
    with pytest.raises(ValueError, match="num_warmup must be an int >= 0"):
        pmmh_posterior_fn(local_level, num_warmup=-1, num_samples=10)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        pmmh_posterior_fn(local_level, num_warmup=10, num_samples=0)
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        pmmh_posterior_fn(
            local_level, num_warmup=10, num_samples=10, pmmh_options=dict(num_particles=0)
        )

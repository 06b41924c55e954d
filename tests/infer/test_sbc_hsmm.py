"""Simulation-based calibration of DiscreteHSMM: NUTS on its marginal likelihood, ranks tested.

The data come from ``DiscreteHSMM.sample`` (the segment process simulated forward, the last
segment cut off by the end of the data) and the fits use ``log_prob`` (the forward algorithm with
the right-censored last segment) and its one-pass gradient, so uniform ranks check that the two
agree, masked steps included. The same run on a model whose ``sample`` makes every segment one
step longer than its ``log_prob`` says (a planted off-by-one in the durations) must fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import DiscreteHSMM
from numpyro_ssm.infer import run_sbc, sbc_summary

T, K, MAX_DURATION = 40, 2, 12
MASK = np.arange(T) % 9 != 4  # steps 4, 13, 22, 31 unobserved
SWITCH = jnp.array([[0.0, 1.0], [1.0, 0.0]])
# one chain: the replications, not the draws per replication, give a rank test its power
NUTS_SETTINGS = dict(num_warmup=100, num_samples=150, num_chains=1, thinning=3)
LEVEL = 1e-3  # each p-value of a calibrated run is rejected with probability LEVEL / 2


class LongerSegmentsHSMM(DiscreteHSMM):
    """A planted bug: ``sample`` simulates durations one step longer than ``log_prob`` scores."""

    def sample(self, key, sample_shape=()):
        longer = DiscreteHSMM(
            self.initial_probs, SWITCH, self.emission_dist, self.duration_dist,
            duration_offset=self.duration_offset + 1, max_duration=MAX_DURATION + 1,
            obs_mask=self.obs_mask,
        )  # fmt: skip
        return longer.sample(key, sample_shape)


def poisson_hsmm(y=None, hsmm_class=DiscreteHSMM):
    """Poisson emissions with ordered rates, ``d - 1 ~ Poisson(dwell)`` shared by both states."""
    low = numpyro.sample("low", dist.Gamma(4.0, 2.0))
    gap = numpyro.sample("gap", dist.Gamma(6.0, 1.0))
    dwell = numpyro.sample("dwell", dist.Gamma(6.0, 2.0))
    hsmm = hsmm_class(
        jnp.ones(K) / K, SWITCH, dist.Poisson(jnp.stack([low, low + gap])), dist.Poisson(dwell),
        duration_offset=1, max_duration=MAX_DURATION, obs_mask=MASK,
    )  # fmt: skip
    numpyro.sample("y", hsmm, obs=y)


@pytest.mark.slow
def test_sbc_poisson_hsmm_is_calibrated():
    result = run_sbc(jax.random.key(0), poisson_hsmm, num_replications=24, **NUTS_SETTINGS)
    assert result.simulated["y"].shape == (24, T) and result.num_draws == 50
    assert set(result.ranks) == {"low", "gap", "dwell"}
    for label, test in sbc_summary(result).items():
        assert test.chi2_pvalue > LEVEL / 2 and test.ecdf_pvalue > LEVEL / 2, (label, test)


@pytest.mark.slow
def test_sbc_catches_segments_one_step_longer_than_log_prob_says():
    planted = run_sbc(
        jax.random.key(0),
        poisson_hsmm,
        hsmm_class=LongerSegmentsHSMM,
        num_replications=32,
        **NUTS_SETTINGS,
    )
    dwell = sbc_summary(planted)["dwell"]
    assert dwell.ecdf_pvalue < 1e-4, dwell
    # the segments look longer than dwell says: the posterior sits above the truth, so the true
    # value ranks low (uniform ranks average num_draws / 2, with a standard error of 2.6 here)
    assert np.mean(planted.ranks["dwell"]) < 0.35 * planted.num_draws, planted.ranks["dwell"]

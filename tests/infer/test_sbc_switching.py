"""Simulation-based calibration of the switching family: AutoregressiveHMM and StickyDirichlet.

Prior draws come from ``StickyDirichlet.sample`` and the data from ``AutoregressiveHMM.sample``,
which draws every observation recursively from its own lags; NUTS fits them through the two
``log_prob``s (the transition rows through NumPyro's stick-breaking transform). Ranks are uniform
only if all four agree. The planted bug below draws the data with twice the noise scale that
``log_prob`` assumes (a scale-versus-covariance slip), which the rank test must catch.

Sizes keep it near a minute of CPU: 20 replications of T = 30 (one chain, 100 warmup, 90 draws
thinned by 3, tree depth at most 6) and 12 for the planted bug.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import AutoregressiveHMM, StickyDirichlet
from numpyro_ssm.infer import run_sbc, sbc_summary

K, T = 2, 30
SETTINGS = dict(num_warmup=100, num_samples=90, num_chains=1, thinning=3, max_tree_depth=6)


class NoisySampleARHMM(AutoregressiveHMM):
    """A planted bug: ``sample`` draws the noise with twice the scale ``log_prob`` assumes."""

    def sample(self, key, sample_shape=()):
        noisy = AutoregressiveHMM(
            self.initial_probs,
            self.transition_matrix,
            self.ar_matrix,
            ar_bias=self.ar_bias,
            ar_scale_tril=2.0 * self.ar_scale_tril,
            initial_lags=self.initial_lags,
            num_steps=self.num_steps,
        )
        return noisy.sample(key, sample_shape)


def switching_ar(y=None, arhmm_class=AutoregressiveHMM):
    """Two regimes with ordered means (no label switching), a sticky transition prior."""
    P = numpyro.sample("P", StickyDirichlet(2.0, 6.0, num_states=K))
    loc = numpyro.sample("loc", dist.Normal(0.0, 1.0))
    gap = numpyro.sample("gap", dist.Gamma(6.0, 2.0))
    coef = numpyro.sample("coef", dist.Uniform(-0.8, 0.8).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.7))
    arhmm = arhmm_class(
        jnp.ones(K) / K,
        P,
        coef[:, None, None],
        ar_bias=jnp.stack([loc, loc + gap])[:, None],
        ar_scale_tril=sigma * jnp.broadcast_to(jnp.eye(1), (K, 1, 1)),
        initial_lags=jnp.zeros((1, 1)),
        num_steps=T,
    )
    numpyro.sample("y", arhmm, obs=y)


@pytest.mark.slow
def test_sbc_switching_ar_is_calibrated_and_a_noisy_sampler_is_caught():
    result = run_sbc(jax.random.key(0), switching_ar, num_replications=20, **SETTINGS)
    assert result.num_draws == 30 and result.simulated["y"].shape == (20, T, 1)
    assert set(result.ranks) == {"P", "loc", "gap", "coef", "sigma"}
    summary = sbc_summary(result)
    level = 1e-3 / len(summary)  # Bonferroni over the 9 scalar parameters
    for label, test in summary.items():
        assert test.chi2_pvalue > level and test.ecdf_pvalue > level, (label, test)

    planted = run_sbc(
        jax.random.key(0),
        switching_ar,
        num_replications=12,
        arhmm_class=NoisySampleARHMM,
        **SETTINGS,
    )
    sigma = sbc_summary(planted)["sigma"]
    assert sigma.ecdf_pvalue < 1e-4, sigma
    # the data look twice as noisy as sigma says: the posterior sits above the truth (rank 0:
    # no draw below it)
    assert np.mean(planted.ranks["sigma"] < planted.num_draws // 10) > 0.5

"""Simulation-based calibration of a structural model with an exact diffuse start.

``sample`` cannot draw from the improper (flat) prior of the diffuse level: it starts it at
``initial_mean``. The diffuse log-likelihood is the density of the data's contrasts that do not
depend on that start (de Jong 1991), so the posterior of the scales is calibrated whatever the
start: the ranks must be uniform. The test fails at the stated level when they are not.
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import sts
from numpyro_ssm.infer import run_sbc, sbc_summary

T = 20


def local_level(y=None, num_steps=T):
    level = numpyro.sample("level_scale", dist.HalfNormal(1.0))
    noise = numpyro.sample("noise_scale", dist.HalfNormal(1.0))
    structure = sts.local_level(level, initial_mean=5.0) + sts.irregular(noise)
    numpyro.sample("y", structure.distribution(num_steps), obs=y)


@pytest.mark.slow
def test_sts_local_level_with_diffuse_start_is_calibrated():
    result = run_sbc(
        jax.random.key(4),
        local_level,
        num_replications=36,
        batch_size=24,
        num_warmup=120,
        num_samples=150,
        num_chains=1,
        thinning=3,
    )
    assert set(result.ranks) == {"level_scale", "noise_scale"} and result.num_draws == 50
    # the chains move: the thinned draws are not one repeated value
    assert np.median(result.min_ess) > 10, result.min_ess
    # each p-value at level 1e-3 / 2 (two tests per parameter)
    for label, test in sbc_summary(result).items():
        assert test.chi2_pvalue > 1e-3 / 2 and test.ecdf_pvalue > 1e-3 / 2, (label, test)

"""Simulation-based calibration of the nonlinear family (issue 23 section 1).

A Poisson linear dynamical system, ``GeneralizedGaussianSSM`` with the log-rate integrated out
by conditional-moments filtering (``"ghkf"``): ``run_sbc`` simulates counts with the model's own
``sample`` (exact) and fits them by NUTS on the approximate ``log_prob``. So the test checks the
approximate posterior against the true generative model: with 24 replications (one chain
each, 50 thinned draws), the chi-square and ECDF rank tests must not reject uniformity at the
1e-3 level (Bonferroni over the two parameters). The filter's likelihood error on this model
is about 0.01 nats per count (``tests/ops/nonlinear/test_oracles.py``), far below what 24
replications can resolve; a plug-in likelihood or a sample/log_prob mismatch (a level shifted
by log 2) is rejected by the same test (``docs/calibration.md``).
"""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import GeneralizedGaussianSSM
from numpyro_ssm.infer import run_sbc, sbc_summary

T = 20


def _ar1(z, u, p):
    return p["a"] * z


def _log_rate(z, u, p):
    return z + p["level"]


def _poisson(eta):
    return dist.Poisson(jnp.exp(eta))


def poisson_lds(y=None, num_steps=T):
    level = numpyro.sample("level", dist.Normal(1.5, 0.5))
    a = numpyro.sample("a", dist.Uniform(0.0, 0.95))
    ssm = GeneralizedGaussianSSM(
        jnp.zeros(1),
        _ar1,
        _log_rate,
        _poisson,
        initial_cov=0.25 * jnp.eye(1),
        transition_cov=0.1 * jnp.eye(1),
        params={"level": level, "a": a},
        num_steps=num_steps,
        method="ghkf",
    )
    numpyro.sample("y", ssm, obs=y)


@pytest.mark.slow
def test_poisson_lds_cmgf_posterior_is_calibrated():
    result = run_sbc(
        jax.random.key(0),
        poisson_lds,
        num_replications=24,
        num_warmup=100,
        num_samples=150,
        num_chains=1,
        thinning=3,
    )
    assert result.num_draws == 50 and set(result.ranks) == {"level", "a"}
    assert result.simulated["y"].shape == (24, T, 1)
    for label, test in sbc_summary(result).items():
        assert test.chi2_pvalue > 1e-3 / 2 and test.ecdf_pvalue > 1e-3 / 2, (label, test)

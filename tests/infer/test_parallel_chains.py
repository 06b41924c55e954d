"""NumPyro's ``chain_method="parallel"`` (one chain per device, ``pmap``) with our distributions.

Runs in a subprocess with 2 emulated CPU devices, because the device count is fixed when JAX
starts.
"""

import subprocess
import sys
import textwrap

import pytest
from emulated_devices import emulated_devices_env

SCRIPT = textwrap.dedent(
    """
    import warnings
    # NumPyro falls back to sequential chains, with a warning, when devices are missing.
    warnings.filterwarnings("error", message=".*enough devices.*")
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import log_likelihood

    from numpyro_ssm import DiscreteHMM, LinearGaussianSSM
    from numpyro_ssm.infer import pointwise_log_likelihood, to_inference_data

    assert jax.device_count() == 2, jax.devices()
    A = np.array([[0.9, 0.1], [0.2, 0.8]])

    def hmm_model(y):
        rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
        numpyro.sample("y", DiscreteHMM(np.ones(2) / 2, A, dist.Poisson(rates),
                                        num_steps=y.shape[-1]), obs=y)

    def lgssm_model(y):
        q = numpyro.sample("q", dist.HalfNormal(1.0))
        r = numpyro.sample("r", dist.HalfNormal(1.0))
        ssm = LinearGaussianSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1),
                                initial_cov=10.0 * jnp.eye(1), transition_cov=q**2 * jnp.eye(1),
                                emission_cov=r**2 * jnp.eye(1), num_steps=y.shape[0])
        numpyro.sample("y", ssm, obs=y)

    rng = np.random.default_rng(0)
    data = {
        "hmm": (hmm_model, rng.poisson(rng.choice([1.0, 8.0], size=15)).astype(float)),
        "lgssm": (lgssm_model, np.cumsum(rng.normal(size=(15, 1)), 0) + rng.normal(size=(15, 1))),
    }
    for name, (model, y) in data.items():
        mcmc = MCMC(NUTS(model), num_warmup=60, num_samples=20, num_chains=2,
                    chain_method="parallel", progress_bar=False)
        mcmc.run(jax.random.key(0), y)
        idata = to_inference_data(mcmc)
        for var in idata.posterior.data_vars:
            assert idata.posterior[var].sizes["chain"] == 2, (name, var)
            assert idata.posterior[var].sizes["draw"] == 20, (name, var)
        ll = idata.log_likelihood["y"]
        assert ll.dims == ("chain", "draw", "time") and ll.shape == (2, 20, 15), ll.shape
        # the per-step terms sum to the site's log_prob, draw by draw
        samples = mcmc.get_samples(group_by_chain=True)
        log_prob = log_likelihood(model, samples, y, batch_ndims=2)["y"]
        np.testing.assert_allclose(ll.sum("time").values, log_prob, rtol=1e-10)
        direct = pointwise_log_likelihood(model, samples, y, batch_ndims=2)["y"]
        np.testing.assert_allclose(ll.values, direct, rtol=1e-12)
        # the chains ran on both devices and differ
        assert not np.allclose(ll.values[0], ll.values[1]), name
        print(name, "OK")
    print("OK")
    """
)


@pytest.mark.arviz
def test_parallel_chains_with_hmm_and_lgssm():
    env = emulated_devices_env(2)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK"), out.stdout

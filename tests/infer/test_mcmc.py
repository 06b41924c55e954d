"""numpyro_ssm.infer samplers: BlackJAX bridge and the FFBS Gibbs step agree with NumPyro NUTS."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS, HMCGibbs

from numpyro_ssm import DiscreteHMM
from numpyro_ssm.infer import ffbs_gibbs_fn, posterior_latents

K = 2
PI = np.array([0.5, 0.5])
A = np.array([[0.85, 0.15], [0.25, 0.75]])
Y = np.array([1.0, 2.0, 9.0, 11.0, 8.0, 0.0, 3.0, 12.0, 10.0, 1.0])
T = len(Y)


def rates_prior():
    """Ordered rates (no label switching): a low rate and a positive gap."""
    low = numpyro.sample("low", dist.Gamma(2.0, 1.0))
    gap = numpyro.sample("gap", dist.Gamma(2.0, 0.25))
    return numpyro.deterministic("rates", jnp.stack([low, low + gap]))


def rates_of(sites):
    """The deterministic rates from the HMC sites (gibbs_fn sees sample sites only)."""
    return jnp.stack([sites["low"], sites["low"] + sites["gap"]])


def hmm_of(rates):
    return DiscreteHMM(PI, A, dist.Poisson(rates), num_steps=T)


def marginal_model(y):
    numpyro.sample("y", hmm_of(rates_prior()), obs=y)


def explicit_model(y):
    rates = rates_prior()
    z = numpyro.sample("z", dist.Categorical(jnp.asarray(PI)).expand([T]).to_event(1))
    numpyro.factor("z_transitions", jnp.log(jnp.asarray(A)[z[:-1], z[1:]]).sum())
    numpyro.sample("y", dist.Poisson(rates[z]).to_event(1), obs=y)


def mean_and_mcse(x):
    """Posterior mean and its Monte Carlo standard error, x of shape (chains, draws)."""
    x = np.asarray(x)
    return x.mean(), x.std() / np.sqrt(effective_sample_size(x))


def assert_agree(a, b, sites=("low", "gap")):
    for site in sites:
        (ma, sa), (mb, sb) = mean_and_mcse(a[site]), mean_and_mcse(b[site])
        assert abs(ma - mb) < 4 * np.hypot(sa, sb), (site, ma, sa, mb, sb)


@pytest.fixture(scope="module")
def marginal_nuts():
    """NumPyro NUTS on the marginalized model: the reference posterior."""
    mcmc = MCMC(
        NUTS(marginal_model),
        num_warmup=300,
        num_samples=400,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), Y)
    return mcmc.get_samples(group_by_chain=True)


@pytest.mark.slow
def test_run_blackjax_agrees_with_numpyro_nuts(marginal_nuts):
    from numpyro_ssm.infer import run_blackjax

    result = run_blackjax(
        marginal_model, Y, key=jax.random.key(1), num_warmup=300, num_samples=400, num_chains=2
    )
    assert result.samples["low"].shape == (2, 400)
    assert result.samples["rates"].shape == (2, 400, K)  # deterministic sites included
    assert set(result.sample_stats) == {"diverging", "acceptance_rate", "n_steps", "lp"}
    idata = result.inference_data
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "time")
    assert idata.sample_stats["diverging"].shape == (2, 400)
    assert_agree(result.samples, marginal_nuts)


@pytest.mark.slow
def test_run_blackjax_hmc_runs():
    from numpyro_ssm.infer import run_blackjax

    result = run_blackjax(
        marginal_model,
        Y,
        key=jax.random.key(3),
        num_warmup=50,
        num_samples=20,
        algorithm="hmc",
        num_integration_steps=5,
        return_inference_data=False,
    )
    assert result.samples["gap"].shape == (1, 20) and result.inference_data is None
    assert np.all(result.sample_stats["n_steps"] == 5)
    with pytest.raises(ValueError, match="algorithm"):
        run_blackjax(
            marginal_model, Y, key=jax.random.key(0), num_warmup=1, num_samples=1, algorithm="mala"
        )


@pytest.mark.slow
def test_hmc_gibbs_with_ffbs_agrees_with_marginalized_model(marginal_nuts):
    gibbs_fn = ffbs_gibbs_fn("z", lambda s: hmm_of(rates_of(s)), observations=Y)
    kernel = HMCGibbs(NUTS(explicit_model), gibbs_fn=gibbs_fn, gibbs_sites=["z"])
    mcmc = MCMC(
        kernel,
        num_warmup=300,
        num_samples=400,
        num_chains=2,
        chain_method=jax.vmap,  # HMCGibbs takes a single key; a callable chain method vectorizes
        progress_bar=False,
    )
    mcmc.run(jax.random.key(4), Y)
    gibbs = mcmc.get_samples(group_by_chain=True)
    assert gibbs["z"].shape == (2, 400, T)
    assert_agree(gibbs, marginal_nuts)
    # the Gibbs paths' state frequencies match the marginalized model's smoothed marginals
    probs = posterior_latents(marginal_model, marginal_nuts, Y, batch_ndims=2)["y"][..., 1]
    freq, mcse = mean_and_mcse(np.asarray(gibbs["z"] == 1).reshape(2, -1))
    assert abs(freq - float(np.mean(probs))) < 4 * mcse + 0.02


def test_ffbs_gibbs_fn_pieces_form_equals_distribution_form():
    sites = {"low": jnp.array(1.5), "gap": jnp.array(7.0)}
    current = {"z": jnp.zeros(T, jnp.int64)}
    by_dist = ffbs_gibbs_fn("z", lambda s: hmm_of(rates_of(s)), observations=Y)
    by_pieces = ffbs_gibbs_fn(
        "z", lambda s: (PI, A, dist.Poisson(rates_of(s)).log_prob(Y[:, None]))
    )
    for seed in range(3):
        a = by_dist(rng_key=jax.random.key(seed), gibbs_sites=current, hmc_sites=sites)["z"]
        b = by_pieces(rng_key=jax.random.key(seed), gibbs_sites=current, hmc_sites=sites)["z"]
        np.testing.assert_array_equal(a, b)
        assert a.shape == (T,) and a.dtype == current["z"].dtype


def test_ffbs_gibbs_fn_errors():
    with pytest.raises(ValueError, match="observations"):
        ffbs_gibbs_fn("z", lambda s: hmm_of(rates_of(s)))(
            jax.random.key(0), {}, {"low": 1.0, "gap": 2.0}
        )
    with pytest.raises(ValueError, match="must return"):
        ffbs_gibbs_fn("z", lambda s: 3.0)(jax.random.key(0), {}, {})

"""PMMH: the parameter posterior equals NUTS's on the exact Kalman likelihood; the cache is exact.

The posterior comparison uses quantiles 10 %, 50 %, 90 % of both parameters and allows 4
Monte Carlo standard errors of their difference (ArviZ's quantile MCSE of each run, combined).
With the chain lengths here that is 0.03 to 0.08 on posteriors whose 80 % intervals are 0.25
to 0.35 wide, and a quantile off by a tenth of that width fails. The cache itself is tested
directly (a rejected step leaves the estimate bit for bit; ``refresh`` with the stored
randomness reproduces it): a kernel that re-estimated the current likelihood at every step (the
known pitfall) moved q's 90 % quantile from 0.85 to 0.90 here at N = 64, about the size of
the tolerance, so the posterior comparison alone would not be a reliable detector.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

from numpyro_ssm import LinearGaussianSSM, ParticleSSM
from numpyro_ssm.infer import PMMH, log_likelihood_estimates, to_inference_data

T, R = 40, 0.5


def transition_fn(z, u, params):
    phi, q = params
    return dist.Normal(phi * z, q)


def emission_fn(z, u, params):
    return dist.Normal(z, R)


def priors():
    phi = numpyro.sample("phi", dist.Uniform(-1.0, 1.0))
    q = numpyro.sample("q", dist.HalfNormal(1.0))
    return phi, q


def particle_model(y, num_particles=64, ess_threshold=0.5):
    phi, q = priors()
    ssm = ParticleSSM(
        dist.Normal(0.0, 1.0),
        transition_fn,
        emission_fn,
        (phi, q),
        num_steps=y.shape[0],
        num_particles=num_particles,
        ess_threshold=ess_threshold,
    )
    numpyro.sample("y", ssm, obs=y)


def exact_model(y):
    phi, q = priors()
    ssm = LinearGaussianSSM(
        jnp.zeros(1),
        phi[None, None],
        jnp.eye(1),
        initial_cov=jnp.eye(1),
        transition_cov=(q**2)[None, None],
        emission_cov=jnp.eye(1) * R**2,
        num_steps=y.shape[0],
    )
    numpyro.sample("y", ssm, obs=y[:, None])


def simulate():
    rng = np.random.default_rng(0)
    z, ys = rng.normal(), []
    for _ in range(T):
        ys.append(z + R * rng.normal())
        z = 0.8 * z + 0.6 * rng.normal()
    return jnp.asarray(ys)


Y = simulate()
QUANTILES = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def nuts():
    mcmc = MCMC(
        NUTS(exact_model),
        num_warmup=500,
        num_samples=1500,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), Y)
    return az.from_numpyro(mcmc)


def assert_same_posterior(idata, reference):
    for name in ("phi", "q"):
        for prob in QUANTILES:
            ours = float(idata.posterior[name].quantile(prob))
            theirs = float(reference.posterior[name].quantile(prob))
            error = np.hypot(
                float(az.mcse(idata, var_names=[name], method="quantile", prob=prob)[name]),
                float(az.mcse(reference, var_names=[name], method="quantile", prob=prob)[name]),
            )
            assert abs(ours - theirs) < 4 * error, (name, prob, ours, theirs, error)
            assert error < 0.05


@pytest.mark.slow
def test_pmmh_posterior_equals_nuts_on_kalman(nuts):
    kernel = PMMH(particle_model)
    mcmc = MCMC(
        kernel,
        num_warmup=1000,
        num_samples=3000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(1), Y, extra_fields=("accept_prob", "log_likelihood"))
    mcmc.print_summary()
    assert mcmc.get_samples(group_by_chain=True)["phi"].shape == (4, 3000)
    idata = to_inference_data(mcmc, key=jax.random.key(2))
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "time")
    assert set(idata.sample_stats) >= {"acceptance_rate", "log_likelihood"}
    assert 0.05 < float(idata.sample_stats["acceptance_rate"].mean()) < 0.5
    assert_same_posterior(idata, nuts)


@pytest.mark.slow
def test_correlated_pmmh_with_few_particles_equals_nuts(nuts):
    # N = 8: sd(log Ẑ) is about 1.5 here; the correlated moves keep the chain mixing
    sd = np.std(
        log_likelihood_estimates(
            particle_model, {"phi": 0.8, "q": 0.6}, Y, key=jax.random.key(3), num_particles=8
        )
    )
    assert sd > 1.0
    kernel = PMMH(particle_model, num_particles=8, correlation=0.99)
    mcmc = MCMC(
        kernel,
        num_warmup=1000,
        num_samples=4000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(4), Y, ess_threshold=1.0)
    assert_same_posterior(az.from_numpyro(mcmc, log_likelihood=False), nuts)


def test_the_current_estimate_is_cached_with_its_randomness():
    kernel = PMMH(particle_model, num_particles=32)
    state = kernel.init(jax.random.key(5), 10, None, (Y,), {})
    step = jax.jit(lambda s: kernel.sample(s, (Y,), {}))
    rejected = 0
    for _ in range(20):
        new = step(state)
        if not np.array_equal(np.asarray(new.z["phi"]), np.asarray(state.z["phi"])):
            state = new
            continue
        rejected += 1
        # a rejected proposal leaves the cached estimate as it was, bit for bit
        assert float(new.potential_energy) == float(state.potential_energy)
        state = new
    assert rejected > 0
    # the cache is log Ẑ(θ, U) for the stored U: refresh recomputes it exactly ...
    refreshed = kernel.refresh(state, (Y,), {})
    np.testing.assert_allclose(refreshed.potential_energy, state.potential_energy, rtol=1e-12)
    # ... while fresh randomness gives another estimate
    other = kernel.refresh(state._replace(randomness=jax.random.key(99)), (Y,), {})
    assert float(other.potential_energy) != float(state.potential_energy)


def test_sequential_chains_and_summary():
    mcmc = MCMC(
        PMMH(particle_model, num_particles=16),
        num_warmup=30,
        num_samples=20,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(6), Y)
    assert mcmc.get_samples()["q"].shape == (40,)
    assert (mcmc.get_samples()["q"] > 0).all()
    mcmc.print_summary()


def test_bad_input():
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        PMMH(particle_model, num_particles=0)
    with pytest.raises(ValueError, match=r"correlation must lie in \[0, 1\)"):
        PMMH(particle_model, correlation=1.0)

    def no_particle_site(y):
        numpyro.sample("y", dist.Normal(numpyro.sample("m", dist.Normal()), 1.0), obs=y)

    with pytest.raises(ValueError, match="no observed particle-filtered site"):
        PMMH(no_particle_site).init(jax.random.key(0), 5, None, (Y,), {})

    def discrete_latent(y):
        k = numpyro.sample("k", dist.Bernoulli(0.5))
        particle_model(y + k)

    with pytest.raises(ValueError, match="latent site 'k' is discrete"):
        PMMH(discrete_latent).init(jax.random.key(0), 5, None, (Y,), {})

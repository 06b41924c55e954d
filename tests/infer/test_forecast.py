"""infer.forecast: per-draw forecast moments pooled by the law of total variance."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM
from numpyro_ssm.infer import forecast

jax.config.update("jax_enable_x64", True)

T = 20
Y = np.cumsum(np.random.default_rng(0).normal(size=(T, 1)), axis=0)
COUNTS = np.random.default_rng(1).poisson(np.repeat([2.0, 9.0], T // 2)).astype(float)


def local_level(sigma_level, sigma_obs, num_steps=T):
    return LinearGaussianSSM(
        jnp.zeros(1),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * 10.0,
        transition_scale_tril=sigma_level * jnp.eye(1),
        emission_scale_tril=sigma_obs * jnp.eye(1),
        num_steps=num_steps,
    )


def lgssm_model(y):
    sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(1.0))
    sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(1.0))
    numpyro.sample("y", local_level(sigma_level, sigma_obs), obs=y)


A = jnp.array([[0.9, 0.1], [0.2, 0.8]])


def hmm_model(y):
    rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
    numpyro.sample("y", DiscreteHMM(jnp.ones(2) / 2, A, dist.Poisson(rates), num_steps=T), obs=y)


def test_lgssm_forecast_pools_per_draw_moments():
    draws = {"sigma_level": jnp.array([0.5, 1.0, 1.5]), "sigma_obs": jnp.array([1.0, 0.3, 0.7])}
    res = forecast(lgssm_model, draws, Y, num_steps=4, prob=0.8)["y"]
    per_draw = [
        local_level(draws["sigma_level"][i], draws["sigma_obs"][i]).forecast(Y, 4) for i in range(3)
    ]
    means = np.stack([np.asarray(f.mean) for f in per_draw])
    variances = np.stack([np.asarray(f.variance) for f in per_draw])
    np.testing.assert_allclose(res.means, means, rtol=1e-12)
    np.testing.assert_allclose(res.variance, variances.mean(0) + means.var(0), rtol=1e-12)
    half = 1.2815515655446004 * np.sqrt(res.variance)  # the 0.9 quantile of N(0, 1)
    np.testing.assert_allclose(res.upper - res.mean, half, rtol=1e-10)
    assert res.means.shape == (3, 4, 1) and res.prob == 0.8


@pytest.mark.arviz
def test_hmm_forecast_with_predictive_draws_and_xarray():
    draws = {"rates": jnp.array([[2.0, 9.0], [1.5, 10.0]])}
    res = forecast(hmm_model, draws, COUNTS, num_steps=3)["y"]
    for i in range(2):
        hmm = DiscreteHMM(jnp.ones(2) / 2, A, dist.Poisson(draws["rates"][i]), num_steps=T)
        np.testing.assert_allclose(res.means[i], hmm.forecast(COUNTS, 3).mean, rtol=1e-12)
    out = forecast(
        hmm_model,
        {"rates": jnp.tile(draws["rates"], (200, 1))},
        COUNTS,
        num_steps=3,
        key=jax.random.key(0),
        as_xarray=True,
        coords={"time": [20, 21, 22]},
    )["y"]
    assert out["samples"].dims == ("chain", "draw", "time")
    assert list(out["time"].values) == [20, 21, 22]
    samples = out["samples"].values.reshape(-1, 3)
    assert np.all(out["lower"].values == np.quantile(samples, 0.05, axis=0))
    assert np.all(samples == np.round(samples))  # counts: the empirical band suits them


def test_forecast_errors():
    draws = {"rates": jnp.array([[2.0, 9.0]])}
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        forecast(hmm_model, draws, COUNTS, num_steps=0)
    with pytest.raises(ValueError, match="prob must lie in"):
        forecast(hmm_model, draws, COUNTS, num_steps=2, prob=1.5)

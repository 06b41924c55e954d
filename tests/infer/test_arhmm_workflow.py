"""The AutoregressiveHMM goes through every ``numpyro_ssm.infer`` entry point unchanged."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import AutoregressiveHMM, infer

K, D, T = 2, 2, 12
RNG = np.random.default_rng(0)
P = np.array([[0.9, 0.1], [0.2, 0.8]])
Q = np.broadcast_to(0.3 * np.eye(D), (K, D, D))
BIAS = np.array([[1.0, -1.0], [-1.0, 1.0]])
DRAWS = {"ar_matrix": jnp.asarray(RNG.normal(size=(3, K, D, D)) * 0.4)}


def _arhmm(ar_matrix, num_steps=T):
    return AutoregressiveHMM(
        jnp.ones(K) / K, P, ar_matrix, ar_bias=BIAS, ar_cov=Q, num_steps=num_steps
    )


Y = np.array(
    AutoregressiveHMM(
        jnp.ones(K) / K,
        P,
        DRAWS["ar_matrix"][0],
        ar_bias=BIAS,
        ar_cov=Q,
        num_steps=T,
        initial_lags=np.zeros((1, D)),
    ).sample(jax.random.key(0))
)
Y[6] = np.nan  # a missing step: it and the next one (its lag) drop out


def model(y):
    A = numpyro.sample("ar_matrix", dist.Normal(0.0, 0.5).expand([K, D, D]).to_event(3))
    numpyro.sample("y", _arhmm(A, y.shape[-2]), obs=y)


def direct(i):
    return _arhmm(DRAWS["ar_matrix"][i])


@jax.jit
def one_draw(ar_matrix):
    """The distribution's own methods at one draw (compiled once, called draw by draw)."""
    d = _arhmm(ar_matrix)
    forecast = d.forecast(Y, 3)
    return dict(
        smoothed_probs=d.smooth(Y).smoothed_probs,
        mode=d.posterior_mode(Y),
        increments=d.log_likelihood_increments(Y),
        log_prob=d.log_prob(Y),
        forecast_mean=forecast.mean,
        forecast_variance=forecast.variance,
    )


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_posterior_latents_and_pointwise_log_likelihood():
    smooth = infer.posterior_latents(model, DRAWS, Y)["y"]
    mode = infer.posterior_latents(model, DRAWS, Y, method="mode")["y"]
    paths = infer.posterior_latents(model, DRAWS, Y, method="sample", key=jax.random.key(1))["y"]
    assert smooth.shape == (3, T, K) and mode.shape == (3, T) and paths.shape == (3, T)
    loglik = infer.pointwise_log_likelihood(model, DRAWS, Y)["y"]
    for i in range(3):
        own = one_draw(DRAWS["ar_matrix"][i])
        close(smooth[i], own["smoothed_probs"])
        close(mode[i], own["mode"])
        expected = np.array(own["increments"])
        expected[[0, 6, 7]] = np.nan  # the conditioned first step, the missing one, its follower
        close(loglik[i], expected)
        close(np.nansum(loglik[i]), own["log_prob"])


@pytest.mark.arviz
def test_to_inference_data_and_forecast():
    samples = {k: v[None] for k, v in DRAWS.items()}
    idata = infer.to_inference_data(
        samples, model, Y, latents=["smooth", "sample", "mode"], key=jax.random.key(2)
    )
    assert idata.posterior["y_smoothed_probs"].dims == ("chain", "draw", "time", "state")
    assert idata.log_likelihood["y"].sizes["time"] == T - 3
    res = infer.forecast(model, DRAWS, Y, num_steps=3)["y"]
    own = [one_draw(DRAWS["ar_matrix"][i]) for i in range(3)]
    means = np.stack([np.asarray(o["forecast_mean"]) for o in own])
    variances = np.stack([np.asarray(o["forecast_variance"]) for o in own])
    close(res.mean, means.mean(0))
    close(res.variance, variances.mean(0) + means.var(0))
    sampled = infer.forecast(model, DRAWS, Y, num_steps=3, key=jax.random.key(3))["y"]
    assert sampled.samples.shape == (3, 3, D)


def test_lfo_with_a_fixed_posterior():
    draws = {k: v[:1] for k, v in DRAWS.items()}

    def fit(key, past, num_observed):
        return draws

    out = infer.exact_lfo(model, Y, key=jax.random.key(4), min_train=8, fit=fit)
    close(out.pointwise, np.asarray(direct(0).log_likelihood_increments(Y))[8:])


@pytest.mark.slow
def test_nuts_and_blackjax_run():
    from numpyro.infer import MCMC, NUTS

    y = np.nan_to_num(Y)
    mcmc = MCMC(NUTS(model), num_warmup=40, num_samples=20, progress_bar=False)
    mcmc.run(jax.random.key(5), y)
    idata = infer.to_inference_data(mcmc, model, y, latents=["smooth"])
    assert idata.posterior["ar_matrix"].shape == (1, 20, K, D, D)
    result = infer.run_blackjax(model, y, key=jax.random.key(6), num_warmup=40, num_samples=20)
    assert result.inference_data.log_likelihood["y"].dims == ("chain", "draw", "time")

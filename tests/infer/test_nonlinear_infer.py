"""The nonlinear families through ``numpyro_ssm.infer``, unchanged: the protocol is enough.

A ``GeneralizedGaussianSSM`` (Poisson counts, an iterated smoother) with one sampled parameter
goes through ``posterior_latents`` (smooth, sample, mode), ``pointwise_log_likelihood``,
``to_inference_data`` and ``forecast``; each answer is compared with the distribution's own
method called draw by draw. ``NonlinearGaussianSSM`` shares every protocol method with it
(``distributions/_nonlinear.py``) and runs the same ``latents`` check once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_ssm import GeneralizedGaussianSSM, NonlinearGaussianSSM, infer

T = 8
A_DRAWS = jnp.array([0.5, 0.7, 0.9])


def _shrink(z, u, p):
    return p["a"] * z


def _log_rate(z, u, p):
    return z + jnp.array([1.0, 0.3])


def _poisson(eta):
    return dist.Poisson(jnp.exp(eta))


def _ssm(a, num_steps=T):
    return GeneralizedGaussianSSM(
        jnp.zeros(1),
        _shrink,
        _log_rate,
        _poisson,
        initial_cov=jnp.eye(1),
        transition_cov=0.2 * jnp.eye(1),
        params={"a": a},
        num_steps=num_steps,
        method="ukf",
        smoother_iterations=1,
    )


def model(y):
    a = numpyro.sample("a", dist.Uniform(0.0, 1.0))
    numpyro.sample("y", _ssm(a), obs=y)


Y = np.asarray(_ssm(0.8).sample(jax.random.key(0)), dtype=np.float64)
Y[3] = np.nan  # a missing step
DRAWS = {"a": A_DRAWS}


@jax.jit
def one_draw(a):
    """The distribution's own methods at one draw (compiled once, called draw by draw)."""
    d = _ssm(a)
    post = d.smooth(Y)
    forecast = d.forecast(Y, 3)
    return dict(
        means=post.smoothed_means,
        covariances=post.smoothed_covariances,
        mode=d.posterior_mode(Y),
        increments=d.log_likelihood_increments(Y),
        log_prob=d.log_prob(Y),
        forecast_mean=forecast.mean,
        forecast_variance=forecast.variance,
    )


def close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **{"rtol": 1e-10, **kw})


def test_posterior_latents_and_log_likelihood():
    smooth = infer.posterior_latents(model, DRAWS, Y)["y"]
    mode = infer.posterior_latents(model, DRAWS, Y, method="mode")["y"]
    paths = infer.posterior_latents(model, DRAWS, Y, method="sample", key=jax.random.key(1))["y"]
    loglik = infer.pointwise_log_likelihood(model, DRAWS, Y)["y"]
    assert smooth["means"].shape == (3, T, 1) and smooth["covariances"].shape == (3, T, 1, 1)
    assert mode.shape == (3, T, 1) and paths.shape == (3, T, 1)
    assert np.isnan(loglik[:, 3]).all()
    for i, a in enumerate(A_DRAWS):
        own = one_draw(a)
        close(smooth["means"][i], own["means"])
        close(smooth["covariances"][i], own["covariances"])
        close(mode[i], own["mode"], rtol=1e-8, atol=1e-8)
        expected = np.array(own["increments"])
        expected[3] = np.nan
        close(loglik[i], expected)
        close(np.nansum(loglik[i]), own["log_prob"])
    assert np.all(np.isfinite(paths))


@pytest.mark.arviz
def test_to_inference_data_and_forecast():
    samples = {"a": A_DRAWS[None]}  # (chains=1, draws=3)
    idata = infer.to_inference_data(samples, model, Y, latents=["smooth"])
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "time") and ll.sizes["time"] == T - 1  # missing dropped
    own = [one_draw(a) for a in A_DRAWS]
    close(ll.values[0, 1], np.delete(np.asarray(own[1]["increments"]), 3))

    res = infer.forecast(model, DRAWS, Y, num_steps=3)["y"]
    means = np.stack([np.asarray(o["forecast_mean"]) for o in own])
    variances = np.stack([np.asarray(o["forecast_variance"]) for o in own])
    close(res.mean, means.mean(0))
    close(res.variance, variances.mean(0) + means.var(0))


def test_nonlinear_gaussian_latents():
    def h(z, u, p):
        return jnp.sin(z) + 0.1 * z**2

    d = NonlinearGaussianSSM(
        jnp.zeros(1),
        _shrink,
        h,
        initial_cov=jnp.eye(1),
        transition_cov=0.2 * jnp.eye(1),
        emission_cov=0.1 * jnp.eye(1),
        params={"a": 0.8},
        num_steps=T,
        method="ghkf",
    )
    y = d.sample(jax.random.key(2))
    latents = d.latents(y, ("smooth", "sample", "mode"), key=jax.random.key(3))
    close(latents.latents["smooth"]["means"], d.smooth(y).smoothed_means)
    close(latents.latents["mode"][""], d.posterior_mode(y))
    close(jnp.sum(latents.log_likelihood_increments), d.log_prob(y))
    close(
        latents.latents["sample"][""], d.sample_posterior(jax.random.key(3), y), rtol=0, atol=1e-6
    )

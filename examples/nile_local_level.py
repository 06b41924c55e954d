"""The Nile local level model: noise scales by NUTS, smoothed level, imputation and forecast.

The annual flow volume of the Nile at Aswan, 1871-1970 (Cobb 1978; Durbin & Koopman 2012,
ch. 2), follows a random-walk level observed with noise:

    sigma_obs   ~ HalfNormal(300)            observation noise scale (sqrt of sigma^2_eps)
    sigma_level ~ HalfNormal(100)            level noise scale (sqrt of sigma^2_eta)
    level_1     ~ Normal(1000, 1e7)          a diffuse-like start, as in Durbin & Koopman
    level_{t+1} = level_t + sigma_level * eta_t
    y_t         = level_t + sigma_obs * eps_t

``LinearGaussianSSM`` marginalizes the level exactly (Kalman filter), so NUTS only sees the
two scales. The script converts the run with ``numpyro_ssm.infer.to_inference_data`` (the
``log_likelihood`` group holds the one-step-ahead terms log p(y_t | y_{1:t-1}) per year), prints
``arviz.summary`` and PSIS-LOO over those terms, saves ``az.plot_trace``, and prints the
posterior medians of the variances next to Durbin & Koopman's maximum-likelihood estimates
(sigma^2_eps = 15099, sigma^2_eta = 1469.1).

The figure shows, with bands that integrate over the parameter posterior (one backward-sampled
level path per posterior draw, from ``posterior_latents(..., method="sample")``):
- the smoothed level given all the data;
- the level imputed when the years 1891-1910 are treated as missing (``obs_mask``), with the
  held-out observations;
- a 10-year forecast of the observations (``LinearGaussianSSM.forecast``).

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (2 chains, 40 warmup, 40 samples), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``nile_local_level.png`` and
                              ``nile_local_level_trace.png`` (default: current dir).

Run it with ``python examples/nile_local_level.py``.
"""

import os
import time
import warnings
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 2 if FAST else 4
NUM_WARMUP = 40 if FAST else 1000
NUM_SAMPLES = 40 if FAST else 1000
HORIZON = 10
GAP = (1891, 1910)  # years treated as missing for the imputation panel

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpyro  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import LinearGaussianSSM  # noqa: E402
from numpyro_ssm.datasets import load_nile  # noqa: E402
from numpyro_ssm.infer import posterior_latents, to_inference_data  # noqa: E402


def local_level(sigma_obs, sigma_level, num_steps, obs_mask=None):
    """The local level model as a ``LinearGaussianSSM`` over ``num_steps`` years.

    Args:
        sigma_obs: observation noise scale, shape ``()``.
        sigma_level: level noise scale, shape ``()``.
        num_steps: ``T``.
        obs_mask: None, or bool of shape ``(T, 1)``, True where the year is observed.
    """
    return LinearGaussianSSM(
        jnp.array([1000.0]),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * 1e7,
        transition_scale_tril=jnp.reshape(sigma_level, (1, 1)),
        emission_scale_tril=jnp.reshape(sigma_obs, (1, 1)),
        num_steps=num_steps,
        obs_mask=obs_mask,
    )


def model(y, obs_mask=None):
    """Half-normal priors on the two noise scales; ``y`` has shape ``(T, 1)``."""
    sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(300.0))
    sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(100.0))
    numpyro.sample("y", local_level(sigma_obs, sigma_level, y.shape[0], obs_mask), obs=y)


def trace_figure(idata, var_names, **kwargs):
    """ArviZ's trace plot figure: ``plot_trace`` (ArviZ 0.2x) or ``plot_trace_dist`` (1.x)."""
    if hasattr(az, "plot_trace_dist"):  # ArviZ 1.x (arviz-plots) returns a PlotCollection
        return az.plot_trace_dist(idata, var_names=var_names).viz["figure"].item()
    return az.plot_trace(idata, var_names=var_names, **kwargs).ravel()[0].figure


def save_trace(idata, path):
    """ArviZ's trace plot of the two noise scales."""
    fig = trace_figure(idata, ["sigma_obs", "sigma_level"])
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main():
    """Fit the scales, print the summaries and write the figures."""
    nile = load_nile()
    years, y = nile.years, jnp.asarray(nile.volume)[:, None]  # (100,), (100, 1)
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)

    start = time.time()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), y)
    jax.block_until_ready(mcmc.get_samples())  # JAX dispatches asynchronously
    print(f"NUTS: {NUM_CHAINS} chains x {NUM_SAMPLES} draws in {time.time() - start:.1f}s")
    idata = to_inference_data(mcmc, coords={"time": years})
    print(az.summary(idata, var_names=["sigma_obs", "sigma_level"]).to_string())
    print("\nPSIS-LOO over the one-step-ahead terms (approximates leave-future-out, not LOO):")
    with warnings.catch_warnings():  # a few draws in fast mode make ArviZ warn about Pareto k
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        print(az.loo(idata))
    path = outdir / "nile_local_level_trace.png"
    save_trace(idata, path)
    print(f"wrote {path}")

    samples = mcmc.get_samples()
    var_obs = np.median(np.asarray(samples["sigma_obs"]) ** 2)
    var_level = np.median(np.asarray(samples["sigma_level"]) ** 2)
    print("\n                    posterior median   Durbin & Koopman MLE")
    print(f"sigma^2_eps (obs)   {var_obs:16.1f}   {15099.0:20.1f}")
    print(f"sigma^2_eta (level) {var_level:16.1f}   {1469.1:20.1f}")

    # One backward-sampled level path and one forecast per posterior draw: quantiles across
    # draws integrate over the parameter posterior.
    gap = (years >= GAP[0]) & (years <= GAP[1])
    gap_mask = jnp.asarray(~gap)[:, None]  # (T, 1): True where observed
    key_level, key_imputed, key_future = jax.random.split(jax.random.PRNGKey(1), 3)
    level = posterior_latents(model, samples, y, method="sample", key=key_level)["y"][..., 0]
    imputed = posterior_latents(
        model, samples, y, obs_mask=gap_mask, method="sample", key=key_imputed
    )["y"][..., 0]

    @jax.vmap
    def forecast(sigma_obs, sigma_level, key):
        return local_level(sigma_obs, sigma_level, len(years)).forecast(y, HORIZON).sample(key)

    keys = jax.random.split(key_future, samples["sigma_obs"].shape[0])
    future = forecast(samples["sigma_obs"], samples["sigma_level"], keys)[..., 0]
    q = lambda a: np.quantile(np.asarray(a), [0.05, 0.5, 0.95], axis=0)  # noqa: E731
    level_q, imputed_q, future_q = q(level), q(imputed), q(future)
    future_years = years[-1] + 1 + np.arange(HORIZON)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(years[~gap], nile.volume[~gap], "k.", ms=4, label="observed")
    ax.plot(years[gap], nile.volume[gap], "x", color="tab:red", ms=5, label="held out 1891-1910")
    ax.fill_between(years, level_q[0], level_q[2], color="tab:blue", alpha=0.25)
    ax.plot(years, level_q[1], color="tab:blue", label="smoothed level (90% band)")
    ax.fill_between(years[gap], imputed_q[0][gap], imputed_q[2][gap], color="tab:orange", alpha=0.3)
    ax.plot(years[gap], imputed_q[1][gap], color="tab:orange", label="level imputed over the gap")
    ax.fill_between(future_years, future_q[0], future_q[2], color="tab:green", alpha=0.25)
    ax.plot(future_years, future_q[1], color="tab:green", label=f"{HORIZON}-year forecast of y")
    ax.set_xlabel("year")
    ax.set_ylabel("annual flow (10^8 m^3)")
    ax.set_title("Nile at Aswan: local level model, NUTS over the noise scales")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = outdir / "nile_local_level.png"
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

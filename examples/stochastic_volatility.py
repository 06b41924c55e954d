"""Stochastic volatility of the S&P 500, 2006-2011, by particle-marginal Metropolis-Hastings.

Daily percent log returns y_t of the S&P 500 (numpyro_ssm.datasets.load_sp500) through the
financial crisis, with the stochastic volatility model of Kim, Shephard & Chib (1998):

    mu            ~ Normal(0, 2)                 mean log-variance
    (phi + 1) / 2 ~ Beta(20, 1.5)                persistence of the log-variance
    sigma         ~ HalfNormal(1)                scale of its shocks
    h_1           ~ Normal(mu, sigma^2 / (1 - phi^2))      (the stationary law)
    h_t | h_{t-1} ~ Normal(mu + phi (h_{t-1} - mu), sigma^2)
    y_t | h_t     ~ Normal(0, exp(h_t / 2))

The emission is not Gaussian in h_t, so no Kalman filter applies. ``ParticleSSM`` states the
model with its step distributions, a bootstrap particle filter estimates the likelihood
without bias, and ``numpyro_ssm.infer.PMMH`` samples (mu, phi, sigma) exactly with correlated
pseudo-marginal moves (Deligiannidis, Doucet & Pitt 2018), so that a modest particle count
mixes. The script prints the standard deviation of log Z-hat at the posterior medians (the
number that says whether N is large enough), the posterior summary, and writes:

- ``stochastic_volatility.png``: the returns, and the filtered volatility E[exp(h_t / 2) | y_1:t]
  for 40 posterior draws (one particle filter run each) with their median;
- ``stochastic_volatility_trace.png``: ``arviz.plot_trace`` of the three parameters (every
  10th draw), from ``numpyro_ssm.infer.to_inference_data`` (whose log_likelihood group holds
  the filter's per-day estimates log p-hat(y_t | y_1:t-1)).

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (the last 250 days, 1 chain, 100 + 100 iterations).
    NUMPYRO_SSM_OUTDIR=DIR    where to write the figures (default: current dir).

Run it with ``python examples/stochastic_volatility.py``.
"""

import os
import time
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 1 if FAST else 4
NUM_WARMUP = 100 if FAST else 1500
NUM_SAMPLES = 100 if FAST else 1500
NUM_PARTICLES = 64 if FAST else 256
DAYS = 250 if FAST else None
NUM_DRAWS_PLOTTED = 10 if FAST else 40

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpyro  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC  # noqa: E402

from numpyro_ssm import ParticleSSM  # noqa: E402
from numpyro_ssm.datasets import load_sp500  # noqa: E402
from numpyro_ssm.infer import PMMH, log_likelihood_estimates, to_inference_data  # noqa: E402

jax.config.update("jax_enable_x64", True)


def transition_fn(h, u, params):
    mu, phi, sigma = params
    return dist.Normal(mu + phi * (h - mu), sigma)


def emission_fn(h, u, params):
    return dist.Normal(0.0, jnp.exp(h / 2))


def volatility_ssm(returns, mu, phi, sigma):
    stationary = dist.Normal(mu, sigma / jnp.sqrt(1 - phi**2))
    return ParticleSSM(
        stationary,
        transition_fn,
        emission_fn,
        (mu, phi, sigma),
        num_steps=returns.shape[0],
        num_particles=NUM_PARTICLES,
        ess_threshold=1.0,  # resample every step: the correlated moves need it
    )


def model(returns):
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    phi = 2 * numpyro.sample("phi_beta", dist.Beta(20.0, 1.5)) - 1
    numpyro.deterministic("phi", phi)
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("returns", volatility_ssm(returns, mu, phi, sigma), obs=returns)


def filtered_volatility(key, returns, mu, phi, sigma):
    """E[exp(h_t / 2) | y_1:t] from one particle filter run, shape (T,)."""
    res = volatility_ssm(returns, mu, phi, sigma).filter(key, returns)
    return jnp.sum(jnp.exp(res.log_weights) * jnp.exp(res.particles / 2), axis=-1)


def main():
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    data = load_sp500()
    returns, dates = data.returns, data.dates[1:]
    if DAYS is not None:
        returns, dates = returns[-DAYS:], dates[-DAYS:]
    returns = jnp.asarray(returns)
    print(f"{returns.shape[0]} daily returns, {dates[0]} to {dates[-1]}; N = {NUM_PARTICLES}")

    kernel = PMMH(model, correlation=0.99)
    mcmc = MCMC(
        kernel,
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.key(0), returns, extra_fields=("accept_prob", "log_likelihood"))
    print(f"PMMH: {time.perf_counter() - start:.1f} s")
    mcmc.print_summary(exclude_deterministic=False)

    samples = mcmc.get_samples()
    medians = {k: jnp.median(v) for k, v in samples.items() if k in ("mu", "phi_beta", "sigma")}
    spread = log_likelihood_estimates(
        model, medians, returns, key=jax.random.key(1), num_repeats=32
    )
    print(f"sd of log Z-hat at the posterior medians, N = {NUM_PARTICLES}: {spread.std():.2f}")
    # the log_likelihood group runs one particle filter per draw: every 10th draw is plenty
    thinned = {k: v[:, ::10] for k, v in mcmc.get_samples(group_by_chain=True).items()}
    idata = to_inference_data(thinned, model, returns, key=jax.random.key(2))
    print("log_likelihood group:", dict(idata.log_likelihood["returns"].sizes))

    draws = np.linspace(0, NUM_SAMPLES * NUM_CHAINS - 1, NUM_DRAWS_PLOTTED).astype(int)
    keys = jax.random.split(jax.random.key(3), draws.size)
    volatility = jax.jit(jax.vmap(filtered_volatility, in_axes=(0, None, 0, 0, 0)))(
        keys, returns, samples["mu"][draws], samples["phi"][draws], samples["sigma"][draws]
    )
    fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    axes[0].plot(dates, returns, lw=0.5, color="k")
    axes[0].set_ylabel("daily log return (%)")
    axes[0].set_title("S&P 500: returns and filtered volatility per posterior draw (PMMH)")
    for path in np.asarray(volatility):
        axes[1].plot(dates, path, lw=0.5, color="tab:blue", alpha=0.3)
    axes[1].plot(
        dates,
        np.median(np.asarray(volatility), 0),
        lw=1.2,
        color="tab:red",
        label="median over draws",
    )
    axes[1].set_ylabel("E[exp(h_t / 2) | y_1:t] (%)")
    axes[1].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(outdir / "stochastic_volatility.png", dpi=120)
    az.plot_trace(idata, var_names=["mu", "phi", "sigma"])
    plt.tight_layout()
    plt.savefig(outdir / "stochastic_volatility_trace.png", dpi=100)
    print(f"figures written to {outdir}")


if __name__ == "__main__":
    main()

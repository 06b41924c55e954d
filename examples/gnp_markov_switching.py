"""Hamilton's (1989) business-cycle model: US GNP growth as a Markov-switching AR(4), by NUTS.

The 135 quarterly growth rates of US real GNP, 1951Q2-1984Q4 (bundled: ``load_us_gnp``), move
between expansions and recessions. Hamilton's model lets the *mean* switch with a two-regime
Markov chain s_t while the deviations from it follow an AR(4):

    y_t - mu[s_t] = sum_i phi_i (y_{t-i} - mu[s_{t-i}]) + eps_t,   eps_t ~ N(0, sigma^2),

which ``mean_switching_autoregression`` writes as an ``AutoregressiveHMM`` over the 32 tuples
(s_t, ..., s_{t-4}); the first four quarters are conditioned on. The script

- checks the exact log-likelihood at Hamilton's published estimates (-181.26339);
- puts priors on the regimes' staying probabilities, the ordered means, phi and sigma and runs
  NUTS (the regime path is summed out exactly);
- averages p(recession at t | y, theta) over the posterior draws (``posterior_latents``) and
  plots it against the NBER recession dates;
- forecasts eight quarters ahead (``infer.forecast``): the forecast is recursive in its own
  draws, and its mean and variance are exact mixtures over the regime paths.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (1 chain, 60 warmup, 60 samples), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``gnp_recessions.png``, ``gnp_posterior.png`` and
                              ``gnp_forecast.png`` (default: current directory).

Run it with ``python examples/gnp_markov_switching.py``.
"""

import os
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 1 if FAST else 2
NUM_WARMUP = 60 if FAST else 500
NUM_SAMPLES = 60 if FAST else 500

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import infer  # noqa: E402
from numpyro_ssm.datasets import load_us_gnp  # noqa: E402
from numpyro_ssm.distributions import mean_switching_autoregression  # noqa: E402

numpyro.set_host_device_count(NUM_CHAINS)
jax.config.update("jax_enable_x64", True)
OUTDIR = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
# Hamilton (1989)'s estimates as published in statsmodels' tests (E-Views): p00, p10, mu0, mu1,
# sigma^2, phi_1..4
HAMILTON = np.r_[
    0.754673, 0.095915, -0.358811, 1.163516, np.exp(-0.262658) ** 2,
    0.013486, -0.057521, -0.246983, -0.212923,
]  # fmt: skip


def regimes_model(stay, means, phi, sigma2, num_steps):
    """The 32-state ARHMM and each state's current regime (0 = recession, 1 = expansion)."""
    P = jnp.stack([jnp.stack([stay[0], 1 - stay[0]]), jnp.stack([1 - stay[1], stay[1]])])
    return mean_switching_autoregression(P, means, phi, sigma2, num_steps=num_steps)


def model(y):
    stay = numpyro.sample("stay", dist.Beta(jnp.array([4.0, 8.0]), jnp.array([2.0, 1.0])))
    low = numpyro.sample("mu_recession", dist.Normal(-0.5, 1.0))
    gap = numpyro.sample("mu_gap", dist.HalfNormal(2.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 0.5).expand([4]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.deterministic("mu_expansion", low + gap)
    arhmm, _ = regimes_model(stay, jnp.stack([low, low + gap]), phi, sigma**2, y.shape[0])
    numpyro.sample("y", arhmm, obs=y)


def main():
    data = load_us_gnp()
    y = jnp.asarray(data.growth)[:, None]
    T = y.shape[0]
    p00, p10, mu0, mu1, sigma2, *phi = HAMILTON
    # statsmodels labels regime 0 as the low-growth one: stay = (p00, 1 - p10)
    published, tuples = regimes_model(
        jnp.array([p00, 1 - p10]), jnp.array([mu0, mu1]), jnp.array(phi), sigma2, T
    )
    print(f"log-likelihood at Hamilton's estimates: {float(published.log_prob(y)):.5f}")
    print("(published: -181.26339)")
    recession_tuples = np.asarray(tuples) == 0
    mle_probs = np.asarray(published.smooth(y).smoothed_probs)[:, recession_tuples].sum(-1)

    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), y)
    mcmc.print_summary(exclude_deterministic=False)
    samples = mcmc.get_samples()
    probs = infer.posterior_latents(model, samples, y)["y"]  # (draws, T, 32)
    recession = np.asarray(probs)[..., recession_tuples].sum(-1)  # (draws, T)

    years = 1951.25 + np.arange(T) / 4
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for axis in (ax0, ax1):
        for t in np.flatnonzero(data.nber_recession):
            axis.axvspan(years[t], years[t] + 0.25, color="0.85", lw=0)
    ax0.plot(years, data.growth, color="k", lw=1)
    ax0.set_ylabel("GNP growth (%)")
    ax0.set_title("US real GNP growth; grey: NBER recessions")
    lo, mid, hi = np.quantile(recession[:, 4:], [0.05, 0.5, 0.95], axis=0)
    ax1.fill_between(years[4:], lo, hi, alpha=0.3, color="C3", label="90% posterior band")
    ax1.plot(years[4:], mid, color="C3", label="posterior median")
    ax1.plot(years[4:], mle_probs[4:], "k--", lw=1, label="at Hamilton's estimates")
    ax1.set_ylabel("p(recession | y)")
    ax1.set_xlabel("year")
    ax1.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTDIR / "gnp_recessions.png", dpi=120)

    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    draws = {
        "mu (recession)": (np.asarray(samples["mu_recession"]), mu0),
        "mu (expansion)": (np.asarray(samples["mu_expansion"]), mu1),
        "p(stay in recession)": (np.asarray(samples["stay"][:, 0]), p00),
        "p(stay in expansion)": (np.asarray(samples["stay"][:, 1]), 1 - p10),
    }
    for axis, (name, (values, estimate)) in zip(axes, draws.items(), strict=True):
        axis.hist(values, bins=30, color="C0", alpha=0.7)
        axis.axvline(estimate, color="k", ls="--", label="Hamilton (1989)")
        axis.set_title(name, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUTDIR / "gnp_posterior.png", dpi=120)

    horizon = 8
    result = infer.forecast(model, samples, y, num_steps=horizon, key=jax.random.key(1))["y"]
    future = years[-1] + 0.25 * np.arange(1, horizon + 1)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(years[-40:], data.growth[-40:], color="k", lw=1, label="observed")
    ax.fill_between(future, result.lower[:, 0], result.upper[:, 0], alpha=0.3, label="90% band")
    ax.plot(future, result.mean[:, 0], color="C0", label="predictive mean")
    ax.set_title("Eight quarters ahead: recursive Markov-switching forecast")
    ax.set_xlabel("year")
    ax.set_ylabel("GNP growth (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTDIR / "gnp_forecast.png", dpi=120)
    print(f"wrote figures to {OUTDIR.resolve()}")


if __name__ == "__main__":
    main()

"""The Nile local level model sampled by BlackJAX and by NumPyro NUTS: do they agree?

``numpyro_ssm.infer.run_blackjax`` runs BlackJAX's NUTS (Stan-style window adaptation, chains
vectorized with ``vmap``) on the unconstrained log density of a NumPyro model. Here the model is
the local level model of ``examples/nile_local_level.py`` (Durbin & Koopman 2012, ch. 2):

    sigma_obs   ~ HalfNormal(300)            observation noise scale
    sigma_level ~ HalfNormal(100)            level noise scale
    level_1     ~ Normal(1000, 1e7)
    level_{t+1} = level_t + sigma_level * eta_t
    y_t         = level_t + sigma_obs * eps_t

with the level marginalized by ``LinearGaussianSSM`` (Kalman filter). The same model runs
through NumPyro's NUTS, and the script prints, per parameter, the difference of the two
posterior means in units of its Monte Carlo standard error,

    z = (mean_blackjax - mean_numpyro) / sqrt(mcse_blackjax^2 + mcse_numpyro^2),

with means and MCSEs from ``arviz.summary``. Two correct samplers give |z| below about 2 for
most parameters (|z| is roughly standard normal). The figure overlays the two posterior
densities of each parameter.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (2 chains, 50 warmup, 50 samples), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``blackjax_lgssm.png`` (default: current dir).

Run it with ``python examples/blackjax_lgssm.py`` (needs the ``blackjax`` extra).
"""

import os
import time
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 2 if FAST else 4
NUM_WARMUP = 50 if FAST else 1000
NUM_SAMPLES = 50 if FAST else 1000
PARAMETERS = ["sigma_obs", "sigma_level"]

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import LinearGaussianSSM  # noqa: E402
from numpyro_ssm.datasets import load_nile  # noqa: E402
from numpyro_ssm.infer import run_blackjax, to_inference_data  # noqa: E402


def model(y):
    """The local level model; ``y`` has shape ``(T, 1)``."""
    sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(300.0))
    sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(100.0))
    level = LinearGaussianSSM(
        jnp.array([1000.0]),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * 1e7,
        transition_scale_tril=jnp.reshape(sigma_level, (1, 1)),
        emission_scale_tril=jnp.reshape(sigma_obs, (1, 1)),
        num_steps=y.shape[0],
    )
    numpyro.sample("y", level, obs=y)


def sample_numpyro(y, key, coords):
    """NumPyro NUTS, chains vectorized; returns its ``arviz.InferenceData``."""
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(key, y)
    return to_inference_data(mcmc, coords=coords)


def sample_blackjax(y, key, coords):
    """BlackJAX NUTS through ``run_blackjax``; returns its ``arviz.InferenceData``."""
    result = run_blackjax(
        model,
        y,
        key=key,
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        coords=coords,
    )
    step_sizes = np.asarray(result.adaptation["step_size"])
    print(f"BlackJAX adapted step sizes per chain: {np.round(step_sizes, 3)}")
    return result.inference_data


def agreement(summaries):
    """Posterior means of both samplers and their difference in MCSE units.

    Args:
        summaries: ``{"numpyro": DataFrame, "blackjax": DataFrame}`` from ``az.summary``.

    Returns:
        A ``DataFrame`` indexed by parameter.
    """
    a, b = summaries["numpyro"], summaries["blackjax"]
    columns = ["mean", "mcse_mean", "r_hat"]
    table = a[columns].add_prefix("numpyro_").join(b[columns].add_prefix("blackjax_"))
    table["z"] = (b["mean"] - a["mean"]) / np.hypot(a["mcse_mean"], b["mcse_mean"])
    return table


def plot_densities(idatas, path):
    """One panel per parameter: the posterior densities from both samplers."""
    fig, axes = plt.subplots(1, len(PARAMETERS), figsize=(9, 3.2))
    for ax, name in zip(axes, PARAMETERS, strict=True):
        for (label, idata), color in zip(idatas.items(), ("tab:blue", "tab:orange"), strict=True):
            draws = np.asarray(idata.posterior[name]).ravel()
            ax.hist(draws, bins=40, density=True, histtype="step", lw=1.6, color=color, label=label)
            ax.axvline(draws.mean(), color=color, ls="--", lw=1)
        ax.set_xlabel(name)
        ax.set_yticks([])
    axes[0].set_ylabel("posterior density")
    axes[0].legend(frameon=False)
    fig.suptitle("Nile local level model: BlackJAX NUTS vs NumPyro NUTS (dashed: means)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    """Run both samplers, print the agreement table and write the figure."""
    nile = load_nile()
    y = jnp.asarray(nile.volume)[:, None]  # (100, 1)
    coords = {"time": nile.years}
    print(
        f"Nile local level model: {NUM_CHAINS} chains x ({NUM_WARMUP} warmup + {NUM_SAMPLES} "
        "samples) per sampler" + (" [NUMPYRO_SSM_FAST]" if FAST else "")
    )
    key_numpyro, key_blackjax = jax.random.split(jax.random.key(0))
    idatas = {}
    for label, sampler, key in (
        ("numpyro", sample_numpyro, key_numpyro),
        ("blackjax", sample_blackjax, key_blackjax),
    ):
        start = time.perf_counter()
        idatas[label] = sampler(y, key, coords)
        divergences = int(idatas[label].sample_stats["diverging"].sum())
        print(
            f"{label}: {time.perf_counter() - start:.1f} s (compilation included), "
            f"{divergences} divergent transitions"
        )
    summaries = {k: az.summary(v, var_names=PARAMETERS) for k, v in idatas.items()}
    table = agreement(summaries)
    print("\nposterior means, NumPyro vs BlackJAX (z = difference / combined MCSE):")
    print(table.round(3).to_string())
    worst = float(np.max(np.abs(table["z"])))
    verdict = "agree" if worst < 3 else "DISAGREE: look at the diagnostics"
    print(f"largest |z| = {worst:.2f}: the samplers {verdict}")

    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "blackjax_lgssm.png"
    plot_densities(idatas, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

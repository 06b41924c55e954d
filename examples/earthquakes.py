"""Quickstart: a Poisson hidden Markov model for the annual counts of major earthquakes.

The 107 yearly counts of magnitude >= 7 earthquakes worldwide, 1900-2006 (USGS; Zucchini,
MacDonald & Langrock 2016), alternate between quiet and active decades. We model them with K
hidden "seismic regimes":

    Gamma[k, :]        ~ Dirichlet(1 + 4 * e_k)          one sticky row per state
    increments[k]      ~ Gamma(2, 0.1)
    rates              = cumsum(increments)              rates[0] < ... < rates[K-1]
    z_1                ~ stationary distribution of Gamma
    z_{t+1} | z_t      ~ Categorical(Gamma[z_t, :])
    y_t | z_t          ~ Poisson(rates[z_t])

The initial distribution is the stationary distribution of Gamma (not a separate Dirichlet), as
in Zucchini, MacDonald & Langrock's stationary fit, so the posterior medians of the rates are
comparable with their maximum-likelihood estimates. Ordered rates pick one labelling of the
states, so chains cannot settle on different permutations. The latent path is summed out
exactly by ``DiscreteHMM``; NUTS only sees Gamma and the rates.

The script fits K = 2, 3 and 4 states, each with NUTS over several chains, and:

- converts each run with ``numpyro_ssm.infer.to_inference_data``, whose ``log_likelihood``
  group holds the one-step-ahead terms log p(y_t | y_{1:t-1}, Gamma, rates) with a ``time``
  dimension, and prints ``arviz.summary`` for the K of ``--num-states``;
- saves ``az.plot_trace`` of that fit;
- prints ``az.compare`` of the three fits. PSIS-LOO on one-step-ahead terms is not
  leave-one-out: it approximates leave-future-out predictive performance (each term
  predicts y_t from its past, with the posterior fitted to all years);
- averages the smoothed state probabilities p(z_t = k | y, Gamma, rates) over the posterior
  draws (``posterior_latents``) and plots them per year;
- plots, for each K, the Poisson rate of the hidden state along backward-sampled paths
  (``posterior_latents(..., method="sample")``: one path per posterior draw), with bands.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (2 chains, 50 warmup, 50 samples; K = 2 and 3 only),
                              used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``earthquakes.png``, ``earthquakes_trace.png`` and
                              ``earthquakes_state_paths.png`` (default: current directory).
    NUMPYRO_SSM_NUM_STATES=K  the K (2 to 4) summarized and plotted in detail (default 2); or
                              ``--num-states``.

Run it with ``python examples/earthquakes.py``.
"""

import argparse
import os
import time
import warnings
from pathlib import Path

NUM_STATES = 2  # hidden seismic regimes; override with --num-states or NUMPYRO_SSM_NUM_STATES
COMPARED_STATES = (2, 3, 4)  # the fits compared by az.compare
FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 2 if FAST else 4
NUM_WARMUP = 50 if FAST else 1000
NUM_SAMPLES = 50 if FAST else 1000

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

from numpyro_ssm import DiscreteHMM  # noqa: E402
from numpyro_ssm.datasets import load_earthquakes  # noqa: E402
from numpyro_ssm.infer import posterior_latents, to_inference_data  # noqa: E402
from numpyro_ssm.ops import stationary_distribution  # noqa: E402

jax.config.update("jax_enable_x64", True)

# Maximum-likelihood rates of the stationary Poisson-HMM (Zucchini, MacDonald & Langrock 2016,
# Section 3.2). tests/test_earthquakes_mle.py reproduces the K = 2 fit; the same fit with K = 3
# and K = 4 states gives these values to two decimals.
PUBLISHED_MLE_RATES = {
    2: (15.47, 26.13),
    3: (13.15, 19.72, 29.71),
    4: (11.28, 13.85, 19.70, 29.70),
}


def make_hmm(transition_matrix, rates, num_steps):
    """The stationary Poisson-HMM with ``transition_matrix (K, K)`` and ordered ``rates (K,)``."""
    return DiscreteHMM(
        stationary_distribution(transition_matrix),
        transition_matrix,
        dist.Poisson(rates),
        num_steps=num_steps,
    )


def model(counts, num_states):
    """Poisson-HMM with sticky Dirichlet rows and ordered rates; ``counts`` has shape ``(T,)``."""
    sticky = jnp.ones((num_states, num_states)) + 4.0 * jnp.eye(num_states)
    transition_matrix = numpyro.sample("transition_matrix", dist.Dirichlet(sticky).to_event(1))
    increments = numpyro.sample("increments", dist.Gamma(2.0, 0.1).expand([num_states]).to_event(1))
    rates = numpyro.deterministic("rates", jnp.cumsum(increments))
    numpyro.sample("y", make_hmm(transition_matrix, rates, counts.shape[-1]), obs=counts)


def fit(counts, years, num_states, key):
    """NUTS on the K-state model; returns the MCMC and its ``arviz.InferenceData``.

    Args:
        counts: shape ``(T,)``.
        years: shape ``(T,)``, the ``time`` coordinate.
        num_states: K.
        key: a JAX PRNG key.

    Returns:
        ``(mcmc, idata)``.
    """
    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(key, counts, num_states)
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    print(
        f"K={num_states}: NUTS {time.perf_counter() - start:.1f} s, "
        f"{divergences} divergent transitions"
    )
    states = np.arange(1, num_states + 1)
    idata = to_inference_data(
        mcmc,
        coords={"state": states, "next_state": states, "time": years},
        dims={
            "increments": ["state"],
            "rates": ["state"],
            "transition_matrix": ["state", "next_state"],
        },
    )
    return mcmc, idata


def state_probabilities(samples, counts, num_states):
    """Posterior p(z_t = k | y) and E[rate of z_t | y], averaged over the posterior draws.

    Args:
        samples: dict of posterior draws, ``transition_matrix (S, K, K)`` and ``rates (S, K)``.
        counts: shape ``(T,)``.
        num_states: K.

    Returns:
        ``(probs (T, K), mean_rate (T,))``.
    """
    probs = posterior_latents(model, samples, counts, num_states)["y"]  # (S, T, K)
    mean_rate = jnp.einsum("stk,sk->st", probs, samples["rates"])
    return probs.mean(axis=0), mean_rate.mean(axis=0)


def sampled_rate_paths(samples, counts, num_states, key):
    """The rate of the hidden state along one backward-sampled path per posterior draw.

    Args:
        samples: dict of posterior draws with ``rates (S, K)``.
        counts: shape ``(T,)``.
        num_states: K.
        key: a JAX PRNG key for forward-filtering backward-sampling.

    Returns:
        Shape ``(S, T)``: ``rates[s, z_t^(s)]`` for the path ``z^(s)`` drawn given draw ``s``.
    """
    paths = posterior_latents(model, samples, counts, num_states, method="sample", key=key)["y"]
    return jnp.take_along_axis(samples["rates"], paths, axis=1)


def plot(years, counts, probs, mean_rate, rates_median, path):
    """Two panels: counts with the posterior mean rate, and the state probabilities per year."""
    num_states = probs.shape[1]
    colors = plt.get_cmap("viridis")(np.linspace(0.15, 0.85, num_states))
    labels = [f"state {k + 1} (rate ≈ {rates_median[k]:.1f})" for k in range(num_states)]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    top.bar(years, counts, width=0.85, color="0.75", label="earthquakes (magnitude ≥ 7)")
    top.plot(years, mean_rate, color="C3", lw=2, label="posterior mean rate")
    for k in range(num_states):
        label = "posterior median rate per state" if k == 0 else None
        top.axhline(rates_median[k], color=colors[k], ls="--", lw=1.2, label=label)
    top.set_ylabel("count per year")
    top.set_title(f"Major earthquakes 1900–2006: {num_states}-state Poisson-HMM")
    top.legend(loc="upper left", frameon=False)
    bottom.stackplot(years, probs.T, colors=colors, labels=labels, alpha=0.9, step="mid")
    bottom.set_ylim(0, 1)
    bottom.set_xlim(years[0] - 0.5, years[-1] + 0.5)
    bottom.set_ylabel("P(state | all counts)")
    bottom.set_xlabel("year")
    bottom.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=num_states,
        frameon=False,
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_rate_paths(years, counts, paths_by_k, path):
    """One panel per K: counts, and the rate of the sampled hidden state (median, 50%, 90%).

    Args:
        years: shape ``(T,)``.
        counts: shape ``(T,)``.
        paths_by_k: ``{K: rates along sampled paths, shape (S, T)}``.
        path: where to write the PNG.
    """
    fig, axes = plt.subplots(len(paths_by_k), 1, figsize=(10, 7), sharex=True, sharey=True)
    for ax, (num_states, paths) in zip(axes, paths_by_k.items(), strict=True):
        q05, q25, q50, q75, q95 = np.quantile(paths, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.bar(years, counts, width=0.85, color="0.8", label="earthquakes")
        ax.fill_between(years, q05, q95, color="C3", alpha=0.2, step="mid", label="90%")
        ax.fill_between(years, q25, q75, color="C3", alpha=0.35, step="mid", label="50%")
        ax.step(years, q50, where="mid", color="C3", lw=1.5, label="median")
        ax.set_ylabel("count per year")
        ax.set_title(f"K = {num_states}: rate of the hidden state along sampled paths", fontsize=10)
    axes[0].legend(loc="upper left", ncol=4, frameon=False, fontsize="small")
    axes[-1].set_xlabel("year")
    axes[-1].set_xlim(years[0] - 0.5, years[-1] + 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def trace_figure(idata, var_names, **kwargs):
    """ArviZ's trace plot figure: ``plot_trace`` (ArviZ 0.2x) or ``plot_trace_dist`` (1.x)."""
    if hasattr(az, "plot_trace_dist"):  # ArviZ 1.x (arviz-plots) returns a PlotCollection
        return az.plot_trace_dist(idata, var_names=var_names).viz["figure"].item()
    return az.plot_trace(idata, var_names=var_names, **kwargs).ravel()[0].figure


def save_trace(idata, num_states, path):
    """ArviZ's trace plot of the rates and the transition matrix."""
    fig = trace_figure(idata, ["rates", "transition_matrix"], compact=True)
    fig.suptitle(f"{num_states}-state Poisson-HMM: NUTS trace")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main():
    """Fit K = 2, 3, 4, print the summary and the model comparison, and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-states",
        type=int,
        default=int(os.environ.get("NUMPYRO_SSM_NUM_STATES", NUM_STATES)),
        choices=COMPARED_STATES,
        help="the K summarized and plotted in detail (default: %(default)s)",
    )
    num_states = parser.parse_args().num_states
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)

    data = load_earthquakes()
    counts = jnp.asarray(data.counts, dtype=jnp.float64)
    # a quick run compares two fits (compilation dominates it); a full run all three
    compared = tuple(sorted({2, 3, num_states})) if FAST else COMPARED_STATES
    print(
        f"{len(counts)} annual counts, {data.years[0]}-{data.years[-1]}; K in {compared}, "
        f"{NUM_CHAINS} chains x ({NUM_WARMUP} warmup + {NUM_SAMPLES} samples)"
        + (" [NUMPYRO_SSM_FAST]" if FAST else "")
    )
    fits = {k: fit(counts, data.years, k, jax.random.key(k)) for k in compared}

    mcmc, idata = fits[num_states]
    why = (
        "the default, as in the README and Zucchini et al.'s first fit"
        if num_states == NUM_STATES
        else "chosen with --num-states"
    )
    print(
        f"\nThe {num_states}-state model in detail ({why}; az.compare below ranks K = {compared}):"
    )
    summary = az.summary(idata, var_names=["rates", "transition_matrix"], round_to=3)
    print(summary.to_string())
    samples = mcmc.get_samples()
    rates_median = np.median(np.asarray(samples["rates"]), axis=0)
    print("\nPoisson rates, posterior median vs. maximum likelihood (Zucchini et al. 2016):")
    for k in range(num_states):
        mle = PUBLISHED_MLE_RATES[num_states][k]
        print(f"  state {k + 1}: posterior median {rates_median[k]:6.2f}   MLE {mle:6.2f}")
    path = outdir / "earthquakes_trace.png"
    save_trace(idata, num_states, path)
    print(f"wrote {path.resolve()}")

    print(
        "\nModel comparison: PSIS-LOO over the one-step-ahead terms log p(y_t | y_1:t-1).\n"
        "These terms condition on the past only, so this approximates leave-future-out\n"
        "(one-step-ahead) predictive performance, not leave-one-out; exact LFO refits the\n"
        "model on y_1:t for each t."
    )
    with warnings.catch_warnings():  # ArviZ warns about large Pareto k; counted below instead
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        comparison = az.compare({f"K={k}": fits[k][1] for k in compared})
        pareto_k = {k: az.loo(fits[k][1], pointwise=True).pareto_k for k in compared}
    print(comparison.round(2).to_string())
    print(f"az.compare ranks {comparison.index[0]} first.")
    for k, khat in pareto_k.items():
        print(f"K={k}: Pareto k > 0.7 for {int((khat > 0.7).sum())} of {khat.size} years")

    start = time.perf_counter()
    probs, mean_rate = state_probabilities(samples, counts, num_states)
    path = outdir / "earthquakes.png"
    plot(data.years, data.counts, np.asarray(probs), np.asarray(mean_rate), rates_median, path)
    paths = {
        k: np.asarray(sampled_rate_paths(m.get_samples(), counts, k, jax.random.key(10 + k)))
        for k, (m, _) in fits.items()
    }
    print(f"\nsmoothing and sampling latent paths: {time.perf_counter() - start:.1f} s")
    print(f"wrote {path.resolve()}")
    path = outdir / "earthquakes_state_paths.png"
    plot_rate_paths(data.years, data.counts, paths, path)
    print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    main()

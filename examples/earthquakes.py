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

The script runs NUTS over several chains, prints ``arviz.summary``, then averages the smoothed
state probabilities p(z_t = k | y, Gamma, rates) over the posterior draws and saves a figure.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (2 chains, 50 warmup, 50 samples), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``earthquakes.png`` (default: current directory).
    NUMPYRO_SSM_NUM_STATES=K  the number of hidden states, 2 to 4 (default 2); or ``--num-states``.

Run it with ``python examples/earthquakes.py``.
"""

import argparse
import os
import time
from pathlib import Path

NUM_STATES = 2  # hidden seismic regimes; override with --num-states or NUMPYRO_SSM_NUM_STATES
FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 2 if FAST else 4
NUM_WARMUP = 50 if FAST else 1000
NUM_SAMPLES = 50 if FAST else 1000

# Chains run in parallel on separate (virtual) CPU devices. This must happen before jax starts.
import numpyro  # noqa: E402

numpyro.set_host_device_count(NUM_CHAINS)

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import DiscreteHMM  # noqa: E402
from numpyro_ssm.datasets import load_earthquakes  # noqa: E402

jax.config.update("jax_enable_x64", True)

# Maximum-likelihood rates of the stationary Poisson-HMM (Zucchini, MacDonald & Langrock 2016,
# Section 3.2). tests/test_earthquakes_mle.py reproduces the K = 2 fit; the same fit with K = 3
# and K = 4 states gives these values to two decimals.
PUBLISHED_MLE_RATES = {
    2: (15.47, 26.13),
    3: (13.15, 19.72, 29.71),
    4: (11.28, 13.85, 19.70, 29.70),
}


def stationary_distribution(transition_matrix):
    """The row vector ``delta`` with ``delta @ transition_matrix = delta``, summing to one.

    Solves ``(I - A^T + 1 1^T) delta = 1`` (Zucchini, MacDonald & Langrock 2016, Section 2.3.1).

    Args:
        transition_matrix: shape ``(K, K)``, rows summing to one.

    Returns:
        Shape ``(K,)``.
    """
    num_states = transition_matrix.shape[-1]
    system = (
        jnp.eye(num_states, dtype=transition_matrix.dtype)
        - transition_matrix.T
        + jnp.ones((num_states, num_states), transition_matrix.dtype)
    )
    return jnp.linalg.solve(system, jnp.ones(num_states, transition_matrix.dtype))


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


def state_probabilities(samples, counts):
    """Posterior p(z_t = k | y) and E[rate of z_t | y], averaged over the posterior draws.

    Args:
        samples: dict of posterior draws, ``transition_matrix (S, K, K)`` and ``rates (S, K)``.
        counts: shape ``(T,)``.

    Returns:
        ``(probs (T, K), mean_rate (T,))``.
    """

    def one_draw(transition_matrix, rates):
        smoothed = make_hmm(transition_matrix, rates, counts.shape[-1]).smooth(counts)
        probs = smoothed.smoothed_probs  # (T, K)
        return probs, probs @ rates

    probs, mean_rate = jax.jit(jax.vmap(one_draw))(samples["transition_matrix"], samples["rates"])
    return probs.mean(axis=0), mean_rate.mean(axis=0)


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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    """Fit the model, print the summary and write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-states",
        type=int,
        default=int(os.environ.get("NUMPYRO_SSM_NUM_STATES", NUM_STATES)),
        choices=[2, 3, 4],
        help="number of hidden states K (default: %(default)s)",
    )
    num_states = parser.parse_args().num_states
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)

    data = load_earthquakes()
    counts = jnp.asarray(data.counts, dtype=jnp.float64)
    print(
        f"{len(counts)} annual counts, {data.years[0]}-{data.years[-1]}; K={num_states}, "
        f"{NUM_CHAINS} chains x ({NUM_WARMUP} warmup + {NUM_SAMPLES} samples)"
        + (" [NUMPYRO_SSM_FAST]" if FAST else "")
    )

    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="parallel",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), counts, num_states)
    print(f"NUTS: {time.perf_counter() - start:.1f} s")
    divergences = int(mcmc.get_extra_fields()["diverging"].sum())
    print(f"divergent transitions: {divergences}")

    start = time.perf_counter()
    # Naming the dimensions saves arviz two eager traces of the model to infer them.
    states = np.arange(1, num_states + 1)
    idata = az.from_numpyro(
        mcmc,
        log_likelihood=False,
        coords={"state": states, "next_state": states, "year": data.years},
        dims={
            "increments": ["state"],
            "rates": ["state"],
            "transition_matrix": ["state", "next_state"],
            "y": ["year"],
        },
        pred_dims={},
    )
    print(f"az.from_numpyro: {time.perf_counter() - start:.1f} s")
    summary = az.summary(idata, var_names=["rates", "transition_matrix"], round_to=3)
    print(summary.to_string())

    samples = mcmc.get_samples()
    rates_median = np.median(np.asarray(samples["rates"]), axis=0)
    print("\nPoisson rates, posterior median vs. maximum likelihood (Zucchini et al. 2016):")
    for k in range(num_states):
        mle = PUBLISHED_MLE_RATES[num_states][k]
        print(f"  state {k + 1}: posterior median {rates_median[k]:6.2f}   MLE {mle:6.2f}")

    start = time.perf_counter()
    probs, mean_rate = state_probabilities(samples, counts)
    print(f"smoothing: {time.perf_counter() - start:.1f} s")
    path = outdir / "earthquakes.png"
    plot(data.years, data.counts, np.asarray(probs), np.asarray(mean_rate), rates_median, path)
    print(f"\nwrote {path.resolve()}")


if __name__ == "__main__":
    main()

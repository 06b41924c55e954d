"""Old Faithful: explicit dwell times (hidden semi-Markov) against geometric ones (HMM).

The 299 consecutive eruptions of the Old Faithful geyser, 1-15 August 1985 (Azzalini & Bowman
1990; ``numpyro_ssm.datasets.load_geyser``), alternate between short eruptions (about 2
minutes, followed by a short wait) and long ones (about 4.3 minutes, followed by a long wait).
Short eruptions almost never follow each other, while long ones come in runs of varied length.
Each step t is one eruption with the wait that follows it:

    y_t = (duration_t, waiting_{t+1}),   t = 1..298,

and the hidden state is the eruption type, K = 2. Both models share the emissions

    loc[k]          ~ Normal((2, 55) short | (4.3, 80) long, (1, 15)),  per component, the
                      duration locations ordered (short < long: this fixes the labels)
    scale[k]        ~ HalfNormal((1, 15))
    y_t | z_t = k   ~ Normal(loc[k], scale[k]), the two components independent given k

and differ in how long a state lasts:

- HMM (``DiscreteHMM``): ``transition_matrix[k] ~ Dirichlet(1, 1)``: a run of state k lasts d
  eruptions with the geometric probability ``a_kk^(d-1) (1 - a_kk)``.
- HSMM (``DiscreteHSMM``): a run of state k lasts ``d = 1 + X``, ``X ~ NegativeBinomial2(mean_k,
  concentration)`` (``duration_offset=1``), truncated at ``max_duration = 30``; after a run
  the other state follows (with K = 2 the switch matrix has no free parameter).
  ``mean_k ~ LogNormal(0, 1)``, one ``concentration ~ LogNormal(0, 1.5)`` shared by both states
  (runs of short eruptions are almost all of length 1, which would leave a short-state
  concentration unidentified).

The latent path is summed out exactly by both, so NUTS sees the parameters only. The script

- fits both with NUTS and converts them with ``numpyro_ssm.infer.to_inference_data``, whose
  ``log_likelihood`` group holds the one-step-ahead terms log p(y_t | y_{1:t-1}, theta);
- prints ``az.summary`` of the dwell parameters and ``az.compare`` of the two models (PSIS-LOO
  on one-step-ahead terms approximates leave-future-out predictive performance, not
  leave-one-out);
- plots the posterior dwell-time distributions p_k(d) of both models against the run lengths
  of the data (runs of eruptions longer / shorter than 3 minutes), ``geyser_dwell_times.png``;
- plots the eruptions with the HSMM's smoothed probability of a long eruption and its MAP
  segmentation (``posterior_latents``), ``geyser_states.png``.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (1 chain, 50 warmup, 50 samples, trees of depth
                              6 at most), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write the figures (default: current directory).

Run it with ``python examples/geyser.py``.
"""

import os
import time
import warnings
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 1 if FAST else 4
NUM_WARMUP = 50 if FAST else 1000
NUM_SAMPLES = 50 if FAST else 1000
MAX_DURATION = 30  # the longest run of one eruption type the HSMM allows (the data's is 8)
SHOWN_DURATIONS = 10

import arviz as az  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpyro  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.distributions import constraints  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import DiscreteHMM, DiscreteHSMM  # noqa: E402
from numpyro_ssm.datasets import load_geyser  # noqa: E402
from numpyro_ssm.infer import posterior_latents, to_inference_data  # noqa: E402

jax.config.update("jax_enable_x64", True)

NUM_STATES = 2
STATE_NAMES = ("short", "long")
SWITCH = jnp.array([[0.0, 1.0], [1.0, 0.0]])


def emissions():
    """The shared emission model: independent normals per state, batch ``(K,)``, event ``(2,)``.

    The duration locations are ordered (state 0 is the short eruption), which fixes the labels;
    their prior is the normal below restricted to that order.
    """
    duration_loc = numpyro.sample(
        "duration_loc", dist.ImproperUniform(constraints.ordered_vector, (), (NUM_STATES,))
    )
    prior = dist.Normal(jnp.array([2.0, 4.3]), 1.0).log_prob(duration_loc)
    numpyro.factor("duration_loc_prior", prior.sum())
    waiting_loc = numpyro.sample(
        "waiting_loc", dist.Normal(jnp.array([55.0, 80.0]), 15.0).to_event(1)
    )
    loc = jnp.stack([duration_loc, waiting_loc], axis=-1)
    prior_scale = jnp.array([1.0, 15.0])
    scale = numpyro.sample(
        "scale", dist.HalfNormal(jnp.broadcast_to(prior_scale, (NUM_STATES, 2))).to_event(2)
    )
    return dist.Normal(loc, scale).to_event(1)


def dwell_distribution(mean, concentration):
    """``d - 1 ~ NegativeBinomial2(mean, concentration)``, batch ``(K,)``."""
    return dist.NegativeBinomial2(mean, concentration)


def hsmm_model(y):
    """Explicit negative-binomial dwell times; ``y`` has shape ``(T, 2)``."""
    emission = emissions()
    mean = numpyro.sample("dwell_mean", dist.LogNormal(0.0, 1.0).expand([NUM_STATES]).to_event(1))
    # one concentration for both states: the short state's runs are almost all of length 1,
    # which leaves its own concentration unidentified (a funnel for NUTS)
    concentration = numpyro.sample("dwell_concentration", dist.LogNormal(0.0, 1.5))
    hsmm = DiscreteHSMM(
        jnp.ones(NUM_STATES) / NUM_STATES,
        SWITCH,
        emission,
        dwell_distribution(mean, concentration),
        duration_offset=1,
        max_duration=MAX_DURATION,
        num_steps=y.shape[0],
    )
    numpyro.sample("y", hsmm, obs=y)


def hmm_model(y):
    """Geometric dwell times; ``y`` has shape ``(T, 2)``."""
    emission = emissions()
    transition_matrix = numpyro.sample(
        "transition_matrix", dist.Dirichlet(jnp.ones((NUM_STATES, NUM_STATES))).to_event(1)
    )
    hmm = DiscreteHMM(
        jnp.ones(NUM_STATES) / NUM_STATES, transition_matrix, emission, num_steps=y.shape[0]
    )
    numpyro.sample("y", hmm, obs=y)


def fit(model, y, key, name):
    """NUTS on ``model``; returns ``(mcmc, idata)`` with per-step log-likelihoods."""
    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model, max_tree_depth=6 if FAST else 10),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(key, y)
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    print(f"{name}: NUTS {time.perf_counter() - start:.1f} s, {divergences} divergent transitions")
    dims = {"duration_loc": ["state"], "waiting_loc": ["state"], "scale": ["state", "component"]}
    dims.update(dwell_mean=["state"])
    dims.update(transition_matrix=["state", "next_state"])
    coords = {
        "state": list(STATE_NAMES),
        "next_state": list(STATE_NAMES),
        "component": ["duration", "next waiting"],
        "time": np.arange(1, y.shape[0] + 1),
    }
    return mcmc, to_inference_data(mcmc, coords=coords, dims=dims)


def run_lengths(is_long):
    """Lengths of the runs of each eruption type: ``{False: [...], True: [...]}``."""
    runs = {False: [], True: []}
    current, length = bool(is_long[0]), 1
    for value in is_long[1:]:
        if bool(value) == current:
            length += 1
        else:
            runs[current].append(length)
            current, length = bool(value), 1
    runs[current].append(length)
    return runs


def dwell_probabilities(hsmm_samples, hmm_samples):
    """Posterior draws of ``p_k(d)``, ``d = 1..SHOWN_DURATIONS``: ``(S, K, D)`` for each model."""

    def table(mean, concentration):  # the HSMM's own truncated, renormalized table
        hsmm = DiscreteHSMM(
            jnp.ones(NUM_STATES) / NUM_STATES,
            SWITCH,
            dist.Normal(jnp.zeros(NUM_STATES)),
            dwell_distribution(mean, concentration),
            duration_offset=1,
            max_duration=MAX_DURATION,
            num_steps=1,
        )
        return hsmm.duration_probs[:, :SHOWN_DURATIONS]

    hsmm = jax.vmap(table)(hsmm_samples["dwell_mean"], hsmm_samples["dwell_concentration"])
    # (the shared concentration broadcasts against the per-state means inside ``table``)
    stay = jnp.diagonal(hmm_samples["transition_matrix"], axis1=-2, axis2=-1)[..., None]
    d = jnp.arange(1, SHOWN_DURATIONS + 1)
    return np.asarray(hsmm), np.asarray(stay ** (d - 1) * (1 - stay))


def plot_dwell_times(hsmm_probs, hmm_probs, runs, path):
    """Posterior dwell-time distributions of both models against the data's run lengths."""
    d = np.arange(1, SHOWN_DURATIONS + 1)
    fig, axes = plt.subplots(1, NUM_STATES, figsize=(11, 4), sharey=True)
    for k, ax in enumerate(axes):
        observed = np.bincount(runs[bool(k)], minlength=SHOWN_DURATIONS + 1)[1:]
        ax.bar(d, observed[:SHOWN_DURATIONS] / len(runs[bool(k)]), color="0.8",
               label=f"data: runs of {STATE_NAMES[k]} eruptions")  # fmt: skip
        for probs, color, label in (
            (hsmm_probs, "C0", "HSMM: 1 + negative binomial"),
            (hmm_probs, "C3", "HMM: geometric"),
        ):
            low, mid, high = np.quantile(probs[:, k], [0.05, 0.5, 0.95], axis=0)
            ax.plot(d, mid, "o-", color=color, lw=1.5, ms=4, label=f"{label} (median, 90%)")
            ax.fill_between(d, low, high, color=color, alpha=0.2)
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 1.5)
        ax.set_xticks(d)
        ax.set_xlabel("run length d (eruptions)")
        ax.set_title(f"{STATE_NAMES[k]} eruptions: p(d)")
        ax.legend(frameon=False, fontsize="small", loc="lower left")
    axes[0].set_ylabel("probability")
    fig.suptitle("Old Faithful: how many eruptions of one type in a row")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_states(duration, prob_long, mode, path):
    """Eruption durations with the HSMM's P(long | all data) and its MAP segmentation."""
    t = np.arange(1, len(duration) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    top.scatter(t, duration, c=mode, cmap="coolwarm", s=12, label="eruption (colour: MAP state)")
    top.set_ylabel("duration (min)")
    top.set_title("Old Faithful eruptions and the HSMM's segmentation")
    top.legend(frameon=False, loc="lower right", fontsize="small")
    bottom.step(t, prob_long, where="mid", color="C0")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("P(long | all data)")
    bottom.set_xlabel("eruption")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main():
    """Fit both models, compare them, and write the figures."""
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    data = load_geyser()
    y = jnp.stack([data.duration[:-1], data.waiting[1:]], axis=-1)
    print(
        f"{y.shape[0]} eruptions with the wait that follows; {NUM_CHAINS} chains x "
        f"({NUM_WARMUP} warmup + {NUM_SAMPLES} samples)" + (" [NUMPYRO_SSM_FAST]" if FAST else "")
    )
    hsmm_mcmc, hsmm_idata = fit(hsmm_model, y, jax.random.key(0), "HSMM")
    hmm_mcmc, hmm_idata = fit(hmm_model, y, jax.random.key(1), "HMM")
    print("\nHSMM dwell times, d - 1 ~ NegativeBinomial2(mean, concentration):")
    variables = ["dwell_mean", "dwell_concentration", "duration_loc", "waiting_loc"]
    print(az.summary(hsmm_idata, var_names=variables, round_to=3).to_string())
    print("\nHMM transition matrix (its diagonal sets the geometric dwell times):")
    print(az.summary(hmm_idata, var_names=["transition_matrix"], round_to=3).to_string())

    print(
        "\nModel comparison: PSIS-LOO over the one-step-ahead terms log p(y_t | y_1:t-1): an\n"
        "approximation of leave-future-out predictive performance, not leave-one-out."
    )
    with warnings.catch_warnings():  # ArviZ warns about large Pareto k; counted below instead
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        comparison = az.compare({"HSMM": hsmm_idata, "HMM": hmm_idata})
        pareto_k = {n: az.loo(i, pointwise=True).pareto_k for n, i in
                    (("HSMM", hsmm_idata), ("HMM", hmm_idata))}  # fmt: skip
    print(comparison.round(2).to_string())
    for name, khat in pareto_k.items():
        print(f"{name}: Pareto k > 0.7 for {int((khat > 0.7).sum())} of {khat.size} eruptions")

    hsmm_samples, hmm_samples = hsmm_mcmc.get_samples(), hmm_mcmc.get_samples()
    runs = run_lengths(np.asarray(data.duration[:-1]) > 3.0)
    hsmm_probs, hmm_probs = dwell_probabilities(hsmm_samples, hmm_samples)
    print("\nP(a run of long eruptions lasts d), posterior median: data / HSMM / HMM")
    observed = np.bincount(runs[True], minlength=SHOWN_DURATIONS + 1)[1:] / len(runs[True])
    hsmm_mid, hmm_mid = np.median(hsmm_probs[:, 1], 0), np.median(hmm_probs[:, 1], 0)
    for d in range(6):
        print(f"  d={d + 1}: {observed[d]:.3f} / {hsmm_mid[d]:.3f} / {hmm_mid[d]:.3f}")
    path = outdir / "geyser_dwell_times.png"
    plot_dwell_times(hsmm_probs, hmm_probs, runs, path)
    print(f"wrote {path}")

    probs = posterior_latents(hsmm_model, hsmm_samples, y)["y"]  # (S, T, K)
    modes = posterior_latents(hsmm_model, hsmm_samples, y, method="mode")["y"]  # (S, T)
    mode = (np.asarray(modes).mean(0) > 0.5).astype(int)  # the per-step majority over draws
    path = outdir / "geyser_states.png"
    plot_states(np.asarray(data.duration[:-1]), np.asarray(probs[..., 1].mean(0)), mode, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

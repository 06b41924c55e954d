"""Behavioural syllables from simulated keypoints: a keypoint-MoSeq-style SLDS fitted by Gibbs.

keypoint-MoSeq (Weinreb et al. 2024, Nature Methods) models tracked keypoints through a
low-dimensional pose x_t that follows a switching autoregression: a sticky HDP-HMM over
"syllables" z_t, each with its own AR dynamics, and keypoints y_t = C x_t + d + noise. This
script simulates such data faithfully to that model: two recordings (of different lengths) of
8 keypoints in 2-D (16 coordinates), a 4-dimensional pose, 5 syllables with rotational and
drifting AR(1) dynamics lasting about half a second at 30 frames per second, keypoint noise, and
tracking dropouts (single coordinates missing, as low-confidence keypoints are). Then, as
keypoint-MoSeq does:

- C and d come from PCA of the observed keypoints (x_t starts at the PCA scores);
- the stickiness kappa is set from a target expected syllable duration with
  ``stickiness_for_duration`` (the duration the prior implies);
- the recordings are cut into segments with one context frame (``split_into_segments``): each
  frame is owned by one segment, so no emission is counted twice; the context frame's keypoints
  are masked in the segment that does not own it;
- ``slds_gibbs_step`` runs blocked Gibbs sweeps on the batch of segments: x | z, y by the Kalman
  sampler on the exact companion form, z | x by FFBS, AR parameters by MNIW, HDP transitions;
- ``merge_segments`` puts the syllables back into the recordings, and ``duration_counts`` and
  ``state_usage`` summarize them against the truth.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (shorter recordings, 15 sweeps), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``keypoint_slds_ethogram.png``,
                              ``keypoint_slds_durations.png`` and ``keypoint_slds_trace.png``.

Run it with ``python examples/keypoint_slds.py``.
"""

import os
from functools import partial
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
LENGTHS = (600, 450) if FAST else (3000, 2400)
NUM_SWEEPS = 15 if FAST else 300
SEGMENT = 150 if FAST else 500

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from numpyro_ssm.ops.hmm import duration_counts, state_usage, stickiness_for_duration  # noqa: E402
from numpyro_ssm.ops.switching import (  # noqa: E402
    SLDSEmission,
    TransitionPrior,
    ar_prior,
    init_slds_gibbs,
    merge_segments,
    slds_gibbs_step,
    split_into_segments,
)

OUTDIR = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
TRUE_K, POSE_DIM, KEYPOINTS, MEAN_DURATION = 5, 4, 8, 15
FIT_K = 8  # the weak limit: more states than syllables


def simulate(rng):
    """Syllables, poses and keypoints of the recordings (lists), and the true parameters."""
    angles = rng.uniform(0.15, 0.45, TRUE_K)
    A = np.zeros((TRUE_K, POSE_DIM, POSE_DIM))
    for k in range(TRUE_K):
        c, s = np.cos(angles[k]), np.sin(angles[k])
        A[k, :2, :2] = 0.97 * np.array([[c, -s], [s, c]])
        A[k, 2:, 2:] = 0.9 * np.eye(2) + 0.05 * rng.normal(size=(2, 2))
    b = rng.normal(size=(TRUE_K, POSE_DIM)) * 0.3
    stay = 1 - 1 / MEAN_DURATION
    P = np.full((TRUE_K, TRUE_K), (1 - stay) / (TRUE_K - 1)) + np.eye(TRUE_K) * (
        stay - (1 - stay) / (TRUE_K - 1)
    )
    C = np.linalg.qr(rng.normal(size=(2 * KEYPOINTS, POSE_DIM)))[0] * 3.0
    d = rng.normal(size=2 * KEYPOINTS)
    recordings = []
    for T in LENGTHS:
        z = np.zeros(T, int)
        x = np.zeros((T, POSE_DIM))
        for t in range(1, T):
            z[t] = rng.choice(TRUE_K, p=P[z[t - 1]])
            x[t] = A[z[t]] @ x[t - 1] + b[z[t]] + rng.normal(size=POSE_DIM) * 0.1
        y = x @ C.T + d + rng.normal(size=(T, 2 * KEYPOINTS)) * 0.2
        y[rng.uniform(size=y.shape) < 0.03] = np.nan  # tracking dropouts
        recordings.append((z, x, y))
    return recordings


def pca_emission(recordings):
    """C, d and the noise scale from PCA of the observed keypoints, as keypoint-MoSeq does."""
    frames = np.concatenate([y[~np.isnan(y).any(1)] for _, _, y in recordings])
    d = frames.mean(0)
    _, s, vt = np.linalg.svd(frames - d, full_matrices=False)
    C = vt[:POSE_DIM].T
    residual = (frames - d) - (frames - d) @ C @ C.T
    noise = np.sqrt(np.mean(residual**2) * frames.shape[1] / (frames.shape[1] - POSE_DIM))
    return C, d, noise


def matched_accuracy(true, inferred, mask):
    """Frame agreement after matching inferred states to syllables (Hungarian)."""
    overlap = np.zeros((TRUE_K, FIT_K))
    np.add.at(overlap, (true[mask], inferred[mask]), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return overlap[rows, cols].sum() / mask.sum(), dict(zip(cols, rows, strict=True))


def main():
    rng = np.random.default_rng(0)
    recordings = simulate(rng)
    C, d, noise = pca_emission(recordings)
    segments = split_into_segments(
        [y for _, _, y in recordings], SEGMENT, context=1, fill_value=np.nan
    )
    # a frame's keypoints count in the segment that owns it only
    observed = jnp.asarray(segments.owned)[..., None] & ~jnp.isnan(segments.values)
    y = jnp.nan_to_num(segments.values)
    emission = SLDSEmission(
        jnp.asarray(C),
        jnp.asarray(d),
        noise * jnp.eye(2 * KEYPOINTS),
        jnp.zeros(POSE_DIM),
        jnp.eye(POSE_DIM) * 10.0,
    )
    alpha, gamma = 5.0, 5.0
    # the HDP's rows are Dir(alpha beta + kappa e_k) with beta on the simplex: tune kappa at
    # beta's prior mean, 1 / K
    mean_weights = jnp.ones(FIT_K) / FIT_K
    kappa = float(stickiness_for_duration(MEAN_DURATION, alpha, weights=mean_weights)[0])
    print(f"stickiness for a prior mean duration of {MEAN_DURATION} frames: kappa = {kappa:.1f}")
    transitions = TransitionPrior(alpha, kappa, jnp.ones(FIT_K) / FIT_K, gamma=gamma)
    prior = ar_prior(POSE_DIM, 1, noise_scale=0.1, first_lag=0.9)
    state = init_slds_gibbs(
        jax.random.key(0),
        y,
        observed,
        num_states=FIT_K,
        num_lags=1,
        emission=emission,
        ar_prior=prior,
        transition_prior=transitions,
    )
    step = jax.jit(
        partial(slds_gibbs_step, emission=emission, ar_prior=prior, transition_prior=transitions)
    )
    truth = np.concatenate([z for z, _, _ in recordings])
    trace = []
    for sweep in range(NUM_SWEEPS):
        state = step(jax.random.fold_in(jax.random.key(1), sweep), state, y, observed)
        paths = merge_segments(np.asarray(state.states), segments, fill_value=-1)
        inferred = np.concatenate(paths).astype(int)
        valid = inferred >= 0
        accuracy, mapping = matched_accuracy(truth, np.where(valid, inferred, 0), valid)
        usage = np.asarray(
            state_usage(jnp.asarray(np.where(valid, inferred, 0)), FIT_K, mask=valid)
        )
        trace.append((accuracy, int((usage > 0.01).sum())))
        if sweep % max(1, NUM_SWEEPS // 10) == 0 or sweep == NUM_SWEEPS - 1:
            print(
                f"sweep {sweep:4d}: matched accuracy {accuracy:.3f}, states in use {trace[-1][1]}"
            )

    first = paths[0].astype(int)
    relabelled = np.array([mapping.get(k, -1) for k in first])
    fig, axes = plt.subplots(3, 1, figsize=(11, 5), sharex=True)
    shown = slice(0, min(600, len(first)))
    axes[0].imshow(recordings[0][0][None, shown], aspect="auto", cmap="tab10", vmin=0, vmax=9)
    axes[0].set_ylabel("true")
    axes[1].imshow(relabelled[None, shown], aspect="auto", cmap="tab10", vmin=0, vmax=9)
    axes[1].set_ylabel("inferred")
    for i in range(POSE_DIM):
        axes[2].plot(np.asarray(recordings[0][1])[shown, i], lw=0.8)
    axes[2].set_ylabel("pose x_t")
    axes[2].set_xlabel("frame")
    for axis in axes[:2]:
        axis.set_yticks([])
    axes[0].set_title("Recording 1: syllables (matched labels) and the simulated pose")
    fig.tight_layout()
    fig.savefig(OUTDIR / "keypoint_slds_ethogram.png", dpi=120)

    max_duration = 60
    inferred_all = np.concatenate(paths).astype(int)
    valid = inferred_all >= 0
    true_hist = np.asarray(duration_counts(jnp.asarray(truth), TRUE_K, max_duration)).sum(0)
    fit_hist = np.asarray(
        duration_counts(
            jnp.asarray(np.where(valid, inferred_all, 0)), FIT_K, max_duration, mask=valid
        )
    ).sum(0)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    frames = np.arange(1, max_duration + 1)
    ax.step(frames, true_hist / true_hist.sum(), where="mid", label="true syllables")
    ax.step(frames, fit_hist / max(fit_hist.sum(), 1), where="mid", label="inferred (last sweep)")
    ax.axvline(MEAN_DURATION, color="k", ls=":", label="prior mean duration")
    ax.set_xlabel("duration (frames)")
    ax.set_ylabel("fraction of runs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTDIR / "keypoint_slds_durations.png", dpi=120)

    acc, used = np.array(trace).T
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(acc, label="matched accuracy")
    ax2 = ax.twinx()
    ax2.plot(used, color="C1", label="states in use")
    ax.set_xlabel("Gibbs sweep")
    ax.set_ylabel("accuracy")
    ax2.set_ylabel("states with > 1% usage")
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTDIR / "keypoint_slds_trace.png", dpi=120)
    print(f"wrote figures to {OUTDIR.resolve()}")


if __name__ == "__main__":
    main()

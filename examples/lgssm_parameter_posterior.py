"""Bayesian parameter estimation for a linear-Gaussian state space model with NUTS.

The analysis of dynamax's "Bayesian parameter estimation for an LG-SSM using HMC" notebook. A
two-dimensional latent state rotates slowly and decays; ten noisy linear read-outs of it are
observed for T = 100 steps:

    z_1       ~ N(0, I)
    z_{t+1}   = F z_t + w_t,        w_t ~ N(0, diag(q)^2),  F = 0.99 * rotation(pi / 20)
    y_t       = H z_t + d + v_t,    v_t ~ N(0, diag(r)^2),  H: (10, 2), d: (10,)

The data are simulated with a fixed seed, with 20 more steps held out to check the forecast.
``LinearGaussianSSM`` marginalizes the states exactly (square-root Kalman filter), so NUTS only
sees the parameters.

**Identifying the state basis.** Replacing ``z`` by ``A z`` for an orthogonal ``A`` (which keeps
``z_1 ~ N(0, I)``) that also keeps ``diag(q)^2`` diagonal (sign flips and swaps of the states,
and any rotation when ``q[0] = q[1]``, as here) changes F and H but not the distribution of
y. With H free, the posterior over (F, H) is then a ring of equivalent solutions plus its
mirror image: NUTS needs trajectories of hundreds of leapfrog steps and chains disagree
(R-hat far above 1 on F and H). As in factor analysis, the script picks one basis: the top
2 x 2 block of H is lower triangular with a positive diagonal (``H[0, 1] = 0``, ``H[0, 0] > 0``,
``H[1, 1] > 0``), and the simulation's true H has that form. Priors:

    F[i, j] ~ Normal(0, 1)        q[i] ~ HalfNormal(1)
    H[i, i] ~ HalfNormal(1) for i < 2,   H[0, 1] = 0,   other H[j, i] ~ Normal(0, 1)
    d[j] ~ Normal(0, 1)           r[j] ~ HalfNormal(1)

Two fits:

1. **Every parameter inferred**: F, q, H, d, r (45 numbers).
2. **H and d held fixed** at their true values, passed to the model as constants (the
   dynamax notebook's second fit); only F, q and r are inferred.

For each fit the script plots the smoothed emissions E[y_t | y_{1:T}] and the forecast of the
20 held-out steps, with bands that integrate over the parameter posterior by the law of total
variance: the per-draw means and variances (from ``posterior_latents`` and
``LinearGaussianSSM.forecast``) are combined as

    mean = E_draws[mean_s],    variance = E_draws[variance_s] + Var_draws[mean_s].

It prints ``arviz.summary`` of a few parameters and how many true values fall in the central
90% posterior intervals.

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (2 chains, 50 warmup, 50 samples), used by the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write the figures (default: current directory):
                              ``lgssm_emissions_all_free.png``, ``lgssm_emissions_h_d_fixed.png``
                              and ``lgssm_trace_h_d_fixed.png``.

Run it with ``python examples/lgssm_parameter_posterior.py``.
"""

import os
import time
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 2 if FAST else 4
NUM_WARMUP = 50 if FAST else 1000
NUM_SAMPLES = 50 if FAST else 1000
MAX_TREE_DEPTH = 5 if FAST else 10  # early warmup builds deep trees: cap them in fast mode
# Three emission dimensions in fast mode: the NUTS program then compiles about twice as fast.
STATE_DIM, EMISSION_DIM, NUM_STEPS, HORIZON = 2, 3 if FAST else 10, 100, 20
PLOTTED_DIMS = (0, 1, 2)  # emission dimensions shown in the figures
PARAMETERS = (
    "transition_matrix",
    "transition_scale",
    "emission_matrix",
    "emission_bias",
    "emission_scale",
)

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
from numpyro_ssm.infer import to_inference_data  # noqa: E402


def rotation(angle):
    """The 2 x 2 rotation matrix by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def emission_indices(emission_dim):
    """Where the diagonal and the free entries of the constrained H sit.

    Args:
        emission_dim: ``D``.

    Returns:
        ``(diagonal, free)``: index arrays ``(rows, columns)`` into a ``(D, S)`` matrix. The
        top ``S x S`` block's strict upper triangle is neither (it is zero).
    """
    rows, cols = np.indices((emission_dim, STATE_DIM)).reshape(2, -1)
    diagonal = rows == cols
    free = (rows > cols) | (rows >= STATE_DIM)
    return (rows[diagonal], cols[diagonal]), (rows[free & ~diagonal], cols[free & ~diagonal])


def true_parameters(key):
    """The simulation's parameters: ``F``, ``q``, ``H``, ``d``, ``r`` as a dict of arrays.

    H is drawn from its prior: standard normal entries, then the top block made lower
    triangular with a positive diagonal. The dict also holds H's pieces (``emission_diagonal``,
    ``emission_free``) and F's basis-free summaries (``trace_F``, ``det_F``).
    """
    key_h, key_d = jax.random.split(key)
    diagonal, free = emission_indices(EMISSION_DIM)
    raw = jax.random.normal(key_h, (EMISSION_DIM, STATE_DIM))
    transition_matrix = jnp.asarray(0.99 * rotation(np.pi / 20))
    return {
        "transition_matrix": transition_matrix,
        "transition_scale": jnp.full(STATE_DIM, 0.3),
        "emission_diagonal": jnp.abs(raw[diagonal]),
        "emission_free": raw[free],
        "emission_matrix": constrained_emission_matrix(jnp.abs(raw[diagonal]), raw[free]),
        "emission_bias": 0.5 * jax.random.normal(key_d, (EMISSION_DIM,)),
        "emission_scale": jnp.full(EMISSION_DIM, 0.3),
        "trace_F": jnp.trace(transition_matrix),
        "det_F": jnp.linalg.det(transition_matrix),
    }


def constrained_emission_matrix(diagonal_values, free_values):
    """The ``(D, S)`` matrix H from its positive diagonal and its free entries.

    Args:
        diagonal_values: shape ``(S,)``, ``H[i, i]`` for ``i < S``.
        free_values: shape ``(D * S - S * (S + 1) / 2,)``, the other entries below the top
            block's diagonal, row by row.

    Returns:
        Shape ``(D, S)``, with zeros above the top block's diagonal.
    """
    emission_dim = (free_values.shape[-1] + STATE_DIM * (STATE_DIM + 1) // 2) // STATE_DIM
    diagonal, free = emission_indices(emission_dim)
    emission_matrix = jnp.zeros((emission_dim, STATE_DIM), free_values.dtype)
    return emission_matrix.at[diagonal].set(diagonal_values).at[free].set(free_values)


def make_ssm(params, num_steps):
    """The LG-SSM with ``z_1 ~ N(0, I)`` and diagonal noise, from a dict of parameters.

    Args:
        params: ``transition_matrix (S, S)``, ``transition_scale (S,)``, ``emission_matrix
            (D, S)``, ``emission_bias (D,)``, ``emission_scale (D,)``.
        num_steps: ``T``.

    Returns:
        A ``LinearGaussianSSM`` with ``event_shape (T, D)``.
    """
    state_dim = params["transition_matrix"].shape[-1]
    return LinearGaussianSSM(
        jnp.zeros(state_dim),
        params["transition_matrix"],
        params["emission_matrix"],
        initial_scale_tril=jnp.eye(state_dim),
        transition_scale_tril=jnp.diag(params["transition_scale"]),
        emission_scale_tril=jnp.diag(params["emission_scale"]),
        emission_bias=params["emission_bias"],
        num_steps=num_steps,
    )


def emission_matrix_prior(emission_dim):
    """Sample H with its top ``S x S`` block lower triangular with a positive diagonal.

    Args:
        emission_dim: ``D``.

    Returns:
        Shape ``(D, S)``; also recorded as the deterministic site ``emission_matrix``.
    """
    num_free = emission_dim * STATE_DIM - STATE_DIM * (STATE_DIM + 1) // 2
    diagonal_values = numpyro.sample(
        "emission_diagonal", dist.HalfNormal(1.0).expand([STATE_DIM]).to_event(1)
    )
    free_values = numpyro.sample(
        "emission_free", dist.Normal(0.0, 1.0).expand([num_free]).to_event(1)
    )
    return numpyro.deterministic(
        "emission_matrix", constrained_emission_matrix(diagonal_values, free_values)
    )


def model(y, emission_matrix=None, emission_bias=None):
    """Priors on the LG-SSM's parameters; ``emission_matrix``/``emission_bias`` fix H and d.

    Args:
        y: observations, shape ``(T, D)``.
        emission_matrix: None to infer H, or its fixed value, shape ``(D, S)``.
        emission_bias: None to infer d, or its fixed value, shape ``(D,)``.
    """
    num_steps, emission_dim = y.shape
    params = {
        "transition_matrix": numpyro.sample(
            "transition_matrix", dist.Normal(0.0, 1.0).expand([STATE_DIM, STATE_DIM]).to_event(2)
        ),
        "transition_scale": numpyro.sample(
            "transition_scale", dist.HalfNormal(1.0).expand([STATE_DIM]).to_event(1)
        ),
        "emission_scale": numpyro.sample(
            "emission_scale", dist.HalfNormal(1.0).expand([emission_dim]).to_event(1)
        ),
    }
    if emission_matrix is None:
        emission_matrix = emission_matrix_prior(emission_dim)
    if emission_bias is None:
        emission_bias = numpyro.sample(
            "emission_bias", dist.Normal(0.0, 1.0).expand([emission_dim]).to_event(1)
        )
    params.update(emission_matrix=emission_matrix, emission_bias=emission_bias)
    # Basis-free summaries of F: its eigenvalues are the roots of x^2 - trace x + det, so
    # |eigenvalue| = sqrt(det) (the damping) and cos(angle) = trace / (2 sqrt(det)).
    numpyro.deterministic("trace_F", jnp.trace(params["transition_matrix"]))
    numpyro.deterministic("det_F", jnp.linalg.det(params["transition_matrix"]))
    numpyro.sample("y", make_ssm(params, num_steps), obs=y)


def run_nuts(y, key, **fixed):
    """NUTS over the model's parameters, chains vectorized.

    Args:
        y: observations, shape ``(T, D)``.
        key: a JAX PRNG key.
        **fixed: constant ``emission_matrix`` and/or ``emission_bias`` passed to the model.

    Returns:
        The fitted ``numpyro.infer.MCMC``.
    """
    start = time.perf_counter()
    mcmc = MCMC(
        NUTS(model, max_tree_depth=MAX_TREE_DEPTH),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(key, y, extra_fields=("diverging", "num_steps"), **fixed)
    stats = jax.block_until_ready(mcmc.get_extra_fields())
    print(
        f"NUTS: {NUM_CHAINS} chains x {NUM_SAMPLES} draws in {time.perf_counter() - start:.1f} s, "
        f"{int(np.sum(stats['diverging']))} divergent transitions, "
        f"{np.mean(stats['num_steps']):.0f} leapfrog steps per draw on average"
    )
    return mcmc


def draw_emission_moments(params, y):
    """One draw's smoothed emission moments over the data and forecast moments beyond it.

    ``y_t = H z_t + d + v_t``, so a new observation at step ``t`` given ``y_{1:T}`` has mean
    ``H m_t + d`` and variance ``diag(H P_t H^T) + r^2``, where ``m_t, P_t`` are the smoothed
    state moments. The forecast is ``LinearGaussianSSM.forecast``'s distribution over the next
    ``HORIZON`` observations.

    Args:
        params: one draw of the parameters (see :func:`make_ssm`).
        y: observations, shape ``(T, D)``.

    Returns:
        ``(smoothed_mean, smoothed_var, forecast_mean, forecast_var)`` of shapes ``(T, D)``
        (twice) and ``(HORIZON, D)`` (twice).
    """
    ssm = make_ssm(params, y.shape[0])
    states = ssm.smooth(y)
    H, d, r = params["emission_matrix"], params["emission_bias"], params["emission_scale"]
    smoothed_mean = states.smoothed_means @ H.T + d
    smoothed_var = jnp.einsum("ds,tsr,dr->td", H, states.smoothed_covariances, H) + r**2
    future = ssm.forecast(y, HORIZON)
    return smoothed_mean, smoothed_var, future.mean, future.variance


# Over a dict of draws (leading axis) and one y; defined once, so both fits share one compile.
emission_moments = jax.jit(jax.vmap(draw_emission_moments, in_axes=(0, None)))


def total_moments(means, variances):
    """Mix per-draw Gaussian moments by the law of total variance.

    Args:
        means: shape ``(draws, ...)``, the per-draw means.
        variances: shape ``(draws, ...)``, the per-draw variances.

    Returns:
        ``(mean, variance)`` of the mixture over draws, each of shape ``(...)``.
    """
    means, variances = np.asarray(means), np.asarray(variances)
    return means.mean(axis=0), variances.mean(axis=0) + means.var(axis=0)


def trace_figure(idata, var_names, **kwargs):
    """ArviZ's trace plot figure: ``plot_trace`` (ArviZ 0.2x) or ``plot_trace_dist`` (1.x)."""
    if hasattr(az, "plot_trace_dist"):  # ArviZ 1.x (arviz-plots) returns a PlotCollection
        return az.plot_trace_dist(idata, var_names=var_names).viz["figure"].item()
    return az.plot_trace(idata, var_names=var_names, **kwargs).ravel()[0].figure


def summary_with_truth(idata, truth, names):
    """``az.summary`` of ``names`` with a column of the true values.

    Args:
        idata: an ``arviz.InferenceData`` (or anything ``az.summary`` takes).
        truth: the true values, by name.
        names: the parameters to summarize.

    Returns:
        A ``DataFrame``, one row per entry (``az.summary`` flattens arrays in C order).
    """
    table = az.summary(idata, var_names=names, kind="stats" if FAST else "all", round_to=3)
    table.insert(0, "true", np.concatenate([np.ravel(truth[name]) for name in names]).round(3))
    return table


def interval_hits(samples, truth, names, prob=0.9):
    """How many true values fall in the central ``prob`` posterior intervals.

    Args:
        samples: posterior draws, each of shape ``(draws, ...)``.
        truth: the true values, by name.
        names: the parameters to check.
        prob: the interval's probability mass.

    Returns:
        ``(hits, total)`` over every entry of every parameter named.
    """
    hits = total = 0
    for name in names:
        draws = np.asarray(samples[name])
        low, high = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        value = np.asarray(truth[name])
        hits += int(np.sum((low <= value) & (value <= high)))
        total += value.size
    return hits, total


def plot_emissions(y_all, signal, smoothed, forecast, title, path):
    """Observed and held-out emissions with smoothed and forecast bands (mean +/- 2 sd).

    Args:
        y_all: observations over ``T + HORIZON`` steps, shape ``(T + HORIZON, D)``.
        signal: the noise-free ``H z_t + d`` of the simulation, same shape.
        smoothed: ``(mean, variance)``, each of shape ``(T, D)``.
        forecast: ``(mean, variance)``, each of shape ``(HORIZON, D)``.
        title: the figure title.
        path: where to write the PNG.
    """
    t_fit = np.arange(1, NUM_STEPS + 1)
    t_future = np.arange(NUM_STEPS + 1, NUM_STEPS + HORIZON + 1)
    t_all = np.arange(1, NUM_STEPS + HORIZON + 1)
    fig, axes = plt.subplots(len(PLOTTED_DIMS), 1, figsize=(9, 6.5), sharex=True)
    for ax, dim in zip(axes, PLOTTED_DIMS, strict=True):
        for t, (mean, var), color, label in (
            (t_fit, smoothed, "tab:blue", "smoothed mean ± 2 sd"),
            (t_future, forecast, "tab:green", "forecast mean ± 2 sd"),
        ):
            sd = np.sqrt(var[:, dim])
            ax.fill_between(t, mean[:, dim] - 2 * sd, mean[:, dim] + 2 * sd, color=color, alpha=0.2)
            ax.plot(t, mean[:, dim], color=color, lw=1.5, label=label)
        ax.plot(t_all, signal[:, dim], color="k", lw=0.8, ls="--", label="true H z_t + d")
        ax.plot(t_fit, y_all[:NUM_STEPS, dim], "k.", ms=3, label="observed")
        ax.plot(t_future, y_all[NUM_STEPS:, dim], "x", color="tab:red", ms=4, label="held out")
        ax.axvline(NUM_STEPS + 0.5, color="0.6", lw=0.8)
        ax.set_ylabel(f"y[{dim}]")
    axes[0].set_title(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=5, frameon=False)
    axes[-1].set_xlabel("time step")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def check_fit(samples, y, y_all, truth, checked, fixed):
    """Print interval coverage; return the smoothed and forecast emission moments.

    Args:
        samples: posterior draws, each of shape ``(draws, ...)``.
        y: observations fitted, shape ``(T, D)``.
        y_all: with the held-out steps, shape ``(T + HORIZON, D)``.
        truth: the true parameters (with ``trace_F`` and ``det_F``).
        checked: the parameters whose 90% intervals are checked.
        fixed: constant ``emission_matrix``/``emission_bias`` passed to the model, or empty.

    Returns:
        ``(smoothed, forecast)``: ``(mean, variance)`` pairs mixed over the draws.
    """
    hits, total = interval_hits(samples, truth, checked)
    print(f"true values inside the 90% intervals of {', '.join(checked)}: {hits} of {total}")
    start = time.perf_counter()
    num_draws = samples["transition_matrix"].shape[0]
    draws = {name: samples[name] for name in PARAMETERS if name in samples}
    draws.update({k: jnp.broadcast_to(v, (num_draws,) + v.shape) for k, v in fixed.items()})
    s_mean, s_var, f_mean, f_var = emission_moments(draws, y)
    smoothed, forecast = total_moments(s_mean, s_var), total_moments(f_mean, f_var)
    print(f"smoothed and forecast emissions: {time.perf_counter() - start:.1f} s")
    half_width = 1.645 * np.sqrt(forecast[1])
    held_out = np.asarray(y_all[NUM_STEPS:])
    inside = np.abs(held_out - forecast[0]) <= half_width
    print(
        f"held-out observations inside the 90% forecast intervals: {inside.sum()} of {inside.size}"
    )
    return smoothed, forecast


def main():
    """Simulate the data, run both fits and write the figures."""
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    key_params, key_data, key_all, key_fixed = jax.random.split(jax.random.key(0), 4)
    truth = true_parameters(key_params)
    states, y_all = make_ssm(truth, NUM_STEPS + HORIZON).sample_with_states(key_data)
    signal = np.asarray(states @ truth["emission_matrix"].T + truth["emission_bias"])
    y = y_all[:NUM_STEPS]
    print(
        f"simulated T={NUM_STEPS} (+{HORIZON} held out), S={STATE_DIM}, D={EMISSION_DIM}; "
        f"{NUM_CHAINS} chains x ({NUM_WARMUP} warmup + {NUM_SAMPLES} samples)"
        + (" [NUMPYRO_SSM_FAST]" if FAST else "")
    )

    print("\n== 1. every parameter inferred (F, q, H, d, r) ==")
    mcmc = run_nuts(y, key_all)
    samples = mcmc.get_samples()
    # ArviZ 1.x converts to an xarray DataTree, ArviZ 0.2x to InferenceData
    convert = getattr(az, "convert_to_datatree", None) or az.convert_to_inference_data
    grouped = convert(mcmc.get_samples(group_by_chain=True))
    names = ["transition_matrix", "transition_scale", "trace_F", "det_F", "emission_diagonal"]
    print(summary_with_truth(grouped, truth, names).to_string())
    checked = [
        "transition_matrix",
        "transition_scale",
        "emission_diagonal",
        "emission_free",
        "emission_bias",
        "emission_scale",
    ]
    moments = check_fit(samples, y, y_all, truth, checked, {})
    path = outdir / "lgssm_emissions_all_free.png"
    plot_emissions(np.asarray(y_all), signal, *moments, "LG-SSM, every parameter inferred", path)
    print(f"wrote {path}")

    print("\n== 2. emission weights H and bias d fixed at their true values ==")
    fixed = {name: truth[name] for name in ("emission_matrix", "emission_bias")}
    mcmc = run_nuts(y, key_fixed, **fixed)
    idata = to_inference_data(mcmc, coords={"time": np.arange(1, NUM_STEPS + 1)})
    names = ["transition_matrix", "transition_scale"]
    print(summary_with_truth(idata, truth, names).to_string())
    checked = ["transition_matrix", "transition_scale", "emission_scale"]
    moments = check_fit(mcmc.get_samples(), y, y_all, truth, checked, fixed)
    path = outdir / "lgssm_emissions_h_d_fixed.png"
    title = "LG-SSM, emission weights H and bias d fixed"
    plot_emissions(np.asarray(y_all), signal, *moments, title, path)
    print(f"wrote {path}")

    fig = trace_figure(idata, ["transition_matrix", "transition_scale"])
    fig.tight_layout()
    path = outdir / "lgssm_trace_h_d_fixed.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

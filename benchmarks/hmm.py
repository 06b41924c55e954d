"""Side-by-side timings of the HMM marginal likelihood: numpyro_ssm against TFP, dynamax, hmmlearn.

What is timed, for each (dtype, K, T) cell, on one shared problem:

- a Gaussian-emission HMM with K states: random initial logits (K,), sticky random transition
  logits (K, K), emission means (K,) and log standard deviations (K,), and T observations y drawn
  from a mixture of the K Gaussians. Every method evaluates the same (T, K) Gaussian
  log-likelihoods log N(y_t | mean_k, sd_k) from these parameters *inside* the timed call, then
  runs its forward algorithm:

  - ``serial`` / ``parallel``: ``numpyro_ssm.DiscreteHMM(initial_logits=..., transition_logits=...,
    emission_dist=dist.Normal(means, sds), num_steps=T, parallel=...).log_prob(y)``;
  - ``tfp``: ``tfd.HiddenMarkovModel(Categorical(logits), Categorical(logits), Normal(means, sds),
    num_steps=T).log_prob(y)`` (TFP's JAX substrate);
  - ``dynamax``: ``dynamax.hidden_markov_model.inference.hmm_filter(softmax(initial_logits),
    softmax(transition_logits), log_likelihoods).marginal_loglik``;
  - ``hmmlearn``: ``GaussianHMM(covariance_type="diag", implementation="log")`` with the same
    fixed parameters, ``.score(y[:, None])`` (NumPy + its C forward pass; float64 only, value
    only, no compilation).

- "value" is the jitted log marginal likelihood; "value+grad" is the jitted
  ``jax.value_and_grad`` with respect to all four parameter arrays (the unconstrained
  parameters a NUTS or SVI step differentiates).
- Steady-state time is the median over repeated calls, each ended by ``block_until_ready``;
  it is reported in microseconds per time step (total / T). "compile" is the first call's time
  minus the steady-state time, in seconds.
- The ratio columns are numpyro_ssm's serial (and parallel) steady-state time divided by the
  row's: above 1 means numpyro_ssm is slower than that row.

Cells whose estimated memory exceeds ``--max-gb`` are skipped with a note, as is any method that
raises; nothing crashes the run. Typical use::

    python benchmarks/hmm.py                      # the full grid (slow on 2 cores)
    python benchmarks/hmm.py --quick              # K=3, T=1000, both dtypes, few repeats
    python benchmarks/hmm.py --K 3 --T 10000 --dtype float64 --methods serial tfp dynamax
"""

import argparse
import os
import platform
import statistics
import sys
import time
import traceback
import warnings

import jax

jax.config.update("jax_enable_x64", True)  # float64 cells; float32 cells pass float32 arrays

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

import numpyro_ssm  # noqa: E402
from numpyro_ssm import DiscreteHMM  # noqa: E402

METHODS = ("serial", "parallel", "tfp", "dynamax", "hmmlearn")
LABELS = {
    "serial": "numpyro_ssm serial",
    "parallel": "numpyro_ssm parallel",
    "tfp": "TFP HiddenMarkovModel",
    "dynamax": "dynamax hmm_filter",
    "hmmlearn": "hmmlearn score",
}
# Rough peak memory of one call in units of T * K^2 * itemsize, (value, value+grad): peak RSS
# measured at K=50, T=10^4, float64 (serial 2.4, parallel 15, TFP 1.0, dynamax 0.3 for
# value+grad), with margin. Used only to skip calls that would not fit in --max-gb.
MEMORY_FACTORS = {
    "serial": (0.1, 3.0),
    "parallel": (8.0, 20.0),
    "tfp": (0.1, 1.5),
    "dynamax": (0.1, 0.5),
    "hmmlearn": (0.1, 0.0),
}


# ------------------------------------------------------------------------------------------------
# The shared problem.


def make_problem(num_states, num_steps, dtype, seed=0):
    """Random parameters and observations of a Gaussian-emission HMM, as arrays of ``dtype``.

    Returns:
        ``(params, y)`` with ``params = (initial_logits (K,), transition_logits (K, K),
        means (K,), log_sds (K,))`` and ``y (T,)``.
    """
    rng = np.random.default_rng(seed)
    initial_logits = rng.normal(size=num_states)
    transition_logits = rng.normal(size=(num_states, num_states)) + 3.0 * np.eye(num_states)
    means = np.linspace(-3.0, 3.0, num_states) if num_states > 1 else np.zeros(1)
    log_sds = np.log(rng.uniform(0.5, 1.5, size=num_states))
    states = rng.integers(num_states, size=num_steps)
    y = rng.normal(means[states], np.exp(log_sds)[states])
    params = tuple(
        jnp.asarray(x, dtype=dtype) for x in (initial_logits, transition_logits, means, log_sds)
    )
    return params, jnp.asarray(y, dtype=dtype)


def log_likelihoods(means, log_sds, y):
    """``[t, k] = log N(y_t | means_k, exp(log_sds_k))``, shape ``(T, K)``."""
    return norm.logpdf(y[:, None], means, jnp.exp(log_sds))


# ------------------------------------------------------------------------------------------------
# The log marginal likelihood of each JAX method, as a function of (params, y).


def ours(parallel):
    def log_marginal(params, y):
        initial_logits, transition_logits, means, log_sds = params
        hmm = DiscreteHMM(
            initial_logits=initial_logits,
            transition_logits=transition_logits,
            emission_dist=dist.Normal(means, jnp.exp(log_sds)),
            num_steps=y.shape[-1],
            parallel=parallel,
        )
        return hmm.log_prob(y)

    return log_marginal


def tfp_log_marginal(params, y):
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    initial_logits, transition_logits, means, log_sds = params
    hmm = tfd.HiddenMarkovModel(
        initial_distribution=tfd.Categorical(logits=initial_logits),
        transition_distribution=tfd.Categorical(logits=transition_logits),
        observation_distribution=tfd.Normal(means, jnp.exp(log_sds)),
        num_steps=y.shape[-1],
    )
    return hmm.log_prob(y)


def dynamax_log_marginal(params, y):
    from dynamax.hidden_markov_model.inference import hmm_filter

    initial_logits, transition_logits, means, log_sds = params
    post = hmm_filter(
        jax.nn.softmax(initial_logits),
        jax.nn.softmax(transition_logits, axis=-1),
        log_likelihoods(means, log_sds, y),
    )
    return post.marginal_loglik


JAX_METHODS = {
    "serial": ours(parallel=False),
    "parallel": ours(parallel=True),
    "tfp": tfp_log_marginal,
    "dynamax": dynamax_log_marginal,
}


def hmmlearn_score(params, y):
    """Build a fixed-parameter hmmlearn GaussianHMM and return ``(score_fn, args)``."""
    from hmmlearn.hmm import GaussianHMM

    initial_logits, transition_logits, means, log_sds = (
        np.asarray(p, dtype=np.float64) for p in params
    )
    model = GaussianHMM(
        n_components=len(means), covariance_type="diag", implementation="log", init_params=""
    )
    model.startprob_ = np.exp(initial_logits - np.logaddexp.reduce(initial_logits))
    log_trans = transition_logits - np.logaddexp.reduce(transition_logits, axis=-1, keepdims=True)
    model.transmat_ = np.exp(log_trans)
    model.means_ = means[:, None]
    model.covars_ = np.exp(2.0 * log_sds)[:, None]
    frames = np.asarray(y, dtype=np.float64)[:, None]
    return lambda: model.score(frames)


# ------------------------------------------------------------------------------------------------
# Timing.


def time_calls(fn, min_repeats, max_repeats, min_total):
    """First-call time and the median of later calls, in seconds; also the first output."""
    start = time.perf_counter()
    first_out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_total):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), first_out


def bench_cell(method, num_states, num_steps, dtype, args):
    """Time one method on one cell; return a result dict (times in seconds) or a skip note."""
    itemsize = jnp.dtype(dtype).itemsize
    unit = num_steps * num_states**2 * itemsize / 2**30
    value_gb, grad_gb = (f * unit for f in MEMORY_FACTORS[method])
    if value_gb > args.max_gb:
        return {"note": f"skipped: needs ~{value_gb:.0f} GB > --max-gb {args.max_gb:g}"}
    if method == "hmmlearn" and dtype != "float64":
        return {"omit": "hmmlearn computes in float64 only: it has no float32 rows"}

    params, y = make_problem(num_states, num_steps, dtype, seed=args.seed)
    repeat = {
        "min_repeats": args.repeats,
        "max_repeats": 4 * args.repeats,
        "min_total": args.min_time,
    }
    result = {}
    if method == "hmmlearn":
        score = hmmlearn_score(params, y)
        _, steady, out = time_calls(score, **repeat)
        result.update(value=steady, value_compile=None, log_marginal=float(out))
        return result

    fn = JAX_METHODS[method]
    value_fn = jax.jit(fn)
    first, steady, out = time_calls(lambda: value_fn(params, y), **repeat)
    result.update(value=steady, value_compile=first - steady, log_marginal=float(out))
    if not np.isfinite(float(out)):
        result["note"] = f"non-finite value {float(out)}"
    if grad_gb > args.max_gb:
        result["grad_note"] = f"value+grad skipped: needs ~{grad_gb:.0f} GB > --max-gb"
        return result
    grad_fn = jax.jit(jax.value_and_grad(fn))
    first, steady, (_, grads) = time_calls(lambda: grad_fn(params, y), **repeat)
    result.update(grad=steady, grad_compile=first - steady)
    if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads):
        result["note"] = "non-finite gradient"
    return result


# ------------------------------------------------------------------------------------------------
# Output.


def machine_info():
    """CPU model, core count and library versions, as printable lines."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {"python": platform.python_version(), "jax": jax.__version__}
    versions["numpyro"] = numpyro.__version__
    versions["numpyro_ssm"] = numpyro_ssm.__version__
    for name, module in (
        ("tfp", "tensorflow_probability"),
        ("dynamax", "dynamax"),
        ("hmmlearn", "hmmlearn"),
        ("numpy", "numpy"),
    ):
        try:
            versions[name] = __import__(module).__version__
        except Exception as err:  # noqa: BLE001 - report, do not crash
            versions[name] = f"unavailable ({type(err).__name__})"
    return [
        f"CPU: {cpu}, {cores} cores available to this process; JAX devices: {jax.devices()}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}",
    ]


def fmt(x, digits=3):
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


COLUMNS = (
    "dtype",
    "K",
    "T",
    "method",
    "value µs/step",
    "value+grad µs/step",
    "compile value s",
    "compile v+g s",
    "serial ÷ this (value, v+g)",
    "parallel ÷ this (value, v+g)",
)


def row_cells(dtype, num_states, num_steps, method, res, ours_res):
    per_step = 1e6 / num_steps
    value = res.get("value")
    grad = res.get("grad")

    def ratio(mine):
        if mine is None or value is None:
            return "—"
        r_value = mine["value"] / value if mine.get("value") else None
        r_grad = mine["grad"] / grad if (mine.get("grad") and grad) else None
        return f"{fmt(r_value, 2)}, {fmt(r_grad, 2)}"

    return [
        dtype,
        str(num_states),
        f"{num_steps:.0e}".replace("e+0", "e"),
        LABELS[method],
        fmt(value * per_step) if value is not None else "—",
        fmt(grad * per_step) if grad is not None else "—",
        fmt(res.get("value_compile"), 2),
        fmt(res.get("grad_compile"), 2),
        ratio(ours_res.get("serial")),
        ratio(ours_res.get("parallel")),
    ]


def print_table(rows, markdown):
    if markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" for _ in COLUMNS) + "|")
        for cells in rows:
            print("| " + " | ".join(cells) + " |")
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for cells in rows:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, nargs="+", default=[3, 10, 50], help="numbers of states")
    parser.add_argument(
        "--T", type=float, nargs="+", default=[1e3, 1e4, 1e5], help="numbers of time steps"
    )
    parser.add_argument(
        "--dtype", nargs="+", default=["float64", "float32"], choices=["float64", "float32"]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5, help="minimum steady-state calls")
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.5,
        help="keep repeating (up to 4x --repeats) until "
        "the steady-state calls add up to this many seconds",
    )
    parser.add_argument(
        "--max-gb", type=float, default=6.0, help="skip calls estimated to need more memory"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--quick", action="store_true", help="K=3, T=1000, both dtypes, 3 repeats (a smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.K, args.T, args.repeats, args.min_time = [3], [1e3], 3, 0.0
    args.T = [int(t) for t in args.T]
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for line in machine_info():
        print(line)
    print(flush=True)

    rows, notes = [], []
    for dtype in args.dtype:
        for num_states in args.K:
            for num_steps in args.T:
                results = {}
                for method in args.methods:
                    tag = f"{dtype} K={num_states} T={num_steps} {LABELS[method]}"
                    start = time.perf_counter()
                    try:
                        res = bench_cell(method, num_states, num_steps, dtype, args)
                    except Exception as err:  # noqa: BLE001 - a failing peer must not stop us
                        res = {"note": f"failed: {type(err).__name__}: {str(err)[:200]}"}
                        traceback.print_exc(limit=2, file=sys.stderr)
                    if "omit" in res:
                        if res["omit"] not in notes:
                            notes.append(res["omit"])
                        continue
                    results[method] = res
                    for key in ("note", "grad_note"):
                        if key in res:
                            notes.append(f"{tag}: {res[key]}")
                    print(
                        f"# {tag}: {time.perf_counter() - start:.1f} s"
                        + (f" ({res['note']})" if "note" in res else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                reference = results.get("serial", {}).get("log_marginal")
                for method, res in results.items():
                    value = res.get("log_marginal")
                    if reference is not None and value is not None:
                        tol = 1e-8 if dtype == "float64" else 1e-4
                        if abs(value - reference) > tol * max(1.0, abs(reference)):
                            notes.append(
                                f"{dtype} K={num_states} T={num_steps} {LABELS[method]}: log "
                                f"marginal {value!r} differs from serial {reference!r}"
                            )
                    if "value" in res:
                        ours_res = {m: results[m] for m in ("serial", "parallel") if m in results}
                        rows.append(row_cells(dtype, num_states, num_steps, method, res, ours_res))
                    else:
                        rows.append(
                            [dtype, str(num_states), f"{num_steps:.0e}".replace("e+0", "e")]
                            + [LABELS[method]]
                            + ["—"] * (len(COLUMNS) - 4)
                        )
                if results:
                    print_table(rows[-len(results) :], markdown=False)
                    print(flush=True)

    print("\nAll cells:")
    for dtype in args.dtype:
        print(f"\n{dtype}:\n")
        print_table([r for r in rows if r[0] == dtype], markdown=args.markdown)
    print(
        "\nAll log marginals agree with numpyro_ssm serial to a relative 1e-8 (float64) or 1e-4 "
        "(float32), unless a note below says otherwise."
    )
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()

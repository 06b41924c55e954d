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
  - ``dynamax_parallel`` (not in the default set): the same with
    ``dynamax.hidden_markov_model.parallel_inference.hmm_filter``;
  - ``hmmlearn``: ``GaussianHMM(covariance_type="diag", implementation="log")`` with the same
    fixed parameters, ``.score(y[:, None])`` (NumPy + its C forward pass; float64 only, value
    only, no compilation).

- "value" is the jitted log marginal likelihood; "value+grad" is the jitted
  ``jax.value_and_grad`` with respect to all four parameter arrays (the unconstrained
  parameters a NUTS or SVI step differentiates).
- Steady-state time is the median over repeated calls, each ended by ``block_until_ready``;
  it is reported in microseconds per time step (total / T). "compile" is the time to trace,
  lower and XLA-compile ``jax.jit(f)`` ahead of time, in seconds, from cold in-memory caches
  (see ``benchmarks/_timing.py``).
- The ratio columns are numpyro_ssm's serial (and parallel) steady-state time divided by the
  row's: above 1 means numpyro_ssm is slower than that row.

Cells whose estimated memory exceeds ``--max-gb`` are skipped with a note, as is any method that
raises; nothing crashes the run. Typical use::

    python benchmarks/hmm.py                      # the full grid (slow on 2 cores)
    python benchmarks/hmm.py --quick              # K=3, T=1000, both dtypes, few repeats
    python benchmarks/hmm.py --K 3 --T 10000 --dtype float64 --methods serial tfp dynamax
    python benchmarks/hmm.py --quick --json out/hmm.json   # also write results as JSON
"""

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float32 cells switch it off: _timing.precision

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.scipy.stats import norm  # noqa: E402

from numpyro_ssm import DiscreteHMM  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import (  # noqa: E402
    compile_and_time,
    fmt,
    fmt_steps,
    machine_lines,
    machine_meta,
    precision,
    print_table,
    ratio_record,
    time_calls,
    warm_up_compiler,
    write_json,
)

METHODS = ("serial", "parallel", "tfp", "dynamax", "dynamax_parallel", "hmmlearn")
DEFAULT_METHODS = ("serial", "parallel", "tfp", "dynamax", "hmmlearn")
LABELS = {
    "serial": "numpyro_ssm serial",
    "parallel": "numpyro_ssm parallel",
    "tfp": "TFP HiddenMarkovModel",
    "dynamax": "dynamax hmm_filter",
    "dynamax_parallel": "dynamax parallel hmm_filter",
    "hmmlearn": "hmmlearn score",
}
EXTRA_VERSIONS = (
    ("tfp", "tensorflow_probability"),
    ("dynamax", "dynamax"),
    ("hmmlearn", "hmmlearn"),
    ("numpy", "numpy"),
)
# Rough peak memory of one call in units of T * K^2 * itemsize, (value, value+grad): peak RSS
# measured at K=50, T=10^4, float64 (serial 2.4, parallel 15, TFP 1.0, dynamax 0.3 for
# value+grad), with margin. Used only to skip calls that would not fit in --max-gb.
MEMORY_FACTORS = {
    "serial": (0.1, 3.0),
    "parallel": (8.0, 20.0),
    "tfp": (0.1, 1.5),
    "dynamax": (0.1, 0.5),
    "dynamax_parallel": (8.0, 20.0),
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


def dynamax_log_marginal(parallel):
    """dynamax's serial or parallel ``hmm_filter(...).marginal_loglik``."""

    def log_marginal(params, y):
        if parallel:
            from dynamax.hidden_markov_model.parallel_inference import hmm_filter
        else:
            from dynamax.hidden_markov_model.inference import hmm_filter

        initial_logits, transition_logits, means, log_sds = params
        post = hmm_filter(
            jax.nn.softmax(initial_logits),
            jax.nn.softmax(transition_logits, axis=-1),
            log_likelihoods(means, log_sds, y),
        )
        return post.marginal_loglik

    return log_marginal


JAX_METHODS = {
    "serial": ours(parallel=False),
    "parallel": ours(parallel=True),
    "tfp": tfp_log_marginal,
    "dynamax": dynamax_log_marginal(parallel=False),
    "dynamax_parallel": dynamax_log_marginal(parallel=True),
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
        "max_repeats": 100 * args.repeats,
        "min_total": args.min_time,
    }
    result = {}
    if method == "hmmlearn":
        score = hmmlearn_score(params, y)
        _, steady, out = time_calls(score, **repeat)
        result.update(value=steady, value_compile=None, log_marginal=float(out))
        return result

    fn = JAX_METHODS[method]
    compile_s, steady, out = compile_and_time(fn, (params, y), **repeat)
    result.update(value=steady, value_compile=compile_s, log_marginal=float(out))
    if not np.isfinite(float(out)):
        result["note"] = f"non-finite value {float(out)}"
    if grad_gb > args.max_gb:
        result["grad_note"] = f"value+grad skipped: needs ~{grad_gb:.0f} GB > --max-gb"
        return result
    compile_s, steady, (_, grads) = compile_and_time(jax.value_and_grad(fn), (params, y), **repeat)
    result.update(grad=steady, grad_compile=compile_s)
    if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads):
        result["note"] = "non-finite gradient"
    return result


# ------------------------------------------------------------------------------------------------
# Output.


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
        fmt_steps(num_steps),
        LABELS[method],
        fmt(value * per_step) if value is not None else "—",
        fmt(grad * per_step) if grad is not None else "—",
        fmt(res.get("value_compile"), 2),
        fmt(res.get("grad_compile"), 2),
        ratio(ours_res.get("serial")),
        ratio(ours_res.get("parallel")),
    ]


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
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHODS,
        help="default: all but dynamax_parallel (its compile takes tens of seconds)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="minimum steady-state calls")
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.5,
        help="keep repeating (up to 100x --repeats) until "
        "the steady-state calls add up to this many seconds",
    )
    parser.add_argument(
        "--max-gb", type=float, default=6.0, help="skip calls estimated to need more memory"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write the results and ratios to this JSON file")
    parser.add_argument(
        "--quick", action="store_true", help="K=3, T=1000, both dtypes, 3 repeats (a smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.K, args.T, args.repeats, args.min_time = [3], [1e3], 3, 0.0
    args.T = [int(t) for t in args.T]
    return args


def run_cell(dtype, num_states, num_steps, args, notes):
    """Run every method on one cell; return ``{method: result}`` and append notes."""
    results = {}
    for method in args.methods:
        tag = f"{dtype} K={num_states} T={num_steps} {LABELS[method]}"
        start = time.perf_counter()
        try:
            with precision(dtype):
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
    return results


def cell_ratios(dtype, num_states, num_steps, results):
    """Ratio records (ours over peer, µs/step) of one cell for ``run_all.py``."""
    records = []
    case = f"{dtype} K={num_states} T={fmt_steps(num_steps)}"
    per_step = 1e6 / num_steps
    for ours in ("serial", "parallel"):
        mine = results.get(ours, {})
        for peer in ("tfp", "dynamax", "dynamax_parallel", "hmmlearn"):
            theirs = results.get(peer, {})
            for metric, key in (("value", "value"), ("value+grad", "grad")):
                if mine.get(key) is None or theirs.get(key) is None:
                    continue
                records.append(
                    ratio_record(
                        "hmm",
                        case,
                        metric,
                        LABELS[ours],
                        mine[key] * per_step,
                        LABELS[peer],
                        theirs[key] * per_step,
                        "µs/step",
                    )
                )
    return records


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    meta = machine_meta(EXTRA_VERSIONS)
    for line in machine_lines(meta):
        print(line)
    print(flush=True)
    warm_up_compiler()

    rows, notes, records, ratios = [], [], [], []
    for dtype in args.dtype:
        for num_states in args.K:
            for num_steps in args.T:
                results = run_cell(dtype, num_states, num_steps, args, notes)
                for method, res in results.items():
                    records.append(
                        {"dtype": dtype, "K": num_states, "T": num_steps, "method": method}
                        | {k: v for k, v in res.items() if k != "omit"}
                    )
                    if "value" in res:
                        ours_res = {m: results[m] for m in ("serial", "parallel") if m in results}
                        rows.append(row_cells(dtype, num_states, num_steps, method, res, ours_res))
                    else:
                        rows.append(
                            [dtype, str(num_states), fmt_steps(num_steps), LABELS[method]]
                            + ["—"] * (len(COLUMNS) - 4)
                        )
                ratios += cell_ratios(dtype, num_states, num_steps, results)
                if results:
                    print_table(COLUMNS, rows[-len(results) :])
                    print(flush=True)

    print("\nAll cells:")
    for dtype in args.dtype:
        print(f"\n{dtype}:\n")
        print_table(COLUMNS, [r for r in rows if r[0] == dtype], markdown=args.markdown)
    print(
        "\nAll log marginals agree with numpyro_ssm serial to a relative 1e-8 (float64) or 1e-4 "
        "(float32), unless a note below says otherwise."
    )
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()

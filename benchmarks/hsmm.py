"""The HSMM log marginal against the dense expanded-state HMM with the same likelihood.

What is timed, for each (dtype, K, D_max, T) cell, on one shared problem:

- a Gaussian-emission HSMM with K states and durations 1..D_max: random initial logits (K,),
  switch logits (K, K), duration logits (K, D_max) (a free table), emission means (K,) and log
  standard deviations (K,), and T observations. Every method evaluates the (T, K) Gaussian
  log-likelihoods and its parameters' normalization *inside* the timed call:

  - ``serial`` / ``parallel``: ``numpyro_ssm.DiscreteHSMM(initial_logits=...,
    transition_logits=..., duration_logits=..., emission_dist=dist.Normal(means, sds),
    parallel=...).log_prob(y)``: O(T K (K + D_max)) per pass;
  - ``dense_hmm``: ``DiscreteHMM`` on the time-left expanded chain (K D_max states, index
    ``k * D + r``), whose (K D)^2 transition matrix is built from the same parameters in the
    call (``r -> r - 1``, and ``(i, 1) -> (j, d)`` with ``A[i, j] p_j(d)``) and whose emissions
    repeat each state's D times: the same likelihood (right-censored last segment), at
    O(T (K D)^2) per pass.

- "value" is the jitted log marginal; "value+grad" the jitted ``jax.value_and_grad`` with
  respect to all five parameter arrays (what a NUTS step differentiates). Times are medians of
  repeated calls (``benchmarks/_timing.py``), in µs per time step; the machine is shared, so
  the script prints the load average next to them.
- "memory" is XLA's buffer plan of the compiled value+grad program
  (``compiled.memory_analysis()``: arguments + outputs + temporaries, the peak a call
  allocates), at several T: its growth per step shows O(T K) against the dense chain's
  O(T K D).

The ratio columns are ours over the dense HMM: below 1 means numpyro_ssm is faster. Typical
use::

    python benchmarks/hsmm.py                 # K = 5, D = 100, T = 1e4, float64 (the issue's cell)
    python benchmarks/hsmm.py --quick         # K = 3, D = 20, T = 1000: a smoke run
    python benchmarks/hsmm.py --json out/hsmm.json --markdown
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float32 cells switch it off: _timing.precision

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from numpyro_ssm import DiscreteHMM, DiscreteHSMM  # noqa: E402

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
    warm_up_compiler,
    write_json,
)

METHODS = ("serial", "parallel", "dense_hmm")
DEFAULT_METHODS = ("serial", "dense_hmm")
LABELS = {
    "serial": "numpyro_ssm DiscreteHSMM serial",
    "parallel": "numpyro_ssm DiscreteHSMM parallel",
    "dense_hmm": "DiscreteHMM on the expanded chain",
}


def make_problem(num_states, max_duration, num_steps, dtype, seed=0):
    """Random parameters and observations: ``(params, y)``, ``params`` a tuple of five arrays."""
    rng = np.random.default_rng(seed)
    initial_logits = rng.normal(size=num_states)
    switch_logits = rng.normal(size=(num_states, num_states))
    d = np.arange(1, max_duration + 1)
    centers = rng.uniform(0.1, 0.5, size=num_states) * max_duration
    duration_logits = -0.5 * ((d - centers[:, None]) / (0.2 * max_duration)) ** 2
    means = np.linspace(-3.0, 3.0, num_states)
    log_sds = np.log(rng.uniform(0.5, 1.5, size=num_states))
    y = rng.normal(size=num_steps) * 2.0
    params = (initial_logits, switch_logits, duration_logits, means, log_sds)
    return tuple(jnp.asarray(p, dtype) for p in params), jnp.asarray(y, dtype)


def hsmm_log_marginal(parallel):
    def log_marginal(params, y):
        initial_logits, switch_logits, duration_logits, means, log_sds = params
        hsmm = DiscreteHSMM(
            initial_logits=initial_logits,
            transition_logits=switch_logits,
            duration_logits=duration_logits,
            emission_dist=dist.Normal(means, jnp.exp(log_sds)),
            num_steps=y.shape[-1],
            parallel=parallel,
        )
        return hsmm.log_prob(y)

    return log_marginal


def expanded_chain(initial_logits, switch_logits, duration_logits):
    """``(initial (K D,), transition (K D, K D))`` of the time-left chain, index ``k * D + r``."""
    num_states, max_duration = duration_logits.shape
    dur = jax.nn.softmax(duration_logits, -1)
    off_diagonal = jnp.where(jnp.eye(num_states, dtype=bool), -jnp.inf, switch_logits)
    switch = jax.nn.softmax(off_diagonal, -1)
    initial = (jax.nn.softmax(initial_logits)[:, None] * dur).reshape(-1)
    size = num_states * max_duration
    shift = jnp.eye(size, k=-1) * (jnp.arange(size) % max_duration != 0)[:, None]
    starts = (switch[:, :, None] * dur[None, :, :]).reshape(num_states, size)
    ends = (
        jnp.zeros((size, num_states))
        .at[jnp.arange(num_states) * max_duration]
        .set(jnp.eye(num_states))
    )
    return initial, shift + ends @ starts


def dense_hmm_log_marginal(params, y):
    initial_logits, switch_logits, duration_logits, means, log_sds = params
    initial, matrix = expanded_chain(initial_logits, switch_logits, duration_logits)
    max_duration = duration_logits.shape[-1]
    emission = dist.Normal(
        jnp.repeat(means, max_duration), jnp.repeat(jnp.exp(log_sds), max_duration)
    )
    return DiscreteHMM(initial, matrix, emission, num_steps=y.shape[-1]).log_prob(y)


JAX_METHODS = {
    "serial": hsmm_log_marginal(False),
    "parallel": hsmm_log_marginal(True),
    "dense_hmm": dense_hmm_log_marginal,
}


def memory_bytes(fn, args):
    """XLA's buffer plan of ``jit(value_and_grad(fn))``: arguments + outputs + temporaries."""
    compiled = jax.jit(jax.value_and_grad(fn)).lower(*args).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def bench_cell(method, num_states, max_duration, num_steps, dtype, args):
    params, y = make_problem(num_states, max_duration, num_steps, dtype, args.seed)
    repeat = dict(min_repeats=args.repeats, max_repeats=10 * args.repeats, min_total=args.min_time)
    fn = JAX_METHODS[method]
    result = {}
    compile_s, steady, out = compile_and_time(fn, (params, y), **repeat)
    result.update(value=steady, value_compile=compile_s, log_marginal=float(out))
    compile_s, steady, (_, grads) = compile_and_time(jax.value_and_grad(fn), (params, y), **repeat)
    result.update(grad=steady, grad_compile=compile_s)
    if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads):
        result["note"] = "non-finite gradient"
    return result


def memory_rows(method, num_states, max_duration, steps, dtype, args):
    """Buffer plan of value+grad at each T in ``steps``, and the growth per step between them."""
    rows = []
    for num_steps in steps:
        params, y = make_problem(num_states, max_duration, num_steps, dtype, args.seed)
        rows.append((num_steps, memory_bytes(JAX_METHODS[method], (params, y))))
    (t1, b1), (t2, b2) = rows[0], rows[-1]
    slope = None if b1 is None or b2 is None else (b2 - b1) / (t2 - t1)
    return rows, slope


COLUMNS = (
    "dtype",
    "K",
    "D",
    "T",
    "method",
    "value µs/step",
    "value+grad µs/step",
    "compile v+g s",
    "ours ÷ dense (value, v+g)",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=5)
    parser.add_argument("--D", type=int, default=100)
    parser.add_argument("--T", type=float, default=1e4)
    parser.add_argument("--dtype", nargs="+", default=["float64"], choices=["float64", "float32"])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument(
        "--memory-T",
        type=float,
        nargs="+",
        default=[2500, 5000, 10000, 20000],
        help="the T of the memory rows (value+grad buffer plans)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true", help="K=3, D=20, T=1000")
    args = parser.parse_args(argv)
    if args.quick:
        args.K, args.D, args.T, args.repeats, args.min_time = 3, 20, 1000, 2, 0.0
        args.memory_T = [500, 1000]
    args.T = int(args.T)
    args.memory_T = [int(t) for t in args.memory_T]
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    meta = machine_meta((("numpy", "numpy"),))
    for line in machine_lines(meta):
        print(line)
    print(f"load average before: {os.getloadavg()}", flush=True)
    warm_up_compiler()
    rows, records, ratios = [], [], []
    case_base = f"K={args.K} D={args.D} T={fmt_steps(args.T)}"
    for dtype in args.dtype:
        results = {}
        for method in args.methods:
            start = time.perf_counter()
            with precision(dtype):
                results[method] = bench_cell(method, args.K, args.D, args.T, dtype, args)
            print(f"# {dtype} {LABELS[method]}: {time.perf_counter() - start:.1f} s", flush=True)
        dense = results.get("dense_hmm", {})
        per_step = 1e6 / args.T
        for method, res in results.items():
            records.append({"dtype": dtype, "K": args.K, "D": args.D, "T": args.T} | res)
            versus = "—"
            if dense and method != "dense_hmm":
                versus = f"{fmt(res['value'] / dense['value'], 3)}, "
                versus += fmt(res["grad"] / dense["grad"], 3)
                for metric, key in (("value", "value"), ("value+grad", "grad")):
                    ratios.append(
                        ratio_record(
                            "hsmm",
                            f"{dtype} {case_base}",
                            metric,
                            LABELS[method],
                            res[key] * per_step,
                            LABELS["dense_hmm"],
                            dense[key] * per_step,
                            "µs/step",
                        )  # fmt: skip
                    )
            rows.append(
                [
                    dtype,
                    str(args.K),
                    str(args.D),
                    fmt_steps(args.T),
                    LABELS[method],
                    fmt(res["value"] * per_step),
                    fmt(res["grad"] * per_step),
                    fmt(res["grad_compile"], 2),
                    versus,
                ]  # fmt: skip
            )
        reference = results.get("serial", {}).get("log_marginal")
        for method, res in results.items():
            tol = 1e-8 if dtype == "float64" else 1e-4
            if reference is not None and abs(res["log_marginal"] - reference) > tol * abs(
                reference
            ):
                print(f"NOTE: {method} log marginal {res['log_marginal']} != serial {reference}")
    print()
    print_table(COLUMNS, rows, markdown=args.markdown)

    print("\nPeak buffers of value+grad (XLA memory_analysis), float64:")
    memory_columns = ("method", "T", "MB", "growth per step (bytes)", "bytes / (T K itemsize)")
    memory_table = []
    for method in args.methods:
        if method == "parallel":
            continue  # O(T K D) by design (docs/hsmm.md): not the schedule this row measures
        mem, slope = memory_rows(method, args.K, args.D, args.memory_T, "float64", args)
        for num_steps, size in mem:
            memory_table.append(
                [LABELS[method], fmt_steps(num_steps), fmt(None if size is None else size / 1e6),
                 fmt(slope, 4), fmt(None if slope is None else slope / (args.K * 8), 3)]
            )  # fmt: skip
        records.append({"method": method, "memory": mem, "bytes_per_step": slope})
    print_table(memory_columns, memory_table, markdown=args.markdown)
    slopes = {r["method"]: r["bytes_per_step"] for r in records if "bytes_per_step" in r}
    if slopes.get("serial") and slopes.get("dense_hmm"):
        ratios.append(
            ratio_record(
                "hsmm",
                f"float64 K={args.K} D={args.D}",
                "value+grad memory growth",
                LABELS["serial"],
                slopes["serial"],
                LABELS["dense_hmm"],
                slopes["dense_hmm"],
                "bytes/step",
            )  # fmt: skip
        )
    print(f"\nload average after: {os.getloadavg()}")
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()

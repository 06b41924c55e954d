"""Parallel-in-time against serial iterated smoothers: numpyro_ssm's ``nonlinear_smoother``.

Issue 18 asks for the parallel iterated smoother's cost on a CPU and its speed-up over the
serial one on a GPU at T = 10⁵. The model is ``benchmarks/nonlinear.py``'s (state dim ``S``,
observation dim ``max(1, S // 2)``, ``z_{t+1} = 0.9 z_t + 0.1 tanh(A z_t) + w_t``,
``y_t = sin(C z_t) + v_t``, simulated once in float64 and cast). For each method (``ekf``,
``ukf``), state dim and dtype, two programs are compiled ahead of time and timed on the same
inputs:

- ``serial``: ``nonlinear_smoother(..., smoother_iterations=k, initial_trajectory=zeros,
  parallel=False)``: ``k`` passes, each linearizing around the previous smoothed path (every
  linearization is vectorized over time) and then running the sequential square-root Kalman
  filter and RTS smoother;
- ``parallel``: the same with ``parallel=True``: the filter and smoother of every pass are
  associative scans (``O(log T)`` depth).

Both start from the same trajectory (zero means, the initial covariance), so both compute the
same numbers up to rounding; the script prints the largest difference of the smoothed means,
relative to their largest entry, and of the log-marginals. Times are the median of repeated
calls of the compiled program (``benchmarks/_timing.time_calls``), compile time is measured
apart. "speed-up" is the serial time over the parallel one. The float64 cells run first;
each float32 cell also reports both programs' difference from the float64 serial means
(``--matmul-precision default highest`` runs every float32 cell twice, the second time with
TF32 dot products off on a GPU, to test whether they cause a float32 difference;
``--float64-serial-only`` computes only the serial float64 means, as the reference).

Typical use::

    python benchmarks/iterated_smoother.py --T 1000 --repeats 2          # CPU smoke test
    python benchmarks/iterated_smoother.py --T 10000 --out cpu.json      # the CPU cost
    python benchmarks/iterated_smoother.py --T 100000 --out gpu.json     # on the GPU machine
    python benchmarks/iterated_smoother.py --T 100000 --S 8 --methods ekf \
        --matmul-precision default highest --float64-serial-only     # float32 on a GPU
"""

import argparse
import json
import sys
import traceback
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float32 cells switch it off: _timing.precision

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import (  # noqa: E402
    compile_ahead,
    fmt,
    fmt_steps,
    machine_lines,
    machine_meta,
    precision,
    print_table,
    time_calls,
    warm_up_compiler,
)
from benchmarks.nonlinear import emission, problem, transition  # noqa: E402
from numpyro_ssm.ops.nonlinear import (  # noqa: E402
    NonlinearGaussianParams,
    Unscented,
    nonlinear_smoother,
)


def smoother(method, passes, parallel):
    """``run(theta, y, start)``: smoothed means, covariances and log-marginal after ``passes``."""
    rule = "ekf" if method == "ekf" else Unscented()

    def run(theta, y, start):
        S = theta["A"].shape[0]
        params = NonlinearGaussianParams(
            initial_mean=jnp.zeros(S, y.dtype),
            initial_scale_tril=jnp.eye(S, dtype=y.dtype),
            transition_fn=transition,
            transition_scale_tril=theta["LQ"],
            emission_fn=emission,
            emission_scale_tril=theta["LR"],
            params={"A": theta["A"], "C": theta["C"]},
        )
        post = nonlinear_smoother(
            params,
            y,
            method=rule,
            smoother_iterations=passes,
            initial_trajectory=start,
            parallel=parallel,
        )
        return post.smoothed_means, post.smoothed_covariances, post.log_marginal

    return run


def cell(method, S, T, dtype, passes, repeats, data, reference=None, serial_only=False):
    """Compile and time the serial and the parallel smoother on one problem.

    ``reference``: the float64 serial smoothed means of the same cell, if they were computed;
    then each program's largest difference from them (relative to their largest entry) is
    recorded too, so a float32 difference between the two programs can be placed.
    ``serial_only``: compile and run only the serial program (the reference's cell).

    Returns:
        ``(record, means)``: the result dict and the serial smoothed means (float64 copy).
    """
    theta, y = data
    with precision(dtype):
        theta = {k: jnp.asarray(v, dtype) for k, v in theta.items()}
        y = jnp.asarray(y, dtype)
        start = jnp.zeros((T, S), dtype)
        out = {"method": method, "S": S, "T": T, "dtype": dtype, "passes": passes}
        out["matmul_precision"] = jax.config.jax_default_matmul_precision or "default"
        results = {}
        programs = (("serial", False),) if serial_only else (("serial", False), ("parallel", True))
        for name, parallel in programs:
            compiled, seconds = compile_ahead(smoother(method, passes, parallel), theta, y, start)
            _, median, result = time_calls(
                lambda compiled=compiled: compiled(theta, y, start),
                min_repeats=repeats,
                max_total=30.0,
            )
            out[f"{name}_compile_s"] = seconds["total"]
            out[f"{name}_s"] = median
            means, _, value = result
            results[name] = np.asarray(means, np.float64), float(value)
        means_s, value_s = results["serial"]
        if serial_only:
            out["log_marginal_serial"] = value_s
            return out, means_s
        means_p, value_p = results["parallel"]
        out["speed_up"] = out["serial_s"] / out["parallel_s"]
        out["means_rel_diff"] = float(np.max(np.abs(means_p - means_s)) / np.max(np.abs(means_s)))
        out["log_marginal_serial"] = value_s
        out["log_marginal_parallel"] = value_p
        out["finite"] = bool(np.all(np.isfinite(means_p)) and np.all(np.isfinite(means_s)))
        if reference is not None:
            scale = np.max(np.abs(reference))
            for name, means in (("serial", means_s), ("parallel", means_p)):
                out[f"{name}_rel_err_vs_float64"] = float(np.max(np.abs(means - reference)) / scale)
    return out, means_s


def _versus_float64(record):
    if "serial_rel_err_vs_float64" not in record:
        return "—"
    return (
        f"{record['serial_rel_err_vs_float64']:.1e} / {record['parallel_rel_err_vs_float64']:.1e}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=100_000)
    parser.add_argument("--S", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--methods", nargs="+", default=["ekf", "ukf"], choices=["ekf", "ukf"])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--passes", type=int, default=2, help="iterated smoother passes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    parser.add_argument("--out", help="JSON file, rewritten after every cell")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument(
        "--matmul-precision",
        nargs="+",
        choices=["default", "high", "highest"],
        help="jax_default_matmul_precision of the float32 cells, one cell per value "
        "(e.g. default highest: with and without TF32 on a GPU)",
    )
    parser.add_argument(
        "--float64-serial-only",
        action="store_true",
        help="of the float64 cells, run only the serial program (the float32 cells' reference)",
    )
    args = parser.parse_args()
    precisions = args.matmul_precision or [None]
    # float64 first, so that the float32 cells can be measured against its serial means
    dtypes = sorted(args.dtype, key=lambda d: d != "float64")

    meta = machine_meta()
    print("\n".join(machine_lines(meta)), flush=True)
    warm_up_compiler()
    rows, records = [], []
    for S in args.S:
        data = problem(S, args.T)
        for method in args.methods:
            reference = None
            for dtype, prec in [
                (d, p) for d in dtypes for p in (precisions if d == "float32" else [None])
            ]:
                serial_only = dtype == "float64" and args.float64_serial_only
                try:
                    with jax.default_matmul_precision(prec):  # None: XLA's default
                        r, means = cell(
                            method,
                            S,
                            args.T,
                            dtype,
                            args.passes,
                            args.repeats,
                            data,
                            reference,
                            serial_only,
                        )
                except Exception:  # noqa: BLE001 - report the cell, go on with the others
                    traceback.print_exc()
                    continue
                if dtype == "float64":
                    reference = means
                records.append(r)
                print(json.dumps(r), flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps({"meta": meta, "cells": records}))
                if serial_only:
                    continue
                rows.append(
                    [
                        method,
                        str(S),
                        fmt_steps(args.T),
                        f"{dtype} ({r['matmul_precision']})" if prec else dtype,
                        fmt(r["serial_s"] * 1e3),
                        fmt(r["parallel_s"] * 1e3),
                        fmt(r["speed_up"]),
                        f"{fmt(r['serial_compile_s'])} / {fmt(r['parallel_compile_s'])}",
                        f"{r['means_rel_diff']:.1e}",
                        f"{r['log_marginal_serial']:.6g} / {r['log_marginal_parallel']:.6g}",
                        _versus_float64(r),
                    ]
                )
    columns = [
        "method",
        "S",
        "T",
        "dtype",
        "serial (ms)",
        "parallel (ms)",
        "speed-up",
        "compile s (serial / parallel)",
        "means rel. diff",
        "log-marginal (serial / parallel)",
        "means rel. err vs float64 (serial / parallel)",
    ]
    print(f"\n{args.passes} iterated passes from zero means; median time of one smoother call")
    print_table(columns, rows, markdown=args.markdown)


if __name__ == "__main__":
    main()

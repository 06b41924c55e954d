"""Serial against parallel-in-time value+grad on an accelerator: numpyro_ssm and dynamax.

The script for issue 5. On one device (a GPU when JAX has one; it also runs on the CPU, with a
small ``--T``, as a smoke test) it times ``jax.value_and_grad`` with respect to all parameters,
compiled ahead of time, for:

- the Gaussian-emission HMM of ``benchmarks/hmm.py`` with K = 3 and K = 10 states:
  ``DiscreteHMM.log_prob`` serial and parallel, dynamax ``hmm_filter`` (serial) and
  ``parallel_inference.hmm_filter``;
- the linear-Gaussian SSM of ``benchmarks/lgssm.py`` with state dim 4 and observation dim 2:
  ``LinearGaussianSSM.log_prob`` serial and parallel, dynamax ``lgssm_filter`` and
  ``parallel_inference.lgssm_filter``;

in float32 and float64, at T = 10⁵ by default. Times are the median of repeated calls
(``block_until_ready``), compile time is measured apart (``benchmarks/_timing.py``). Every
method's log-likelihood is compared with numpyro_ssm serial in the same dtype (rtol 1e-6 in
float64, 1e-3 in float32); a method whose result comes back in another dtype than its inputs
is flagged. Its gradient's largest difference from numpyro_ssm serial's, relative to the
largest serial entry (at least one), is printed too.

It prints the device, the jax / jaxlib / numpyro / numpyro_ssm / dynamax versions and a table,
and writes everything to ``--out`` as JSON.

On jax 0.11.2 with CUDA 13 (one H100, 2026-11-23) dynamax's parallel HMM crashed XLA's Triton
GEMM fusion pass (a check failure that kills the process) at K = 10 in float32 and K = 3 in
float64. ``XLA_FLAGS=--xla_gpu_enable_triton_gemm=false`` avoids it; run every method with it
for the side-by-side table (``docs/performance.md``).

Typical use::

    python benchmarks/gpu.py --out gpu_results.json                 # on the GPU machine
    python benchmarks/gpu.py --T 1000 --repeats 2 --out /tmp/g.json # CPU smoke test
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

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import hmm, lgssm  # noqa: E402
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

# (model, size) cells: the HMM with K states, Kalman with state dim S (obs dim S // 2).
CELLS = (("hmm", 3), ("hmm", 10), ("kalman", 4))
MODULES = {"hmm": hmm, "kalman": lgssm}
SIZE_NAMES = {"hmm": "K", "kalman": "S"}
METHODS = ("serial", "parallel", "dynamax", "dynamax_parallel")
LABELS = {
    "serial": "numpyro_ssm serial",
    "parallel": "numpyro_ssm parallel",
    "dynamax": "dynamax serial",
    "dynamax_parallel": "dynamax parallel",
}


def device_meta():
    """Device kind and platform, and accelerator plugin versions where installed."""
    device = jax.devices()[0]
    meta = {"platform": device.platform, "device_kind": getattr(device, "device_kind", "?")}
    meta["device_count"] = jax.device_count()
    for module in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins.xla_cuda12"):
        try:
            meta[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001, S112 - optional plugins
            continue
    return meta


def bench(model, size, num_steps, dtype, method, args):
    """Time value+grad of one method on one cell; return a result dict (seconds)."""
    module = MODULES[model]
    params, y = module.make_problem(size, num_steps, dtype, seed=args.seed)
    fn = jax.value_and_grad(module.JAX_METHODS[method])
    repeat = {"min_repeats": args.repeats, "max_repeats": 4 * args.repeats, "min_total": 0.2}
    compile_s, steady, (value, grads) = compile_and_time(fn, (params, y), **repeat)
    result = {"grad": steady, "grad_compile": compile_s, "log_likelihood": float(value)}
    result["out_dtype"] = str(value.dtype)
    result["_grads"] = [np.asarray(g, dtype=np.float64) for g in jax.tree.leaves(grads)]
    if not all(bool(jnp.all(jnp.isfinite(g))) for g in grads):
        result["note"] = "non-finite gradient"
    if args.with_value:
        compile_s, steady, _ = compile_and_time(module.JAX_METHODS[method], (params, y), **repeat)
        result.update(value=steady, value_compile=compile_s)
    return result


def check(results, dtype):
    """Set ``agrees`` and ``grad_rel_diff`` on every result: compared with numpyro_ssm serial.

    ``grad_rel_diff`` is the largest ``max|g - g_serial| / max(1, max|g_serial|)`` over the
    gradient's leaves (the methods share one parameter tree).
    """
    serial = results.get("serial", {})
    reference, reference_grads = serial.get("log_likelihood"), serial.get("_grads")
    rtol = 1e-6 if dtype == "float64" else 1e-3
    for res in results.values():
        grads = res.pop("_grads", None)
        if grads is not None and reference_grads is not None:
            res["grad_rel_diff"] = max(
                float(np.max(np.abs(g - r)) / max(1.0, np.max(np.abs(r))))
                for g, r in zip(grads, reference_grads, strict=True)
            )
        value = res.get("log_likelihood")
        if value is None:
            res["agrees"] = "—"
            continue
        if not np.isfinite(value):
            res["agrees"] = "NO: not finite"
            continue
        if reference is None:
            res["agrees"] = "no serial reference run"
            continue
        rel = abs(value - reference) / max(1.0, abs(reference))
        res["agrees"] = "yes" if rel <= rtol else f"NO: rel. diff {rel:.1e}"
        if res.get("out_dtype") not in (None, dtype):
            res["agrees"] += f" (returns {res['out_dtype']})"


COLUMNS = (
    "dtype",
    "model",
    "T",
    "method",
    "v+g ms/call",
    "v+g µs/step",
    "value µs/step",
    "compile v+g s",
    "our serial ÷ this",
    "ours ÷ dynamax (same scan)",
    "log-lik agrees",
    "grad rel. diff",
)


def row_cells(dtype, model, size, num_steps, method, res, results):
    """One table row of string cells."""
    grad, value = res.get("grad"), res.get("value")
    serial = results.get("serial", {}).get("grad")
    peer = {"serial": "dynamax", "parallel": "dynamax_parallel"}.get(method)
    peer_grad = results.get(peer, {}).get("grad") if peer else None
    return [
        dtype,
        f"{model} {SIZE_NAMES[model]}={size}",
        fmt_steps(num_steps),
        LABELS[method],
        fmt(grad * 1e3) if grad else "—",
        fmt(grad * 1e6 / num_steps) if grad else "—",
        fmt(value * 1e6 / num_steps) if value else "—",
        fmt(res.get("grad_compile"), 2),
        fmt(serial / grad, 2) if serial and grad else "—",
        fmt(grad / peer_grad, 2) if grad and peer_grad else "—",
        res.get("agrees", res.get("note", "—")),
        f"{res['grad_rel_diff']:.1e}" if "grad_rel_diff" in res else "—",
    ]


def cell_ratios(dtype, model, size, num_steps, results):
    """Ratio records: ours over dynamax with the same scan kind (µs/step of value+grad)."""
    case = f"{jax.devices()[0].platform} {dtype} {model} {SIZE_NAMES[model]}={size} "
    case += f"T={fmt_steps(num_steps)}"
    records = []
    for ours, peer in (("serial", "dynamax"), ("parallel", "dynamax_parallel")):
        mine, theirs = results.get(ours, {}).get("grad"), results.get(peer, {}).get("grad")
        if mine and theirs:
            records.append(
                ratio_record(
                    "gpu",
                    case,
                    "value+grad",
                    LABELS[ours],
                    mine * 1e6 / num_steps,
                    LABELS[peer],
                    theirs * 1e6 / num_steps,
                    "µs/step",
                )
            )
    return records


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=float, default=1e5, help="number of time steps")
    parser.add_argument(
        "--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--cells",
        nargs="+",
        default=[f"{m}:{s}" for m, s in CELLS],
        help="model:size pairs, e.g. hmm:3 hmm:10 kalman:4",
    )
    parser.add_argument("--repeats", type=int, default=5, help="minimum steady-state calls")
    parser.add_argument("--with-value", action="store_true", help="also time the value alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--out", "--json", dest="json", help="write the results to this JSON")
    args = parser.parse_args(argv)
    args.T = int(args.T)
    args.cells = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cells]
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    meta = machine_meta((("dynamax", "dynamax"),)) | {"device": device_meta()}
    print("\n".join(machine_lines(meta)))
    print(f"device: {meta['device']}\n", flush=True)
    warm_up_compiler()
    rows, records, ratios = [], [], []
    for dtype in args.dtype:
        for model, size in args.cells:
            results = {}
            for method in args.methods:
                start = time.perf_counter()
                try:
                    with precision(dtype):
                        results[method] = bench(model, size, args.T, dtype, method, args)
                except Exception as err:  # noqa: BLE001 - a failing method must not stop us
                    results[method] = {"note": f"failed: {type(err).__name__}: {err}"[:300]}
                    traceback.print_exc(limit=2, file=sys.stderr)
                elapsed = time.perf_counter() - start
                print(f"# {dtype} {model} {size} {method}: {elapsed:.1f} s", file=sys.stderr)
            check(results, dtype)
            cell = {"dtype": dtype, "model": model, SIZE_NAMES[model]: size, "T": args.T}
            records += [cell | {"method": m} | r for m, r in results.items()]
            ratios += cell_ratios(dtype, model, size, args.T, results)
            new_rows = [
                row_cells(dtype, model, size, args.T, m, r, results) for m, r in results.items()
            ]
            print_table(COLUMNS, new_rows)
            print(flush=True)
            rows += new_rows
    print("\nAll cells:\n")
    print_table(COLUMNS, rows, markdown=args.markdown)
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()

"""Compile time of ``jax.jit(jax.value_and_grad(log_likelihood))``: numpyro_ssm against dynamax.

For each model, size and scan kind (serial, parallel), the function of ``benchmarks/hmm.py``
(HMM: ``DiscreteHMM.log_prob`` against dynamax's ``hmm_filter``) or ``benchmarks/lgssm.py``
(Kalman: ``LinearGaussianSSM.log_prob`` against dynamax's ``lgssm_filter``) is differentiated
with respect to all its parameters and compiled ahead of time, from cold in-memory caches:
``jax.jit(f).lower(*args)`` (trace + lower, "trace s") then ``.compile()`` (XLA, "XLA s"). The
median of ``--repeats`` compilations (default 1) is reported. The ratio is our total over
dynamax's: above 1 means numpyro_ssm compiles more slowly.

The serial scans compile in a time independent of T. The parallel ones do not:
``lax.associative_scan`` unrolls about log2(T) levels into the program, so their compile time
grows with log T (the Kalman parallel scan compiles about 3x slower at T = 10⁴ than at 10³).

Typical use::

    python benchmarks/compile_time.py                  # HMM K=3, 50; Kalman S=2, 8; T=1e4
    python benchmarks/compile_time.py --quick          # HMM K=3, Kalman S=2; T=1e3
    python benchmarks/compile_time.py --models kalman --sizes 8 --scans parallel
"""

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import hmm, lgssm  # noqa: E402
from benchmarks._timing import (  # noqa: E402
    compile_ahead,
    fmt,
    fmt_steps,
    machine_lines,
    machine_meta,
    print_table,
    ratio_record,
    warm_up_compiler,
    write_json,
)

# model -> (size argument name, default sizes, benchmark module with make_problem and JAX_METHODS)
MODELS = {
    "hmm": ("K", (3, 50), hmm),
    "kalman": ("S", (2, 8), lgssm),
}
METHOD_NAMES = {
    ("numpyro_ssm", "serial"): "serial",
    ("numpyro_ssm", "parallel"): "parallel",
    ("dynamax", "serial"): "dynamax",
    ("dynamax", "parallel"): "dynamax_parallel",
}


def compile_seconds(model, size, num_steps, library, scan, repeats):
    """Median trace, XLA and total compile seconds of one value+grad function."""
    module = MODELS[model][2]
    params, y = module.make_problem(size, num_steps, "float64")
    fn = jax.value_and_grad(module.JAX_METHODS[METHOD_NAMES[library, scan]])
    runs = [compile_ahead(fn, params, y)[1] for _ in range(repeats)]
    return {key: statistics.median(r[key] for r in runs) for key in ("trace", "xla", "total")}


COLUMNS = (
    "model",
    "size",
    "T",
    "scan",
    "numpyro_ssm trace s",
    "numpyro_ssm XLA s",
    "numpyro_ssm total s",
    "dynamax trace s",
    "dynamax XLA s",
    "dynamax total s",
    "ours ÷ dynamax",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="K for the HMM and S for Kalman (default: HMM 3 50, Kalman 2 8)",
    )
    parser.add_argument(
        "--scans", nargs="+", default=["serial", "parallel"], choices=["serial", "parallel"]
    )
    parser.add_argument("--T", type=float, default=1e4, help="number of time steps")
    parser.add_argument("--repeats", type=int, default=1, help="compilations per cell (median)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write the results and ratios to this JSON file")
    parser.add_argument("--quick", action="store_true", help="HMM K=3, Kalman S=2, T=1000")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.sizes, args.T = 1, None, 1e3
        args.quick_sizes = {"hmm": (3,), "kalman": (2,)}
    args.T = int(args.T)
    return args


def sizes_for(model, args):
    """The sizes to run for ``model``."""
    if args.sizes:
        return args.sizes
    if args.quick:
        return args.quick_sizes[model]
    return MODELS[model][1]


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    meta = machine_meta((("dynamax", "dynamax"),))
    print("\n".join(machine_lines(meta)) + "\n", flush=True)
    warm_up_compiler()
    rows, records, ratios = [], [], []
    for model in args.models:
        size_name = MODELS[model][0]
        for size in sizes_for(model, args):
            for scan in args.scans:
                res = {
                    lib: compile_seconds(model, size, args.T, lib, scan, args.repeats)
                    for lib in ("numpyro_ssm", "dynamax")
                }
                ours, peer = res["numpyro_ssm"], res["dynamax"]
                case = f"{model} {size_name}={size} T={fmt_steps(args.T)}"
                records.append({"model": model, size_name: size, "T": args.T, "scan": scan} | res)
                ratios.append(
                    ratio_record(
                        "compile_time",
                        case,
                        f"compile v+g ({scan})",
                        f"numpyro_ssm {scan}",
                        ours["total"],
                        f"dynamax {scan}",
                        peer["total"],
                        "s",
                    )
                )
                rows.append(
                    [model, f"{size_name}={size}", fmt_steps(args.T), scan]
                    + [fmt(ours[k], 3) for k in ("trace", "xla", "total")]
                    + [fmt(peer[k], 3) for k in ("trace", "xla", "total")]
                    + [fmt(ratios[-1]["ratio"], 2)]
                )
                print(f"# {case} {scan}: done", file=sys.stderr, flush=True)
    print_table(COLUMNS, rows, markdown=args.markdown)
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()

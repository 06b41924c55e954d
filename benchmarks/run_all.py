"""Run every comparison and print one combined table of ratios (our time over the peer's).

Each benchmark script runs in its own process (so that JAX flags, caches and memory do not leak
between them), writes its results with ``--json`` into ``--out``, and this script gathers their
``ratios`` lists into one table: numpyro_ssm's number over the peer's (time per step, compile
seconds, milliseconds per effective sample, peak GB), so a ratio above 1 means numpyro_ssm is
slower or bigger. A geometric-mean summary per benchmark, metric and pair of methods follows.

Typical use::

    python -m benchmarks --quick                 # every script's --quick (about 10 minutes)
    python -m benchmarks                         # every script's defaults (long: hours on 2 cores)
    python -m benchmarks --quick --only hmm lgssm --markdown
    python -m benchmarks --quick --with-gpu      # also benchmarks/gpu.py (at --gpu-T steps)
"""

import argparse
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import fmt, print_table  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPTS = ("hmm", "lgssm", "nuts", "memory", "compile_time", "particle", "hsmm", "switching")


def script_command(name, args, json_path):
    """The command line that runs ``benchmarks/<name>.py`` with the chosen options."""
    command = [sys.executable, str(HERE / f"{name}.py"), "--json", str(json_path)]
    if name == "gpu":
        command += ["--T", str(args.gpu_T)]
        if args.quick:
            command += ["--repeats", "2"]
    elif args.quick:
        command.append("--quick")
    if args.markdown:
        command.append("--markdown")
    return command


def run_script(name, args):
    """Run one script, streaming its output; return its JSON payload (or None) and seconds."""
    json_path = Path(args.out) / f"{name}.json"
    json_path.unlink(missing_ok=True)
    command = script_command(name, args, json_path)
    print(f"\n{'=' * 100}\n$ {' '.join(command)}\n", flush=True)
    start = time.perf_counter()
    code = subprocess.call(command)
    elapsed = time.perf_counter() - start
    if code != 0 or not json_path.exists():
        print(f"!! {name} failed (exit {code})", file=sys.stderr, flush=True)
        return None, elapsed
    return json.loads(json_path.read_text(encoding="utf-8")), elapsed


def ratio_rows(ratios):
    """Table rows of the combined ratio table."""
    return [
        [
            r["benchmark"],
            r["case"],
            r["metric"],
            r["ours_label"],
            r["peer_label"],
            fmt(r["ours"]),
            fmt(r["peer"]),
            r["unit"],
            fmt(r["ratio"], 3),
        ]
        for r in ratios
    ]


def summary_rows(ratios):
    """Geometric mean of the ratios per (benchmark, metric, ours, peer)."""
    groups = defaultdict(list)
    for r in ratios:
        if r["ratio"]:
            groups[r["benchmark"], r["metric"], r["ours_label"], r["peer_label"]].append(r["ratio"])
    rows = []
    for (bench, metric, ours, peer), values in groups.items():
        geomean = math.exp(sum(math.log(v) for v in values) / len(values))
        spread = f"{fmt(min(values), 2)} – {fmt(max(values), 2)}"
        rows.append([bench, metric, ours, peer, str(len(values)), fmt(geomean, 3), spread])
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS + ("gpu",), help="scripts to run")
    parser.add_argument("--with-gpu", action="store_true", help="also run benchmarks/gpu.py")
    parser.add_argument("--gpu-T", type=int, default=None, help="T for gpu.py (default 1e5)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON files")
    parser.add_argument("--markdown", action="store_true", help="print tables as Markdown")
    args = parser.parse_args(argv)
    if args.gpu_T is None:
        args.gpu_T = 1000 if args.quick else 100_000
    return args


def main(argv=None):
    args = parse_args(argv)
    names = list(args.only or SCRIPTS)
    if args.with_gpu and "gpu" not in names:
        names.append("gpu")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    ratios, timings = [], []
    for name in names:
        payload, elapsed = run_script(name, args)
        timings.append(f"{name} {elapsed:.0f} s" + ("" if payload else " (failed)"))
        if payload:
            ratios += payload["ratios"]
    columns = ("benchmark", "case", "metric", "ours", "peer", "ours #", "peer #", "unit")
    columns += ("ours ÷ peer",)
    print(f"\n{'=' * 100}\nCombined ratios (numpyro_ssm ÷ peer; above 1: ours is slower)\n")
    print_table(columns, ratio_rows(ratios), markdown=args.markdown)
    print("\nGeometric mean per benchmark, metric and pair:\n")
    summary_columns = ("benchmark", "metric", "ours", "peer", "n", "geomean", "range")
    print_table(summary_columns, summary_rows(ratios), markdown=args.markdown)
    print(f"\nScripts: {', '.join(timings)}; JSON in {args.out}/")
    combined = Path(args.out) / "ratios.json"
    combined.write_text(json.dumps(ratios, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

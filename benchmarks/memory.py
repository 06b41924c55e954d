"""Peak memory (RSS) of one HMM value+grad call, each measured in its own subprocess.

The problem is the Gaussian-emission HMM of ``benchmarks/hmm.py`` (K states, T steps, float64
by default). Each measurement is a fresh Python process that builds the problem, compiles
``jax.jit(jax.value_and_grad(log_marginal))`` with respect to all four parameter arrays, and
calls it once. Its peak resident set size comes from ``/usr/bin/time -v`` ("Maximum resident set
size") when that program exists, else from ``os.wait4``'s ``ru_maxrss`` for that child (the
per-child form of ``resource.getrusage(RUSAGE_CHILDREN)``).

Methods:

- ``baseline``: the same process up to the problem's arrays, with nothing compiled: the fixed
  cost of Python, JAX and the libraries, to subtract by eye;
- ``serial`` / ``parallel``: ``DiscreteHMM(..., parallel=False / True).log_prob`` (the forward
  pass of ``numpyro_ssm.ops.hmm_filter``);
- ``dynamax`` / ``dynamax_parallel``: ``dynamax.hidden_markov_model.inference.hmm_filter`` and
  ``parallel_inference.hmm_filter``, ``.marginal_loglik``.

A watchdog polls the child's RSS and kills it above ``--max-gb`` (default 8 GB: the machine is
shared) or after ``--timeout`` seconds; the row then says so, and, when smaller T completed,
gives a linear extrapolation in T from the two largest completed runs. The ratio is our peak
over the peer's (``parallel`` over ``dynamax_parallel``, ``serial`` over ``dynamax``).

Typical use::

    python benchmarks/memory.py                      # K=50, T=2e3, 5e3, 1e4, 1e5, float64
    python benchmarks/memory.py --quick              # K=50, T=2000: a smoke run
    python benchmarks/memory.py --K 50 --T 100000 --methods parallel --max-gb 20
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ("baseline", "serial", "parallel", "dynamax", "dynamax_parallel")
LABELS = {
    "baseline": "baseline (imports + data, no call)",
    "serial": "numpyro_ssm serial",
    "parallel": "numpyro_ssm parallel",
    "dynamax": "dynamax hmm_filter",
    "dynamax_parallel": "dynamax parallel hmm_filter",
}
PEERS = {"serial": "dynamax", "parallel": "dynamax_parallel"}
TIME_PROGRAM = "/usr/bin/time"

# ------------------------------------------------------------------------------------------------
# The child: one value+grad call.


def log_marginal_fn(method):
    """The log marginal of ``method`` as a function of ``(params, y)``."""
    from benchmarks import hmm

    return hmm.JAX_METHODS[method]


def child(method, num_states, num_steps, dtype):
    """Build the problem, compile and call value+grad once; print one JSON line."""
    import jax

    from benchmarks import hmm  # enables x64

    params, y = hmm.make_problem(num_states, num_steps, dtype)
    jax.block_until_ready((params, y))
    out = {"method": method, "K": num_states, "T": num_steps, "dtype": dtype}
    if method != "baseline":
        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(log_marginal_fn(method))).lower(params, y).compile()
        out["compile_s"] = time.perf_counter() - start
        start = time.perf_counter()
        value, _ = jax.block_until_ready(compiled(params, y))
        out["call_s"] = time.perf_counter() - start
        out["log_marginal"] = float(value)
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------------
# The parent: run children and watch them.


def _children(pid):
    """Process ids of the direct children of ``pid`` (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rss_bytes(pid):
    """Current resident set size of ``pid`` and its descendants, in bytes (0 if gone)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total + sum(_rss_bytes(c) for c in _children(pid))


def _max_rss_from_time(path):
    """``Maximum resident set size (kbytes)`` from a ``/usr/bin/time -v`` report, in bytes."""
    for line in Path(path).read_text().splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1]) * 1024
    return None


def _run_watched(command, stdout, stderr, max_gb, timeout):
    """Run ``command`` in its own session, killing it above ``max_gb`` RSS or after ``timeout``.

    Returns:
        ``(exit_code, rusage, watched_peak_bytes, kill_note or None)``; ``rusage`` is
        ``os.wait4``'s for that child.
    """
    proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, start_new_session=True)
    start, watched_peak, killed = time.perf_counter(), 0, None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        watched_peak = max(watched_peak, _rss_bytes(proc.pid))
        if watched_peak > max_gb * 2**30:
            killed = f"killed above --max-gb {max_gb:g}"
        elif time.perf_counter() - start > timeout:
            killed = f"killed after --timeout {timeout:g} s"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what we started
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage, watched_peak, killed


def measure(method, num_states, num_steps, dtype, max_gb, timeout):
    """Run one child; return a result dict with ``peak_gb`` or a ``note``."""
    command = [sys.executable, os.path.abspath(__file__), "--child", method]
    command += ["--K", str(num_states), "--T", str(num_steps), "--dtype", dtype]
    use_time = os.access(TIME_PROGRAM, os.X_OK)
    result = {"method": method, "K": num_states, "T": num_steps, "dtype": dtype}
    with tempfile.TemporaryDirectory() as tmp:
        report, out_path, err_path = (os.path.join(tmp, n) for n in ("time", "out", "err"))
        if use_time:
            command = [TIME_PROGRAM, "-v", "-o", report] + command
        start = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            code, usage, watched, killed = _run_watched(command, out, err, max_gb, timeout)
        result["wall_s"] = time.perf_counter() - start
        if killed:
            result.update(note=killed, peak_gb_at_least=watched / 2**30)
            return result
        lines = [ln for ln in Path(out_path).read_text().splitlines() if ln.startswith("{")]
        if code != 0 or not lines:
            tail = Path(err_path).read_text().strip().splitlines()[-1:] or ["no output"]
            result["note"] = f"failed (exit {code}): {tail[0][:200]}"
            return result
        result.update(json.loads(lines[-1]))
        peak = _max_rss_from_time(report) if use_time else None
        result["source"] = TIME_PROGRAM + " -v" if peak is not None else "os.wait4 ru_maxrss"
        result["peak_gb"] = (peak if peak is not None else usage.ru_maxrss * 1024) / 2**30
        return result


def extrapolate(results, method, num_steps):
    """Linear-in-T estimate of the peak at ``num_steps`` from the two largest completed runs."""
    done = sorted(
        (r["T"], r["peak_gb"]) for r in results if r["method"] == method and "peak_gb" in r
    )
    if len(done) < 2:
        return None
    (t1, p1), (t2, p2) = done[-2:]
    return p2 + (p2 - p1) * (num_steps - t2) / (t2 - t1)


# ------------------------------------------------------------------------------------------------
# Output.

COLUMNS = ("K", "T", "dtype", "method", "peak RSS GB", "compile s", "call s", "note")


def row_cells(res, results):
    """One table row of string cells."""
    from benchmarks._timing import fmt, fmt_steps

    note = res.get("note", "")
    if "peak_gb" not in res and res["method"] != "baseline":
        estimate = extrapolate(results, res["method"], res["T"])
        if estimate is not None:
            note += f"; ~{estimate:.1f} GB by linear extrapolation in T"
    peak, at_least = res.get("peak_gb"), res.get("peak_gb_at_least")
    peak_text = fmt(peak, 3) if peak is not None else "—"
    if peak is None and at_least is not None:
        peak_text = f"> {at_least:.1f}"
    return [
        str(res["K"]),
        fmt_steps(res["T"]),
        res.get("dtype", "—"),
        LABELS[res["method"]],
        peak_text,
        fmt(res.get("compile_s"), 3),
        fmt(res.get("call_s"), 3),
        note or "—",
    ]


def memory_ratios(results, dtype):
    """Ratio records: our peak RSS over dynamax's, per (K, T)."""
    from benchmarks._timing import fmt_steps, ratio_record

    by_key = {(r["method"], r["K"], r["T"]): r for r in results}
    records = []
    for (method, num_states, num_steps), res in by_key.items():
        peer = by_key.get((PEERS.get(method), num_states, num_steps))
        if peer is None or "peak_gb" not in res or "peak_gb" not in peer:
            continue
        records.append(
            ratio_record(
                "memory",
                f"{dtype} K={num_states} T={fmt_steps(num_steps)}",
                "peak RSS of value+grad",
                LABELS[method],
                res["peak_gb"],
                LABELS[PEERS[method]],
                peer["peak_gb"],
                "GB",
            )
        )
    return records


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, nargs="+", default=[50], help="numbers of states")
    parser.add_argument(
        "--T", type=float, nargs="+", default=[2e3, 5e3, 1e4, 1e5], help="numbers of time steps"
    )
    parser.add_argument("--dtype", nargs=1, default=["float64"], choices=["float64", "float32"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--max-gb", type=float, default=8.0, help="kill a child above this RSS")
    parser.add_argument("--timeout", type=float, default=600.0, help="kill a child after this")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write the results and ratios to this JSON file")
    parser.add_argument("--quick", action="store_true", help="K=50, T=2000: a smoke run")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.K, args.T = [50], [2000]
    args.T = [int(t) for t in args.T]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(args.child, args.K[0], args.T[0], args.dtype[0])
        return
    from benchmarks._timing import machine_lines, machine_meta, print_table, write_json

    meta = machine_meta((("dynamax", "dynamax"),))
    source = TIME_PROGRAM + " -v" if os.access(TIME_PROGRAM, os.X_OK) else "os.wait4 ru_maxrss"
    print("\n".join(machine_lines(meta)) + f"\npeak RSS from: {source}\n", flush=True)
    results = []
    for num_states in args.K:
        for num_steps in args.T:
            for method in args.methods:
                if method == "baseline" and num_steps != args.T[-1]:
                    continue
                res = measure(
                    method, num_states, num_steps, args.dtype[0], args.max_gb, args.timeout
                )
                results.append(res)
                peak = res.get("peak_gb", res.get("peak_gb_at_least"))
                peak_text = "?" if peak is None else f"{peak:.2f}"
                print(
                    f"# K={num_states} T={num_steps} {method}: {peak_text} GB, "
                    f"{res['wall_s']:.1f} s {res.get('note', '')}",
                    file=sys.stderr,
                    flush=True,
                )
    print_table(COLUMNS, [row_cells(r, results) for r in results], markdown=args.markdown)
    write_json(args.json, meta, results, memory_ratios(results, args.dtype[0]))


if __name__ == "__main__":
    main()

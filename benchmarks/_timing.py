"""Timing, reporting and JSON helpers shared by the benchmark scripts.

Conventions every script follows:

- side by side in one process, float64 via ``jax_enable_x64``; float32 cells pass float32
  arrays and run with x64 switched off (:func:`precision`);
- steady-state time is the median of repeated calls, each ended by ``block_until_ready``;
- compile time is measured apart from it, ahead of time: ``jax.jit(f).lower(*args)`` (trace and
  lower) then ``.compile()`` (XLA), with JAX's in-memory caches cleared first, so that no cell
  reuses another cell's compilation;
- ratios are always *ours over the peer's* (time, time per effective sample, or bytes): above 1
  means numpyro_ssm is slower (or bigger) than the peer.

Each script can write its results with ``--json PATH`` as ``{"meta": ..., "rows": [...],
"ratios": [...]}``; ``benchmarks/run_all.py`` reads the ``ratios`` lists of all of them.
"""

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax

# ------------------------------------------------------------------------------------------------
# Timing.


def time_calls(fn, min_repeats=5, max_repeats=20, min_total=0.5, max_total=20.0):
    """Time ``fn()`` (which returns JAX arrays) by repeated calls.

    Args:
        fn: a callable without arguments; its output is waited for with ``block_until_ready``.
        min_repeats: the fewest steady-state calls, unless ``max_total`` is reached first.
        max_repeats: the most steady-state calls.
        min_total: keep calling (up to ``max_repeats``) until the steady-state calls add up to
            this many seconds.
        max_total: stop after this many seconds of steady-state calls (but make at least two),
            so that slow cells do not take minutes.

    Returns:
        ``(first, median, first_output)``: the first call's time and the median of the later
        calls' times, in seconds, and the first call's output.
    """
    start = time.perf_counter()
    first_out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_total):
        if len(times) >= 2 and sum(times) >= max_total:
            break
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), first_out


def compile_ahead(fn, *args):
    """Compile ``jax.jit(fn)`` for ``args`` ahead of time, from cold in-memory caches.

    Args:
        fn: the function to compile (not yet jitted).
        *args: example arguments (arrays or pytrees of arrays).

    Returns:
        ``(compiled, seconds)``: the compiled executable, callable as ``compiled(*args)``, and a
        dict with ``trace`` (trace and lower to StableHLO), ``xla`` (XLA compilation) and
        ``total``, in seconds.
    """
    jax.clear_caches()
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    return compiled, {"trace": traced - start, "xla": done - traced, "total": done - start}


def compile_and_time(fn, args, min_repeats=5, max_repeats=20, min_total=0.5):
    """Compile ``fn`` ahead of time, then time the compiled executable on ``args``.

    Args:
        fn: the function to benchmark (not yet jitted).
        args: tuple of its arguments.
        min_repeats: see :func:`time_calls`.
        max_repeats: see :func:`time_calls`.
        min_total: see :func:`time_calls`.

    Returns:
        ``(compile_seconds, steady_seconds, output)``; ``compile_seconds`` is the ``total`` of
        :func:`compile_ahead`.
    """
    compiled, seconds = compile_ahead(fn, *args)
    _, steady, out = time_calls(lambda: compiled(*args), min_repeats, max_repeats, min_total)
    return seconds["total"], steady, out


_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_intervals = []  # (start, end) of compile events while a CompileClock is running
_clock_state = {"registered": False, "running": 0}


def _on_duration(event, duration, **kwargs):
    if _clock_state["running"] and event in _COMPILE_EVENTS:
        end = time.perf_counter()
        _compile_intervals.append((end - duration, end))


class CompileClock:
    """Wall time spent tracing, lowering and compiling inside a ``with`` block.

    Listens to JAX's compile events (``jax.monitoring``: jaxpr trace, MLIR lowering, backend
    compile) and returns the length of the *union* of their intervals, so that nested traces
    (a jitted function traced inside another) are not counted twice. Use it where compilation
    cannot be separated ahead of time, e.g. around ``MCMC.run``::

        with CompileClock() as clock:
            mcmc.run(key, data)
        clock.seconds
    """

    def __enter__(self):
        if not _clock_state["registered"]:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _clock_state["registered"] = True
        self._first = len(_compile_intervals)
        _clock_state["running"] += 1
        self.seconds = None
        return self

    def __exit__(self, *exc):
        _clock_state["running"] -= 1
        intervals = sorted(_compile_intervals[self._first :])
        if not _clock_state["running"]:
            _compile_intervals.clear()
        total, current_start, current_end = 0.0, None, None
        for start, end in intervals:
            if current_end is None or start > current_end:
                if current_end is not None:
                    total += current_end - current_start
                current_start, current_end = start, end
            else:
                current_end = max(current_end, end)
        if current_end is not None:
            total += current_end - current_start
        self.seconds = total
        return False


def precision(dtype):
    """A context with ``jax_enable_x64`` on for float64 cells and off for float32 cells.

    float32 cells run as a float32 user would (x64 off), so that no library silently promotes
    to float64 and none trips over a float64 default mixed with float32 inputs.
    """
    return jax.enable_x64(str(dtype) == "float64")


def warm_up_compiler():
    """Compile one tiny function, so that the first measured compile pays no one-time setup."""
    jax.jit(lambda x: (x * 2.0).sum()).lower(jax.numpy.ones(3)).compile()


# ------------------------------------------------------------------------------------------------
# Machine and output.


def versions(extra=()):
    """Library versions as a dict: Python, jax, jaxlib, numpyro, numpyro_ssm and ``extra``.

    Args:
        extra: pairs ``(label, module name)`` of further libraries to report.
    """
    import jaxlib
    import numpyro

    import numpyro_ssm

    out = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpyro": numpyro.__version__,
        "numpyro_ssm": numpyro_ssm.__version__,
    }
    for label, module in extra:
        try:
            out[label] = __import__(module).__version__
        except Exception as err:  # noqa: BLE001 - report, do not crash
            out[label] = f"unavailable ({type(err).__name__})"
    return out


def cpu_name():
    """The CPU model name from ``/proc/cpuinfo`` (or :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_meta(extra=()):
    """CPU, core count, JAX devices, load average and versions, as a JSON-able dict."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_name(),
        "cores": cores,
        "devices": [str(d) for d in jax.devices()],
        "load_average": load,
        "versions": versions(extra),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }


def machine_lines(meta):
    """Printable lines for :func:`machine_meta`'s dict."""
    load = meta["load_average"]
    load_text = ", ".join(f"{x:.1f}" for x in load) if load else "unknown"
    return [
        f"CPU: {meta['cpu']}, {meta['cores']} cores available to this process; "
        f"JAX devices: {', '.join(meta['devices'])}; load average {load_text}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"command: {meta['command']}",
    ]


def fmt(x, digits=3):
    """A number with ``digits`` significant digits; ``—`` for None."""
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def fmt_steps(num_steps):
    """``1000`` as ``1e3``, ``30000`` as ``3e4``."""
    return f"{num_steps:.0e}".replace("e+0", "e")


def print_table(columns, rows, markdown=False, file=None):
    """Print rows of string cells under ``columns``, aligned, or as a Markdown table."""
    file = file or sys.stdout
    if markdown:
        print("| " + " | ".join(columns) + " |", file=file)
        print("|" + "|".join("---" for _ in columns) + "|", file=file)
        for cells in rows:
            print("| " + " | ".join(cells) + " |", file=file)
        return
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=file)
    for cells in rows:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)), file=file)
    file.flush()


def ratio(ours, peer):
    """``ours / peer``, or None when either is missing or the peer is zero."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def ratio_record(benchmark, case, metric, ours_label, ours, peer_label, peer, unit):
    """One row of the combined ratio table printed by ``run_all.py``.

    Args:
        benchmark: script name, e.g. ``"lgssm"``.
        case: the problem, e.g. ``"float64 S=8 T=1e4"``.
        metric: what is compared, e.g. ``"value+grad"``.
        ours_label: which numpyro_ssm variant, e.g. ``"serial"``.
        ours: numpyro_ssm's number (lower is better).
        peer_label: the peer, e.g. ``"dynamax lgssm_filter"``.
        peer: the peer's number, in the same unit.
        unit: e.g. ``"µs/step"``, ``"s"``, ``"GB"``, ``"ms per effective sample"``.
    """
    return {
        "benchmark": benchmark,
        "case": case,
        "metric": metric,
        "ours_label": ours_label,
        "ours": ours,
        "peer_label": peer_label,
        "peer": peer,
        "unit": unit,
        "ratio": ratio(ours, peer),
    }


def write_json(path, meta, rows, ratios):
    """Write ``{"meta", "rows", "ratios"}`` to ``path`` (parent folders are created)."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": rows, "ratios": ratios}
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)

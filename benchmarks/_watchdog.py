"""Run one benchmark cell in a child process, with a watchdog on each method.

A peer can wedge the process it runs in: on jaxlib 0.10.2's CPU runtime, a batched LAPACK call
inside a scan (dynamax's ``parallel_lgssm_filter`` at T = 10⁵, for one) can park every worker of
XLA's thread pool, and the call never returns. Nothing in that process can run afterwards, so the
methods of a cell run in a child process that writes each method's result to a JSON-lines file
as soon as it is done. When no new result arrives within the timeout, the child uses no CPU for
a minute, or it dies, the method it was on is recorded as hung (or crashed), and a fresh child
takes the methods left.

The methods of one cell still run side by side in one process unless one of them hangs.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

__all__ = ["child_record", "run_isolated"]


def child_record(path, method, result):
    """Append ``{method: result}`` to the child's JSON-lines file (no-op without a path)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({method: result}) + "\n")


def _read(path):
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.endswith("\n"):  # a line still being written is read next time
                    results.update(json.loads(line))
    return results


def _cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), or ``None`` off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _wait(proc, path, timeout_s, idle_s):
    """Wait for the child; ``None`` if it exited 0, else why it stopped early.

    The child is killed when no new result came for ``timeout_s`` seconds, or when it used no
    CPU for ``idle_s`` seconds (a deadlocked XLA thread pool sits idle; a slow call does not).
    """
    seen, last = 0, time.monotonic()
    cpu, busy = _cpu_seconds(proc.pid), time.monotonic()
    while proc.poll() is None:
        time.sleep(1.0)
        now = time.monotonic()
        count = len(_read(path))
        if count > seen:
            seen, last = count, now
        new_cpu = _cpu_seconds(proc.pid)
        if new_cpu is None or cpu is None or new_cpu > cpu + 0.05:
            cpu, busy = new_cpu, now
        why = None
        if now - last > timeout_s:
            why = f"hung: no result after {timeout_s:.0f} s (killed)"
        elif now - busy > idle_s:
            why = f"hung: no CPU use for {idle_s:.0f} s, a deadlock (killed)"
        if why:
            proc.kill()
            proc.wait()
            return why
    return None if proc.returncode == 0 else f"crashed: exit code {proc.returncode}"


def run_isolated(child_argv, methods, timeout_s, idle_s=60.0):
    """Results ``{method: result}`` of ``methods``, run by children of ``child_argv``.

    Args:
        child_argv: the command for one child, without ``--methods`` and ``--child-out``
            (which are appended).
        methods: the methods to run, in order.
        timeout_s: the longest wait for one method's result, in seconds.
        idle_s: a child that uses no CPU for this long is deadlocked and is killed.

    Returns:
        One result per method; a method whose child hung or crashed gets ``{"note": why}``.
    """
    results, remaining = {}, list(methods)
    while remaining:
        fd, path = tempfile.mkstemp(suffix=".jsonl", prefix="bench-")
        os.close(fd)
        try:
            argv = [*child_argv, "--methods", *remaining, "--child-out", path]
            proc = subprocess.Popen(argv, stdout=sys.stderr)
            why = _wait(proc, path, timeout_s, idle_s)
            results.update(_read(path))
        finally:
            os.unlink(path)
        left = [m for m in remaining if m not in results]
        if why is None and left:
            why = "no result (the child exited without one)"
        if left:
            results[left[0]] = {"note": why}
            print(f"# {left[0]}: {why}", file=sys.stderr, flush=True)
        remaining = left[1:]
    return results

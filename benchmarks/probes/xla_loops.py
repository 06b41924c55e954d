"""Which sequential loops XLA's CPU backend compiles into one kernel, and how far each is from it.

XLA's CPU compiler runs a ``while`` loop in one of two ways. A loop whose body touches fewer
than ``xla_cpu_small_while_loop_byte_threshold`` bytes per iteration (1 kB by default, counted by
XLA's cost analysis: every fused kernel's operands and outputs) is compiled into one function,
whose iterations cost a few nanoseconds per operation. Any other loop is run by the thunk
executor, which dispatches every fused kernel of its body separately on every iteration: some
tens of nanoseconds each, so a step of 16 small kernels costs about 1 µs whatever its
arithmetic. At T = 100 that is the difference between 16 and 128 µs for the Nile local level
model's value+grad.

For each program below (``jax.jit(jax.value_and_grad(log_likelihood))`` of ``benchmarks/hmm.py``,
``benchmarks/lgssm.py`` and the Nile model of ``benchmarks/nuts.py``) the script reports how
many loops are compiled whole and how many run kernel by kernel, and, with ``--bytes``, the
smallest threshold at which each of the latter would be compiled whole (found by bisection,
one compilation per probe in a subprocess, so it takes a minute per loop).

Users of larger models can raise the threshold themselves (the library never sets XLA flags)::

    XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=100000

Typical use::

    python benchmarks/probes/xla_loops.py
    python benchmarks/probes/xla_loops.py --programs kalman_s2_t100 --bytes
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

_FLAG = "xla_cpu_small_while_loop_byte_threshold"
_DEFAULT_THRESHOLD = 1024


def _hmm(num_states, num_steps):
    from benchmarks import hmm

    params, y = hmm.make_problem(num_states, num_steps, jax.numpy.float64)
    return hmm.ours(parallel=False), (params, y)


def _kalman(state_dim, num_steps):
    from benchmarks import lgssm

    params, y = lgssm.make_problem(state_dim, num_steps, jax.numpy.float64)
    return lgssm.ours(parallel=False), (params, y)


def _nile():
    """``nuts.py``'s Nile log joint of the two scales, at its test point."""
    from numpyro.infer.util import log_density

    from benchmarks import nuts

    spec = nuts.POSTERIORS["nile"]
    y = spec["data"]()

    def log_joint(params):
        return log_density(nuts.nile_ours, (y,), {}, params)[0]

    point = {k: jax.numpy.asarray(v, dtype=jax.numpy.float64) for k, v in spec["point"].items()}
    return log_joint, (point,)


PROGRAMS = {
    "nile": _nile,
    "kalman_s1_t100": lambda: _kalman(1, 100),
    "kalman_s2_t100": lambda: _kalman(2, 100),
    "kalman_s2_t1e4": lambda: _kalman(2, 10_000),
    "hmm_k2_t1e4": lambda: _hmm(2, 10_000),
    "hmm_k3_t1e4": lambda: _hmm(3, 10_000),
    "hmm_k10_t1e4": lambda: _hmm(10, 10_000),
}


def loop_counts(name):
    """``(whole, per_kernel)``: loops compiled into one kernel, and loops run kernel by kernel."""
    fn, args = PROGRAMS[name]()
    text = jax.jit(jax.value_and_grad(fn)).lower(*args).compile().as_text()
    start = text.find("ENTRY")
    entry = text[start : text.find("\n}\n", start)]
    # the pass replaces each small loop by a `call` of a computation holding it
    return len(re.findall(r" call\(", entry)), len(re.findall(r" while\(", entry))


def _counts_at(name, threshold):
    env = dict(os.environ, XLA_FLAGS=f"--xla_backend_extra_options={_FLAG}={threshold}")
    code = f"from benchmarks.probes.xla_loops import loop_counts; print(*loop_counts({name!r}))"
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    return tuple(int(x) for x in out.stdout.split()[-2:])


def loop_bytes(name):
    """The thresholds (bytes) at which the loops that run kernel by kernel become whole."""
    thresholds, low = [], _DEFAULT_THRESHOLD
    per_kernel = _counts_at(name, low)[1]
    while per_kernel:
        high = 2 * low
        while _counts_at(name, high)[1] >= per_kernel:
            low, high = high, 2 * high
            if high > 1 << 26:  # e.g. a LAPACK call in the body: never compiled whole
                return thresholds + [None] * per_kernel
        while high - low > max(16, low // 64):
            mid = (low + high) // 2
            low, high = (mid, high) if _counts_at(name, mid)[1] >= per_kernel else (low, mid)
        remaining = _counts_at(name, high)[1]
        thresholds += [high] * (per_kernel - remaining)
        per_kernel, low = remaining, high
    return thresholds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", nargs="+", choices=list(PROGRAMS), default=list(PROGRAMS))
    parser.add_argument("--bytes", action="store_true", help="bisect each loop's byte size")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print("| program (value+grad) | loops compiled whole | loops run kernel by kernel | bytes |")
    print("|---|---|---|---|")
    for name in args.programs:
        whole, per_kernel = loop_counts(name)
        sizes = "" if not (args.bytes and per_kernel) else loop_bytes(name)
        print(f"| {name} | {whole} | {per_kernel} | {sizes} |")


if __name__ == "__main__":
    main()

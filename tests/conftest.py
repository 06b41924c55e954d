"""Test configuration: x64 everywhere (oracle checks at rtol <= 1e-8).

float32 checks pass float32 arrays explicitly and assert the output dtype, so they test the
float32 code path even with x64 enabled.

A pytest worker compiles thousands of XLA executables, and JAX's caches keep them all alive.
On CPU each executable maps its kernels' object code into memory, a few hundred mappings for a
scan with many fusions, and Linux caps a process at ``vm.max_map_count`` (65 530 by default).
At that cap LLVM cannot map the next kernel and aborts the worker (seen in CI: "Fatal Python
error: Aborted" while compiling; reproduced here after ~7 700 modules). So the caches are
cleared whenever the worker's mappings pass a threshold.

Compilation, not execution, is most of the suite's time (small shapes, thousands of programs), so
the tests ask XLA's CPU backend for its cheapest code generation (LLVM without its expensive
passes) and its older element-wise emitters instead of the MLIR fusion emitters, unless
``XLA_FLAGS`` is already set. The first two flags make compile-bound tests about a third faster;
the third (where this jaxlib has it: a probe at start-up; jaxlib 0.12 has not) takes another
40 % off them (three contract tests: 67 s to 41 s) and about 20 % off the run-bound ones (the
CMGF SBC test 82 s to 69 s, a float32 T = 100 000 gradient 42 s to 29 s).
They change how the code is generated, not what it computes (XLA's CPU fast-math stays off, so no
reassociation). The examples, run as subprocesses by tests/test_examples.py, inherit them.
"""

import atexit
import gc
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

CHEAP_CODEGEN = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
# not in every XLA (gone from jaxlib 0.12, where the fusion emitters are the only ones)
OLD_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flags):
    """Whether this jaxlib starts with ``flags`` (XLA aborts on a flag it does not know)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
    )
    return probe.returncode == 0


# Set once, in pytest's first process: its xdist workers and the examples inherit the variable.
if "XLA_FLAGS" not in os.environ:
    with_old = f"{CHEAP_CODEGEN} {OLD_EMITTERS}"
    os.environ["XLA_FLAGS"] = with_old if _xla_accepts(with_old) else CHEAP_CODEGEN

# JAX's persistent compilation cache, on disk: a program compiled a second time (after a worker
# clears its caches, below; in the other worker; in an example's subprocess) is read back
# instead. One directory per test session, made here in pytest's first process and inherited
# like XLA_FLAGS, removed when that process exits (CI's two stages each get their own: the
# 3.12 stage resolves a newer jax, whose entries would not match). Only compilations of at
# least half a second are written. A full run on 2 cores took 1523 s without it and 1374 s
# with it: one run each, the first beside other work and the second with one example failing
# early (a broken edit), so read it as about 100 s saved.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="numpyro_ssm_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them when it starts)

jax.config.update("jax_enable_x64", True)

# Clear JAX's caches when the process holds more memory mappings than this (Linux only). A clear
# costs its teardown (5 to 12 s of unmapping) and the recompilation of whatever the worker's
# next tests share: a full run clears 18 times (126 s of teardowns). The threshold stays here
# for memory: a worker holds 5 to 6 GB at 22 000 mappings, and CI runs two of them.
MAX_MAPPINGS = 20_000


def _mappings():
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@pytest.fixture(autouse=True)
def _bounded_executable_cache():
    yield
    if _mappings() > MAX_MAPPINGS:
        jax.clear_caches()
        gc.collect()


# The examples run first. xdist hands the collection out in order, so the last tests decide how
# long one worker waits for the other at the end: the examples (subprocesses of 20 to 60 s,
# collected last) left one worker idle for tens of seconds while the other finished them.
RUN_FIRST = "tests/test_examples.py::"


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(RUN_FIRST))  # stable: order kept

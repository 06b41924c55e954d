"""Every script in examples/ runs to completion in reduced mode and writes its figure.

Each script reads two environment variables: ``NUMPYRO_SSM_FAST=1`` shrinks warmup, samples and
chains, and ``NUMPYRO_SSM_OUTDIR`` is the directory where it writes its PNG figures.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", EXAMPLES or [None], ids=lambda p: p.stem if p is not None else "no-examples"
)
def test_example_runs_and_writes_figure(script, tmp_path):
    if script is None:
        pytest.fail(f"No example scripts found: {EXAMPLES_DIR}/*.py matched nothing.")
    outdir = tmp_path / "figures"
    outdir.mkdir()
    env = dict(os.environ)
    env.update(NUMPYRO_SSM_FAST="1", NUMPYRO_SSM_OUTDIR=str(outdir), MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"{script.name} exited with code {result.returncode}.\n"
        f"--- stdout (tail) ---\n{result.stdout[-4000:]}\n"
        f"--- stderr ---\n{result.stderr[-8000:]}"
    )
    figures = sorted(outdir.rglob("*.png"))
    assert figures, (
        f"{script.name} ran but wrote no .png under NUMPYRO_SSM_OUTDIR={outdir}.\n"
        f"--- stdout (tail) ---\n{result.stdout[-4000:]}"
    )

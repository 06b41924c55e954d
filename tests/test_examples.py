"""Every script in examples/ runs to completion in reduced mode and writes its figures.

Each script reads two environment variables: ``NUMPYRO_SSM_FAST=1`` shrinks warmup, samples and
chains (and, for the LG-SSM parameter posterior, the emission dimension), and
``NUMPYRO_SSM_OUTDIR`` is the directory where it writes its PNG figures.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))

# The figures each known script must write; a script not listed must write at least one PNG.
EXPECTED_FIGURES = {
    "blackjax_lgssm": {"blackjax_lgssm.png"},
    "co2_structural": {"co2_structural.png"},
    "uk_seatbelt_intervention": {"uk_seatbelt_intervention.png"},
    "earthquakes": {"earthquakes.png", "earthquakes_trace.png", "earthquakes_state_paths.png"},
    "earthquakes_poisson_lds": {"earthquakes_poisson_lds.png"},
    "lgssm_parameter_posterior": {
        "lgssm_emissions_all_free.png",
        "lgssm_emissions_h_d_fixed.png",
        "lgssm_trace_h_d_fixed.png",
    },
    "nile_local_level": {"nile_local_level.png", "nile_local_level_trace.png"},
    "stochastic_volatility": {"stochastic_volatility.png", "stochastic_volatility_trace.png"},
    "geyser": {"geyser_dwell_times.png", "geyser_states.png"},
    "pendulum": {"pendulum.png", "pendulum_posterior.png"},
    "gnp_markov_switching": {"gnp_recessions.png", "gnp_posterior.png", "gnp_forecast.png"},
    "keypoint_slds": {
        "keypoint_slds_ethogram.png",
        "keypoint_slds_durations.png",
        "keypoint_slds_trace.png",
    },
}


def _param(script):
    """The scripts that call ArviZ are marked ``arviz``: CI reruns them with ArviZ 1.x."""
    calls_arviz = re.search(r"arviz|to_inference_data", script.read_text())
    return pytest.param(script, id=script.stem, marks=[pytest.mark.arviz] if calls_arviz else [])


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", [_param(s) for s in EXAMPLES] or [pytest.param(None, id="no-examples")]
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
    written = {p.name for p in outdir.rglob("*.png") if p.stat().st_size > 0}
    expected = EXPECTED_FIGURES.get(script.stem, set())
    assert written and expected <= written, (
        f"{script.name} ran but did not write the expected figures under "
        f"NUMPYRO_SSM_OUTDIR={outdir}: missing {sorted(expected - written) or 'any .png'}, "
        f"written {sorted(written)}.\n--- stdout (tail) ---\n{result.stdout[-4000:]}"
    )
    if script.stem == "earthquakes":  # the quickstart says what it reports and where it wrote
        assert "The 2-state model in detail (the default" in result.stdout
        for name in EXPECTED_FIGURES["earthquakes"]:
            assert f"wrote {(outdir / name).resolve()}" in result.stdout

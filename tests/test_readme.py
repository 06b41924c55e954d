"""The README's example runs, and agrees with the quickstart script it summarizes."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
from numpyro.infer.util import log_density

ROOT = Path(__file__).resolve().parents[1]


def _readme_example():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "def model(counts" in b)


def test_readme_model_runs_without_sampling():
    code = _readme_example().split("mcmc = MCMC(")[0]  # everything but the sampling
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    counts = jnp.asarray(namespace["load_earthquakes"]().counts, dtype=jnp.float32)
    params = {
        "transition_matrix": jnp.array([[0.9, 0.1], [0.2, 0.8]]),
        "increments": jnp.array([15.0, 10.0]),
    }
    value, _ = log_density(namespace["model"], (counts,), {}, params)
    assert jnp.isfinite(value)
    assert jax.numpy.ndim(value) == 0


def test_readme_and_quickstart_script_start_the_chain_the_same_way():
    script = (ROOT / "examples" / "earthquakes.py").read_text(encoding="utf-8")
    assert "stationary_distribution(transition_matrix)" in _readme_example()
    assert "stationary_distribution(transition_matrix)" in script

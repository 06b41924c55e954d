"""Time jax-moseq's ARHMM ``resample_model`` on a saved problem; runs in jax-moseq's own venv.

jax-moseq pins ``dynamax<1.0.3`` and cannot share numpyro_ssm's environment, so
``benchmarks/switching.py`` creates a separate venv (``--moseq-venv``), writes the problem to an
``.npz`` file and runs this script there::

    <venv>/bin/python benchmarks/moseq_sweep.py problem.npz --repeats 5

It prints one JSON line: the first call's time, the median of the later ones (each ended by
``block_until_ready``), the library versions and the load average.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    problem = np.load(args.problem)
    import jax

    if problem["dtype"].item() == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jax.random as jr
    import jax_moseq
    from jax_moseq.models import arhmm

    dtype = jnp.float64 if problem["dtype"].item() == "float64" else jnp.float32
    x = jnp.asarray(problem["x"], dtype)
    mask = jnp.asarray(problem["mask"], dtype)
    num_states, num_lags = int(problem["num_states"]), int(problem["num_lags"])
    trans = {
        "num_states": num_states,
        "alpha": float(problem["alpha"]),
        "kappa": float(problem["kappa"]),
        "gamma": float(problem["gamma"]),
    }
    ar = {
        "latent_dim": x.shape[-1],
        "nlags": num_lags,
        "S_0_scale": float(problem["S_0_scale"]),
        "K_0_scale": float(problem["K_0_scale"]),
    }
    data = {"x": x, "mask": mask}
    model = arhmm.init_model(data, seed=jr.PRNGKey(0), trans_hypparams=trans, ar_hypparams=ar)

    def sweep(model, i):
        out = arhmm.resample_model(
            data, jr.PRNGKey(i), **{k: model[k] for k in ("states", "params", "hypparams")}
        )
        return jax.block_until_ready(out)

    start = time.perf_counter()
    model = sweep(model, 1)
    first = time.perf_counter() - start
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        model = sweep(model, i + 2)
        times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "first_s": first,
                "median_s": statistics.median(times),
                "times_s": times,
                "load_average": os.getloadavg(),
                "versions": {
                    "python": sys.version.split()[0],
                    "jax": jax.__version__,
                    "jax_moseq": getattr(jax_moseq, "__version__", "unknown"),
                    "dynamax": __import__("dynamax").__version__,
                    "numba": __import__("numba").__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    main()

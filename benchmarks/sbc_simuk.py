"""The same SBC with ArviZ's ``simuk`` and with ``numpyro_ssm.infer.run_sbc`` (docs/calibration.md).

``simuk`` (ArviZ 1.x, Python >= 3.12: run this with the ``.venv312`` interpreter after
``pip install simuk``) fits each replication with its own ``numpyro.infer.MCMC`` call;
``run_sbc`` fits them all at once (chains and replications under one ``vmap``, one
compilation). Both run the local level model of ``benchmarks/sbc.py`` with the same NUTS
settings and the same number of replications and kept draws; the script prints each one's wall
time and the uniformity tests of its ranks (our tests, applied to both sets of ranks)::

    .venv312/bin/python benchmarks/sbc_simuk.py --replications 40
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import simuk  # noqa: E402
from numpyro.infer import NUTS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.sbc import local_level  # noqa: E402
from numpyro_ssm.infer import rank_uniformity, run_sbc  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=250)
    parser.add_argument("--samples", type=int, default=240)
    args = parser.parse_args()
    R, W, S = args.replications, args.warmup, args.samples
    out = {"replications": R, "warmup": W, "samples_per_chain": S, "chains": 1}

    start = time.perf_counter()
    sbc = simuk.SBC(
        NUTS(local_level),
        num_simulations=R,
        sample_kwargs={"num_warmup": W, "num_samples": S, "progress_bar": False},
        data_dir={"y": np.zeros((50, 1))},
        seed=0,
        progress_bar=False,
    )
    sbc.run_simulations()
    out["simuk_seconds"] = round(time.perf_counter() - start, 1)
    ranks = sbc.simulations["prior_sbc"]
    simuk_tests = {
        name: rank_uniformity(np.asarray(ranks[name]).ravel().astype(int), S)._asdict()
        for name in ("sigma_obs", "sigma_level")
    }

    start = time.perf_counter()
    ours = run_sbc(
        jax.random.key(0),
        local_level,
        num_replications=R,
        num_warmup=W,
        num_samples=S,
        num_chains=1,
        thinning=1,
    )
    out["run_sbc_seconds"] = round(time.perf_counter() - start, 1)
    ours_tests = {
        name: rank_uniformity(ours.ranks[name], ours.num_draws)._asdict()
        for name in ("sigma_obs", "sigma_level")
    }
    out["load_average"] = os.getloadavg()
    out["tests"] = {"simuk": simuk_tests, "run_sbc": ours_tests}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

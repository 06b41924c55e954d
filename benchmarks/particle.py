"""Bootstrap particle filter throughput: numpyro_ssm against TFP and cuthbert, side by side.

One shared problem: the stochastic volatility model of ``examples/stochastic_volatility.py``
with fixed parameters (mu = 0, phi = 0.95, sigma = 0.3), ``h_1`` from its stationary law, and
``T`` returns simulated from it. Every method runs a bootstrap filter with ``N`` particles and
systematic resampling at every step, from a threefry key, jitted, and returns its full history
(particles, weights, ancestors or their equivalents, and the log-likelihood increments):

- ``ours``: ``ParticleSSM(...).filter(key, y, ess_threshold=1)`` (``history=True``);
- ``ours (log Z only)``: ``ParticleSSM(...).log_likelihood_estimate(key, y, ess_threshold=1)``,
  no history (what PMMH runs);
- ``tfp``: ``tfp.experimental.mcmc.particle_filter`` (JAX substrate) with
  ``resample_fn=resample_systematic`` and a criterion that always resamples;
- ``cuthbert``: ``cuthbert.smc.particle_filter.build_filter`` with
  ``cuthbertlib.resampling.systematic.resampling`` (its CPU inverse CDF is a Numba callback),
  driven by ``cuthbert.filter``; it draws ``h_0`` unweighted and then moves and weights ``T``
  times, one move more than the others.

Throughput is ``N T / steady-state seconds`` (median of repeated calls); the ratio columns are
the peer's time over ours (above 1: we are faster). The script prints the machine's load
average: on a shared machine the absolute numbers move, the side-by-side ratios much less.

    python benchmarks/particle.py                 # N = 1e4, T = 1e3, float64 and float32
    python benchmarks/particle.py --quick         # N = 1e3, T = 200
    python benchmarks/particle.py --json out.json
"""

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from numpyro_ssm import ParticleSSM  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._timing import (  # noqa: E402
    compile_and_time,
    fmt,
    machine_lines,
    machine_meta,
    precision,
    print_table,
    ratio_record,
    warm_up_compiler,
    write_json,
)

MU, PHI, SIGMA = 0.0, 0.95, 0.3
METHODS = ("ours", "ours_log_z", "tfp", "cuthbert")
LABELS = {
    "ours": "numpyro_ssm filter",
    "ours_log_z": "numpyro_ssm log Z only",
    "tfp": "TFP particle_filter",
    "cuthbert": "cuthbert particle filter",
}
EXTRA_VERSIONS = (("tfp", "tensorflow_probability"), ("cuthbert", "cuthbert"))


def simulate(num_steps, dtype, seed=0):
    rng = np.random.default_rng(seed)
    h = MU + SIGMA / np.sqrt(1 - PHI**2) * rng.normal()
    y = np.empty(num_steps)
    for t in range(num_steps):
        y[t] = np.exp(h / 2) * rng.normal()
        h = MU + PHI * (h - MU) + SIGMA * rng.normal()
    return jnp.asarray(y, dtype)


def transition_fn(h, u, params):
    mu, phi, sigma = params
    return dist.Normal(mu + phi * (h - mu), sigma)


def emission_fn(h, u, params):
    return dist.Normal(0.0, jnp.exp(h / 2))


def ours(num_particles, log_z_only):
    def run(key, y):
        params = tuple(jnp.asarray(p, y.dtype) for p in (MU, PHI, SIGMA))
        initial = dist.Normal(params[0], params[2] / jnp.sqrt(1 - params[1] ** 2))
        ssm = ParticleSSM(
            initial,
            transition_fn,
            emission_fn,
            params,
            num_steps=y.shape[0],
            num_particles=num_particles,
            ess_threshold=1.0,
        )
        if log_z_only:
            return ssm.log_likelihood_estimate(key, y)
        res = ssm.filter(key, y)
        return res.log_marginal, res.particles, res.log_weights, res.ancestors

    return run


def tfp_filter(num_particles):
    def run(key, y):
        from tensorflow_probability.substrates import jax as tfp

        tfd = tfp.distributions
        one = jnp.ones((), y.dtype)
        out = tfp.experimental.mcmc.particle_filter(
            y,
            tfd.Normal(MU * one, SIGMA / np.sqrt(1 - PHI**2) * one),
            lambda t, h: tfd.Normal(MU + PHI * (h - MU), SIGMA * one),
            lambda t, h: tfd.Normal(0.0 * one, jnp.exp(h / 2)),
            num_particles=num_particles,
            resample_fn=tfp.experimental.mcmc.resample_systematic,
            resample_criterion_fn=lambda *_: True,
            seed=key,
        )
        particles, log_weights, parents, increments = out
        return increments.sum(), particles, log_weights, parents

    return run


def cuthbert_filter(num_particles):
    def run(key, y):
        from cuthbert import filter as run_filter
        from cuthbert.smc import particle_filter
        from cuthbertlib.resampling import systematic

        dtype = y.dtype

        def init_sample(k):
            return MU + SIGMA / np.sqrt(1 - PHI**2) * jax.random.normal(k, (), dtype)

        def propagate_sample(k, h, inputs):
            return MU + PHI * (h - MU) + SIGMA * jax.random.normal(k, (), dtype)

        def log_potential(h_prev, h, y_t):
            return jax.scipy.stats.norm.logpdf(y_t, 0.0, jnp.exp(h / 2))

        pf = particle_filter.build_filter(
            init_sample, propagate_sample, log_potential, num_particles, systematic.resampling
        )
        key_init, key_filter = jax.random.split(key)
        states = run_filter(pf, y, pf.init_prepare(key=key_init), key=key_filter)
        return (
            states.log_normalizing_constant[-1],
            states.particles,
            states.log_weights,
            states.ancestor_indices,
        )

    return run


FUNCTIONS = {
    "ours": lambda n: ours(n, False),
    "ours_log_z": lambda n: ours(n, True),
    "tfp": tfp_filter,
    "cuthbert": cuthbert_filter,
}


def bench(method, num_particles, num_steps, dtype, repeats):
    y = simulate(num_steps, dtype)
    fn = FUNCTIONS[method](num_particles)
    compile_s, steady, out = compile_and_time(
        fn, (jax.random.key(0), y), min_repeats=repeats, max_repeats=10 * repeats, min_total=1.0
    )
    log_z = float(out[0] if isinstance(out, tuple) else out)
    return {
        "seconds": steady,
        "compile": compile_s,
        "log_z": log_z,
        "throughput": num_particles * num_steps / steady,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=10_000, help="number of particles")
    parser.add_argument("--T", type=int, default=1_000, help="number of time steps")
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true", help="N = 1e3, T = 200, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.N, args.T, args.repeats = 1_000, 200, 3
    return args


COLUMNS = (
    "dtype",
    "N",
    "T",
    "method",
    "ms per run",
    "particle-steps / s",
    "compile s",
    "log Ẑ",
    "this ÷ ours (time)",
)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    meta = machine_meta(EXTRA_VERSIONS)
    meta["load_average"] = os.getloadavg()
    for line in machine_lines(meta):
        print(line)
    print(f"load average (1, 5, 15 min): {meta['load_average']}", flush=True)
    warm_up_compiler()
    rows, records, ratios = [], [], []
    for dtype in args.dtype:
        results = {}
        for method in args.methods:
            try:
                with precision(dtype):
                    results[method] = bench(method, args.N, args.T, dtype, args.repeats)
            except Exception as err:  # noqa: BLE001 - a failing peer must not stop us
                traceback.print_exc(limit=2, file=sys.stderr)
                results[method] = {"note": f"failed: {type(err).__name__}: {str(err)[:200]}"}
            print(f"# {dtype} {LABELS[method]}: {results[method]}", file=sys.stderr, flush=True)
        reference = results.get("ours", {}).get("seconds")
        case = f"{dtype} N={args.N} T={args.T}"
        for method, res in results.items():
            records.append({"dtype": dtype, "N": args.N, "T": args.T, "method": method} | res)
            seconds = res.get("seconds")
            rows.append(
                [
                    dtype,
                    str(args.N),
                    str(args.T),
                    LABELS[method],
                    fmt(seconds * 1e3) if seconds else "—",
                    f"{res['throughput']:.3g}" if seconds else res.get("note", "—"),
                    fmt(res.get("compile"), 2),
                    fmt(res.get("log_z"), 5),
                    fmt(seconds / reference, 2) if seconds and reference else "—",
                ]
            )
            if method in ("tfp", "cuthbert") and seconds and reference:
                for ours_method in ("ours", "ours_log_z"):
                    mine = results.get(ours_method, {}).get("seconds")
                    if mine:
                        ratios.append(
                            ratio_record(
                                "particle",
                                case,
                                "bootstrap filter",
                                LABELS[ours_method],
                                mine,
                                LABELS[method],
                                seconds,
                                "s",
                            )
                        )
    print_table(COLUMNS, rows, markdown=args.markdown)
    print("\nThe log Ẑ column differs between methods by Monte Carlo error only (one run each).")
    write_json(args.json, meta, records, ratios)


if __name__ == "__main__":
    main()

"""Simulation-based calibration of the HMM, linear-Gaussian and nonlinear families.

For each model below, ``numpyro_ssm.infer.run_sbc`` draws parameters from the prior, simulates a
data set with the distribution's own ``sample``, fits it by NUTS (2 chains, vectorized with the
other replications) and ranks every scalar parameter's true value among the thinned posterior
draws; the ranks are then tested for uniformity (chi-square, and the exact simultaneous ECDF test
of Säilynoja, Bürkner & Vehtari 2022) and plotted (``docs/_static/sbc/<model>.png``). The models:

- ``hmm_poisson``: 2-state Poisson HMM, ordered rates (``low``, ``low + gap``), Dirichlet rows of
  the transition matrix, T = 60 with every 7th step and the last 5 steps masked;
- ``hmm_gaussian``: 2-state Gaussian HMM, ordered means, a common scale, Dirichlet transition
  rows, T = 60, the same mask;
- ``local_level``: the local level model (random walk plus noise), both scales unknown, T = 50;
- ``lgssm_2d``: two AR(1) states observed through a fixed 2 x 2 loading matrix, unknown AR
  coefficients, state scale and the two observation scales, T = 50 with 20% of the entries
  missing (a fixed random entry mask);
- ``poisson_lds_cmgf``: a Poisson linear dynamical system (AR(1) log-rate, unknown level, AR
  coefficient and state scale), T = 50, fitted through ``GeneralizedGaussianSSM``'s
  conditional-moments filter (``"ghkf"``): an *approximate* likelihood checked against the
  exact simulator, so non-uniform ranks measure the approximation (docs/calibration.md).

Typical use (results to docs/_static/sbc/, a markdown table on stdout)::

    python benchmarks/sbc.py                                  # 200 replications per model
    python benchmarks/sbc.py --models local_level --replications 40 --outdir /tmp/sbc
"""

import argparse
import json
import os
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from numpyro_ssm import DiscreteHMM, GeneralizedGaussianSSM, LinearGaussianSSM  # noqa: E402
from numpyro_ssm.infer import plot_sbc_ranks, run_sbc, sbc_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HMM_STEPS = 60
HMM_MASK = (np.arange(HMM_STEPS) % 7 != 6) & (np.arange(HMM_STEPS) < HMM_STEPS - 5)
LG_STEPS = 50
LG_MASK = np.random.default_rng(0).uniform(size=(LG_STEPS, 2)) > 0.2
LOADINGS = jnp.array([[1.0, 0.0], [0.5, 1.0]])


def transition_rows():
    return numpyro.sample(
        "transition", dist.Dirichlet(jnp.array([[8.0, 2.0], [2.0, 8.0]])).to_event(1)
    )


def hmm_poisson(y=None):
    low = numpyro.sample("low", dist.Gamma(4.0, 2.0))
    gap = numpyro.sample("gap", dist.Gamma(6.0, 1.0))
    rates = jnp.stack([low, low + gap])
    hmm = DiscreteHMM(jnp.ones(2) / 2, transition_rows(), dist.Poisson(rates), obs_mask=HMM_MASK)
    numpyro.sample("y", hmm, obs=y)


def hmm_gaussian(y=None):
    loc = numpyro.sample("loc", dist.Normal(0.0, 2.0))
    gap = numpyro.sample("gap", dist.Gamma(4.0, 1.0))
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    emission = dist.Normal(jnp.stack([loc, loc + gap]), scale)
    hmm = DiscreteHMM(jnp.ones(2) / 2, transition_rows(), emission, obs_mask=HMM_MASK)
    numpyro.sample("y", hmm, obs=y)


def local_level(y=None):
    sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(1.0))
    sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(1.0))
    ssm = LinearGaussianSSM(
        jnp.zeros(1),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * 4.0,
        transition_scale_tril=sigma_level * jnp.eye(1),
        emission_scale_tril=sigma_obs * jnp.eye(1),
        num_steps=LG_STEPS,
    )
    numpyro.sample("y", ssm, obs=y)


def lgssm_2d(y=None):
    phi = numpyro.sample("phi", dist.Uniform(0.0, 0.95).expand([2]).to_event(1))
    sigma_state = numpyro.sample("sigma_state", dist.HalfNormal(1.0))
    sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(0.5).expand([2]).to_event(1))
    stationary = sigma_state**2 / (1.0 - phi**2)
    ssm = LinearGaussianSSM(
        jnp.zeros(2),
        jnp.diag(phi),
        LOADINGS,
        initial_cov=jnp.diag(stationary),
        transition_scale_tril=sigma_state * jnp.eye(2),
        emission_scale_tril=jnp.diag(sigma_obs),
        obs_mask=LG_MASK,
    )
    numpyro.sample("y", ssm, obs=y)


def _ar1(z, u, p):
    return p["a"] * z


def _log_rate(z, u, p):
    return z + p["level"]


def _poisson(eta):
    return dist.Poisson(jnp.exp(eta))


def poisson_lds_cmgf(y=None):
    level = numpyro.sample("level", dist.Normal(1.5, 0.5))
    a = numpyro.sample("a", dist.Uniform(0.0, 0.95))
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    ssm = GeneralizedGaussianSSM(
        jnp.zeros(1),
        _ar1,
        _log_rate,
        _poisson,
        initial_scale_tril=jnp.reshape(sigma / jnp.sqrt(1.0 - a**2), (1, 1)),
        transition_scale_tril=jnp.reshape(sigma, (1, 1)),
        params={"level": level, "a": a},
        num_steps=LG_STEPS,
        method="ghkf",
    )
    numpyro.sample("y", ssm, obs=y)


MODELS = {
    "hmm_poisson": hmm_poisson,
    "hmm_gaussian": hmm_gaussian,
    "local_level": local_level,
    "lgssm_2d": lgssm_2d,
    "poisson_lds_cmgf": poisson_lds_cmgf,
}


def run_one(name, args, outdir):
    start = time.perf_counter()
    result = run_sbc(
        jax.random.key(args.seed),
        MODELS[name],
        num_replications=args.replications,
        num_warmup=args.warmup,
        num_samples=args.samples,
        num_chains=2,
        thinning=args.thinning,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - start
    tests = sbc_summary(result)
    fig = plot_sbc_ranks(result)
    fig.savefig(outdir / f"{name}.png", dpi=90)
    record = {
        "model": name,
        "replications": args.replications,
        "num_draws": result.num_draws,
        "warmup": args.warmup,
        "samples": args.samples,
        "thinning": args.thinning,
        "seconds": round(seconds, 1),
        "load_average": os.getloadavg(),
        "divergent_replications": int(np.sum(result.num_divergent > 0)),
        "max_rhat": float(np.nanmax(result.max_rhat)),
        "replications_rhat_above_1_05": int(np.sum(result.max_rhat > 1.05)),
        "median_min_ess": float(np.median(result.min_ess)),
        "tests": {k: v._asdict() for k, v in tests.items()},
    }
    print(json.dumps(record), flush=True)
    return record


def markdown(records):
    lines = [
        "| model | parameter | chi-square p | ECDF p |",
        "| --- | --- | --- | --- |",
    ]
    for record in records:
        for label, test in record["tests"].items():
            lines.append(
                f"| {record['model']} | `{label}` | {test['chi2_pvalue']:.3f} | "
                f"{test['ecdf_pvalue']:.3f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--thinning", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outdir", type=Path, default=ROOT / "docs" / "_static" / "sbc")
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    records = []
    results_file = args.outdir / "results.json"
    for name in args.models:
        records.append(run_one(name, args, args.outdir))
        results_file.write_text(json.dumps(records, indent=1) + "\n")
    print(markdown(records))


if __name__ == "__main__":
    main()

"""NUTS end to end: effective samples per second of numpyro_ssm against the other ways to write it.

Three posteriors, each written several ways and sampled by NumPyro's NUTS with the same settings
(``--chains`` chains x ``--warmup`` warmup x ``--samples`` draws, ``chain_method`` sequential and
vectorized, float64):

- **Nile local level** (``numpyro_ssm.datasets.load_nile()``, T = 100)::

      sigma_obs ~ HalfNormal(300),  sigma_level ~ HalfNormal(100),
      level_1 ~ N(1000, 1e7),  level_{t+1} ~ N(level_t, sigma_level²),  y_t ~ N(level_t, sigma_obs²)

  - ``ours``: a ``LinearGaussianSSM`` sample site;
  - ``tfp``: ``tfd.LinearGaussianStateSpaceModel(...).log_prob(y)`` in ``numpyro.factor``;
  - ``dynamax``: ``lgssm_filter(make_lgssm_params(...), y).marginal_loglik`` in ``numpyro.factor``;
  - ``latent_centered``: the 100 levels sampled by NUTS, through ``numpyro.contrib.control_flow
    .scan`` with ``level_{t+1} ~ N(level_t, sigma_level²)``;
  - ``latent_noncentered``: the same with standard-normal innovations, ``level_{t+1} = level_t +
    sigma_level * eps_t``.

- **Earthquakes**, 2-state stationary Poisson HMM (``load_earthquakes()``, T = 107), the priors of
  ``examples/earthquakes.py`` (sticky Dirichlet rows, ordered rates = cumsum of Gamma(2, 0.1)
  increments, initial distribution = stationary distribution):

  - ``ours``: a ``DiscreteHMM`` sample site;
  - ``tfp``: ``tfd.HiddenMarkovModel(...).log_prob(y)`` in ``numpyro.factor``;
  - ``dynamax``: ``hmm_filter(...).marginal_loglik`` in ``numpyro.factor``;
  - ``enum_scan``: the latent states as discrete sites in ``scan``, summed out by NumPyro's
    enumeration (``infer={"enumerate": "parallel"}``, as in NumPyro's ``hmm_enum`` example; needs
    ``funsor``).

- **Poisson LDS on the earthquake counts** (``poisson_lds``; ``benchmarks/_nuts_poisson_lds.py``,
  the model of ``examples/earthquakes_poisson_lds.py``): an AR(1) log-rate, Poisson counts.

  - ``ours``: a ``GeneralizedGaussianSSM`` sample site (CMGF, ``"ghkf"``; an approximate
    likelihood, so its posterior is close to, not equal to, the exact one);
  - ``latent_explicit``: the exact joint density with the 107 log-rates sampled from
    standard-normal innovations (110 dimensions).

Each posterior also has ``priors_only``: the same parameters and priors with no likelihood. It is
the floor, what NumPyro's NUTS costs (compilation included) before any likelihood: no variant's
wall time can go below it. It is left out of the ratios.

Reported per run: the minimum bulk ESS (``arviz.ess(method="bulk")``) over the model parameters
(the noise scales; the transition matrix and rate increments; ``mu, phi, sigma``: never the
latent path), the wall time of ``MCMC.run`` (from cold JAX caches) with compilation, the part of
it spent tracing, lowering and compiling (JAX's compile events,
``benchmarks._timing.CompileClock``), ESS per second with and without that compilation, mean
leapfrog steps per draw, divergences, and the posterior means. The ratio columns are
numpyro_ssm's time per effective sample over the row's (ESS/s of the row over ours): above 1
means numpyro_ssm is slower. Before sampling, the marginalized variants' log densities are
compared at one parameter point (they must agree to rtol 1e-6).

Typical use::

    python benchmarks/nuts.py --quick              # 2 chains x (100 + 100), vectorized: a smoke run
    python benchmarks/nuts.py                               # 4 chains x 1000 + 1000 (long)
    python benchmarks/nuts.py --models nile --variants ours tfp --chain-methods vectorized
    python benchmarks/nuts.py --models poisson_lds --chains 2 --chain-methods sequential
"""

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.contrib.control_flow import scan  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_uniform  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM  # noqa: E402
from numpyro_ssm.datasets import load_earthquakes, load_nile  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._nuts_poisson_lds import POSTERIOR as POISSON_LDS  # noqa: E402
from benchmarks._timing import (  # noqa: E402
    CompileClock,
    fmt,
    machine_lines,
    machine_meta,
    print_table,
    ratio_record,
    write_json,
)

EXTRA_VERSIONS = (
    ("tfp", "tensorflow_probability"),
    ("dynamax", "dynamax"),
    ("arviz", "arviz"),
    ("funsor", "funsor"),
)
NILE_INITIAL_MEAN, NILE_INITIAL_VAR = 1000.0, 1e7

# ------------------------------------------------------------------------------------------------
# Nile local level model.


def nile_scales():
    """The two noise scales, sampled sites shared by every Nile variant."""
    sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(300.0))
    sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(100.0))
    return sigma_obs, sigma_level


def nile_priors_only(y):
    """The floor: the same parameters and priors, no likelihood (NumPyro's own cost)."""
    del y
    nile_scales()


def nile_ours(y):
    """``y``: shape ``(T,)``; the level is marginalized by ``LinearGaussianSSM``."""
    sigma_obs, sigma_level = nile_scales()
    ssm = LinearGaussianSSM(
        jnp.array([NILE_INITIAL_MEAN]),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * NILE_INITIAL_VAR,
        transition_scale_tril=jnp.reshape(sigma_level, (1, 1)),
        emission_scale_tril=jnp.reshape(sigma_obs, (1, 1)),
        num_steps=y.shape[0],
    )
    numpyro.sample("y", ssm, obs=y[:, None])


def nile_tfp(y):
    """The level marginalized by TFP's ``LinearGaussianStateSpaceModel`` in a factor."""
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    sigma_obs, sigma_level = nile_scales()
    ssm = tfd.LinearGaussianStateSpaceModel(
        num_timesteps=y.shape[0],
        transition_matrix=jnp.eye(1),
        transition_noise=tfd.MultivariateNormalDiag(scale_diag=jnp.reshape(sigma_level, (1,))),
        observation_matrix=jnp.eye(1),
        observation_noise=tfd.MultivariateNormalDiag(scale_diag=jnp.reshape(sigma_obs, (1,))),
        initial_state_prior=tfd.MultivariateNormalDiag(
            jnp.array([NILE_INITIAL_MEAN]), scale_diag=jnp.array([NILE_INITIAL_VAR**0.5])
        ),
    )
    numpyro.factor("y", ssm.log_prob(y[:, None]))


def nile_dynamax(y):
    """The level marginalized by dynamax's ``lgssm_filter`` in a factor."""
    from dynamax.linear_gaussian_ssm.inference import lgssm_filter, make_lgssm_params

    sigma_obs, sigma_level = nile_scales()
    params = make_lgssm_params(
        jnp.array([NILE_INITIAL_MEAN]),
        jnp.eye(1) * NILE_INITIAL_VAR,
        jnp.eye(1),
        jnp.reshape(sigma_level**2, (1, 1)),
        jnp.eye(1),
        jnp.reshape(sigma_obs**2, (1, 1)),
    )
    numpyro.factor("y", lgssm_filter(params, y[:, None]).marginal_loglik)


def nile_latent_centered(y):
    """The levels sampled by NUTS: ``level_{t+1} ~ N(level_t, sigma_level²)`` in ``scan``."""
    sigma_obs, sigma_level = nile_scales()
    level_1 = numpyro.sample("level_1", dist.Normal(NILE_INITIAL_MEAN, NILE_INITIAL_VAR**0.5))

    def step(level, _):
        level = numpyro.sample("level", dist.Normal(level, sigma_level))
        return level, level

    _, levels = scan(step, level_1, None, length=y.shape[0] - 1)
    levels = jnp.concatenate([level_1[None], levels])
    numpyro.sample("y", dist.Normal(levels, sigma_obs), obs=y)


def nile_latent_noncentered(y):
    """Levels from standard-normal innovations: ``level_{t+1} = level_t + sigma_level eps_t``."""
    sigma_obs, sigma_level = nile_scales()
    eps_1 = numpyro.sample("eps_1", dist.Normal(0.0, 1.0))
    level_1 = NILE_INITIAL_MEAN + NILE_INITIAL_VAR**0.5 * eps_1

    def step(level, _):
        eps = numpyro.sample("eps", dist.Normal(0.0, 1.0))
        level = level + sigma_level * eps
        return level, level

    _, levels = scan(step, level_1, None, length=y.shape[0] - 1)
    levels = jnp.concatenate([level_1[None], levels])
    numpyro.sample("y", dist.Normal(levels, sigma_obs), obs=y)


# ------------------------------------------------------------------------------------------------
# Earthquakes: 2-state stationary Poisson HMM.

NUM_STATES = 2


def stationary_distribution(transition_matrix):
    """Solve ``delta (I - A + 1 1ᵀ) = 1`` for the stationary row vector of ``A`` (K, K)."""
    k = transition_matrix.shape[-1]
    system = jnp.eye(k) - transition_matrix.T + jnp.ones((k, k))
    return jnp.linalg.solve(system, jnp.ones(k))


def hmm_parameters():
    """Sticky Dirichlet rows and ordered rates; returns ``(initial, transition_matrix, rates)``."""
    sticky = jnp.ones((NUM_STATES, NUM_STATES)) + 4.0 * jnp.eye(NUM_STATES)
    transition_matrix = numpyro.sample("transition_matrix", dist.Dirichlet(sticky).to_event(1))
    increments = numpyro.sample("increments", dist.Gamma(2.0, 0.1).expand([NUM_STATES]).to_event(1))
    rates = jnp.cumsum(increments)
    return stationary_distribution(transition_matrix), transition_matrix, rates


def hmm_ours(counts):
    """``counts``: shape ``(T,)``; the states are marginalized by ``DiscreteHMM``."""
    initial, transition_matrix, rates = hmm_parameters()
    hmm = DiscreteHMM(initial, transition_matrix, dist.Poisson(rates), num_steps=counts.shape[0])
    numpyro.sample("y", hmm, obs=counts)


def hmm_priors_only(counts):
    """The floor: the same parameters and priors, no likelihood (NumPyro's own cost)."""
    del counts
    hmm_parameters()


def hmm_tfp(counts):
    """The states marginalized by TFP's ``HiddenMarkovModel`` in a factor."""
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    initial, transition_matrix, rates = hmm_parameters()
    hmm = tfd.HiddenMarkovModel(
        initial_distribution=tfd.Categorical(probs=initial),
        transition_distribution=tfd.Categorical(probs=transition_matrix),
        observation_distribution=tfd.Poisson(rate=rates),
        num_steps=counts.shape[0],
    )
    numpyro.factor("y", hmm.log_prob(counts))


def hmm_dynamax(counts):
    """The states marginalized by dynamax's ``hmm_filter`` in a factor."""
    from dynamax.hidden_markov_model.inference import hmm_filter

    initial, transition_matrix, rates = hmm_parameters()
    log_likelihoods = dist.Poisson(rates).log_prob(counts[:, None])  # (T, K)
    numpyro.factor("y", hmm_filter(initial, transition_matrix, log_likelihoods).marginal_loglik)


def hmm_enum_scan(counts):
    """The states as discrete sites in ``scan``, summed out by NumPyro's enumeration (funsor)."""
    initial, transition_matrix, rates = hmm_parameters()

    def step(carry, y_t):
        z_prev, t = carry
        probs = jnp.where(t == 0, initial, transition_matrix[z_prev])
        z = numpyro.sample("z", dist.Categorical(probs), infer={"enumerate": "parallel"})
        numpyro.sample("y", dist.Poisson(rates[z]), obs=y_t)
        return (z, t + 1), None

    scan(step, (0, 0), counts)


# ------------------------------------------------------------------------------------------------
# The table of posteriors.

POSTERIORS = {
    "nile": {
        "data": lambda: jnp.asarray(load_nile().volume),
        "params": ("sigma_obs", "sigma_level"),
        "point": {"sigma_obs": 120.0, "sigma_level": 40.0},
        "variants": {
            "ours": nile_ours,
            "tfp": nile_tfp,
            "dynamax": nile_dynamax,
            "latent_centered": nile_latent_centered,
            "latent_noncentered": nile_latent_noncentered,
            "priors_only": nile_priors_only,
        },
    },
    "earthquakes": {
        "data": lambda: jnp.asarray(load_earthquakes().counts, dtype=jnp.float64),
        "params": ("transition_matrix", "increments"),
        "point": {
            "transition_matrix": jnp.array([[0.9, 0.1], [0.2, 0.8]]),
            "increments": jnp.array([15.0, 10.0]),
        },
        "variants": {
            "ours": hmm_ours,
            "tfp": hmm_tfp,
            "dynamax": hmm_dynamax,
            "enum_scan": hmm_enum_scan,
            "priors_only": hmm_priors_only,
        },
    },
    "poisson_lds": POISSON_LDS,
}
LABELS = {
    "ours": "numpyro_ssm",
    "tfp": "TFP distribution in factor",
    "dynamax": "dynamax filter in factor",
    "latent_centered": "latent levels, centered (scan)",
    "latent_noncentered": "latent levels, non-centered (scan)",
    "enum_scan": "scan + enumeration (funsor)",
    "latent_explicit": "latent log-rates, non-centered (110 dims)",
    "priors_only": "floor: priors only, no likelihood",
}
MARGINALIZED = ("ours", "tfp", "dynamax")


def check_log_densities(name):
    """Log joint densities of the marginalized variants at one point, and whether they agree."""
    spec = POSTERIORS[name]
    data = spec["data"]()
    values = {}
    for variant in (v for v in MARGINALIZED if v in spec["variants"]):
        model = spec["variants"][variant]
        values[variant] = float(log_density(model, (data,), {}, spec["point"])[0])
    reference = values["ours"]
    agree = all(abs(v - reference) <= 1e-6 * max(1.0, abs(reference)) for v in values.values())
    return values, agree


# ------------------------------------------------------------------------------------------------
# Sampling and ESS.


def make_mcmc(
    model,
    chain_method,
    num_chains,
    num_warmup,
    num_samples,
    max_tree_depth,
    init_strategy=init_to_uniform,
):
    """A NumPyro ``MCMC`` with NUTS, without progress bar."""
    kernel = NUTS(model, max_tree_depth=max_tree_depth, init_strategy=init_strategy)
    return MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )


def timed_run(mcmc, key, data):
    """``mcmc.run`` from cold JAX caches.

    Returns:
        ``(wall, compile)``: the wall seconds of the run (samples included) and the seconds of
        it spent tracing, lowering and compiling (:class:`benchmarks._timing.CompileClock`).
    """
    jax.clear_caches()
    with CompileClock() as clock:
        start = time.perf_counter()
        mcmc.run(key, data, extra_fields=("num_steps", "diverging"))
        jax.block_until_ready(mcmc.get_samples())
        wall = time.perf_counter() - start
    return wall, clock.seconds


def min_bulk_ess(samples, names):
    """Minimum over every scalar entry of ``names`` of arviz's bulk ESS.

    Args:
        samples: dict of arrays of shape ``(chains, draws, ...)``.
        names: the sites to include.
    """
    posterior = {n: np.asarray(samples[n]) for n in names}
    ess = az.ess(az.from_dict(posterior=posterior), method="bulk")
    return min(float(np.min(ess[n].values)) for n in names)


def posterior_means(samples, names):
    """A short string of posterior means, e.g. ``sigma_obs 123, sigma_level 45``."""
    parts = []
    for n in names:
        mean = np.asarray(samples[n]).mean(axis=(0, 1)).ravel()
        parts.append(f"{n} " + " ".join(fmt(float(x), 3) for x in mean))
    return "; ".join(parts)


def bench_run(name, variant, chain_method, args):
    """Sample one variant of one posterior; return a result dict."""
    spec = POSTERIORS[name]
    model, data = spec["variants"][variant], spec["data"]()
    settings = (args.chains, args.warmup, args.samples, args.max_tree_depth)
    key = jax.random.key(args.seed)
    mcmc = make_mcmc(model, chain_method, *settings, spec.get("init_strategy", init_to_uniform))
    wall, compile_s = timed_run(mcmc, key, data)
    samples = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    ess = min_bulk_ess(samples, spec["params"])
    sampling = max(wall - compile_s, 1e-9)
    return {
        "wall": wall,
        "compile": compile_s,
        "min_ess": ess,
        "ess_per_s": ess / wall,
        "ess_per_s_no_compile": ess / sampling,
        "steps_per_draw": float(np.mean(extra["num_steps"])),
        "divergences": int(np.sum(extra["diverging"])),
        "means": posterior_means(samples, spec["params"]),
    }


# ------------------------------------------------------------------------------------------------
# Output.

COLUMNS = (
    "posterior",
    "chain method",
    "variant",
    "min bulk ESS",
    "wall s",
    "compile s",
    "ESS/s",
    "ESS/s w/o compile",
    "ours ÷ this (time per ESS)",
    "w/o compile",
    "leapfrog/draw",
    "div.",
    "posterior means",
)


def row_cells(name, chain_method, variant, res, ours):
    """One table row of string cells."""

    def rel(key):
        if not ours or ours.get(key) in (None, 0) or res.get(key) is None:
            return "—"
        return fmt(res[key] / ours[key], 2)

    return [
        name,
        chain_method,
        LABELS[variant],
        fmt(res.get("min_ess"), 4),
        fmt(res.get("wall"), 3),
        fmt(res.get("compile"), 2),
        fmt(res.get("ess_per_s"), 3),
        fmt(res.get("ess_per_s_no_compile"), 3),
        rel("ess_per_s"),
        rel("ess_per_s_no_compile"),
        fmt(res.get("steps_per_draw"), 3),
        str(res.get("divergences", "—")),
        res.get("means", res.get("note", "—")),
    ]


def run_ratios(name, chain_method, results):
    """Ratio records: our milliseconds per effective sample over the peer's."""
    ours = results.get("ours", {})
    records = []
    for variant, res in results.items():
        if variant in ("ours", "priors_only"):  # the floor is context, not a competitor
            continue
        for metric, key in (
            ("ms per ESS", "ess_per_s"),
            ("ms per ESS w/o compile", "ess_per_s_no_compile"),
        ):
            if not ours.get(key) or not res.get(key):
                continue
            records.append(
                ratio_record(
                    "nuts",
                    f"{name} {chain_method}",
                    metric,
                    LABELS["ours"],
                    1e3 / ours[key],
                    LABELS[variant],
                    1e3 / res[key],
                    "ms per effective sample",
                )
            )
    return records


# ------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(POSTERIORS), choices=POSTERIORS)
    variants = sorted({v for spec in POSTERIORS.values() for v in spec["variants"]})
    parser.add_argument(
        "--variants", nargs="+", default=variants, choices=variants, help="default: all"
    )
    parser.add_argument(
        "--chain-methods",
        nargs="+",
        default=["sequential", "vectorized"],
        choices=["sequential", "vectorized"],
    )
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write the results and ratios to this JSON file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 chains x (100 warmup + 100 draws), vectorized only: a smoke run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.chains, args.warmup, args.samples = 2, 100, 100
        args.chain_methods = ["vectorized"]
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    meta = machine_meta(EXTRA_VERSIONS)
    print("\n".join(machine_lines(meta)), flush=True)
    print(
        f"NUTS: {args.chains} chains x ({args.warmup} warmup + {args.samples} draws), "
        f"max_tree_depth {args.max_tree_depth}, float64\n",
        flush=True,
    )
    rows, records, ratios, notes = [], [], [], []
    for name in args.models:
        values, agree = check_log_densities(name)
        line = ", ".join(f"{LABELS[v]} {x:.10g}" for v, x in values.items())
        print(f"{name}: log density at a test point: {line}; agree: {agree}", flush=True)
        if not agree:
            notes.append(f"{name}: the marginalized log densities disagree: {line}")
        for chain_method in args.chain_methods:
            results = {}
            for variant in (v for v in POSTERIORS[name]["variants"] if v in args.variants):
                start = time.perf_counter()
                try:
                    results[variant] = bench_run(name, variant, chain_method, args)
                except Exception as err:  # noqa: BLE001 - a failing variant must not stop us
                    results[variant] = {"note": f"failed: {type(err).__name__}: {err}"[:300]}
                    traceback.print_exc(limit=3, file=sys.stderr)
                elapsed = time.perf_counter() - start
                print(f"# {name} {chain_method} {variant}: {elapsed:.1f} s", file=sys.stderr)
            new_rows = [
                row_cells(name, chain_method, v, res, results.get("ours"))
                for v, res in results.items()
            ]
            print_table(COLUMNS, new_rows)
            print(flush=True)
            rows += new_rows
            records += [
                {"posterior": name, "chain_method": chain_method, "variant": v} | res
                for v, res in results.items()
            ]
            ratios += run_ratios(name, chain_method, results)
    print("\nAll runs:\n")
    print_table(COLUMNS, rows, markdown=args.markdown)
    if notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in notes))
    write_json(
        args.json,
        meta | {"chains": args.chains, "warmup": args.warmup, "samples": args.samples},
        records,
        ratios,
    )


if __name__ == "__main__":
    main()

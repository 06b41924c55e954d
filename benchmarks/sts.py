"""Structural time series on the monthly Mauna Loa CO₂ series: ours against tfp.sts and statsmodels.

The data: ``numpyro_ssm.datasets.load_co2()``, T = 526 months, 5 missing; float64 throughout.
Two models, because no peer fits both:

- **The example's model** (``examples/co2_structural.py``): local linear trend + *dummy*
  seasonal of period 12 + noise, with the exact diffuse start. Ours
  (``StructuralTimeSeries.distribution(T).log_prob``) against statsmodels'
  ``UnobservedComponents(level="lltrend", seasonal=12, use_exact_diffuse=True).loglike`` (the
  Cython filter; value only). tfp.sts has neither this seasonal form (its ``Seasonal`` keeps
  one effect per season and constrains their mean, a different noise model) nor a diffuse start.
- **TFP's model**: local linear trend + *trigonometric* seasonal of period 12 (all six
  harmonics) + noise, with the proper initial prior tfp.sts builds by default from the series
  (level ``N(y_1, |y_1| + sd(y))``, slope ``N(0, sd(y))``, each seasonal state
  ``N(0, |y_1| + sd(y))``), passed explicitly to both: ours (``local_linear_trend`` +
  ``seasonal(12, form="trigonometric")`` + ``irregular``) against ``tfp.sts.Sum([
  LocalLinearTrend, SmoothSeasonal(12, [1..6])], constant_offset=0)``, whose log-likelihoods
  agree to rounding (``tests/sts/test_tfp_oracle.py`` checks the pair on a short series).

Printed: each one's log-likelihood, the median time of one compiled evaluation of the value and
of value-and-gradient (JAX) or of the value (statsmodels), and the ratio to ours on the same
model, with the load average. Run ``python -m benchmarks.sts``; ``--alternate N`` adds the
example's value ratio to statsmodels as the median of ``N`` alternated single calls.

``--nuts``: NumPyro NUTS on TFP's model with the example's HalfNormal priors on the four scales,
once with our distribution as the observed site and once with ``tfp.sts``'s ``log_prob`` in a
``numpyro.factor``: the same posterior, so the ratio of ESS per second is the ratio of cost per
effective draw. ``--diffuse`` adds the example's model (ours only; a different posterior, for
reference). The runs alternate, ``--repeats`` times each, one chain of ``--warmup`` +
``--samples`` steps with its own seed per repeat; printed per run: wall time without
compilation (NumPyro traces and compiles its sampling loop again at every ``warmup`` and
``run`` call; ``benchmarks._timing.CompileClock`` measures it from JAX's compile events,
printed in parentheses, and it is subtracted), the smallest bulk ESS over the four scales,
ESS per second, the mean number of leapfrog steps per draw in warmup and in sampling, and the
wall time per leapfrog step (one value and gradient of the log density).
"""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._timing import CompileClock  # noqa: E402
from numpyro_ssm import sts  # noqa: E402
from numpyro_ssm.datasets import load_co2  # noqa: E402

SCALES = {"level": 0.19, "slope": 0.01, "seasonal": 0.012, "noise": 0.15}
PERIOD = 12
HARMONICS = PERIOD // 2


def _median_time(fn, *args, repeats=20):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def tfp_default_start(y):
    """``(y_1, level sd, slope sd)`` of tfp.sts's default initial prior for this series."""
    observed = y[~np.isnan(y)]
    first, spread = float(observed[0]), float(np.std(observed))
    return first, abs(first) + spread, spread


def example_structure(scales):
    """The example's model (dummy seasonal, exact diffuse start) at ``scales``."""
    level, slope, season, noise = scales
    return (
        sts.local_linear_trend(level, slope) + sts.seasonal(PERIOD, season) + sts.irregular(noise)
    )


def tfp_structure(y):
    """``scales -> `` TFP's model (module docstring) built from our components, for ``y``."""
    first, level_sd, slope_sd = tfp_default_start(np.asarray(y[:, 0]))

    def structure(scales):
        level, slope, season, noise = scales
        return (
            sts.local_linear_trend(
                level,
                slope,
                initial_mean=jnp.array([first, 0.0]),
                initial_scale=jnp.array([level_sd, slope_sd]),
            )
            + sts.seasonal(
                PERIOD, season, form="trigonometric", initial_mean=0.0, initial_scale=level_sd
            )
            + sts.irregular(noise)
        )

    return structure


def ours(structure, y):
    """``scales -> log p(y)`` of our distribution for ``structure(scales)``."""
    return lambda scales: structure(scales).distribution(y.shape[0]).log_prob(y)


def tfp_sts(y):
    """TFP's model with tfp.sts components: ``scales -> log p(y)`` (module docstring)."""
    import tensorflow_probability.substrates.jax as tfp

    tfd = tfp.distributions
    series = np.asarray(y[:, 0])
    first, level_sd, slope_sd = (np.float64(v) for v in tfp_default_start(series))
    mask = jnp.asarray(np.isnan(series))
    observed = jnp.asarray(np.where(np.isnan(series), np.nanmean(series), series))
    trend = tfp.sts.LocalLinearTrend(
        observed_time_series=observed,
        initial_level_prior=tfd.Normal(first, level_sd),
        initial_slope_prior=tfd.Normal(np.float64(0), slope_sd),
    )
    season = tfp.sts.SmoothSeasonal(
        period=PERIOD,
        frequency_multipliers=list(range(1, HARMONICS + 1)),
        observed_time_series=observed,
        initial_state_prior=tfd.MultivariateNormalDiag(
            jnp.zeros(2 * HARMONICS), jnp.full(2 * HARMONICS, level_sd)
        ),
    )
    model = tfp.sts.Sum([trend, season], observed_time_series=observed, constant_offset=0.0)
    names = [p.name for p in model.parameters]
    order = {
        "observation_noise_scale": 3,
        "LocalLinearTrend_level_scale": 0,
        "LocalLinearTrend_slope_scale": 1,
        "SmoothSeasonal_drift_scale": 2,
    }

    def log_lik(scales):
        ssm = model.make_state_space_model(
            num_timesteps=series.shape[0], param_vals=[scales[order[n]] for n in names]
        )
        return ssm.log_prob(observed[:, None], mask=mask)

    return log_lik


def _priors():
    import numpyro
    import numpyro.distributions as dist

    return jnp.stack(
        [
            numpyro.sample("level_scale", dist.HalfNormal(0.5)),
            numpyro.sample("slope_scale", dist.HalfNormal(0.05)),
            numpyro.sample("seasonal_scale", dist.HalfNormal(0.1)),
            numpyro.sample("noise_scale", dist.HalfNormal(1.0)),
        ]
    )


def nuts_models(y, diffuse=False):
    """``{name: model}``: the same priors; TFP's model by both libraries (and the example's)."""
    import numpyro

    T = y.shape[0]
    tfp_log_lik = tfp_sts(y)
    structure = tfp_structure(y)

    def model_ours():
        numpyro.sample("y", structure(_priors()).distribution(T), obs=y)

    def model_tfp():
        numpyro.factor("y", tfp_log_lik(_priors()))

    def model_diffuse():
        numpyro.sample("y", example_structure(_priors()).distribution(T), obs=y)

    models = {"ours": model_ours, "tfp_sts": model_tfp}
    if diffuse:
        models["ours_diffuse"] = model_diffuse
    return models


def nuts(args):
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    y = jnp.asarray(load_co2().ppm[:, None])
    models = nuts_models(y, diffuse=args.diffuse)
    runs = {name: [] for name in models}
    mcmcs = {
        name: MCMC(NUTS(m), num_warmup=args.warmup, num_samples=args.samples, progress_bar=False)
        for name, m in models.items()
    }

    def one_run(mcmc, key):
        """Warmup then sampling, timed; leapfrog steps of each phase from ``num_steps``."""
        warmup_key, sample_key = jax.random.split(key)
        # NumPyro traces and compiles its sampling loop again at every warmup() and run() call
        # (its collection transform is a new function each time): measured and taken out
        with CompileClock() as clock:
            start = time.perf_counter()
            mcmc.warmup(warmup_key, extra_fields=("num_steps",), collect_warmup=True)
            warmup_steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
            mcmc.run(sample_key, extra_fields=("num_steps", "diverging"))
            draws = mcmc.get_samples(group_by_chain=True)
            jax.block_until_ready(draws)
            wall = time.perf_counter() - start
        fields = mcmc.get_extra_fields()
        steps = np.asarray(fields["num_steps"])
        return wall - clock.seconds, clock.seconds, draws, warmup_steps, steps, fields["diverging"]

    for mcmc in mcmcs.values():  # compile (warmup and sampling programs) outside the timing
        one_run(mcmc, jax.random.key(100))
    print(f"CO2 monthly NUTS, T = {len(y)}, {args.warmup} + {args.samples} steps, 1 chain")
    print(
        "| run | likelihood | seconds (compiling) | min bulk ESS | ESS / s | divergences | "
        "leapfrog steps per draw (warmup / sampling) | ms per leapfrog step | load |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in range(args.repeats):
        for name, mcmc in mcmcs.items():
            seconds, compile_s, draws, warmup_steps, steps, diverging = one_run(
                mcmc, jax.random.key(r)
            )
            ess = min(float(effective_sample_size(np.asarray(v))) for v in draws.values())
            per_step = 1e3 * seconds / (warmup_steps.sum() + steps.sum())
            runs[name].append(ess / seconds)
            print(
                f"| {r} | {name} | {seconds:.1f} ({compile_s:.1f}) | {ess:.0f} | "
                f"{ess / seconds:.2f} | "
                f"{int(np.sum(diverging))} | {warmup_steps.mean():.1f} / {steps.mean():.1f} | "
                f"{per_step:.2f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    ours_rate, tfp_rate = np.median(runs["ours"]), np.median(runs["tfp_sts"])
    print(
        f"median ESS/s: ours {ours_rate:.2f}, tfp.sts {tfp_rate:.2f}, "
        f"ratio {ours_rate / tfp_rate:.2f} (the same posterior)"
    )


def _statsmodels_model(y, scales):
    """statsmodels' exact diffuse model of the example's: ``(log-lik, model, parameters)``."""
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    mod = UnobservedComponents(
        np.asarray(y[:, 0]), level="lltrend", seasonal=PERIOD, use_exact_diffuse=True
    )
    level, slope, season, noise = (float(s) for s in scales)
    values = {
        "sigma2.irregular": noise**2,
        "sigma2.level": level**2,
        "sigma2.trend": slope**2,
        "sigma2.seasonal": season**2,
    }
    params = np.array([values[n] for n in mod.param_names])
    return float(mod.loglike(params)), mod, params


def _statsmodels(y, scales):
    """statsmodels' exact diffuse value of the example's model: ``(log-lik, seconds)``."""
    ll, mod, params = _statsmodels_model(y, scales)
    return ll, _median_time(mod.loglike, params)


def alternated_value_ratios(ours_value, mod, sm_params, scales, pairs):
    """``pairs`` ratios of one call of our compiled value over the next statsmodels ``loglike``.

    On a machine whose speed drifts, neighbouring calls compare more steadily than two medians
    taken apart.
    """
    ratios = []
    for _ in range(pairs):
        start = time.perf_counter()
        jax.block_until_ready(ours_value(scales))
        middle = time.perf_counter()
        mod.loglike(sm_params)
        ratios.append((middle - start) / (time.perf_counter() - middle))
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuts", action="store_true", help="NUTS ESS per second (see above)")
    parser.add_argument("--diffuse", action="store_true", help="--nuts: add the example's model")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--alternate",
        type=int,
        default=0,
        metavar="N",
        help="also the example's value ratio to statsmodels as the median of N alternated calls",
    )
    args = parser.parse_args()
    if args.nuts:
        return nuts(args)
    y = jnp.asarray(load_co2().ppm[:, None])
    scales = jnp.asarray(
        [SCALES["level"], SCALES["slope"], SCALES["seasonal"], SCALES["noise"]], jnp.float64
    )
    print(f"CO2 monthly, T = {len(y)}, load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'model':9s} {'library':12s} {'log-lik':>14s} {'value (ms)':>11s} {'ratio':>6s} "
        f"{'v+grad (ms)':>12s} {'ratio':>6s}"
    )
    for label, pair in (
        ("example", (("ours", ours(example_structure, y)), ("statsmodels", None))),
        ("tfp's", (("ours", ours(tfp_structure(y), y)), ("tfp.sts", tfp_sts(y)))),
    ):
        base, first_ll = None, None
        for name, fn in pair:
            if fn is None:
                ll, t_value = _statsmodels(y, scales)
                t_grad = float("nan")
            else:
                ll = float(jax.jit(fn)(scales))
                t_value = _median_time(jax.jit(fn), scales)
                t_grad = _median_time(jax.jit(jax.value_and_grad(fn)), scales)
            base = base or (t_value, t_grad)
            first_ll = ll if first_ll is None else first_ll
            same = "" if abs(ll - first_ll) <= 1e-8 * abs(first_ll) else "  LOG-LIK DIFFERS"
            print(
                f"{label:9s} {name:12s} {ll:14.6f} {1e3 * t_value:11.3f} "
                f"{t_value / base[0]:6.2f} {1e3 * t_grad:12.3f} {t_grad / base[1]:6.2f}{same}"
            )
    if args.alternate:
        _, mod, sm_params = _statsmodels_model(y, scales)
        ratios = alternated_value_ratios(
            jax.jit(ours(example_structure, y)), mod, sm_params, scales, args.alternate
        )
        print(
            f"example value, ours / statsmodels, median of {args.alternate} alternated calls: "
            f"{np.median(ratios):.2f} (quartiles {np.quantile(ratios, 0.25):.2f}, "
            f"{np.quantile(ratios, 0.75):.2f})"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

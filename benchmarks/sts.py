"""Structural time series: the CO₂ model's log-likelihood, ours against tfp.sts and statsmodels.

The model of ``examples/co2_structural.py`` (local linear trend + dummy seasonal of period 12 +
noise) on the monthly Mauna Loa series (``numpyro_ssm.datasets.load_co2()``, T = 526, 5
months missing), float64, at fixed scales:

- ``ours``: ``StructuralTimeSeries.distribution(T).log_prob(y)``, exact diffuse start, serial;
- ``tfp_sts``: ``tfp.sts.Sum([LocalLinearTrend, Seasonal(12)]).make_state_space_model(T,
  params).log_prob(y)`` (TFP's LinearGaussianStateSpaceModel; its prior on the initial state is
  proper, N(y_1, Var(y)) as ``tfp.sts`` builds it, so its value differs from the diffuse one);
- ``statsmodels``: ``UnobservedComponents(level="lltrend", seasonal=12,
  use_exact_diffuse=True).loglike(params)`` (the Cython filter; value only).

Printed: each one's log-likelihood, the median time of one compiled evaluation of the value and
of value-and-gradient (JAX) or of the value (statsmodels), and the ratios to ours, with the load
average (these machines are shared: the ratios, measured side by side, are what carries over).
Run ``python -m benchmarks.sts``.

``--nuts``: NumPyro NUTS on the example's model (HalfNormal priors on the four scales), once
with our distribution as the observed site and once with the same priors and ``tfp.sts``'s
``log_prob`` in a ``numpyro.factor`` (its proper initial prior, the only start ``tfp.sts``
has). The runs alternate, ``--repeats`` times each, one chain of ``--warmup`` + ``--samples``
steps with its own seed per repeat; printed per run: wall time (compilation excluded: a first
run of each compiles), the smallest bulk ESS over the four scales, ESS per second, the mean
number of leapfrog steps per draw in warmup and in sampling, and the wall time per leapfrog step
(one value and gradient of the log density), which splits ESS per second into the sampler's
path length and the cost of one gradient.
"""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from numpyro_ssm import sts  # noqa: E402
from numpyro_ssm.datasets import load_co2  # noqa: E402

SCALES = {"level": 0.19, "slope": 0.01, "seasonal": 0.012, "noise": 0.15}


def _median_time(fn, *args, repeats=20):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def ours(y):
    def log_lik(scales):
        level, slope, season, noise = scales
        model = (
            sts.local_linear_trend(level, slope) + sts.seasonal(12, season) + sts.irregular(noise)
        )
        return model.distribution(y.shape[0]).log_prob(y)

    return log_lik


def tfp_sts(y):
    from tensorflow_probability.substrates.jax import sts as tfp_sts_module

    observed = jnp.asarray(np.where(np.isnan(y[:, 0]), np.nanmean(y), y[:, 0]))
    mask = jnp.asarray(np.isnan(y[:, 0]))
    trend = tfp_sts_module.LocalLinearTrend(observed_time_series=observed)
    season = tfp_sts_module.Seasonal(num_seasons=12, observed_time_series=observed)
    model = tfp_sts_module.Sum([trend, season], observed_time_series=observed, constant_offset=0.0)

    def log_lik(scales):
        level, slope, season_scale, noise = scales
        ssm = model.make_state_space_model(
            num_timesteps=y.shape[0],
            param_vals=[noise, level, slope, season_scale],
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


def nuts_models(y):
    """``{"ours": model, "tfp_sts": model}``: the same priors, the two likelihoods."""
    import numpyro

    T = y.shape[0]
    tfp_log_lik = tfp_sts(y)

    def model_ours():
        level, slope, season, noise = _priors()
        structure = (
            sts.local_linear_trend(level, slope) + sts.seasonal(12, season) + sts.irregular(noise)
        )
        numpyro.sample("y", structure.distribution(T), obs=y)

    def model_tfp():
        numpyro.factor("y", tfp_log_lik(_priors()))

    return {"ours": model_ours, "tfp_sts": model_tfp}


def nuts(args):
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    y = jnp.asarray(load_co2().ppm[:, None])
    models = nuts_models(y)
    runs = {name: [] for name in models}
    mcmcs = {
        name: MCMC(NUTS(m), num_warmup=args.warmup, num_samples=args.samples, progress_bar=False)
        for name, m in models.items()
    }

    def one_run(mcmc, key):
        """Warmup then sampling, timed; leapfrog steps of each phase from ``num_steps``."""
        warmup_key, sample_key = jax.random.split(key)
        start = time.perf_counter()
        mcmc.warmup(warmup_key, extra_fields=("num_steps",), collect_warmup=True)
        warmup_steps = np.asarray(mcmc.get_extra_fields()["num_steps"])
        mcmc.run(sample_key, extra_fields=("num_steps", "diverging"))
        draws = mcmc.get_samples(group_by_chain=True)
        jax.block_until_ready(draws)
        seconds = time.perf_counter() - start
        fields = mcmc.get_extra_fields()
        return seconds, draws, warmup_steps, np.asarray(fields["num_steps"]), fields["diverging"]

    for mcmc in mcmcs.values():  # compile (warmup and sampling programs) outside the timing
        one_run(mcmc, jax.random.key(100))
    print(f"CO2 monthly NUTS, T = {len(y)}, {args.warmup} + {args.samples} steps, 1 chain")
    print(
        "| run | likelihood | seconds | min bulk ESS | ESS / s | divergences | leapfrog steps "
        "per draw (warmup / sampling) | ms per leapfrog step | load |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in range(args.repeats):
        for name, mcmc in mcmcs.items():
            seconds, draws, warmup_steps, steps, diverging = one_run(mcmc, jax.random.key(r))
            ess = min(float(effective_sample_size(np.asarray(v))) for v in draws.values())
            per_step = 1e3 * seconds / (warmup_steps.sum() + steps.sum())
            runs[name].append(ess / seconds)
            print(
                f"| {r} | {name} | {seconds:.1f} | {ess:.0f} | {ess / seconds:.2f} | "
                f"{int(np.sum(diverging))} | {warmup_steps.mean():.1f} / {steps.mean():.1f} | "
                f"{per_step:.2f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
    ours_rate, tfp_rate = np.median(runs["ours"]), np.median(runs["tfp_sts"])
    print(
        f"median ESS/s: ours {ours_rate:.1f}, tfp.sts {tfp_rate:.1f}, "
        f"ratio {ours_rate / tfp_rate:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuts", action="store_true", help="NUTS ESS per second (see above)")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.nuts:
        return nuts(args)
    y = load_co2().ppm[:, None]
    scales = jnp.asarray(
        [SCALES["level"], SCALES["slope"], SCALES["seasonal"], SCALES["noise"]], jnp.float64
    )
    print(f"CO2 monthly, T = {len(y)}, load average {os.getloadavg()[0]:.1f}")
    rows = {}
    for name, make in (("ours", ours), ("tfp_sts", tfp_sts)):
        fn = make(jnp.asarray(y))
        value = jax.jit(fn)
        grad = jax.jit(jax.value_and_grad(fn))
        rows[name] = (float(value(scales)), _median_time(value, scales), _median_time(grad, scales))
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    mod = UnobservedComponents(y[:, 0], level="lltrend", seasonal=12, use_exact_diffuse=True)
    values = {
        "sigma2.irregular": SCALES["noise"] ** 2,
        "sigma2.level": SCALES["level"] ** 2,
        "sigma2.trend": SCALES["slope"] ** 2,
        "sigma2.seasonal": SCALES["seasonal"] ** 2,
    }
    params = np.array([values[n] for n in mod.param_names])
    rows["statsmodels"] = (
        float(mod.loglike(params)),
        _median_time(mod.loglike, params),
        float("nan"),
    )
    base_value, base_grad = rows["ours"][1], rows["ours"][2]
    print(f"{'':12s} {'log-lik':>14s} {'value (ms)':>11s} {'ratio':>6s} {'v+grad (ms)':>12s}")
    for name, (ll, t_value, t_grad) in rows.items():
        print(
            f"{name:12s} {ll:14.6f} {1e3 * t_value:11.3f} {t_value / base_value:6.2f} "
            f"{1e3 * t_grad:12.3f} {t_grad / base_grad:6.2f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

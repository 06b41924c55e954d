"""Mauna Loa CO₂: a structural time series (trend + seasonal), decomposed and forecast.

Monthly mean CO₂ at Mauna Loa, March 1958 - December 2001 (Keeling & Whorf 2004; the weekly
series of ``statsmodels.datasets.co2``, averaged per month; 5 months are missing). The model is
the sum of three components from ``numpyro_ssm.sts``:

    trend     local linear trend, level and slope scales ~ HalfNormal(0.5), HalfNormal(0.05)
    seasonal  dummy seasonal of period 12, drift scale ~ HalfNormal(0.1)
    irregular observation noise scale ~ HalfNormal(1)

with an exact diffuse start for the 13 trend and seasonal states (no hand-picked ``1e6``
variance). ``StructuralTimeSeries.distribution`` is a ``LinearGaussianSSM``: the states are
marginalized by the Kalman filter and NUTS samples the four scales. The script prints the
posterior summary, then

- ``numpyro_ssm.sts.decompose``: each component's smoothed contribution per posterior draw,
  pooled by the law of total variance (an xarray Dataset with a ``component`` dim);
- ``numpyro_ssm.sts.forecast_components``: each component and the series 60 months ahead;

and draws data, fit, components and forecast in one figure (``sts.plot_components``).

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (the last 15 years, 1 chain, 30 warmup, 30 samples).
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``co2_structural.png`` (default: current dir).

Run it with ``python examples/co2_structural.py``.
"""

import os
import time
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 1 if FAST else 4
NUM_WARMUP = 30 if FAST else 500
NUM_SAMPLES = 30 if FAST else 500
HORIZON = 60

import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpyro  # noqa: E402

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import sts  # noqa: E402
from numpyro_ssm.datasets import load_co2  # noqa: E402


def model(y):
    """Trend + seasonal + noise for the monthly series ``y``, shape ``(T, 1)`` (NaN missing)."""
    level = numpyro.sample("level_scale", dist.HalfNormal(0.5))
    slope = numpyro.sample("slope_scale", dist.HalfNormal(0.05))
    season = numpyro.sample("seasonal_scale", dist.HalfNormal(0.1))
    noise = numpyro.sample("noise_scale", dist.HalfNormal(1.0))
    structure = (
        sts.local_linear_trend(level, slope) + sts.seasonal(12, season) + sts.irregular(noise)
    )
    numpyro.sample("y", structure.distribution(y.shape[0]), obs=y)


def main():
    numpyro.set_host_device_count(NUM_CHAINS)
    data = load_co2()
    keep = slice(-180, None) if FAST else slice(None)
    t = (data.years + (data.months - 1) / 12.0)[keep]
    y = data.ppm[keep][:, None]
    print(f"{len(y)} months, {int(np.isnan(y).sum())} missing")

    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), y)
    print(f"NUTS: {time.perf_counter() - start:.1f} s")
    mcmc.print_summary()
    samples = mcmc.get_samples(group_by_chain=True)

    parts = sts.decompose(model, samples, y, batch_ndims=2, time=t)
    future_t = t[-1] + np.arange(1, HORIZON + 1) / 12.0
    ahead = sts.forecast_components(
        model, samples, y, num_steps=HORIZON, batch_ndims=2, time=future_t
    )
    slope = np.diff(np.asarray(parts["mean"].sel(component="trend")))
    print(f"trend growth over the last year: {12 * slope[-12:].mean():.2f} ppm/year")
    amplitude = np.ptp(np.asarray(parts["mean"].sel(component="seasonal"))[-12:])
    print(f"seasonal peak-to-trough in the last year: {amplitude:.2f} ppm")
    end = ahead.sel(component="observed").isel(time=-1)
    print(
        f"forecast for {future_t[-1]:.1f}: {float(end['mean']):.1f} ppm "
        f"(90% band {float(end['lower']):.1f} - {float(end['upper']):.1f})"
    )

    fig = sts.plot_components(
        y,
        parts,
        ahead,
        components=["trend", "seasonal"],
        title="Mauna Loa CO₂: local linear trend + seasonal(12), exact diffuse start",
    )
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    fig.savefig(outdir / "co2_structural.png", dpi=110)
    print(f"wrote {outdir / 'co2_structural.png'}")


if __name__ == "__main__":
    main()

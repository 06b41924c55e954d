"""UK drivers killed or seriously injured: the 1983 seat-belt law as an intervention.

Monthly car drivers killed or seriously injured in Great Britain, January 1969 - December 1984
(``numpyro_ssm.datasets.load_uk_driver_deaths``; Harvey & Durbin 1986). Wearing front seat belts
became compulsory on 31 January 1983. On the log scale the model is the sum of

    level      local level, scale ~ HalfNormal(0.1)
    seasonal   dummy seasonal of period 12, drift scale ~ HalfNormal(0.05)
    law        a regression on the 0/1 law indicator (1 from February 1983), effect ~ Normal(0, 1)
    irregular  observation noise, scale ~ HalfNormal(0.2)

with an exact diffuse start for the level and seasonal states. NUTS samples the three scales
and the law's effect; the states are marginalized by the Kalman filter. The script prints the
posterior of the effect (and as a percentage change of the monthly count) and draws data, fit
and components with ``numpyro_ssm.sts.plot_components``. Harvey & Durbin, with the petrol price
as a further regressor, report an effect of about -0.24 on the log scale (a fall near 21%).

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (1 chain, 50 warmup, 50 samples).
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``uk_seatbelt_intervention.png``.

Run it with ``python examples/uk_seatbelt_intervention.py``.
"""

import os
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_CHAINS = 1 if FAST else 4
NUM_WARMUP = 50 if FAST else 500
NUM_SAMPLES = 50 if FAST else 500

import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpyro  # noqa: E402

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from numpyro_ssm import sts  # noqa: E402
from numpyro_ssm.datasets import load_uk_driver_deaths  # noqa: E402


def model(y, law):
    """Level + seasonal + law effect + noise for ``y`` (T, 1) with the indicator ``law`` (T,)."""
    level = numpyro.sample("level_scale", dist.HalfNormal(0.1))
    season = numpyro.sample("seasonal_scale", dist.HalfNormal(0.05))
    effect = numpyro.sample("law_effect", dist.Normal(0.0, 1.0))
    noise = numpyro.sample("noise_scale", dist.HalfNormal(0.2))
    structure = (
        sts.local_level(level)
        + sts.seasonal(12, season)
        + sts.regression(law[:, None], effect[None], name="law")
        + sts.irregular(noise)
    )
    numpyro.sample("y", structure.distribution(y.shape[0]), obs=y)


def main():
    numpyro.set_host_device_count(NUM_CHAINS)
    data = load_uk_driver_deaths()
    t = data.years + (data.months - 1) / 12.0
    y = np.log(data.drivers)[:, None]
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1), y, data.law)
    mcmc.print_summary()
    samples = mcmc.get_samples(group_by_chain=True)
    effect = np.asarray(samples["law_effect"]).ravel()
    low, high = np.quantile(effect, [0.05, 0.95])
    print(f"law effect (log scale): mean {effect.mean():.3f}, 90% interval {low:.3f} to {high:.3f}")
    change = 100 * (np.exp(effect) - 1)
    print(
        f"as a change of the monthly count: {change.mean():.1f}% (P(effect < 0) = "
        f"{(effect < 0).mean():.2f})"
    )

    parts = sts.decompose(model, samples, y, data.law, batch_ndims=2, time=t)
    fig = sts.plot_components(
        y,
        parts,
        components=["level", "seasonal", "law"],
        title="log drivers killed or seriously injured; the seat-belt law from Feb 1983",
    )
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    fig.savefig(outdir / "uk_seatbelt_intervention.png", dpi=110)
    print(f"wrote {outdir / 'uk_seatbelt_intervention.png'}")


if __name__ == "__main__":
    main()

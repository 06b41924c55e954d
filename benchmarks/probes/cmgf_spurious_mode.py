"""Where the CMGF likelihood of the earthquake Poisson LDS goes wrong: against a grid filter.

The model of ``examples/earthquakes_poisson_lds.py`` (``benchmarks/_nuts_poisson_lds.py``): an
AR(1) log-rate ``z`` with mean ``mu``, persistence ``phi`` and innovation scale ``sigma``, and
``y_t ~ Poisson(exp(z_t))`` on the 107 annual counts. For a few parameter points it prints
``log p(y | mu, phi, sigma)`` two ways:

- ``GeneralizedGaussianSSM(..., method="ghkf").log_prob`` (conditional-moments Gaussian
  filtering, Gauss-Hermite order 3), the likelihood NUTS sees;
- a point-mass (grid) filter on ``--points`` equally spaced log-rates spanning ten stationary
  standard deviations each side of ``mu``, exact up to discretization (float64, NumPy/SciPy).

At the posterior mode (``sigma`` about 0.15) the two agree to a few hundredths of a nat; where
the stationary spread of the log-rate is large (``sigma`` about 2.7) CMGF overstates the
likelihood by over a hundred nats, and its surface there has a local mode of its own, which
NUTS chains started by NumPyro's default ``init_to_uniform`` reach (docs/nonlinear.md). The
last point, ``--point MU PHI SIGMA``, adds one of your own.

Typical use::

    python -m benchmarks.probes.cmgf_spurious_mode     # 2 minutes, most of it the grid
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from scipy.stats import norm, poisson  # noqa: E402

from benchmarks._nuts_poisson_lds import POSTERIOR, ours, priors_only  # noqa: E402

POINTS = (
    {"mu": 2.87, "phi": 0.886, "sigma": 0.147},  # the exact posterior's means
    {"mu": 2.9, "phi": 0.9, "sigma": 0.5},
    {"mu": 1.5, "phi": 0.5, "sigma": 1.0},
    {"mu": 0.338, "phi": 0.525, "sigma": 2.68},  # where default-started CMGF chains settled
)


def grid_log_likelihood(counts, mu, phi, sigma, num_points):
    """``log p(counts)`` by a point-mass filter on ``num_points`` log-rates."""
    spread = sigma / np.sqrt(1.0 - phi**2)
    z = np.linspace(mu - 10.0 * spread - 1.0, mu + 10.0 * spread + 1.0, num_points)
    log_dz = np.log(z[1] - z[0])
    kernel = norm.logpdf(z[None, :], mu + phi * (z[:, None] - mu), sigma) + log_dz
    belief = norm.logpdf(z, mu, spread) + log_dz
    total = 0.0
    for y_t in counts:
        belief = belief + poisson.logpmf(y_t, np.exp(z))
        step = logsumexp(belief)
        total += step
        belief = logsumexp(belief[:, None] - step + kernel, axis=0)
    return total


def cmgf_log_likelihood(counts, point):
    """The ``GeneralizedGaussianSSM`` site's log density alone (the priors' taken off)."""
    joint = log_density(ours, (counts,), {}, point)[0]
    return float(joint - log_density(priors_only, (counts,), {}, point)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=3001, help="grid points (default 3001)")
    parser.add_argument("--point", nargs=3, type=float, metavar=("MU", "PHI", "SIGMA"))
    args = parser.parse_args()
    counts = POSTERIOR["data"]()
    points = list(POINTS)
    if args.point is not None:
        points.append(dict(zip(("mu", "phi", "sigma"), args.point, strict=True)))
    print(f"log p(y), earthquake counts (T = {counts.shape[0]}), grid of {args.points} points")
    print("| mu | phi | sigma | CMGF (ghkf) | grid | CMGF - grid |")
    print("| --- | --- | --- | --- | --- | --- |")
    for point in points:
        cmgf = cmgf_log_likelihood(counts, point)
        grid = grid_log_likelihood(np.asarray(counts), **point, num_points=args.points)
        cells = [f"{point[k]:g}" for k in ("mu", "phi", "sigma")]
        cells += [f"{cmgf:.3f}", f"{grid:.3f}", f"{cmgf - grid:+.3f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Pendulum tracking (Särkkä 2013): Gaussian filters and smoothers side by side, then NUTS.

The pendulum of Särkkä, *Bayesian Filtering and Smoothing* (Cambridge University Press, 2013),
Examples 3.7 and 5.1, simulated with the settings of the book's demonstrations: the angle
``a`` and angular velocity ``w`` of a pendulum, Euler-discretized with step ``dt = 0.01`` s,
gravity ``g = 9.81``, white-noise acceleration of spectral density ``q_c = 0.01``, and the
horizontal position ``sin(a)`` measured with noise variance ``R = 0.1``:

    z_{t+1} = (a + w dt, w - g sin(a) dt) + q_t,   q_t ~ N(0, q_c [[dt^3/3, dt^2/2], [dt^2/2, dt]])
    y_t     = sin(a_t) + r_t,                       r_t ~ N(0, R)
    z_1     ~ N((1.6, 0), 0.1 I)  (the filters' prior; the simulation starts at (1.5, 0))

The swing reaches 1.5 rad, where ``sin`` bends hard, so the linearizations differ.

1. Every rule of ``NonlinearGaussianSSM`` at the true parameters: the extended, unscented and
   Gauss-Hermite filters and smoothers (EKF/EKS, UKF/UKS, GHKF/GHKS), and the iterated
   smoothers (iterated extended, IEKS, whose fixed point is the MAP path; iterated posterior
   linearization with the unscented rule, IPLS). Printed: the root mean square error of the
   angle against the simulated truth, and each filter's approximate log-likelihood.
2. NUTS on the two noise parameters, ``q_c`` and ``R``, with the path integrated out by the
   unscented filter (``log_prob`` is that filter's approximate likelihood).

Environment variables:
    NUMPYRO_SSM_FAST=1        a quick run (150 steps, 1 chain, 50 warmup, 50 samples), used by
                              the tests.
    NUMPYRO_SSM_OUTDIR=DIR    where to write ``pendulum.png`` and ``pendulum_posterior.png``
                              (default: .).

Run it with ``python examples/pendulum.py``.
"""

import os
import time
from pathlib import Path

FAST = os.environ.get("NUMPYRO_SSM_FAST", "0") not in ("", "0")
NUM_STEPS = 150 if FAST else 500
NUM_CHAINS = 1 if FAST else 2
NUM_WARMUP = 50 if FAST else 500
NUM_SAMPLES = 50 if FAST else 500

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402
import numpyro  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_median  # noqa: E402

from numpyro_ssm import NonlinearGaussianSSM  # noqa: E402

DT, G, Q_C, R = 0.01, 9.81, 0.01, 0.1
PRIOR_MEAN, PRIOR_COV = jnp.array([1.6, 0.0]), 0.1 * jnp.eye(2)

# name: (method, smoother_iterations); 0 is the one-pass filter and smoother
RULES = {
    "EKF / EKS": ("ekf", 0),
    "UKF / UKS": ("ukf", 0),
    "GHKF / GHKS": ("ghkf", 0),
    "IEKS (10 passes)": ("ekf", 10),
    "IPLS, unscented (10 passes)": ("ukf", 10),
}


def swing(z, u, p):
    """One Euler step of the pendulum: ``z = (angle, angular velocity)``."""
    return jnp.stack([z[0] + z[1] * DT, z[1] - G * jnp.sin(z[0]) * DT])


def horizontal(z, u, p):
    """The measured horizontal position, shape ``(1,)``."""
    return jnp.sin(z[:1])


def noise_cov(q_c):
    """The discretized white-noise acceleration, ``q_c [[dt³/3, dt²/2], [dt²/2, dt]]``."""
    return q_c * jnp.array([[DT**3 / 3, DT**2 / 2], [DT**2 / 2, DT]])


def pendulum(
    q_c, r, method="ukf", smoother_iterations=0, initial_mean=PRIOR_MEAN, initial_cov=PRIOR_COV
):
    """The model as a ``NonlinearGaussianSSM`` over ``NUM_STEPS`` steps (the filters' prior)."""
    return NonlinearGaussianSSM(
        initial_mean,
        swing,
        horizontal,
        initial_cov=initial_cov,
        transition_cov=noise_cov(q_c),
        emission_cov=jnp.reshape(r, (1, 1)),
        num_steps=NUM_STEPS,
        method=method,
        smoother_iterations=smoother_iterations,
    )


def model(y):
    """Log-normal priors on ``q_c`` and ``R`` (medians 0.03 and 0.3); the path integrated out."""
    q_c = numpyro.sample("q_c", dist.LogNormal(jnp.log(0.03), 1.5))
    r = numpyro.sample("R", dist.LogNormal(jnp.log(0.3), 1.0))
    numpyro.sample("y", pendulum(q_c, r), obs=y)


def simulate(key):
    """``(angles (T,), y (T, 1))`` from the true model, started at ``(1.5, 0)``."""
    # the simulation's start is known exactly
    truth = pendulum(Q_C, R, initial_mean=jnp.array([1.5, 0.0]), initial_cov=1e-12 * jnp.eye(2))
    states, y = truth.sample_with_states(key)
    return states[:, 0], y


def compare_rules(angles, y):
    """Filter and smooth with every rule; print and return the smoothed angles.

    The smoother's ``log_marginal`` is ``log_prob``'s value (the filter's, or the iterated
    smoother's last linearization's), so it is printed rather than computed a third time.
    """
    rmse = lambda a: float(np.sqrt(np.mean((np.asarray(a) - np.asarray(angles)) ** 2)))  # noqa: E731
    print(f"{'rule':30s} {'filter RMSE':>12s} {'smoother RMSE':>14s} {'log p(y) (approx.)':>20s}")
    smoothed = {}
    for name, (method, iterations) in RULES.items():
        ssm = pendulum(Q_C, R, method, iterations)
        filtered, smooth = ssm.filter(y), ssm.smooth(y)
        smoothed[name] = smooth.smoothed_means[:, 0]
        print(
            f"{name:30s} {rmse(filtered.filtered_means[:, 0]):12.4f} "
            f"{rmse(smoothed[name]):14.4f} {float(smooth.log_marginal):20.2f}"
        )
    return smoothed


def fit(y, key):
    mcmc = MCMC(
        # from the prior medians: far out (q_c of several units) the unscented filter's
        # likelihood surface is rugged and a chain started there can stay there
        NUTS(model, init_strategy=init_to_median),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="sequential",
        progress_bar=False,
    )
    start = time.time()
    mcmc.run(key, y)
    samples = mcmc.get_samples()
    jax.block_until_ready(samples)
    seconds = time.time() - start
    print(f"\nNUTS, {NUM_CHAINS} chain(s) x ({NUM_WARMUP} + {NUM_SAMPLES}): {seconds:.1f} s")
    mcmc.print_summary(exclude_deterministic=True)
    return samples


def main():
    outdir = Path(os.environ.get("NUMPYRO_SSM_OUTDIR", "."))
    outdir.mkdir(parents=True, exist_ok=True)
    key_sim, key_fit = jax.random.split(jax.random.key(0))
    angles, y = simulate(key_sim)
    t = DT * np.arange(1, NUM_STEPS + 1)
    print(f"{NUM_STEPS} steps of {DT} s; true q_c = {Q_C}, R = {R}\n")
    smoothed = compare_rules(angles, y)
    samples = fit(y, key_fit)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(
        t,
        np.arcsin(np.clip(np.asarray(y[:, 0]), -1, 1)),
        ".",
        color="0.7",
        ms=3,
        label="arcsin of the measurements",
    )
    ax.plot(t, angles, "k", lw=2, label="true angle")
    for i, (name, a) in enumerate(smoothed.items()):
        ax.plot(t, a, color=f"C{i}", lw=1, label=name.split(" / ")[-1])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("angle (rad)")
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    path = outdir / "pendulum.png"
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, name, true in zip(axes, ("q_c", "R"), (Q_C, R), strict=True):
        ax.hist(np.asarray(samples[name]), bins=30, density=True, color="C0", alpha=0.6)
        ax.axvline(true, color="k", label="true value")
        ax.set_xlabel(name)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = outdir / "pendulum_posterior.png"
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

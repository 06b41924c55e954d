"""Side-by-side timings of nonlinear Gaussian filters: numpyro_ssm against dynamax.

What is timed, for each (S, T) cell, on one shared problem:

- a nonlinear model with state dim ``S`` and observation dim ``D = max(1, S // 2)``:
  ``z_{t+1} = 0.9 z_t + 0.1 tanh(A z_t) + w_t``, ``y_t = sin(C z_t) + v_t``, ``A`` (S, S) and
  ``C`` (D, S) random, ``w_t ~ N(0, LQ LQᵀ)``, ``v_t ~ N(0, LR LRᵀ)``, ``T`` observations
  simulated from it. The contraction keeps the state bounded (with ``z_t + ...`` its spread grew
  and at ``S = 8`` two filters' values parted by rounding). The parameters are
  ``(A, C, LQ, LR)``; each method builds its own representation from them inside the timed
  call (covariances ``L Lᵀ`` for dynamax).
- ``ours``: :func:`numpyro_ssm.ops.nonlinear.nonlinear_log_marginal` (square-root filter,
  ``method="ekf"`` or ``"ukf"``); ``dynamax``: ``extended_kalman_filter`` /
  ``unscented_kalman_filter`` (``UKFHyperParams()``, the same α, β, κ), ``.marginal_loglik``.
- "value+grad" is ``jax.value_and_grad`` with respect to the four parameter arrays, compiled with
  ``jax.jit`` before timing; steady-state time is the median of repeated calls
  (``benchmarks/_timing.time_calls``) in µs per time step. Before the table is trusted the two
  values are compared (rtol 1e-6, float64).
- ``ratio`` is ours over dynamax's time: below 1 means numpyro_ssm is faster. With
  ``--alternate N`` it is the median of ``N`` ratios of alternated single calls.

Typical use::

    python -m benchmarks.nonlinear --quick          # S=2, T=1000
    python -m benchmarks.nonlinear                  # S=2, 8 at T=1e4 (the issue's cells)
    python -m benchmarks.nonlinear --alternate 15   # ratio: median of 15 alternated pairs
"""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._timing import time_calls  # noqa: E402
from numpyro_ssm.ops.nonlinear import (  # noqa: E402
    NonlinearGaussianParams,
    Unscented,
    nonlinear_log_marginal,
)


def problem(S, T, seed=0):
    """``(theta, y)``: the parameter arrays and ``T`` simulated observations (module docstring)."""
    rng = np.random.default_rng(seed)
    D = max(1, S // 2)
    theta = dict(
        A=rng.normal(size=(S, S)) / np.sqrt(S),
        C=rng.normal(size=(D, S)) / np.sqrt(S),
        LQ=0.1 * np.eye(S) + 0.02 * np.tril(rng.normal(size=(S, S)), -1),
        LR=0.3 * np.eye(D),
    )
    z, ys = np.zeros(S), []
    for _ in range(T):
        ys.append(np.sin(theta["C"] @ z) + theta["LR"] @ rng.normal(size=D))
        z = 0.9 * z + 0.1 * np.tanh(theta["A"] @ z) + theta["LQ"] @ rng.normal(size=S)
    return {k: jnp.asarray(v) for k, v in theta.items()}, jnp.asarray(np.stack(ys))


def transition(z, u, p):
    return 0.9 * z + 0.1 * jnp.tanh(p["A"] @ z)


def emission(z, u, p):
    return jnp.sin(p["C"] @ z)


def ours(method):
    rule = "ekf" if method == "ekf" else Unscented()

    def log_marginal(theta, y):
        S = theta["A"].shape[0]
        params = NonlinearGaussianParams(
            initial_mean=jnp.zeros(S),
            initial_scale_tril=jnp.eye(S),
            transition_fn=transition,
            transition_scale_tril=theta["LQ"],
            emission_fn=emission,
            emission_scale_tril=theta["LR"],
            params={"A": theta["A"], "C": theta["C"]},
        )
        return nonlinear_log_marginal(params, y, method=rule)

    return log_marginal


def dynamax(method):
    from dynamax.nonlinear_gaussian_ssm import (
        ParamsNLGSSM,
        UKFHyperParams,
        extended_kalman_filter,
        unscented_kalman_filter,
    )

    def log_marginal(theta, y):
        S = theta["A"].shape[0]
        p = {"A": theta["A"], "C": theta["C"]}
        params = ParamsNLGSSM(
            initial_mean=jnp.zeros(S),
            initial_covariance=jnp.eye(S),
            dynamics_function=lambda z: transition(z, None, p),
            dynamics_covariance=theta["LQ"] @ theta["LQ"].T,
            emission_function=lambda z: emission(z, None, p),
            emission_covariance=theta["LR"] @ theta["LR"].T,
        )
        if method == "ekf":
            return extended_kalman_filter(params, y).marginal_loglik
        return unscented_kalman_filter(params, y, UKFHyperParams()).marginal_loglik

    return log_marginal


def cell(S, T, method, alternate):
    theta, y = problem(S, T)
    runs = {
        name: jax.jit(jax.value_and_grad(fn))
        for name, fn in (("ours", ours(method)), ("dynamax", dynamax(method)))
    }
    out = {}
    for name, run in runs.items():
        first, median, (value, _) = time_calls(lambda run=run: run(theta, y), min_repeats=3)
        out[name] = (float(value), median / T * 1e6, first)
    agree = np.isclose(out["ours"][0], out["dynamax"][0], rtol=1e-6)
    ratio = out["ours"][1] / out["dynamax"][1]
    if alternate:
        ratio = np.median(alternated_ratios(runs, theta, y, alternate))
    print(
        f"| {method} | {S} | {T} | {out['ours'][1]:8.2f} | {out['dynamax'][1]:8.2f} | "
        f"{ratio:5.2f} | {'yes' if agree else 'NO'} |",
        flush=True,
    )


def alternated_ratios(runs, theta, y, pairs):
    """``pairs`` ratios of one call of ours over the next call of dynamax's, alternating.

    On a shared machine whose speed drifts between runs, the ratio of neighbouring calls is
    steadier than the ratio of two medians taken minutes apart.
    """
    ratios = []
    for _ in range(pairs):
        times = []
        for run in (runs["ours"], runs["dynamax"]):
            start = time.perf_counter()
            jax.block_until_ready(run(theta, y))
            times.append(time.perf_counter() - start)
        ratios.append(times[0] / times[1])
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="S=2, T=1000 only")
    parser.add_argument("--S", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--T", type=float, nargs="+", default=[1e4])
    parser.add_argument("--methods", nargs="+", default=["ekf", "ukf"])
    parser.add_argument(
        "--alternate",
        type=int,
        default=0,
        metavar="N",
        help="the ratio column is the median of N alternated calls' ratios (alternated_ratios)",
    )
    args = parser.parse_args()
    sizes, lengths = ([2], [1000]) if args.quick else (args.S, [int(t) for t in args.T])
    print(f"load average {os.getloadavg()}; value+grad, float64, µs per step (median)")
    print("| method | S | T | ours | dynamax | ours/dynamax | values agree |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in args.methods:
        for S in sizes:
            for T in lengths:
                cell(S, T, method, args.alternate)


if __name__ == "__main__":
    main()

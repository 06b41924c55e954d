"""The Kalman value on transition matrices of several shapes: one process, one model.

``kalman_log_marginal`` reads the zeros of a concrete transition matrix whose rows mostly copy
one entry (``ops.kalman.params.transition_pattern``) and applies it by slices, with fewer
triangularizations; ``diffuse_kalman_log_marginal`` also defers the triangularizations of its
exact diffuse steps. This probe times one model per process (``jax.jit`` with the parameters
closed over, so the matrix is concrete where the op reads it; T = 506, D = 1), so that two
versions of the library can be compared by running it from two checkouts, alternated:

- ``level`` (S = 1), ``llt`` (local linear trend, S = 2), ``seas4`` (trend and a dummy seasonal
  of period 4, S = 5), ``ar12`` (a fixed AR(12) in companion form), ``seas12`` (trend and a
  seasonal of period 12, S = 13, as the CO₂ example);
- ``diffuse`` (``seas12`` with every state diffuse and 20 exact diffuse steps; ``--T 24`` times
  the diffuse steps nearly alone).

Typical use (docs/performance.md, structural time series)::

    python benchmarks/probes/shift_patterns.py seas12
    python benchmarks/probes/shift_patterns.py diffuse --T 24
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops import LGSSMParams, diffuse_kalman_log_marginal, kalman_log_marginal

jax.config.update("jax_enable_x64", True)


def _trend_seasonal(period):
    """A local linear trend plus a dummy seasonal: ``F`` and the observed rows' ``H``."""
    S = period + 1
    F = np.zeros((S, S))
    F[:2, :2] = [[1.0, 1.0], [0.0, 1.0]]
    F[2, 2:] = -1.0
    F[3:, 2:-1] = np.eye(period - 2)
    H = np.zeros((1, S))
    H[0, [0, 2]] = 1.0
    return F, H, 3


def model(kind, rng):
    """The probe's ``LGSSMParams`` for ``kind`` (see the module doc)."""
    if kind == "level":
        F, H, q = np.eye(1), np.eye(1), 1
    elif kind == "llt":
        F, H, q = np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0]]), 2
    elif kind == "ar12":
        F = np.zeros((12, 12))
        F[0] = rng.normal(size=12) * 0.05
        F[1:, :-1] = np.eye(11)
        H, q = np.eye(1, 12), 1
    else:
        F, H, q = _trend_seasonal(4 if kind == "seas4" else 12)
    S = F.shape[0]
    chol_Q = np.zeros((S, q))
    chol_Q[np.arange(q), np.arange(q)] = 0.1 + rng.random(q)
    initial = np.zeros((S, S)) if kind == "diffuse" else np.eye(S) * 3.0
    return LGSSMParams(np.zeros(S), initial, F, chol_Q, H, np.array([[0.5]]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["level", "llt", "seas4", "ar12", "seas12", "diffuse"])
    parser.add_argument("--T", type=int, default=506)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    params = model(args.kind, rng)
    T = args.T
    y = np.cumsum(rng.normal(size=(T, 1)), 0) + 2.0 * np.sin(np.arange(T)[:, None] * np.pi / 6)
    y[[5 % T, 100 % T]] = np.nan
    y = jnp.asarray(y)
    if args.kind == "diffuse":
        S = params.initial_mean.shape[0]
        mask = np.ones(S, bool)
        fn = jax.jit(
            lambda y: diffuse_kalman_log_marginal(
                params, y, diffuse_states=mask, num_diffuse_steps=20
            )
        )
    else:
        fn = jax.jit(lambda y: kalman_log_marginal(params, y))
    fn(y).block_until_ready()
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        fn(y).block_until_ready()
        times.append(time.perf_counter() - start)
    print(
        f"{args.kind} T={T}: min {min(times) * 1e3:.4f} ms, "
        f"median {statistics.median(times) * 1e3:.4f} ms"
    )


if __name__ == "__main__":
    main()

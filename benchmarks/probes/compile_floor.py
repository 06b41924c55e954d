"""The compile time of the simplest programs that compute the same value+grad: a floor.

The compile-time target of the performance issue asks for at most half of dynamax's time. This
script compiles ``jax.jit(jax.value_and_grad(f))`` for three versions of each log-likelihood of
``benchmarks/hmm.py`` (K = 3) and ``benchmarks/lgssm.py`` (S = 2), T = 10⁴, from cold caches:

- ``minimal``: the shortest correct program, differentiated by autodiff. For the HMM one
  ``lax.scan`` of ``w = (w A) lik_t / sum`` after ``exp(log_lik - max)``; for the Kalman filter
  one ``lax.scan`` of the square-root update and prediction, each one ``jnp.linalg.qr``;
- ``numpyro_ssm``: ``DiscreteHMM`` / ``LinearGaussianSSM`` ``.log_prob``;
- ``dynamax``: ``hmm_filter`` / ``lgssm_filter``.

If ``minimal`` already compiles in more than half of dynamax's time, no implementation can meet
the target on this machine. Typical use::

    python benchmarks/probes/compile_floor.py --repeats 3
"""

import argparse
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.stats import norm

jax.config.update("jax_enable_x64", True)

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import hmm, lgssm  # noqa: E402
from benchmarks._timing import compile_ahead, warm_up_compiler  # noqa: E402


def minimal_hmm(params, y):
    """The HMM log marginal by one normalized forward scan (``benchmarks/hmm.py``'s problem)."""
    initial_logits, transition_logits, means, log_sds = params
    trans = jax.nn.softmax(transition_logits, axis=-1)
    log_lik = norm.logpdf(y[:, None], means, jnp.exp(log_sds))
    shift = jnp.max(log_lik, axis=-1, keepdims=True)
    lik = jnp.exp(log_lik - shift)

    def step(w, lik_t):
        w = (w @ trans) * lik_t
        total = jnp.sum(w)
        return w / total, jnp.log(total)

    first = jax.nn.softmax(initial_logits) * lik[0]
    _, log_totals = lax.scan(step, first / jnp.sum(first), lik[1:])
    return jnp.log(jnp.sum(first)) + jnp.sum(log_totals) + jnp.sum(shift)


def _lower_factor(stack):
    """Lower-triangular ``L`` with ``L Lᵀ = stack stackᵀ`` (sign of the diagonal left free)."""
    return jnp.linalg.qr(stack.T, mode="r").T


def minimal_kalman(params, y):
    """The square-root Kalman log-likelihood by one scan (``benchmarks/lgssm.py``'s problem)."""
    m0, L0, F, LQ, b, H, LR, d = params
    S, D = m0.shape[0], H.shape[0]

    def step(carry, y_t):
        m, U = carry  # predicted mean and factor
        top = jnp.concatenate([H @ U, LR], axis=1)
        bottom = jnp.concatenate([U, jnp.zeros((S, D))], axis=1)
        psi = _lower_factor(jnp.concatenate([top, bottom], axis=0))
        chol_S, cross, chol_f = psi[:D, :D], psi[D:, :D], psi[D:, D:]
        w = solve_triangular(chol_S, y_t - H @ m - d, lower=True)
        log_det = jnp.sum(jnp.log(jnp.abs(jnp.diag(chol_S))))
        log_lik = -0.5 * (w @ w + D * jnp.log(2 * jnp.pi)) - log_det
        m_f = m + cross @ w
        U_next = _lower_factor(jnp.concatenate([F @ chol_f, LQ], axis=1))
        return (F @ m_f + b, U_next), log_lik

    _, log_liks = lax.scan(step, (m0, L0), y)
    return jnp.sum(log_liks)


PROGRAMS = {
    "hmm": (lambda: hmm.make_problem(3, 10_000, "float64"), minimal_hmm, hmm.JAX_METHODS),
    "kalman": (lambda: lgssm.make_problem(2, 10_000, "float64"), minimal_kalman, lgssm.JAX_METHODS),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(PROGRAMS), default=list(PROGRAMS))
    parser.add_argument("--repeats", type=int, default=3, help="compilations per cell (median)")
    args = parser.parse_args(argv)
    warm_up_compiler()
    print("| model | version | trace s | XLA s | total s | ÷ dynamax |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        make, minimal, methods = PROGRAMS[model]
        params, y = make()
        versions = {
            "minimal": minimal,
            "numpyro_ssm": methods["serial"],
            "dynamax": methods["dynamax"],
        }
        values = [float(fn(params, y)) for fn in versions.values()]
        if max(abs(v - values[0]) for v in values) > 1e-8 * abs(values[0]):
            raise RuntimeError(f"{model}: the versions disagree: {values}")
        totals = {}
        for name, fn in versions.items():
            runs = [
                compile_ahead(jax.value_and_grad(fn), params, y)[1] for _ in range(args.repeats)
            ]
            median = {k: statistics.median(r[k] for r in runs) for k in ("trace", "xla", "total")}
            totals[name] = median
        for name, t in totals.items():
            ratio = t["total"] / totals["dynamax"]["total"]
            print(
                f"| {model} | {name} | {t['trace']:.3g} | {t['xla']:.3g} | {t['total']:.3g} "
                f"| {ratio:.2f} |"
            )


if __name__ == "__main__":
    main()

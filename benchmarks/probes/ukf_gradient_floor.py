"""How fast can the UKF's value+grad get on this CPU? The floor under issue 18's S = 8 cell.

``benchmarks/nonlinear.py``'s UKF cell at ``S = 8`` (``D = 4``, ``T = 10⁴``, float64, 17 sigma
points) against a reverse pass written by hand for the same filter, in one process:

- ``library value`` / ``library value+grad``:
  :func:`numpyro_ssm.ops.nonlinear.nonlinear_log_marginal` (its step checkpointed: the reverse
  pass recomputes each step, QRs included, then transposes its derivative, the QRs' through
  their orthogonal factors);
- ``hand-written value+grad``: a forward scan that keeps each step's predicted mean and factor
  and its update's triangular factor ``Ψ`` (``tria`` of ``[[Y, chol R], [Z, 0]]``), then a
  reverse scan with the step's adjoint by hand. No QR in the reverse pass, no orthogonal factor:
  the cotangent of ``L = tria(A)`` is ``Ā = (Σ̄ + Σ̄ᵀ) A`` with ``Σ̄ = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹``
  (``Φ``: the lower triangle, diagonal halved), the Cholesky factor's derivative, since
  ``L Lᵀ = A Aᵀ``. It keeps 8 + 64 + 144 numbers a step (the library 8 + 64);
- ``dynamax value`` / ``value+grad``: ``unscented_kalman_filter`` as in the benchmark.

The hand-written gradient is checked against the library's (relative 1e-10) before timing.
Times are the minimum over ``--calls`` calls of each compiled program, the programs alternated,
in µs per time step. A probe, not the library: it covers this model only (every entry observed,
no inputs, constant noise factors).

Typical use (docs/performance.md, "Nonlinear Gaussian filters")::

    python -m benchmarks.probes.ukf_gradient_floor
"""

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.nonlinear import dynamax, emission, ours, problem, transition
from numpyro_ssm.ops.linalg import tria
from numpyro_ssm.ops.nonlinear.rules import Unscented, _unit_points

jax.config.update("jax_enable_x64", True)


def _lower_inverse(L):
    eye = jnp.eye(L.shape[0], dtype=L.dtype)
    return jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)


def _tria_cotangent(L, L_inv, L_bar):
    """``B`` with ``Ā = B A`` for ``L = tria(A)`` and the cotangent ``L_bar`` of ``L``."""
    P = L.T @ jnp.tril(L_bar)
    sigma_bar = L_inv.T @ (jnp.tril(P) - 0.5 * jnp.diag(jnp.diag(P))) @ L_inv
    return sigma_bar + sigma_bar.T


def hand_written(S, D):
    """``(theta, y) -> (value, grad)`` for the benchmark's UKF, the reverse pass by hand."""
    unit = _unit_points(Unscented(), S)
    xi, w_mean = jnp.asarray(unit.points), jnp.asarray(unit.w_mean)
    sqrt_w = jnp.sqrt(jnp.asarray(unit.w_cov))
    xi_w = xi * sqrt_w[:, None]  # rows √w_i ξ_i: the state part of the joint factor is L xi_wᵀ

    def points(fn, m, L, p):  # fn at the sigma points of N(m, L Lᵀ), and its VJP
        return jax.vjp(lambda X, p: jax.vmap(lambda z: fn(z, None, p))(X), m + xi @ L.T, p)

    def update_stack(Y, L, y, LR):  # from h at the points, [[Y, chol R], [Z, 0]] and y - ŷ
        y_hat = Y.T @ w_mean
        top = jnp.concatenate([((Y - y_hat) * sqrt_w[:, None]).T, LR], axis=1)
        bottom = jnp.concatenate([L @ xi_w.T, jnp.zeros((S, D), L.dtype)], axis=1)
        return jnp.concatenate([top, bottom]), y - y_hat

    def forward(carry, xs):
        (m, L), (p, LQ, LR) = carry, xs["fixed"]
        Y = jax.vmap(lambda z: emission(z, None, p))(m + xi @ L.T)
        stack, e = update_stack(Y, L, xs["y"], LR)
        psi = tria(stack)
        chol_y, gain, chol_f = psi[:D, :D], psi[D:, :D], psi[D:, D:]
        v = jax.lax.linalg.triangular_solve(chol_y, e[:, None], left_side=True, lower=True)[:, 0]
        log_lik = -0.5 * (D * math.log(2 * math.pi) + v @ v) - jnp.sum(jnp.log(jnp.diag(chol_y)))
        F = jax.vmap(lambda z: transition(z, None, p))(m + gain @ v + xi @ chol_f.T)
        m_next = F.T @ w_mean
        L_next = tria(jnp.concatenate([((F - m_next) * sqrt_w[:, None]).T, LQ], axis=1))
        return (m_next, L_next), (m, L, psi, log_lik)

    def backward(theta, p):
        LQ, LR = theta["LQ"], theta["LR"]

        def step(bars, xs):
            m_bar, L_bar, p_bar, LQ_bar, LR_bar = bars  # cotangents of the next (m, L)
            m, L, psi, L_next, y = xs
            Y, h_vjp = points(emission, m, L, p)
            stack, e = update_stack(Y, L, y, LR)
            psi_inv = _lower_inverse(psi)
            gain, chol_f = psi[D:, :D], psi[D:, D:]
            v = psi_inv[:D, :D] @ e
            F, f_vjp = points(transition, m + gain @ v, chol_f, p)
            m_next = F.T @ w_mean
            # the prediction: L_next = tria([√w (F - m_next), chol Q]), m_next = Σ w F
            B = _tria_cotangent(L_next, _lower_inverse(L_next), L_bar)
            dev_bar = B @ ((F - m_next) * sqrt_w[:, None]).T
            F_bar = dev_bar.T * sqrt_w[:, None] + w_mean[:, None] * (m_bar - dev_bar @ sqrt_w)
            X_bar, pf_bar = f_vjp(F_bar)
            mf_bar, chol_f_bar = jnp.sum(X_bar, 0), X_bar.T @ xi
            # the update: m_f = m + G v, v = chol_y⁻¹ e, log_lik = -v·v/2 - log|chol_y| + c
            v_bar = gain.T @ mf_bar - v
            e_bar = psi_inv[:D, :D].T @ v_bar
            chol_y_bar = -jnp.outer(e_bar, v) - jnp.diag(1.0 / jnp.diag(psi[:D, :D]))
            gain_bar = jnp.outer(mf_bar, v)
            psi_bar = jnp.block([[chol_y_bar, jnp.zeros((D, S))], [gain_bar, chol_f_bar]])
            stack_bar = _tria_cotangent(psi, psi_inv, psi_bar) @ stack
            Y_dev_bar = stack_bar[:D, : xi.shape[0]]
            y_hat_bar = -e_bar - Y_dev_bar @ sqrt_w
            Y_bar = Y_dev_bar.T * sqrt_w[:, None] + w_mean[:, None] * y_hat_bar
            X_bar, ph_bar = h_vjp(Y_bar)
            L_bar = stack_bar[D:, : xi.shape[0]] @ xi_w + X_bar.T @ xi
            bars = (
                mf_bar + jnp.sum(X_bar, 0),
                L_bar,
                jax.tree.map(lambda a, b, c: a + b + c, p_bar, pf_bar, ph_bar),
                LQ_bar + B @ LQ,
                LR_bar + stack_bar[:D, xi.shape[0] :],
            )
            return bars, None

        return step

    def value_and_grad(theta, y):
        p = {"A": theta["A"], "C": theta["C"]}
        fixed = (p, theta["LQ"], theta["LR"])
        init = (jnp.zeros(S), jnp.eye(S))

        def forward_step(carry, y_t):
            return forward(carry, {"fixed": fixed, "y": y_t})

        (_, L_last), (ms, Ls, psis, log_liks) = jax.lax.scan(forward_step, init, y)
        L_nexts = jnp.concatenate([Ls[1:], L_last[None]])
        zeros = (jnp.zeros(S), jnp.zeros((S, S)), jax.tree.map(jnp.zeros_like, p))
        bars = (*zeros, jnp.zeros_like(theta["LQ"]), jnp.zeros_like(theta["LR"]))
        step = backward(theta, p)
        (_, _, p_bar, LQ_bar, LR_bar), _ = jax.lax.scan(
            step, bars, (ms, Ls, psis, L_nexts, y), reverse=True
        )
        return jnp.sum(log_liks), {"A": p_bar["A"], "C": p_bar["C"], "LQ": LQ_bar, "LR": LR_bar}

    return value_and_grad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--S", type=int, default=8)
    parser.add_argument("--T", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=15)
    args = parser.parse_args()
    theta, y = problem(args.S, args.T)
    programs = {
        "library value": jax.jit(ours("ukf")),
        "library value+grad": jax.jit(jax.value_and_grad(ours("ukf"))),
        "hand-written value+grad": jax.jit(hand_written(args.S, y.shape[1])),
        "dynamax value": jax.jit(dynamax("ukf")),
        "dynamax value+grad": jax.jit(jax.value_and_grad(dynamax("ukf"))),
    }
    value, grad = programs["library value+grad"](theta, y)
    value_h, grad_h = programs["hand-written value+grad"](theta, y)
    for name in grad:
        np.testing.assert_allclose(grad_h[name], grad[name], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(value_h, value, rtol=1e-12)
    for run in programs.values():
        jax.block_until_ready(run(theta, y))
    times = {name: [] for name in programs}
    for _ in range(args.calls):
        for name, run in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(run(theta, y))
            times[name].append(time.perf_counter() - start)
    print(f"UKF, S = {args.S}, T = {args.T}, float64; min of {args.calls} alternated calls")
    print("| program | µs per step |\n| --- | --- |")
    for name, ts in times.items():
        print(f"| {name} | {min(ts) / args.T * 1e6:.2f} |")


if __name__ == "__main__":
    main()

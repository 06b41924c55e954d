r"""The derivative of the Kalman log-marginal as one backward recursion (serial or parallel).

Both filters of :mod:`numpyro_ssm.ops.kalman.filtering` give ``ℓ = log p(y_{1:T})`` a custom
JVP built here. Differentiating through a scan would store and replay every triangularization
(and, for the associative scan, differentiate its combine at every level); instead the
derivative comes from the filtered moments and one backward recursion of the (de Jong)
smoothing quantities

.. math::

    a_t = H_tᵀ S_t^{-1} v_t + L_tᵀ a_{t+1}, \qquad
    A_t = H_tᵀ S_t^{-1} H_t + L_tᵀ A_{t+1} L_t, \qquad L_t = F_t (I - K_t H_t),

with ``a_t = ∂ℓ / ∂m_t`` and ``∂ℓ / ∂P_t = (a_t a_tᵀ - A_t) / 2`` for the predicted moments.
The recursion is affine in ``(a, A)``, so it runs as a ``lax.scan`` after the sequential filter
and as a ``lax.associative_scan`` of the maps ``(L_t, c_t, C_t)`` after the parallel one
(``O(log T)`` depth both ways).
Every parameter's gradient is then a closed form over time steps (Fisher's identity written with
``a, A`` so that neither ``Q`` nor ``P_0`` is inverted; rank-deficient ones are fine):

- ``∂ℓ/∂b_t = a_{t+1}``, ``∂ℓ/∂F_t = a_{t+1} m_{t|t}ᵀ + G_{t+1} F_t P_{t|t}``,
  ``∂ℓ/∂Q_t = G_{t+1} / 2`` with ``G = a aᵀ - A``;
- with ``u_t = S_t^{-1} v_t - K_tᵀ F_tᵀ a_{t+1}`` (the smoothed observation disturbance, scaled
  by ``R⁻¹``): ``∂ℓ/∂d_t = u_t = -∂ℓ/∂y_t``,
  ``∂ℓ/∂R_t = (u_t u_tᵀ - S_t^{-1} - K_tᵀ F_tᵀ A_{t+1} F_t K_t) / 2`` and
  ``∂ℓ/∂H_t = u_t ẑ_tᵀ - S_t^{-1} H_t P_t (I - F_tᵀ A_{t+1} F_t P_{t|t})``;
- ``∂ℓ/∂m_0 = a_1``, ``∂ℓ/∂P_0 = G_1 / 2``.

Gradients with respect to the square-root inputs follow from ``∂ℓ/∂U = 2 (∂ℓ/∂Σ) U`` for
``Σ = U Uᵀ``. Covariances are formed only for this gradient; the filters stay square-root.

The JVP is ``<∇ℓ, tangent>`` with ``∇ℓ`` computed from the primals, so it is linear in the
tangents and reverse mode transposes it for free; forward mode and Hessians work too.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._fusion import matmul_small, matmul_stack
from numpyro_ssm.ops.kalman._steps import (
    _covariance,
    _Filtered,
    _masked_emission,
    _mT,
    _mv,
)
from numpyro_ssm.ops.kalman.params import _EMISSION, _TRANSITION, _Model, _per_step
from numpyro_ssm.ops.linalg import solve_lower, tria
from numpyro_ssm.ops.scan import prefix_scan

# The products over the time axis: fused on the CPU where XLA's batched dot is slow.
_mm = matmul_stack


def _backward(c, C, L, parallel):
    """``(a_t, A_t)`` for every ``t`` from ``a_T = c_T``, ``A_T = C_T`` (module docstring)."""
    if not parallel:

        def back(carry, inputs):
            a, A = carry
            c_t, C_t, L_t = inputs
            # fused products, not dots (docs/performance.md, "Why the code is shaped this way")
            L_t_T = _mT(L_t)
            a, A = c_t + matmul_small(L_t_T, a), C_t + matmul_small(matmul_small(L_t_T, A), L_t)
            return (a, A), (a, A)

        _, (a, A) = lax.scan(back, (c[-1], C[-1]), (c[:-1], C[:-1], L), reverse=True)
        return jnp.concatenate([a, c[-1:]]), jnp.concatenate([A, C[-1:]])

    def combine(earlier, later):
        # the map (a, A) -> (c + Lᵀ a, C + Lᵀ A L) of ``earlier`` after that of ``later``
        L1, c1, C1 = earlier
        L2, c2, C2 = later
        return L2 @ L1, c1 + _mv(_mT(L1), c2), C1 + _mT(L1) @ C2 @ L1

    last = (jnp.zeros(L.shape[1:], L.dtype), c[-1], C[-1])
    _, a, A = prefix_scan(
        combine, lambda e: e, last, (L, c[:-1], C[:-1]), parallel=True, reverse=True
    )
    return a, A


def _gradients(model: _Model, y, observed, f: _Filtered, parallel):
    """``∂ℓ/∂`` every parameter, per time step, and ``∂ℓ/∂y`` (see the module docstring)."""
    T = y.shape[0]
    em = _per_step(model, _EMISSION, 0, T)
    tr = _per_step(model, _TRANSITION, 0, T - 1)
    H_m, chol_R_m, y_m = jax.vmap(_masked_emission)(em["H"], em["chol_R"], em["d"], y, observed)
    P = _covariance(f.predicted_chols)
    # S⁻¹ from the square-root innovation factor; vmapped small ops fuse (no LAPACK per step)
    chol_S = jax.vmap(lambda H, U, R: tria(jnp.concatenate([_mm(H, U), R], axis=1)))(
        H_m, f.predicted_chols, chol_R_m
    )
    eye_D = jnp.eye(chol_S.shape[-1], dtype=chol_S.dtype)
    chol_S_inv = jax.vmap(solve_lower, in_axes=(0, None))(chol_S, eye_D)
    S_inv = _mm(_mT(chol_S_inv), chol_S_inv)
    S_inv_v = _mv(S_inv, y_m - _mv(H_m, f.predicted_means))
    S_inv_H = _mm(S_inv, H_m)
    K_T = _mm(S_inv_H, P)  # Kᵀ, (T, D, S)
    c = _mv(_mT(H_m), S_inv_v)
    C = _mm(_mT(H_m), S_inv_H)
    # The filtered moments from the predicted ones (the filter need not keep them):
    # m_f = m + K v = m + P c and P_f = P - K S Kᵀ = P - (H P)ᵀ Kᵀ.
    means = f.predicted_means + _mv(P, c)
    P_f = P - _mm(_mT(_mm(H_m, P)), K_T)
    F = tr["F"]
    L = F - _mm(_mm(F, _mT(K_T[:-1])), H_m[:-1])

    a, A = _backward(c, C, L, parallel)
    G = a[:, :, None] * a[:, None, :] - A  # 2 ∂ℓ/∂P_t
    Ft_a = jnp.concatenate([_mv(_mT(F), a[1:]), jnp.zeros_like(a[:1])])
    Ft_A_F = jnp.concatenate([_mm(_mm(_mT(F), A[1:]), F), jnp.zeros_like(A[:1])])
    u = S_inv_v - _mv(K_T, Ft_a)
    smoothed = f.predicted_means + _mv(P, a)
    mask = observed.astype(y_m.dtype)
    eye = jnp.eye(P.shape[-1], dtype=P.dtype)
    grad_R = u[:, :, None] * u[:, None, :] - S_inv - _mm(_mm(K_T, Ft_A_F), _mT(K_T))  # 2 ∂ℓ/∂R_t
    grads = {
        "b": a[1:],
        "F": a[1:, :, None] * means[:-1, None, :] + _mm(_mm(G[1:], F), P_f[:-1]),
        "chol_Q": _mm(G[1:], tr["chol_Q"]),
        "d": u,
        "H": u[:, :, None] * smoothed[:, None, :] - _mm(_mm(S_inv_H, P), eye - _mm(Ft_A_F, P_f)),
        "chol_R": _mm(mask[:, :, None] * grad_R * mask[:, None, :], em["chol_R"]),
    }
    initial = (a[0], G[0] @ model.chol_P0)
    return grads, initial, jnp.where(observed, -u, 0.0)


def _contract(grad, tangent):
    """``<grad, tangent>``, summing a per-step gradient over time for a static parameter."""
    if tangent.ndim < grad.ndim:
        grad = jnp.sum(grad, axis=0)
    return jnp.sum(grad * tangent)


def log_marginal_jvp(filter_fn: Callable, parallel: bool) -> Callable:
    """The JVP rule of ``ℓ(model, y, observed)`` for the filter ``filter_fn`` (``defjvp``)."""

    def rule(primals, tangents):
        model, y, observed = primals
        d_model, d_y, _ = tangents
        f = filter_fn(model, y, observed)
        grads, (grad_m0, grad_chol_P0), grad_y = _gradients(model, y, observed, f, parallel)
        tangent = _contract(grad_m0, d_model.m0) + _contract(grad_chol_P0, d_model.chol_P0)
        for name, d_param in {**d_model.static, **d_model.varying}.items():
            tangent = tangent + _contract(grads[name], d_param)
        tangent = tangent + _contract(grad_y, d_y)
        return jnp.sum(f.log_likelihoods), tangent

    return rule

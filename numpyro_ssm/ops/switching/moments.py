r"""Exact means and variances of an autoregressive HMM's observations (a Markov jump system).

With the stacked lags :math:`s_t = [y_t; y_{t-1}; \dots; y_{t-L+1}]` the model is a Markov jump
linear system, :math:`s_t = F_{z_t} s_{t-1} + c_{z_t} + E \varepsilon_t`, with companion
matrices :math:`F_k`, :math:`c_k = [b_k; 0]` and :math:`E = [I; 0]`. Its first two moments
follow exactly from the *state-weighted* moments

.. math::

    m_t(k) = \mathrm E[\mathbb 1\{z_t = k\}\, s_t], \qquad
    M_t(k) = \mathrm E[\mathbb 1\{z_t = k\}\, s_t s_t^\top],

because :math:`z_t` depends on :math:`s_{t-1}` only through :math:`z_{t-1}`:
:math:`\tilde m_t(k) = \sum_j P_{jk} m_{t-1}(j)` (likewise :math:`\tilde M_t`), then
:math:`m_t(k) = F_k \tilde m_t(k) + p_t(k) c_k` and
:math:`M_t(k) = F_k \tilde M_t(k) F_k^\top + F_k \tilde m_t(k) c_k^\top + c_k \tilde m_t(k)^\top
F_k^\top + p_t(k)(c_k c_k^\top + E Q_k E^\top)`. Summing over ``k`` gives :math:`\mathrm E[y_t]`
and :math:`\mathrm E[y_t y_t^\top]`. This is what a forecast's ``mean`` and ``variance`` are;
nothing is sampled.
"""

import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.switching.autoregression import ARParams
from numpyro_ssm.ops.switching.companion import companion_matrices

__all__ = ["arhmm_moments"]


def arhmm_moments(initial_probs, transition_matrix, params: ARParams, initial_lags, num_steps):
    """``E[y_t]`` and ``Var[y_t]`` (per entry) of an autoregressive HMM with known initial lags.

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(..., T - 1 | 1, K, K)``, ``p(z_{t+1} = j | z_t = i)``.
        params: the :class:`~numpyro_ssm.ops.switching.ARParams`.
        initial_lags: shape ``(..., L, D)``, ``y_{1-L}, ..., y_0`` in time order.
        num_steps: ``T``.

    Returns:
        ``(means, variances)``, each of shape ``(..., T, D)`` (batch axes broadcast).
    """
    A, b, U = params
    K, D, LD = A.shape[-3:]
    F = companion_matrices(A)  # (..., K, LD, LD)
    c = jnp.concatenate([b, jnp.zeros(b.shape[:-1] + (LD - D,), b.dtype)], axis=-1)
    Q = U @ jnp.swapaxes(U, -1, -2)
    noise = jnp.zeros(Q.shape[:-2] + (LD, LD), Q.dtype).at[..., :D, :D].set(Q)
    s0 = jnp.flip(jnp.asarray(initial_lags), axis=-2).reshape(initial_lags.shape[:-2] + (LD,))
    p1 = jnp.asarray(initial_probs)
    trans = jnp.asarray(transition_matrix)

    def emit(p, m_pre, M_pre):
        """State-weighted moments of ``s_t`` from those of ``s_{t-1}`` given ``z_t``."""
        Fm = (F @ m_pre[..., None])[..., 0]
        m = Fm + p[..., None] * c
        FMF = F @ M_pre @ jnp.swapaxes(F, -1, -2)
        cross = Fm[..., :, None] * c[..., None, :]
        outer = c[..., :, None] * c[..., None, :] + noise
        M = FMF + cross + jnp.swapaxes(cross, -1, -2) + p[..., None, None] * outer
        return m, M

    def observe(m, M):
        mean = jnp.sum(m[..., :D], axis=-2)
        second = jnp.sum(jnp.diagonal(M[..., :D, :D], axis1=-2, axis2=-1), axis=-2)
        return mean, second - mean**2

    batch = jnp.broadcast_shapes(
        p1.shape[:-1], trans.shape[:-3], F.shape[:-3], c.shape[:-2], noise.shape[:-3], s0.shape[:-1]
    )
    p1 = jnp.broadcast_to(p1, batch + (K,))
    s0 = jnp.broadcast_to(s0, batch + (LD,))
    outer0 = s0[..., :, None] * s0[..., None, :]
    m1, M1 = emit(
        p1, p1[..., None] * s0[..., None, :], p1[..., None, None] * outer0[..., None, :, :]
    )

    def step(carry, P):
        p, m, M = carry
        p_new = jnp.einsum("...j,...jk->...k", p, P)
        m_pre = jnp.einsum("...jk,...jp->...kp", P, m)
        M_pre = jnp.einsum("...jk,...jpq->...kpq", P, M)
        m_new, M_new = emit(p_new, m_pre, M_pre)
        return (p_new, m_new, M_new), observe(m_new, M_new)

    moved = jnp.moveaxis(trans, -3, 0)
    if moved.shape[0] == 1:
        _, (means, variances) = lax.scan(
            lambda carry, _: step(carry, moved[0]), (p1, m1, M1), None, num_steps - 1
        )
    else:
        _, (means, variances) = lax.scan(step, (p1, m1, M1), moved)
    first_mean, first_var = observe(m1, M1)
    means = jnp.concatenate([first_mean[None], means])
    variances = jnp.concatenate([first_var[None], variances])
    return jnp.moveaxis(means, 0, -2), jnp.moveaxis(variances, 0, -2)

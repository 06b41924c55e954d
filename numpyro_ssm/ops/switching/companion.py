r"""Exact AR-to-LDS conversion: an L-lag switching autoregression as a first-order LGSSM.

A latent ``x_t ∈ R^{D}`` with ``x_t | z_t = k ~ N(A_k [x_{t-1}; ...; x_{t-L}] + b_k, Q_k)`` is a
linear-Gaussian state space model in the stacked state ``s_t = [x_t; x_{t-1}; ...;
x_{t-L+1}] ∈ R^{L D}``:

.. math::

    s_{t+1} = F_{z_{t+1}} s_t + \begin{bmatrix} b_{z_{t+1}} \\ 0 \end{bmatrix} + w_t, \quad
    w_t \sim \mathcal N\Big(0, \begin{bmatrix} Q_{z_{t+1}} & 0 \\ 0 & 0 \end{bmatrix}\Big),
    \qquad F_k = \begin{bmatrix} A_k \\ I \;\; 0 \end{bmatrix}.

The shift block's noise is **exactly zero**: the Kalman ops of :mod:`numpyro_ssm.ops.kalman`
take a singular (rank-deficient) transition factor, so nothing is added to make it invertible
(jax_moseq adds ``1e-2 I`` there, which lets the lagged copies drift from the values they copy).
"""

import jax.numpy as jnp

from numpyro_ssm.ops.kalman.params import LGSSMParams
from numpyro_ssm.ops.switching.autoregression import ARParams

__all__ = ["ar_to_lds", "companion_matrices", "lds_to_latents"]


def companion_matrices(matrix):
    """The companion matrices ``F_k`` of L-lag autoregressions, shape ``(..., K, L D, L D)``.

    ``F_k = [[A_{k,1}, ..., A_{k,L}], [I, 0]]``: the first ``D`` rows are ``A_k``, the rest
    shift the stacked lags down by one block, exactly.

    Args:
        matrix: shape ``(..., K, D, L D)``.

    Returns:
        Shape ``(..., K, L D, L D)``.
    """
    D, LD = matrix.shape[-2:]
    shift = jnp.eye(LD - D, LD, dtype=matrix.dtype)
    shift = jnp.broadcast_to(shift, matrix.shape[:-2] + shift.shape)
    return jnp.concatenate([matrix, shift], axis=-2)


def ar_to_lds(
    ar: ARParams,
    states,
    *,
    emission_matrix,
    emission_scale_tril,
    initial_mean,
    initial_scale_tril,
    emission_bias=None,
) -> LGSSMParams:
    """The LGSSM of a switching L-lag autoregression given its discrete path.

    The transition from step ``t`` to ``t + 1`` uses the AR of state ``z_{t+1}``; the
    observations are ``y_t = C x_t + d + v_t``, ``v_t ~ N(0, R)``.

    Args:
        ar: :class:`~numpyro_ssm.ops.switching.ARParams` of one model (no batch axes):
            ``matrix (K, D, L D)``, ``bias (K, D)``, ``scale_tril (K, D, D)``.
        states: int, shape ``(T,)``, the discrete path ``z``.
        emission_matrix: shape ``(D_y, D)``, ``C``.
        emission_scale_tril: shape ``(D_y, D_y)``, ``chol R``.
        initial_mean: shape ``(L D,)``, the mean of ``s_1 = [x_1; x_0; ...; x_{2-L}]`` (the
            ``L - 1`` values before the series are latent too).
        initial_scale_tril: shape ``(L D, L D)``, a lower-triangular factor of ``Cov[s_1]``.
        emission_bias: shape ``(D_y,)``, ``d``; zeros by default.

    Returns:
        :class:`~numpyro_ssm.ops.LGSSMParams` with state dimension ``L D``, transitions of
        shape ``(T - 1, L D, L D)`` and a rank-deficient ``transition_scale_tril``.
    """
    A, b, U = ar
    K, D, LD = A.shape[-3:]
    z = jnp.asarray(states)[1:]
    F = companion_matrices(A)[z]
    pad = LD - D
    bias = jnp.concatenate([b[z], jnp.zeros(z.shape + (pad,), b.dtype)], axis=-1)
    chol_Q = jnp.zeros(z.shape + (LD, LD), U.dtype).at[:, :D, :D].set(U[z])
    C = jnp.asarray(emission_matrix)
    H = jnp.concatenate([C, jnp.zeros(C.shape[:-1] + (pad,), C.dtype)], axis=-1)
    return LGSSMParams(
        initial_mean=jnp.asarray(initial_mean),
        initial_scale_tril=jnp.asarray(initial_scale_tril),
        transition_matrix=F,
        transition_scale_tril=chol_Q,
        emission_matrix=H,
        emission_scale_tril=jnp.asarray(emission_scale_tril),
        transition_bias=bias,
        emission_bias=None if emission_bias is None else jnp.asarray(emission_bias),
    )


def lds_to_latents(stacked, dim):
    """Split a stacked path ``s_{1:T}`` into ``x_{1:T}`` and the ``L - 1`` values before it.

    Args:
        stacked: shape ``(..., T, L D)``, ``s_t = [x_t; ...; x_{t-L+1}]``.
        dim: ``D``.

    Returns:
        ``(latents (..., T, D), before (..., L - 1, D))``: ``x_{1:T}``, and ``x_{2-L}, ...,
        x_0`` in time order (read from ``s_1``).
    """
    s = jnp.asarray(stacked)
    LD = s.shape[-1]
    before = s[..., 0, dim:].reshape(s.shape[:-2] + (LD // dim - 1, dim))
    return s[..., :dim], jnp.flip(before, axis=-2)

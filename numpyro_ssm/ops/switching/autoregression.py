r"""Vector autoregressions switched by a discrete state: parameters, lags and log-likelihoods.

The emission of an autoregressive HMM in state ``k`` at step ``t``, with ``L`` lags of a
``D``-dimensional series:

.. math::

    y_t \mid z_t = k \sim \mathcal N\big(A_k x_t + b_k,\; Q_k\big), \qquad
    x_t = [y_{t-1}; y_{t-2}; \dots; y_{t-L}] \in \mathbb R^{L D},

so ``A_k = [A_{k,1}, ..., A_{k,L}]`` is ``(D, L D)`` and its block ``l`` multiplies the lag
``y_{t-l}``: **most recent lag first**, as dynamax's ``LinearAutoregressiveHMM``. (jax_moseq
orders the blocks oldest first and appends the bias as a last column, ``Ab = [A_{k,L}, ...,
A_{k,1}, b_k]``; :func:`ar_params_from_moseq` converts.)

:class:`ARParams` holds the ``K`` states' ``A_k, b_k`` and the lower-triangular square roots of
``Q_k``; :func:`ar_log_likelihoods` turns observations and their lags into the ``(T, K)``
log-likelihood array that every HMM op of :mod:`numpyro_ssm.ops.hmm` takes.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.linalg import chol_logdet, cholesky, solve_lower

__all__ = [
    "ARParams",
    "ar_log_likelihoods",
    "ar_params",
    "ar_params_from_moseq",
    "get_lags",
    "lag_matrix",
    "lagged_step_mask",
    "num_lags_of",
]

_LOG_2PI = math.log(2 * math.pi)


class ARParams(NamedTuple):
    """The ``K`` states' autoregressions, covariances as square roots.

    Attributes:
        matrix: shape ``(..., K, D, L D)``, ``A_k = [A_{k,1}, ..., A_{k,L}]``; block ``l``
            (columns ``(l-1) D .. l D - 1``) multiplies ``y_{t-l}``.
        bias: shape ``(..., K, D)``, ``b_k``.
        scale_tril: shape ``(..., K, D, D)``, lower-triangular ``U_k`` with ``Q_k = U_k U_kᵀ``,
            positive definite.
    """

    matrix: jax.Array
    bias: jax.Array
    scale_tril: jax.Array


def num_lags_of(matrix_shape, name="ar_matrix") -> int:
    """The number of lags ``L`` of an AR matrix of shape ``(..., K, D, L D)``.

    Args:
        matrix_shape: the shape tuple.
        name: the argument's name, for the message.

    Returns:
        ``L``.

    Raises:
        ValueError: unless the shape is ``(..., K, D, L D)`` with an integer ``L >= 1``.
    """
    shape = tuple(matrix_shape)
    if len(shape) < 3 or shape[-1] < shape[-2] or shape[-1] % shape[-2] or shape[-2] < 1:
        raise ValueError(
            f"{name} must have shape (..., K, D, L*D) (the K states' lag blocks [A_1, ..., A_L] "
            f"side by side, L >= 1), got {shape}."
        )
    return shape[-1] // shape[-2]


def ar_params(matrix, bias=None, *, cov=None, scale_tril=None) -> ARParams:
    """Build :class:`ARParams` from the noise covariances or their square roots.

    Args:
        matrix: shape ``(..., K, D, L D)``, the AR matrices (lag blocks most recent first).
        bias: shape ``(..., K, D)``; None means zeros.
        cov: shape ``(..., K, D, D)``, ``Q_k`` (positive definite). Or give ``scale_tril``.
        scale_tril: shape ``(..., K, D, D)``, lower-triangular factors of ``Q_k``.

    Returns:
        The :class:`ARParams`.

    Raises:
        ValueError: for inconsistent shapes, or unless exactly one of ``cov`` and
            ``scale_tril`` is given.
    """
    matrix = jnp.asarray(matrix)
    num_lags_of(matrix.shape)
    num_states, dim = matrix.shape[-3], matrix.shape[-2]
    if (cov is None) == (scale_tril is None):
        raise ValueError("ar_params: give exactly one of cov and scale_tril.")
    factor = cholesky(jnp.asarray(cov)) if scale_tril is None else jnp.asarray(scale_tril)
    name = "cov" if scale_tril is None else "scale_tril"
    if factor.ndim < 3 or factor.shape[-3:] != (num_states, dim, dim):
        raise ValueError(
            f"ar_params: {name} must have shape (..., K, D, D) = (..., {num_states}, {dim}, {dim}) "
            f"to match matrix {matrix.shape}, got {factor.shape}."
        )
    dtype = jnp.result_type(matrix, factor)
    bias = jnp.zeros(matrix.shape[:-1], dtype) if bias is None else jnp.asarray(bias)
    if bias.ndim < 2 or bias.shape[-2:] != (num_states, dim):
        raise ValueError(
            f"ar_params: bias must have shape (..., K, D) = (..., {num_states}, {dim}) to match "
            f"matrix {matrix.shape}, got {bias.shape}."
        )
    return ARParams(matrix, bias, factor)


def ar_params_from_moseq(Ab, Q) -> ARParams:
    """Convert jax_moseq's ``Ab (K, D, L D + 1)`` and ``Q (K, D, D)`` to :class:`ARParams`.

    jax_moseq stacks the lag blocks oldest first and appends the bias column; here the blocks
    are most recent first and the bias is separate.

    Args:
        Ab: shape ``(..., K, D, L D + 1)``, ``[A_{k,L}, ..., A_{k,1}, b_k]``.
        Q: shape ``(..., K, D, D)``, the noise covariances.

    Returns:
        The same model as :class:`ARParams`.
    """
    Ab = jnp.asarray(Ab)
    dim = Ab.shape[-2]
    num_lags = (Ab.shape[-1] - 1) // dim
    blocks = Ab[..., :-1].reshape(Ab.shape[:-1] + (num_lags, dim))[..., ::-1, :]
    return ar_params(blocks.reshape(Ab.shape[:-1] + (num_lags * dim,)), Ab[..., -1], cov=Q)


def lag_matrix(observations, num_lags, initial_lags=None):
    """The lag vectors ``x_t = [y_{t-1}; ...; y_{t-L}]`` of every step, shape ``(..., T, L D)``.

    Args:
        observations: shape ``(..., T, D)``.
        num_lags: ``L``.
        initial_lags: shape ``(..., L, D)``, the ``L`` observations before ``y_1`` in time order
            (``y_{1-L}, ..., y_0``), or None: then the lags reaching before the series are
            zeros, and the caller must not count those steps.

    Returns:
        Shape ``(..., T, L D)``; row ``t`` holds ``y_{t-1}, ..., y_{t-L}``.
    """
    y = jnp.asarray(observations)
    T, D = y.shape[-2:]
    if initial_lags is None:
        before = jnp.zeros(y.shape[:-2] + (num_lags, D), y.dtype)
    else:
        before = jnp.asarray(initial_lags, y.dtype)
        shape = jnp.broadcast_shapes(before.shape[:-2], y.shape[:-2])
        y = jnp.broadcast_to(y, shape + (T, D))
        before = jnp.broadcast_to(before, shape + (num_lags, D))
    full = jnp.concatenate([before, y], axis=-2)  # (..., L + T, D)
    lags = [full[..., num_lags - lag : num_lags - lag + T, :] for lag in range(1, num_lags + 1)]
    return jnp.concatenate(lags, axis=-1)


def lagged_step_mask(observed, num_lags, initial_known=None, *, first_steps_count=False):
    """Which steps of an L-lag autoregression count: observed, with all ``L`` lags known.

    Args:
        observed: bool, shape ``(..., T)``, True where ``y_t`` is known.
        num_lags: ``L``.
        initial_known: bool, broadcasting to ``(..., L)``, True where the observation before the
            series (``y_{1-L}, ..., y_0``) is known; None means none is (the first ``L``
            steps are conditioned on).
        first_steps_count: the first ``L`` steps count without lags (they have an initial
            distribution of their own).

    Returns:
        bool, shape ``(..., T)``: ``observed[t]`` and ``y_{t-1}, ..., y_{t-L}`` all known (or
        ``t <= L`` with ``first_steps_count``).
    """
    observed = jnp.asarray(observed, bool)
    T, L = observed.shape[-1], num_lags
    before = jnp.zeros((L,), bool) if initial_known is None else jnp.asarray(initial_known, bool)
    before = jnp.broadcast_to(before, observed.shape[:-1] + (L,))
    known = jnp.concatenate([before, observed], axis=-1)  # steps 1-L .. T
    position = jnp.arange(L + T)
    last_unknown = lax.cummax(jnp.where(known, -1, position), axis=known.ndim - 1)
    # the lags of step t (0-based) sit at positions t .. t + L - 1 of `known`
    lags_known = last_unknown[..., L - 1 : L - 1 + T] < jnp.arange(T)
    if first_steps_count:
        lags_known = lags_known | (jnp.arange(T) < L)
    return observed & lags_known


def get_lags(observations, num_lags):
    """The lags of the steps that have all ``L`` of them: ``(..., T - L, L D)``.

    Row ``i`` is ``[y_{i+L}; y_{i+L-1}; ...; y_{i+1}]`` (1-based), the lag vector of
    ``y_{i+L+1}``: most recent lag first, matching :class:`ARParams`. jax_moseq's ``get_lags``
    returns the same rows with the blocks oldest first.

    Args:
        observations: shape ``(..., T, D)``.
        num_lags: ``L``, with ``1 <= L < T``.

    Returns:
        Shape ``(..., T - L, L D)``.

    Raises:
        ValueError: when ``num_lags`` is not an integer in ``[1, T)``.
    """
    y = jnp.asarray(observations)
    if y.ndim < 2:
        raise ValueError(f"get_lags: observations must have shape (..., T, D), got {y.shape}.")
    if not isinstance(num_lags, int) or not 1 <= num_lags < y.shape[-2]:
        raise ValueError(
            f"get_lags: num_lags must be an int in [1, T) with T={y.shape[-2]} from observations "
            f"{y.shape}, got {num_lags!r}."
        )
    return lag_matrix(y, num_lags)[..., num_lags:, :]


def ar_log_likelihoods(params: ARParams, observations, lags):
    """``log N(y_t | A_k x_t + b_k, Q_k)`` for every step and state, shape ``(..., T, K)``.

    Whitened once per state: with ``W_k = U_k⁻¹`` the residual ``W_k (y_t - A_k x_t - b_k)`` is
    ``[W_k, -W_k A_k, -W_k b_k] [y_t; x_t; 1]``, so all ``K`` whitened residuals of all steps
    come out of *one* matrix product ``(T, D + L D + 1) x (D + L D + 1, K D)`` (and so does the
    gradient): no per-step solve, no per-state loop.

    Args:
        params: the :class:`ARParams`, batch axes ``(...)`` broadcasting with the data's.
        observations: shape ``(..., T, D)``, ``y_t`` (finite: replace missing values first).
        lags: shape ``(..., T, L D)``, ``x_t`` (:func:`lag_matrix`).

    Returns:
        Shape ``(..., T, K)``, batch axes broadcast.
    """
    A, b, U = params
    K, D = A.shape[-3], A.shape[-2]
    eye = jnp.broadcast_to(jnp.eye(D, dtype=U.dtype), U.shape)
    whiten = solve_lower(U, eye)  # (..., K, D, D): U_k⁻¹
    blocks = [whiten, -(whiten @ A), -(whiten @ b[..., None])]
    batch = jnp.broadcast_shapes(*(block.shape[:-3] for block in blocks))  # params may differ
    rows = jnp.concatenate([jnp.broadcast_to(m, batch + m.shape[-3:]) for m in blocks], axis=-1)
    rows = rows.reshape(rows.shape[:-3] + (K * D, rows.shape[-1]))  # (..., K D, D + L D + 1)
    y = jnp.asarray(observations)
    x = jnp.asarray(lags)
    shape = jnp.broadcast_shapes(y.shape[:-1], x.shape[:-1])
    ones = jnp.ones(shape + (1,), jnp.result_type(y, x))
    inputs = jnp.concatenate(
        [
            jnp.broadcast_to(y, shape + y.shape[-1:]),
            jnp.broadcast_to(x, shape + x.shape[-1:]),
            ones,
        ],
        axis=-1,
    )
    resid = inputs @ jnp.swapaxes(rows, -1, -2)  # (..., T, K D)
    resid = resid.reshape(resid.shape[:-1] + (K, D))
    log_norm = 0.5 * chol_logdet(U) + 0.5 * D * _LOG_2PI  # (..., K)
    return -0.5 * jnp.sum(resid * resid, axis=-1) - log_norm[..., None, :]

r"""The matrix-normal inverse-Wishart (MNIW) conjugate update of linear-Gaussian regressions.

A regression ``y = W x + noise``, ``noise ~ N(0, Σ)``, with ``W`` of shape ``(D, P)`` (an AR
matrix and bias, ``W = [A, b]`` with ``x = [lags; 1]``), has the conjugate prior

.. math::

    \Sigma \sim \mathcal{IW}(\nu_0, S_0), \qquad
    W \mid \Sigma \sim \mathcal{MN}(M_0, \Sigma, \Lambda_0^{-1})

(row covariance ``Σ``, column covariance ``Λ_0⁻¹``). Given weighted sufficient statistics
``XX = Σ w x xᵀ``, ``YX = Σ w y xᵀ``, ``YY = Σ w y yᵀ`` and ``n = Σ w``, the posterior is MNIW
with

.. math::

    \Lambda_n = \Lambda_0 + XX, \quad M_n = (M_0 \Lambda_0 + YX)\Lambda_n^{-1}, \quad
    S_n = S_0 + YY + M_0 \Lambda_0 M_0^\top - M_n \Lambda_n M_n^\top, \quad \nu_n = \nu_0 + n.

Draws: ``Σ`` by the Bartlett decomposition in square-root form (``Σ = L_S A^{-T} A^{-1}
L_S^\top`` with ``S = L_S L_S^\top`` and ``A`` lower triangular, ``A_ii² ~ χ²(ν - i)``,
``A_ij ~ N(0, 1)``), then ``W = M + chol(Σ) Z L_Λ^{-1}`` with ``Λ = L_Λ L_Λ^\top`` and an
independent standard normal ``Z``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.linalg import cholesky, solve_lower, solve_lower_transpose, tria

__all__ = [
    "MNIWParams",
    "RegressionStats",
    "grouped_regression_stats",
    "mniw_posterior",
    "regression_stats",
    "sample_mniw",
]


class MNIWParams(NamedTuple):
    """Matrix-normal inverse-Wishart parameters; ``...`` are batch axes (e.g. the K states).

    Attributes:
        mean: shape ``(..., D, P)``, ``M``: the mean of ``W``.
        column_precision: shape ``(..., P, P)``, ``Λ``: the inverse column covariance of ``W``.
        df: shape ``(...)``, ``ν > D - 1``: the inverse-Wishart degrees of freedom.
        scale: shape ``(..., D, D)``, ``S``: the inverse-Wishart scale (``E[Σ] = S / (ν - D - 1)``).
    """

    mean: jax.Array
    column_precision: jax.Array
    df: jax.Array
    scale: jax.Array


class RegressionStats(NamedTuple):
    """Weighted sufficient statistics of a regression ``y ~ W x``, per group (state).

    Attributes:
        xx: shape ``(..., P, P)``, ``Σ_t w_t x_t x_tᵀ``.
        yx: shape ``(..., D, P)``, ``Σ_t w_t y_t x_tᵀ``.
        yy: shape ``(..., D, D)``, ``Σ_t w_t y_t y_tᵀ``.
        count: shape ``(...)``, ``Σ_t w_t``.
    """

    xx: jax.Array
    yx: jax.Array
    yy: jax.Array
    count: jax.Array


def regression_stats(inputs, outputs, weights) -> RegressionStats:
    """Sufficient statistics of ``outputs ~ W inputs`` for each of ``K`` weightings.

    Args:
        inputs: shape ``(N, P)``, ``x_t`` (append a column of ones for a bias).
        outputs: shape ``(N, D)``, ``y_t``.
        weights: shape ``(N, K)``, ``w_{t,k}`` (a one-hot state times a validity mask).

    Returns:
        :class:`RegressionStats` with a leading ``K`` axis.
    """
    x, y, w = (jnp.asarray(a) for a in (inputs, outputs, weights))
    w = w.astype(x.dtype)
    wx = w[:, :, None] * x[:, None, :]  # (N, K, P)
    return RegressionStats(
        xx=jnp.einsum("nkp,nq->kpq", wx, x),
        yx=jnp.einsum("nkp,nd->kdp", wx, y),
        yy=jnp.einsum("nk,nd,ne->kde", w, y, y),
        count=w.sum(0),
    )


_CHUNK = 8192  # frames per chunk of grouped_regression_stats: bounds its (chunk, Q, Q) products


def grouped_regression_stats(inputs, outputs, groups, num_groups, mask=None) -> RegressionStats:
    """:func:`regression_stats` with one-hot weights, in ``O(N Q^2)`` instead of ``O(N K Q^2)``.

    Each frame belongs to one group (a state), so the statistics are segment sums of the
    frames' outer products ``[x; y][x; y]ᵀ`` (``Q = P + D``), accumulated over chunks of
    frames so that memory stays bounded whatever ``N``.

    Args:
        inputs: shape ``(N, P)``.
        outputs: shape ``(N, D)``.
        groups: int, shape ``(N,)``, values in ``[0, K)``.
        num_groups: ``K``.
        mask: bool, shape ``(N,)``, True for the frames that count, or None.

    Returns:
        :class:`RegressionStats` with a leading ``K`` axis.
    """
    x, y = jnp.asarray(inputs), jnp.asarray(outputs)
    u = jnp.concatenate([x, y], axis=-1)
    N, Q = u.shape
    P = x.shape[-1]
    weight = jnp.ones(N, u.dtype) if mask is None else jnp.asarray(mask).astype(u.dtype)
    pad = -N % _CHUNK if N > _CHUNK else 0
    chunk = _CHUNK if N > _CHUNK else N
    u = jnp.concatenate([u, jnp.zeros((pad, Q), u.dtype)]).reshape(-1, chunk, Q)
    weight = jnp.concatenate([weight, jnp.zeros(pad, u.dtype)]).reshape(-1, chunk)
    g = jnp.concatenate([jnp.asarray(groups), jnp.zeros(pad, jnp.int32)]).reshape(-1, chunk)

    def add(total, inputs):
        u_c, w_c, g_c = inputs
        wu = u_c * w_c[:, None]
        outer = (wu[:, :, None] * u_c[:, None, :]).reshape(chunk, Q * Q)
        sums = jax.ops.segment_sum(outer, g_c, num_segments=num_groups)
        counts = jax.ops.segment_sum(w_c, g_c, num_segments=num_groups)
        return (total[0] + sums, total[1] + counts), None

    zeros = (jnp.zeros((num_groups, Q * Q), u.dtype), jnp.zeros(num_groups, u.dtype))
    (sums, counts), _ = jax.lax.scan(add, zeros, (u, weight, g))
    S = sums.reshape(num_groups, Q, Q)
    return RegressionStats(xx=S[:, :P, :P], yx=S[:, P:, :P], yy=S[:, P:, P:], count=counts)


def mniw_posterior(prior: MNIWParams, stats: RegressionStats) -> MNIWParams:
    """The conjugate posterior of an MNIW prior given regression statistics.

    Args:
        prior: :class:`MNIWParams`, batch axes broadcasting with ``stats``'s.
        stats: :class:`RegressionStats`.

    Returns:
        The posterior :class:`MNIWParams` (batch axes broadcast).
    """
    M0, Lam0, nu0, S0 = prior
    Lam = Lam0 + stats.xx
    chol = cholesky(Lam)
    rhs = M0 @ Lam0 + stats.yx  # (..., D, P)
    # M = rhs Λ⁻¹, i.e. Mᵀ = Λ⁻¹ rhsᵀ
    M = jnp.swapaxes(
        solve_lower_transpose(chol, solve_lower(chol, jnp.swapaxes(rhs, -1, -2))), -1, -2
    )
    S = S0 + stats.yy + M0 @ Lam0 @ jnp.swapaxes(M0, -1, -2) - M @ Lam @ jnp.swapaxes(M, -1, -2)
    S = 0.5 * (S + jnp.swapaxes(S, -1, -2))
    return MNIWParams(M, Lam, nu0 + stats.count, S)


def _bartlett(key, df, dim, dtype, batch):
    """Lower-triangular Bartlett factors ``A`` with ``A Aᵀ ~ Wishart(df, I)``."""
    chi_key, normal_key = jax.random.split(key)
    shape = jnp.asarray(df)[..., None] - jnp.arange(dim)  # ν - i, i = 0..D-1
    shape = jnp.broadcast_to(shape, batch + (dim,))
    diag = jnp.sqrt(2.0 * jax.random.gamma(chi_key, shape.astype(dtype) / 2.0, dtype=dtype))
    normal = jax.random.normal(normal_key, batch + (dim, dim), dtype)
    return jnp.tril(normal, -1) + diag[..., None] * jnp.eye(dim, dtype=dtype)


def sample_mniw(key, params: MNIWParams):
    """Draw ``(W, chol Σ)`` from matrix-normal inverse-Wishart distributions.

    Args:
        key: a ``jax.random`` key.
        params: :class:`MNIWParams` with batch axes ``(...)``.

    Returns:
        ``(W, scale_tril)``: shapes ``(..., D, P)`` and ``(..., D, D)``, ``scale_tril`` the
        lower-triangular factor of ``Σ``.
    """
    M, Lam, nu, S = params
    D, P = M.shape[-2:]
    batch = jnp.broadcast_shapes(M.shape[:-2], Lam.shape[:-2], jnp.shape(nu), S.shape[:-2])
    dtype = jnp.result_type(M, Lam, S, float)
    wishart_key, normal_key = jax.random.split(key)
    A = _bartlett(wishart_key, nu, D, dtype, batch)
    eye = jnp.broadcast_to(jnp.eye(D, dtype=dtype), batch + (D, D))
    A_inv = solve_lower(A, eye)
    chol_S = jnp.broadcast_to(cholesky(S), batch + (D, D))
    scale_tril = tria(chol_S @ jnp.swapaxes(A_inv, -1, -2))  # Σ = (L_S A⁻ᵀ)(L_S A⁻ᵀ)ᵀ
    Z = jax.random.normal(normal_key, batch + (D, P), dtype)
    chol_Lam = jnp.broadcast_to(cholesky(Lam), batch + (P, P))
    # Z L_Λ⁻¹ = (L_Λ⁻ᵀ Zᵀ)ᵀ has column covariance Λ⁻¹
    noise = jnp.swapaxes(solve_lower_transpose(chol_Lam, jnp.swapaxes(Z, -1, -2)), -1, -2)
    return jnp.broadcast_to(M, batch + (D, P)) + scale_tril @ noise, scale_tril

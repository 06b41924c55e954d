"""Square-root linear algebra: QR-based triangularization and triangular solves (pure JAX).

Square-root filters never form ``P - K S Kᵀ``. They stack the factors of a sum of covariances
side by side, ``[A_1, A_2, ...]`` with ``A_i A_iᵀ`` the terms, and *triangularize*: ``tria(A)``
is the lower-triangular ``L`` with ``L Lᵀ = A Aᵀ``, read off a QR decomposition of ``Aᵀ``.

``tria`` carries its own derivative. JAX's QR derivative needs a full-rank, tall input, but
square-root filters meet rank-deficient stacks (a state with exactly zero process noise, an
observation that is missing). The derivative used here is the one of the Cholesky factor of
``A Aᵀ`` with a pseudo-inverse in place of ``L⁻¹``: exact where ``L`` is invertible, finite
and zero along the null directions where it is not.
"""

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = ["chol_logdet", "safe_solve_lower", "solve_lower", "tria"]


def _tria_and_q(a):
    n, m = a.shape[-2], a.shape[-1]
    if m < n:  # pad with zero columns so that QR of the transpose is tall
        pad = jnp.zeros(a.shape[:-1] + (n - m,), a.dtype)
        a = jnp.concatenate([a, pad], axis=-1)
    q, r = jnp.linalg.qr(jnp.swapaxes(a, -1, -2))  # a.T = q r, q (m, n), r (n, n)
    sign = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(a.dtype)
    lower = jnp.swapaxes(r, -1, -2) * sign[..., None, :]
    return lower, q * sign[..., None, :], a


@jax.custom_jvp
def tria(a: jax.Array) -> jax.Array:
    """Lower-triangular square root of ``a aᵀ``, through a QR decomposition of ``aᵀ``.

    Args:
        a: shape ``(..., n, m)``, any ``m`` (wide stacks of square-root factors are typical).

    Returns:
        Shape ``(..., n, n)``: lower triangular ``L`` with a non-negative diagonal and
        ``L Lᵀ = a aᵀ``.
    """
    return _tria_and_q(a)[0]


@tria.defjvp
def _tria_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    lower, q, a_padded = _tria_and_q(a)
    if da.shape[-1] < a_padded.shape[-1]:
        pad = jnp.zeros(da.shape[:-1] + (a_padded.shape[-1] - da.shape[-1],), da.dtype)
        da = jnp.concatenate([da, pad], axis=-1)
    # With a = L qᵀ, d(a aᵀ) = B Lᵀ + L Bᵀ for B = da q. The lower-triangular dL is B - L Ω
    # with Ω skew-symmetric chosen to cancel the strictly upper part of B.
    b = da @ q
    return lower, b - lower @ _skew_for_tril(lower, b)


def _skew_for_tril(lower, b):
    """Skew ``Ω`` with ``(L Ω)_ij = B_ij`` for ``i < j``, by forward substitution over rows.

    Where a pivot ``L_ii`` is (numerically) zero, row ``i`` of ``Ω`` is set to zero. For an
    invertible ``L`` this is the Cholesky derivative; for a singular one it still gives a
    ``dL`` with ``dL Lᵀ + L dLᵀ = d(a aᵀ)`` wherever a lower-triangular derivative exists.
    """
    n = lower.shape[-1]
    diag = jnp.diagonal(lower, axis1=-2, axis2=-1)
    scale = jnp.max(jnp.abs(diag), axis=-1, keepdims=True)
    zero = jnp.abs(diag) <= jnp.finfo(lower.dtype).eps * n * scale
    safe_diag = jnp.where(zero, 1.0, diag)
    cols = jnp.arange(n)

    def row(i, upper):
        l_i = lower[..., i, :]  # (..., n)
        rhs = b[..., i, :] - jnp.einsum("...k,...kj->...j", l_i, upper)
        new = jnp.where((cols > i) & ~zero[..., i, None], rhs / safe_diag[..., i, None], 0.0)
        return upper.at[..., i, :].set(new)

    upper = jax.lax.fori_loop(0, n, row, jnp.zeros_like(b))
    return upper - jnp.swapaxes(upper, -1, -2)


def solve_lower(lower: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``L x = b`` for lower-triangular ``L``.

    Args:
        lower: shape ``(n, n)``, lower triangular and invertible.
        b: shape ``(n,)`` or ``(n, k)``.

    Returns:
        ``L⁻¹ b``, shape of ``b``.
    """
    return solve_triangular(lower, b, lower=True)


def safe_solve_lower(lower: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``L x = b`` with a pseudo-inverse: components on a (numerically) zero pivot are 0.

    Args:
        lower: shape ``(..., n, n)``, lower triangular, possibly singular.
        b: shape ``(..., n, k)``.

    Returns:
        Shape ``(..., n, k)``. Where every pivot of ``L`` is nonzero this is ``L⁻¹ b``.
    """
    n = lower.shape[-1]
    diag = jnp.diagonal(lower, axis1=-2, axis2=-1)
    scale = jnp.max(jnp.abs(diag), axis=-1, keepdims=True)
    tol = jnp.finfo(lower.dtype).eps * n * scale
    zero = jnp.abs(diag) <= tol
    eye = jnp.eye(n, dtype=lower.dtype)
    lower_safe = jnp.where(zero[..., :, None], eye, lower)
    b_safe = jnp.where(zero[..., :, None], 0.0, b)
    x = solve_triangular(lower_safe, b_safe, lower=True)
    return jnp.where(zero[..., :, None], 0.0, x)


def chol_logdet(lower: jax.Array) -> jax.Array:
    """``log det(L Lᵀ)`` from a triangular factor.

    Args:
        lower: shape ``(..., n, n)``, triangular with nonzero diagonal.

    Returns:
        Shape ``(...)``.
    """
    return 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(lower, axis1=-2, axis2=-1))), axis=-1)

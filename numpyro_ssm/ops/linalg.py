"""Square-root linear algebra: QR-based triangularization and triangular solves (pure JAX).

Square-root filters never form ``P - K S Kᵀ``. They stack the factors of a sum of covariances
side by side, ``[A_1, A_2, ...]`` with ``A_i A_iᵀ`` the terms, and *triangularize*: ``tria(A)``
is the lower-triangular ``L`` with ``L Lᵀ = A Aᵀ``, read off a QR decomposition of ``Aᵀ``.

``tria`` carries its own derivative. JAX's QR derivative needs a full-rank, tall input, but
square-root filters meet rank-deficient stacks (a state with exactly zero process noise, an
observation that is missing). The derivative used here is the one of the Cholesky factor of
``A Aᵀ`` with a pseudo-inverse in place of ``L⁻¹``: exact where ``L`` is invertible, finite
and zero along the null directions where it is not.

**No batched LAPACK.** ``tria`` of one matrix (a sequential filter's step) is Householder
reflections unrolled in Python up to ``_STEP_UNROLL_MAX_ROWS`` rows, where the arithmetic fuses
with its neighbours and a LAPACK call would cost more than the flops, and one LAPACK QR above
that (the fused forms live in :mod:`numpyro_ssm.ops._fusion`; the thresholds are measured in
``docs/performance.md``, "Why the code is shaped this way"). Under ``vmap`` (``custom_vmap``)
the same matrix is unrolled elementwise over the batch up to ``_UNROLL_MAX_ROWS`` rows, and
above that runs the reflections in a ``lax.fori_loop`` over full-width masked rows, as an
explicitly batched stack always does (the associative scans' combine, traced once per level:
one loop body keeps compilation short); never a batched LAPACK call. ``tria``'s derivative
needs the orthogonal factor too: for one matrix the unrolled reflections or the LAPACK QR
return it, and the part linear in the tangent is a few products (no loop, in the forward or the
backward pass); a batched stack accumulates it in the loop on an identity stacked below the
input. :func:`solve_lower` and :func:`solve_lower_transpose` unroll up to ``_UNROLL_MAX_ROWS``
rows and make one LAPACK call above (the loop under ``vmap``); :func:`cholesky` (for
covariances given as ``*_cov``) unrolls or loops.

The point is not only speed. On jaxlib 0.10.2's CPU runtime a *batched* LAPACK call fans out
over XLA's own thread pool, and once every worker sits in such a call waiting for its share, the
program waits forever (seen on a 2-core machine: the parallel filter's gradient never returned,
with the workers parked in ``jax::ParallelBatchMap``).
"""

import functools

import jax
import jax.numpy as jnp

from numpyro_ssm.ops._fusion import (
    householder_tria,
    householder_tria_and_q,
    matmul_small,
    matmul_stack,
    sum_small,
)

__all__ = [
    "chol_logdet",
    "cholesky",
    "matmul_small",
    "matmul_stack",
    "qr_solve",
    "safe_solve_lower",
    "solve_lower",
    "solve_lower_transpose",
    "tria",
]

# One matrix of at most this many rows is triangularized by unrolled Householder reflections,
# a taller one by one LAPACK QR (see ``tria``).
_STEP_UNROLL_MAX_ROWS = 4
# Vmapped stacks, solves and Cholesky factors of at most this many rows are unrolled.
_UNROLL_MAX_ROWS = 16


def _pad_columns(a):
    n, m = a.shape[-2], a.shape[-1]
    if m >= n:
        return a
    return jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (n - m,), a.dtype)], axis=-1)


def _reflect_loop(a, n):
    """Householder reflections from the right, defined by rows ``0..n-1``, in a ``fori_loop``.

    Reflection ``i`` zeroes row ``i`` right of column ``i`` and is applied to every row of
    ``a`` (rows below ``n`` are carried along, e.g. an identity that accumulates ``Q``). Column
    ``i`` is then flipped so that the diagonal is ``>= 0``. One loop body over full-width rows
    (columns left of ``i`` masked), so a batched stack compiles once rather than unrolled.
    """
    cols = jnp.arange(a.shape[-1])

    def reflect(i, a):
        row = jnp.take(a, i, axis=-2)  # (..., m)
        x = jnp.where(cols >= i, row, 0.0)
        x_i = jnp.take(row, i, axis=-1)
        norm = jnp.sqrt(jnp.sum(x * x, axis=-1))
        sign = jnp.where(x_i < 0, -1.0, 1.0).astype(a.dtype)
        v = x + jnp.where(cols == i, (sign * norm)[..., None], 0.0)
        vv = norm * (norm + jnp.abs(x_i))  # = vᵀv / 2
        scale = jnp.where(vv > 0, 1.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        proj = jnp.sum(a * v[..., None, :], axis=-1, keepdims=True)
        a = a - proj * (scale[..., None, None] * v[..., None, :])
        flip = jnp.where(norm > 0, -sign, 1.0)[..., None, None]
        return a * jnp.where(cols == i, flip, 1.0)

    return jax.lax.fori_loop(0, n, reflect, a)


def _householder_tria_loop(a):
    """``tria`` by reflections in a loop: for batched stacks and tall matrices."""
    a = _pad_columns(jnp.asarray(a))
    n = a.shape[-2]
    return jnp.tril(_reflect_loop(a, n)[..., :, :n])


def _tria_and_q(a):
    """``(L, q, a_padded)`` with ``a_padded = L qᵀ`` and ``q`` (m, n) orthonormal columns.

    The reflections that triangularize ``a`` also act on an identity stacked below it, which
    accumulates the orthogonal factor (no LAPACK; see the module docstring).
    """
    a = _pad_columns(jnp.asarray(a))
    n, m = a.shape[-2], a.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(m, dtype=a.dtype), a.shape[:-2] + (m, m))
    out = _reflect_loop(jnp.concatenate([a, eye], axis=-2), n)
    return jnp.tril(out[..., :n, :n]), out[..., n:, :n], a


def _unbatched(fn, *args):
    """A ``custom_vmap`` rule's answer when no operand is batched: ``fn(*args)``, unbatched.

    JAX calls a rule so when it differentiates the call forward inside a vmapped program: the
    JVP of a ``custom_vmap`` call batches its primals and tangents apart, and the rule's answer
    is then differentiated. ``jax.hessian`` of a filter meets it, because a scan's reverse pass
    keeps the LAPACK call without the ``custom_jvp`` around it. ``fn`` is the differentiable
    form (``tria``, ``_lapack_tria_and_q``, ``_lapack_solve``: their own derivatives, not
    LAPACK's). Claiming a batched output here broke second derivatives above
    ``_STEP_UNROLL_MAX_ROWS`` rows.
    """
    out = fn(*args)
    return out, jax.tree_util.tree_map(lambda _: False, out)


@jax.custom_jvp
def _lapack_tria_and_q(a):
    """``(L, q)`` of :func:`_tria_and_q` for one 2-D matrix by one LAPACK QR (``q`` reduced).

    Under ``vmap``, the reflection loop (no batched LAPACK); differentiated, which only second
    derivatives of ``tria`` do, as the loop.
    """
    return _lapack_tria_and_q_call(a)


@_lapack_tria_and_q.defjvp
def _lapack_tria_and_q_jvp(primals, tangents):
    return jax.jvp(lambda a: _tria_and_q(a)[:2], primals, tangents)


@jax.custom_batching.custom_vmap
def _lapack_tria_and_q_call(a):
    q, r = jnp.linalg.qr(_pad_columns(a).T)  # (m, n) orthonormal columns, (n, n) upper
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(r.dtype)
    return (r * sign[:, None]).T, q * sign[None, :]


@_lapack_tria_and_q_call.def_vmap
def _lapack_tria_and_q_vmap(axis_size, in_batched, a):
    if not in_batched[0]:
        return _unbatched(_lapack_tria_and_q, a)
    return _tria_and_q(a)[:2], (True, True)


@jax.custom_batching.custom_vmap
def _lapack_tria(a):
    """``tria`` of one 2-D matrix by one LAPACK QR; under ``vmap``, unrolled or the loop."""
    r = jnp.linalg.qr(_pad_columns(a).T, mode="r")  # (n, n) upper
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(r.dtype)
    return (r * sign[:, None]).T


@_lapack_tria.def_vmap
def _lapack_tria_vmap(axis_size, in_batched, a):
    if not in_batched[0]:
        return _unbatched(tria, a)
    if a.shape[-2] <= _UNROLL_MAX_ROWS:
        return householder_tria(a), True
    return _householder_tria_loop(a), True


@jax.custom_batching.custom_vmap
def _lapack_solve_lower(lower, b):
    return jax.lax.linalg.triangular_solve(lower, b, left_side=True, lower=True)


@jax.custom_batching.custom_vmap
def _lapack_solve_lower_transpose(lower, b):
    return jax.lax.linalg.triangular_solve(lower, b, left_side=True, lower=True, transpose_a=True)


def _solve_vmap(transpose):
    """Under vmap the solves substitute in a batched loop (unbatched operands broadcast in it)."""

    def rule(axis_size, in_batched, lower, b):
        if not any(in_batched):
            return _unbatched(lambda lower, b: _lapack_solve(lower, b, transpose), lower, b)
        return _substitute(lower, b, vector=False, transpose=transpose), True

    return rule


_lapack_solve_lower.def_vmap(_solve_vmap(transpose=False))
_lapack_solve_lower_transpose.def_vmap(_solve_vmap(transpose=True))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _lapack_solve(lower, b, transpose):
    """``L⁻¹ b`` (``L⁻ᵀ b``) for one 2-D ``L`` and 2-D ``b`` by one LAPACK call.

    Its derivative solves with :func:`_substitute` (plain ``jnp``, so reverse mode can transpose
    it; a ``custom_vmap`` call cannot be transposed).
    """
    return (_lapack_solve_lower_transpose if transpose else _lapack_solve_lower)(lower, b)


@_lapack_solve.defjvp
def _lapack_solve_jvp(transpose, primals, tangents):
    (lower, b), (d_lower, d_b) = primals, tangents
    x = _lapack_solve(lower, b, transpose)
    d_mat = jnp.swapaxes(d_lower, -1, -2) if transpose else d_lower
    return x, _substitute(lower, d_b - d_mat @ x, vector=False, transpose=transpose)


@jax.custom_jvp
def tria(a: jax.Array) -> jax.Array:
    """Lower-triangular square root of ``a aᵀ``, through a QR decomposition of ``aᵀ``.

    Args:
        a: shape ``(..., n, m)``, any ``m`` (wide stacks of square-root factors are typical).

    Returns:
        Shape ``(..., n, n)``: lower triangular ``L`` with a non-negative diagonal and
        ``L Lᵀ = a aᵀ``.

    One matrix of up to ``_STEP_UNROLL_MAX_ROWS`` rows is unrolled, a taller one is one LAPACK
    QR; a stack of matrices runs the reflections in a loop (module docstring).
    """
    if a.ndim == 2 and a.shape[-2] <= _STEP_UNROLL_MAX_ROWS:
        return householder_tria(a)
    if a.ndim == 2:
        return _lapack_tria(a)
    return _householder_tria_loop(a)


@tria.defjvp
def _tria_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    # One matrix (a sequential filter's step) gets no loop: a loop inside a scan's body, and
    # its transpose in the backward pass, cost far more than their arithmetic.
    single = a.ndim == 2
    if single and a.shape[-2] <= _STEP_UNROLL_MAX_ROWS:
        lower, q = householder_tria_and_q(a)
        matmul = matmul_small
    elif single:
        lower, q = _lapack_tria_and_q(a)
        matmul = jnp.matmul
    else:
        lower, q, _ = _tria_and_q(a)
        matmul = jnp.matmul
    if da.shape[-1] < q.shape[-2]:
        pad = jnp.zeros(da.shape[:-1] + (q.shape[-2] - da.shape[-1],), da.dtype)
        da = jnp.concatenate([da, pad], axis=-1)
    # With a = L qᵀ, d(a aᵀ) = B Lᵀ + L Bᵀ for B = da q. The lower-triangular dL is B - L Ω
    # with Ω skew-symmetric chosen to cancel the strictly upper part of B.
    b = matmul(da, q)
    omega = _skew_by_inverse(lower, b, matmul) if single else _skew_for_tril(lower, b)
    return lower, b - matmul(lower, omega)


def _zero_pivots(lower):
    """``(..., n)``: True where a pivot is numerically zero, ``|L_ii| <= eps n max_j |L_jj|``."""
    n = lower.shape[-1]
    diag = jnp.abs(jnp.diagonal(lower, axis1=-2, axis2=-1))
    return diag <= jnp.finfo(lower.dtype).eps * n * jnp.max(diag, axis=-1, keepdims=True)


def _skew_by_inverse(lower, b, matmul):
    """:func:`_skew_for_tril` of one matrix by an explicit inverse of ``L``: no loop.

    The strictly upper part of ``Ω`` is the one of ``L⁻¹ B`` (column ``j`` of ``L U = B`` above
    the diagonal only involves the leading ``j × j`` block of ``L``). The inverse is primal
    work (unrolled substitution up to ``_STEP_UNROLL_MAX_ROWS`` rows, one LAPACK solve above);
    the part linear in ``B`` is one product. Zero pivots as :func:`safe_solve_lower`.
    """
    n = lower.shape[-1]
    zero = _zero_pivots(lower)
    eye = jnp.eye(n, dtype=lower.dtype)
    safe = jnp.where(zero[:, None], eye, lower)
    # above the unrolled size one LAPACK solve (the loop under vmap): the unrolled substitution
    # of up to 16 rows made the S = 8 nonlinear filters' value+grad 1.5 times slower
    small = n <= _STEP_UNROLL_MAX_ROWS
    inverse = solve_lower(safe, eye) if small else _lapack_solve(safe, eye, False)
    upper = jnp.triu(matmul(inverse, jnp.where(zero[:, None], 0.0, b)), 1)
    return upper - upper.T


def _skew_for_tril(lower, b):
    """Skew ``Ω`` with ``(L Ω)_ij = B_ij`` for ``i < j``, by forward substitution over rows.

    Where a pivot ``L_ii`` is (numerically) zero, row ``i`` of ``Ω`` is set to zero. For an
    invertible ``L`` this is the Cholesky derivative; for a singular one it still gives a
    ``dL`` with ``dL Lᵀ + L dLᵀ = d(a aᵀ)`` wherever a lower-triangular derivative exists.
    """
    n = lower.shape[-1]
    diag = jnp.diagonal(lower, axis1=-2, axis2=-1)
    zero = _zero_pivots(lower)
    safe_diag = jnp.where(zero, 1.0, diag)
    cols = jnp.arange(n)

    def row(i, upper):
        l_i = lower[..., i, :]  # (..., n)
        rhs = b[..., i, :] - jnp.einsum("...k,...kj->...j", l_i, upper)
        new = jnp.where((cols > i) & ~zero[..., i, None], rhs / safe_diag[..., i, None], 0.0)
        return upper.at[..., i, :].set(new)

    upper = jax.lax.fori_loop(0, n, row, jnp.zeros_like(b))
    return upper - jnp.swapaxes(upper, -1, -2)


def _substitute(lower, b, vector, transpose):
    """Forward (or, ``transpose``, back) substitution in a ``lax.fori_loop``, batched."""
    n = lower.shape[-1]
    mat = jnp.swapaxes(lower, -1, -2) if transpose else lower
    rhs = b[..., None] if vector else b
    x = jnp.zeros(jnp.broadcast_shapes(lower.shape[:-2], rhs.shape[:-2]) + rhs.shape[-2:], b.dtype)

    def step(k, x):
        i = n - 1 - k if transpose else k
        row = jnp.take(mat, i, axis=-2)  # (..., n); entries of x not yet solved are 0
        acc = jnp.take(rhs, i, axis=-2) - jnp.sum(row[..., :, None] * x, axis=-2)
        value = acc / jnp.take(row, i, axis=-1)[..., None]
        return x.at[..., i, :].set(value)

    x = jax.lax.fori_loop(0, n, step, x)
    return x[..., 0] if vector else x


def _solve(lower, b, transpose):
    """``L⁻¹ b`` (or ``L⁻ᵀ b``), by the path that fits the shapes.

    Unrolled for one small matrix, one LAPACK call for one larger matrix and a 2-D right-hand
    side, else :func:`_substitute`.
    """
    n = lower.shape[-1]
    vector = b.ndim == lower.ndim - 1
    if lower.ndim > 2:
        return _substitute(lower, b, vector, transpose)
    if n > _UNROLL_MAX_ROWS:
        rhs = b[..., None] if vector else b
        if rhs.ndim > 2:
            return _substitute(lower, b, vector, transpose)
        x = _lapack_solve(lower, rhs, transpose)
        return x[..., 0] if vector else x
    # one small matrix: forward (back) substitution unrolled into fused arithmetic
    mat = lower.T if transpose else lower
    rhs = b[..., None] if vector else b
    rows = [None] * n
    for i in reversed(range(n)) if transpose else range(n):
        acc = rhs[..., i, :]
        for j in range(i + 1, n) if transpose else range(i):
            acc = acc - mat[i, j] * rows[j]
        rows[i] = acc / mat[i, i]
    x = jnp.stack(rows, axis=-2)
    return x[..., 0] if vector else x


def solve_lower(lower: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``L x = b`` for lower-triangular ``L``, batched over leading axes.

    Args:
        lower: shape ``(..., n, n)``, lower triangular and invertible.
        b: shape ``(..., n)`` (one fewer axis than ``lower``) or ``(..., n, k)``.

    Returns:
        ``L⁻¹ b``, shape of ``b`` (batch axes broadcast).
    """
    return _solve(lower, b, transpose=False)


def solve_lower_transpose(lower: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``Lᵀ x = b`` for lower-triangular ``L`` (back substitution), batched.

    Args:
        lower: shape ``(..., n, n)``, lower triangular and invertible.
        b: shape ``(..., n)`` (one fewer axis than ``lower``) or ``(..., n, k)``.

    Returns:
        ``L⁻ᵀ b``, shape of ``b`` (batch axes broadcast).
    """
    return _solve(lower, b, transpose=True)


def safe_solve_lower(lower: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``L x = b`` with a pseudo-inverse: components on a (numerically) zero pivot are 0.

    Args:
        lower: shape ``(..., n, n)``, lower triangular, possibly singular.
        b: shape ``(..., n, k)``.

    Returns:
        Shape ``(..., n, k)``. Where every pivot of ``L`` is nonzero this is ``L⁻¹ b``.
    """
    n = lower.shape[-1]
    zero = _zero_pivots(lower)
    eye = jnp.eye(n, dtype=lower.dtype)
    lower_safe = jnp.where(zero[..., :, None], eye, lower)
    b_safe = jnp.where(zero[..., :, None], 0.0, b)
    x = solve_lower(lower_safe, b_safe)
    return jnp.where(zero[..., :, None], 0.0, x)


def qr_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """Solve ``a x = b`` for square ``a`` by Householder QR, batched, without LAPACK.

    ``a = L qᵀ`` with ``L`` lower triangular and ``q`` orthogonal (the reflections of
    :func:`tria`), so ``x = q L⁻¹ b``. Differentiable.

    Args:
        a: shape ``(..., n, n)``, invertible.
        b: shape ``(..., n)`` or ``(..., n, k)``.

    Returns:
        ``a⁻¹ b``, shape of ``b`` (batch axes broadcast).
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    lower, q, _ = _tria_and_q(a)
    vector = b.ndim == a.ndim - 1
    rhs = b[..., None] if vector else b
    x = q @ solve_lower(lower, rhs)
    return x[..., 0] if vector else x


def chol_logdet(lower: jax.Array) -> jax.Array:
    """``log det(L Lᵀ)`` from a triangular factor.

    Args:
        lower: shape ``(..., n, n)``, triangular with nonzero diagonal.

    Returns:
        Shape ``(...)``.
    """
    return 2.0 * sum_small(jnp.log(jnp.abs(jnp.diagonal(lower, axis1=-2, axis2=-1))), axis=-1)


def _cholesky_unrolled(cov):
    """Cholesky–Banachiewicz unrolled in Python: elementwise over any batch axes."""
    n = cov.shape[-1]
    rows = [[None] * n for _ in range(n)]
    for j in range(n):
        acc = cov[..., j, j]
        for k in range(j):
            acc = acc - rows[j][k] * rows[j][k]
        pivot = jnp.sqrt(acc)
        rows[j][j] = pivot
        for i in range(j + 1, n):
            acc = cov[..., i, j]
            for k in range(j):
                acc = acc - rows[i][k] * rows[j][k]
            rows[i][j] = acc / pivot
    zero = jnp.zeros(cov.shape[:-2], cov.dtype)
    return jnp.stack(
        [jnp.stack([rows[i][j] if j <= i else zero for j in range(n)], axis=-1) for i in range(n)],
        axis=-2,
    )


def _cholesky_loop(cov):
    """Column-by-column Cholesky in a ``lax.fori_loop`` (large ``n``), batched."""
    n = cov.shape[-1]
    idx = jnp.arange(n)

    def column(j, lower):
        row_j = jnp.take(lower, j, axis=-2)  # (..., n), zero from column j on
        acc = jnp.take(cov, j, axis=-1) - jnp.sum(lower * row_j[..., None, :], axis=-1)
        pivot = jnp.sqrt(jnp.take(acc, j, axis=-1))[..., None]
        col = jnp.where(idx > j, acc / pivot, jnp.where(idx == j, pivot, 0.0))
        return jnp.where(idx == j, col[..., :, None], lower)

    return jax.lax.fori_loop(0, n, column, jnp.zeros_like(cov))


def cholesky(cov: jax.Array) -> jax.Array:
    """Lower Cholesky factor of a symmetric positive-definite matrix, batched, without LAPACK.

    Unrolled for ``n <= 16`` (elementwise arithmetic over any batch axes), a ``fori_loop`` over
    columns otherwise. Only the lower triangle of ``cov`` is read. Like ``jnp.linalg.cholesky``
    the result has NaN where ``cov`` is not positive definite (with ``validate_args=True``
    NumPyro rejects such input with a clear error first).

    Args:
        cov: shape ``(..., n, n)``.

    Returns:
        Shape ``(..., n, n)``: ``L`` lower triangular with a positive diagonal, ``L Lᵀ = cov``.
    """
    cov = jnp.asarray(cov)
    if cov.shape[-1] <= _UNROLL_MAX_ROWS:
        return _cholesky_unrolled(cov)
    return _cholesky_loop(cov)

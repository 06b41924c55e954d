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
that: unrolled, taller stacks made the step slower and its compilation twice as long (see
:func:`tria`). Under ``vmap`` (``custom_vmap``) the same matrix is unrolled elementwise over the
batch up to ``_UNROLL_MAX_ROWS`` rows, and above that runs the reflections in a
``lax.fori_loop`` over full-width masked rows, as an explicitly batched stack always does (the
associative scans' combine, traced once per level: one loop body keeps compilation short);
never a batched LAPACK call. ``tria``'s derivative needs the orthogonal factor too; the loop
accumulates it on an identity stacked below the input. :func:`solve_lower` and
:func:`solve_lower_transpose` unroll up to ``_UNROLL_MAX_ROWS`` rows and make one LAPACK call
above (the loop under ``vmap``); :func:`cholesky` (for covariances given as ``*_cov``) unrolls
or loops.

The point is not only speed. On jaxlib 0.10.2's CPU runtime a *batched* LAPACK call fans out
over XLA's own thread pool, and once every worker sits in such a call waiting for its share, the
program waits forever (seen on a 2-core machine: the parallel filter's gradient never returned,
with the workers parked in ``jax::ParallelBatchMap``).
"""

import functools

import jax
import jax.numpy as jnp

__all__ = [
    "chol_logdet",
    "cholesky",
    "matmul_small",
    "matmul_stack",
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
# Sums over at most this many entries are unrolled into adds (:func:`_sum_small`).
_UNROLL_MAX_TERMS = 4


def _unrolled_reduce(op, reduce, x, axis, max_terms):
    """``reduce(x, axis=axis)``; along at most ``max_terms`` entries, as ``op`` over the slices.

    XLA fuses the elementwise form with its producers and consumers, while on the CPU each
    reduce op ends a kernel. Inside a sequential step or over a T x K array of an HMM that
    decides the cost (see the callers for the measured gains).
    """
    n = x.shape[axis]
    if n == 0 or n > max_terms:
        return reduce(x, axis=axis)
    out = jax.lax.index_in_dim(x, 0, axis, keepdims=False)
    for i in range(1, n):
        out = op(out, jax.lax.index_in_dim(x, i, axis, keepdims=False))
    return out


def _sum_small(x, axis):
    """``jnp.sum(x, axis)``, unrolled along at most ``_UNROLL_MAX_TERMS`` entries.

    The serial Kalman step at S = 2, D = 1 (rows of at most 4 entries) went from 33 kernels to
    28: value 1.13-1.15 to 0.99-1.0 us/step, value+grad 1.42 to 1.26-1.31 (T = 1e4, float64,
    two runs each). Unrolling sums of up to 16 entries made S = 8 1.05 to 1.1 times slower
    (XLA recomputes fused producers in every slice), and S = 4 did not change.
    """
    return _unrolled_reduce(jnp.add, jnp.sum, x, axis, _UNROLL_MAX_TERMS)


def matmul_small(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` as broadcast products and adds, which XLA fuses with its neighbours.

    On CPU a ``dot`` is its own kernel; inside a sequential step of few-by-few matrices the
    kernel launches, not the flops, set the cost.

    Args:
        a: shape ``(..., n, k)``.
        b: shape ``(..., k, m)``, or ``(..., k)`` for a matrix-vector product.

    Returns:
        Shape ``(..., n, m)`` (or ``(..., n)``).
    """
    if b.ndim == 1:
        return _sum_small(a * b[..., None, :], axis=-1)
    if a.shape[-1] > _UNROLL_MAX_TERMS:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    # column k of a times row k of b, summed: over a stack of matrices this fuses into one
    # kernel, where slicing one broadcast product (``_sum_small``) did not (matmul_stack)
    out = a[..., :, :1] * b[..., :1, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def matmul_stack(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for stacks of small matrices (a time axis, say), outside a sequential loop.

    On the CPU an inner axis of at most ``_UNROLL_MAX_TERMS`` takes :func:`matmul_small`: XLA's
    dot of two (T, 4, 4) stacks cost 0.157 µs per product against 0.006 for the fused sum of
    column-times-row products (T = 1e4, float64; about equal at 2 x 2 and 3 x 3). From an inner
    size of 5 the fused form is no faster than the dot, and at 8 it is 4x slower, so larger
    products stay dots. Other platforms keep the dot (not measured on a GPU).

    Args:
        a: shape ``(..., n, k)``.
        b: shape ``(..., k, m)``.

    Returns:
        Shape ``(..., n, m)``, batch axes broadcast.
    """
    if a.shape[-1] > _UNROLL_MAX_TERMS:
        return a @ b
    return jax.lax.platform_dependent(a, b, cpu=matmul_small, default=jnp.matmul)


def _householder_tria(a):
    """``tria`` by ``n`` Householder reflections acting on the columns, unrolled in Python.

    Reflection ``i`` maps row ``i``'s entries in columns ``i:`` onto column ``i``; rows above
    are already zero there. Not differentiable at rank-deficient inputs (``tria``'s JVP is used).
    """
    a = jnp.asarray(a)
    n = a.shape[-2]
    if a.shape[-1] < n:
        a = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (n - a.shape[-1],), a.dtype)], axis=-1)
    diag = []
    for i in range(n):
        x = a[..., i, i:]
        norm = jnp.sqrt(_sum_small(x * x, axis=-1))
        sign = jnp.where(x[..., 0] < 0, -1.0, 1.0).astype(a.dtype)
        v = jnp.concatenate([(x[..., 0] + sign * norm)[..., None], x[..., 1:]], axis=-1)
        vv = norm * (norm + jnp.abs(x[..., 0]))  # = vᵀv / 2
        scale = jnp.where(vv > 0, 1.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        below = a[..., i + 1 :, i:]
        proj = _sum_small(below * v[..., None, :], axis=-1)[..., None]
        below = below - proj * (scale[..., None, None] * v[..., None, :])
        # the reflected row i is (-sign * norm, 0, ...); flip column i so the diagonal is >= 0
        flip = jnp.where(norm > 0, -sign, 1.0)[..., None, None]
        below = jnp.concatenate([flip * below[..., :1], below[..., 1:]], axis=-1)
        a = a.at[..., i + 1 :, i:].set(below)
        diag.append(norm)
    # Assembled row by row, not with jnp.tril and jnp.eye: XLA hoists those computed masks out
    # of a scan's body into its loop state, and they pushed the scalar Kalman filter's loop
    # past the size XLA compiles whole on the CPU (benchmarks/xla_loops.py). Empty pieces
    # are left out: one broke the batching of tria's custom JVP under vmap.
    zeros = jnp.zeros(a.shape[:-2] + (n,), a.dtype)
    rows = []
    for i in range(n):
        pieces = [a[..., i, :i]] if i else []
        pieces.append(diag[i][..., None])
        if i + 1 < n:
            pieces.append(zeros[..., i + 1 :])
        rows.append(jnp.concatenate(pieces, axis=-1)[..., None, :])
    return jnp.concatenate(rows, axis=-2)


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


@jax.custom_batching.custom_vmap
def _lapack_tria(a):
    """``tria`` of one 2-D matrix by one LAPACK QR; under ``vmap``, unrolled or the loop."""
    r = jnp.linalg.qr(_pad_columns(a).T, mode="r")  # (n, n) upper
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(r.dtype)
    return (r * sign[:, None]).T


@_lapack_tria.def_vmap
def _lapack_tria_vmap(axis_size, in_batched, a):
    if a.shape[-2] <= _UNROLL_MAX_ROWS:
        return _householder_tria(a), True
    return _householder_tria_loop(a), True


@jax.custom_batching.custom_vmap
def _lapack_solve_lower(lower, b):
    return jax.lax.linalg.triangular_solve(lower, b, left_side=True, lower=True)


@jax.custom_batching.custom_vmap
def _lapack_solve_lower_transpose(lower, b):
    return jax.lax.linalg.triangular_solve(lower, b, left_side=True, lower=True, transpose_a=True)


# Under vmap the solves substitute in a batched loop (unbatched operands broadcast in it).
_lapack_solve_lower.def_vmap(
    lambda size, batched, lower, b: (_substitute(lower, b, vector=False, transpose=False), True)
)
_lapack_solve_lower_transpose.def_vmap(
    lambda size, batched, lower, b: (_substitute(lower, b, vector=False, transpose=True), True)
)


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
    QR. Measured on the serial Kalman filter (T = 1e4, float64, µs per step, one process per
    variant) against unrolling up to 16 rows: state dim 2 and 3 are unchanged, their stacks
    being at most 4 rows (LAPACK there was 1.35x and 1.06x slower); state dim 4, value 2.58
    against 2.48; state dim 6, value 4.61 against 3.52 and value+grad 9.6 against 8.5; state
    dim 8, value 6.8 against 4.7, value+grad 13.6 against 12.1, and compiling the value+grad
    3.7 against 1.8 s.
    """
    if a.ndim == 2 and a.shape[-2] <= _STEP_UNROLL_MAX_ROWS:
        return _householder_tria(a)
    if a.ndim == 2:
        return _lapack_tria(a)
    return _householder_tria_loop(a)


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
    diag = jnp.diagonal(lower, axis1=-2, axis2=-1)
    scale = jnp.max(jnp.abs(diag), axis=-1, keepdims=True)
    tol = jnp.finfo(lower.dtype).eps * n * scale
    zero = jnp.abs(diag) <= tol
    eye = jnp.eye(n, dtype=lower.dtype)
    lower_safe = jnp.where(zero[..., :, None], eye, lower)
    b_safe = jnp.where(zero[..., :, None], 0.0, b)
    x = solve_lower(lower_safe, b_safe)
    return jnp.where(zero[..., :, None], 0.0, x)


def chol_logdet(lower: jax.Array) -> jax.Array:
    """``log det(L Lᵀ)`` from a triangular factor.

    Args:
        lower: shape ``(..., n, n)``, triangular with nonzero diagonal.

    Returns:
        Shape ``(...)``.
    """
    return 2.0 * _sum_small(jnp.log(jnp.abs(jnp.diagonal(lower, axis1=-2, axis2=-1))), axis=-1)


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

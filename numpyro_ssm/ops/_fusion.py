"""CPU-fusion forms of small reductions, products and triangularizations (private).

On the CPU, XLA runs every ``dot`` and every ``reduce`` as a kernel of its own, while
elementwise arithmetic fuses with its neighbours. Inside a sequential filter's step, or over the
``T x K`` arrays of an HMM, kernel launches rather than flops set the cost. The functions here
write small sums, products and Householder triangularizations as elementwise arithmetic that
fuses. They compute exactly what their plain ``jnp`` forms compute; only the programs differ.
The measurements behind each size threshold are in ``docs/performance.md`` ("Why the code is
shaped this way").
"""

import jax
import jax.numpy as jnp

__all__ = [
    "householder_tria",
    "householder_tria_and_q",
    "matmul_small",
    "matmul_stack",
    "sum_small",
    "unrolled_reduce",
]

# Sums over at most this many entries are unrolled into adds (:func:`sum_small`).
UNROLL_MAX_TERMS = 4


def unrolled_reduce(op, reduce, x, axis, max_terms):
    """``reduce(x, axis=axis)``; along at most ``max_terms`` entries, as ``op`` over the slices.

    Args:
        op: the binary elementwise form of the reduction (``jnp.add``, ``jnp.maximum``).
        reduce: the reduction (``jnp.sum``, ``jnp.max``), used above ``max_terms``.
        x: the array.
        axis: the axis to reduce.
        max_terms: the longest axis that is unrolled.

    Returns:
        ``x`` reduced along ``axis``.
    """
    n = x.shape[axis]
    if n == 0 or n > max_terms:
        return reduce(x, axis=axis)
    out = jax.lax.index_in_dim(x, 0, axis, keepdims=False)
    for i in range(1, n):
        out = op(out, jax.lax.index_in_dim(x, i, axis, keepdims=False))
    return out


def sum_small(x, axis):
    """``jnp.sum(x, axis)``, unrolled into adds along at most ``UNROLL_MAX_TERMS`` entries.

    Args:
        x: the array.
        axis: the axis to sum.

    Returns:
        ``x`` summed along ``axis``.
    """
    return unrolled_reduce(jnp.add, jnp.sum, x, axis, UNROLL_MAX_TERMS)


def matmul_small(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` as broadcast products and adds, which XLA fuses with its neighbours.

    Args:
        a: shape ``(..., n, k)``.
        b: shape ``(..., k, m)``, or ``(..., k)`` for a matrix-vector product.

    Returns:
        Shape ``(..., n, m)`` (or ``(..., n)``).
    """
    if b.ndim == 1:
        return sum_small(a * b[..., None, :], axis=-1)
    if a.shape[-1] > UNROLL_MAX_TERMS:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    # column k of a times row k of b, summed: over a stack of matrices this fuses into one
    # kernel, where slicing one broadcast product (``sum_small``) did not
    out = a[..., :, :1] * b[..., :1, :]
    for k in range(1, a.shape[-1]):
        out = out + a[..., :, k : k + 1] * b[..., k : k + 1, :]
    return out


def matmul_stack(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for stacks of small matrices (a time axis, say), outside a sequential loop.

    On the CPU an inner axis of at most ``UNROLL_MAX_TERMS`` takes :func:`matmul_small`; larger
    products, and other platforms, keep the dot.

    Args:
        a: shape ``(..., n, k)``.
        b: shape ``(..., k, m)``.

    Returns:
        Shape ``(..., n, m)``, batch axes broadcast.
    """
    if a.shape[-1] > UNROLL_MAX_TERMS:
        return a @ b
    return jax.lax.platform_dependent(a, b, cpu=matmul_small, default=jnp.matmul)


def householder_tria(a):
    """Lower-triangular ``L`` with ``L Lᵀ = a aᵀ`` by Householder reflections, unrolled.

    Reflection ``i`` maps row ``i``'s entries in columns ``i:`` onto ``+norm`` in column ``i``;
    rows above are already zero there. Elementwise over any leading axes. Not differentiable
    at rank-deficient inputs (:func:`numpyro_ssm.ops.linalg.tria` carries the derivative).

    The reflection vector is ``v = x - norm e_0``, with its first entry by Parlett's formula
    ``-|x_{1:}|² / (x_0 + norm)`` where ``x_0 > 0``, so that neither branch cancels and no sign
    decides anything after it. The textbook choice ``v = x + sign(x_0) norm e_0`` followed by a
    column flip by ``-sign(x_0)`` broke under ``jit`` when ``x_0`` was rounding noise around 0:
    XLA recomputed ``x_0`` in two fusions (with and without a fused multiply-add), the two signs
    disagreed and a column of the factor came out negated.

    Args:
        a: shape ``(..., n, m)``, small ``n``.

    Returns:
        Shape ``(..., n, n)``, with a non-negative diagonal.
    """
    a = _pad_to_square(jnp.asarray(a))
    n = a.shape[-2]
    a, diag = _reflect_unrolled(a, n)
    return _assemble_lower(a, diag)


def householder_tria_and_q(a):
    """``(L, q)`` with ``a = L qᵀ`` (``a`` padded to square), by unrolled reflections.

    The reflections of :func:`householder_tria` also act on an identity stacked below ``a``,
    which accumulates the orthogonal factor: ``[a; I] H = [[L, 0]; H]`` and ``q = H[:, :n]``.

    Args:
        a: shape ``(..., n, m)``, small ``n``.

    Returns:
        ``L`` shape ``(..., n, n)`` (non-negative diagonal) and ``q`` shape ``(..., m', n)``
        with orthonormal columns, ``m' = max(m, n)``.
    """
    a = _pad_to_square(jnp.asarray(a))
    n, m = a.shape[-2], a.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(m, dtype=a.dtype), a.shape[:-2] + (m, m))
    work, diag = _reflect_unrolled(jnp.concatenate([a, eye], axis=-2), n)
    return _assemble_lower(work, diag), work[..., n:, :n]


def _pad_to_square(a):
    n = a.shape[-2]
    if a.shape[-1] >= n:
        return a
    return jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (n - a.shape[-1],), a.dtype)], axis=-1)


def _reflect_unrolled(a, n):
    """Reflections ``0..n-1`` of :func:`householder_tria`, applied to every row of ``a``.

    Returns:
        ``(a, diag)``: ``a`` after the reflections (rows ``0..n-1`` hold ``L`` left of the
        diagonal; rows from ``n`` on, e.g. an identity, are carried along) and the ``n``
        diagonal entries.
    """
    diag = []
    for i in range(n):
        x = a[..., i, i:]
        x0 = x[..., 0]
        tail = sum_small(x[..., 1:] * x[..., 1:], axis=-1) if x.shape[-1] > 1 else 0.0 * x0
        norm = jnp.sqrt(x0 * x0 + tail)
        positive = x0 > 0
        v0 = jnp.where(positive, -tail / jnp.where(positive, x0 + norm, 1.0), x0 - norm)
        v = jnp.concatenate([v0[..., None], x[..., 1:]], axis=-1)
        vv = 0.5 * (v0 * v0 + tail)  # = vᵀv / 2
        scale = jnp.where(vv > 0, 1.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        below = a[..., i + 1 :, i:]
        proj = sum_small(below * v[..., None, :], axis=-1)[..., None]
        below = below - proj * (scale[..., None, None] * v[..., None, :])
        a = a.at[..., i + 1 :, i:].set(below)
        diag.append(norm)
    return a, diag


def _assemble_lower(a, diag):
    """``L`` from rows ``0..n-1`` of the reflected ``a`` (left of the diagonal) and ``diag``."""
    # Assembled row by row, not with jnp.tril and jnp.eye: XLA hoists those computed masks out
    # of a scan's body into its loop state, and they pushed the scalar Kalman filter's loop
    # past the size XLA compiles whole on the CPU (benchmarks/probes/xla_loops.py). Empty pieces
    # are left out: one broke the batching of tria's custom JVP under vmap.
    n = len(diag)
    zeros = jnp.zeros(a.shape[:-2] + (n,), a.dtype)
    rows = []
    for i in range(n):
        pieces = [a[..., i, :i]] if i else []
        pieces.append(diag[i][..., None])
        if i + 1 < n:
            pieces.append(zeros[..., i + 1 :])
        rows.append(jnp.concatenate(pieces, axis=-1)[..., None, :])
    return jnp.concatenate(rows, axis=-2)

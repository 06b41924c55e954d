"""One scan driver for all algorithms: sequential ``lax.scan`` or ``lax.associative_scan``.

An algorithm is written once as an associative ``combine(earlier, later)`` over per-step
*elements*. The driver returns all prefix (or, with ``reverse=True``, suffix) combinations:

- ``parallel=False`` folds the elements one by one with ``lax.scan`` (O(T) depth). The running
  prefix starts from ``first``, which may be a *compact* element: any shape that ``combine``
  broadcasts against a full element (for example a ``(1, K)`` row instead of a ``(K, K)``
  matrix). The fold then costs a vector-matrix product per step instead of a matrix-matrix one.
- ``parallel=True`` broadcasts ``first`` to a full element and runs ``lax.associative_scan``
  (O(log T) depth).

Elements are built lazily with ``make_element(inputs_t)``: inside the loop for the sequential
scan (so memory stays O(1) in T), vectorized over time for the parallel one.

``chunk_size`` bounds the parallel scan's working memory: the elements are cut into chunks of that
many steps, each chunk runs ``lax.associative_scan`` (O(log chunk_size) depth) started from the
previous chunks' combination, and a ``lax.scan`` walks the chunks. Depth becomes
O((T / chunk_size) log chunk_size) and the intermediates of only one chunk are alive at a time.
``keep`` then bounds the output: what it keeps of each chunk's combinations (a row of each
K x K matrix, say) is all that is stored for the T steps.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["prefix_scan"]

PyTree = Any


def prefix_scan(
    combine: Callable[[PyTree, PyTree], PyTree],
    make_element: Callable[[PyTree], PyTree],
    first: PyTree,
    inputs: PyTree,
    *,
    parallel: bool = False,
    reverse: bool = False,
    chunk_size: int | None = None,
    keep: Callable[[PyTree], PyTree] | None = None,
) -> PyTree:
    """Cumulative combinations of ``first`` and the elements built from ``inputs``.

    With ``reverse=False`` the result at position ``t`` is
    ``first ∘ e_1 ∘ ... ∘ e_t`` (position 0 is ``first``), with
    ``e_s = make_element(inputs[s - 1])``.
    With ``reverse=True`` the time order is mirrored: ``first`` is the *last* element and the
    result at position ``t`` is ``e_t ∘ ... ∘ e_{n} ∘ first``, with ``e`` indexed in the original
    order of ``inputs`` (position ``n`` is ``first``).

    Args:
        combine: associative operator ``combine(earlier, later)``; must act on leading axes as
            batch axes (``lax.associative_scan`` calls it on stacks of elements).
        make_element: maps one time slice of ``inputs`` to a full element.
        first: the boundary element; may be compact (see the module docstring).
        inputs: pytree whose leaves share a leading time axis of length ``n``.
        parallel: use ``lax.associative_scan`` instead of ``lax.scan``.
        reverse: accumulate from the end (suffix combinations).
        chunk_size: with ``parallel=True``, run the associative scan over chunks of this many
            elements, one chunk after the other (see the module docstring). ``None`` scans all
            elements at once. Ignored with ``parallel=False``.
        keep: maps combinations (leaves with a leading time axis) to the part of them to
            return; applied chunk by chunk, so that the rest is never stored for all steps.
            ``None`` keeps everything.

    Returns:
        A pytree whose leaves have a leading axis of length ``n + 1``: ``keep`` of the
        combinations. With ``parallel=False`` the trailing shape of a combination is the shape
        of ``first`` (compact); with ``parallel=True`` it is the full element shape. Callers read
        the result through indices valid for both.
    """
    keep = (lambda out: out) if keep is None else keep
    if parallel:
        if chunk_size is None or chunk_size >= _length(inputs):
            elements = jax.vmap(make_element)(inputs)
            first_full = jax.tree.map(
                lambda f, e: jnp.broadcast_to(f, e.shape[1:]), first, elements
            )
            return keep(_associative(combine, elements, first_full, reverse))
        return _chunked(combine, make_element, first, inputs, chunk_size, reverse, keep)

    def step(carry, inputs_t):
        element = make_element(inputs_t)
        new = combine(element, carry) if reverse else combine(carry, element)
        return new, new

    _, rest = lax.scan(step, first, inputs, reverse=reverse)
    if reverse:
        return keep(jax.tree.map(lambda r, f: jnp.concatenate([r, f[None]]), rest, first))
    return keep(jax.tree.map(lambda f, r: jnp.concatenate([f[None], r]), first, rest))


def _length(inputs):
    return jax.tree.leaves(inputs)[0].shape[0]


def _associative(combine, elements, boundary, reverse):
    """The ``n + 1`` combinations of ``boundary`` then ``elements`` by ``lax.associative_scan``.

    With ``reverse=True`` the boundary comes last and the combinations are suffixes.
    """
    if reverse:
        stacked = jax.tree.map(lambda e, b: jnp.concatenate([e, b[None]]), elements, boundary)
        # lax.associative_scan(reverse=True) calls fn(later, earlier).
        return lax.associative_scan(lambda b, a: combine(a, b), stacked, reverse=True)
    stacked = jax.tree.map(lambda b, e: jnp.concatenate([b[None], e]), boundary, elements)
    return lax.associative_scan(combine, stacked)


def _chunked(combine, make_element, first, inputs, chunk_size, reverse, keep):
    """The parallel prefix (or suffix) combinations, one chunk of ``chunk_size`` steps at a time.

    Each chunk's scan starts from the combination of everything before it (after it, with
    ``reverse=True``), which the previous chunk hands over as the carry. The inputs are padded to
    whole chunks with copies of their last (first, with ``reverse=True``) step, placed after
    (before) every real step: no real combination depends on them, their outputs are dropped,
    and one compiled chunk serves all of T (a separate tail scan doubled the compile time).
    """
    length = _length(inputs)
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length

    def padded_chunks(x):
        edge = jnp.repeat(x[:1] if reverse else x[-1:], pad, axis=0)
        x = jnp.concatenate([edge, x] if reverse else [x, edge])
        return x.reshape((num_chunks, chunk_size) + x.shape[1:])

    element_shapes = jax.eval_shape(make_element, jax.tree.map(lambda x: x[0], inputs))
    boundary = jax.tree.map(lambda f, e: jnp.broadcast_to(f, e.shape), first, element_shapes)

    def run(carry, chunk):
        out = _associative(combine, jax.vmap(make_element)(chunk), carry, reverse)
        if reverse:
            return jax.tree.map(lambda o: o[0], out), keep(jax.tree.map(lambda o: o[:-1], out))
        return jax.tree.map(lambda o: o[-1], out), keep(jax.tree.map(lambda o: o[1:], out))

    _, out = lax.scan(run, boundary, jax.tree.map(padded_chunks, inputs), reverse=reverse)
    out = jax.tree.map(lambda y: y.reshape((num_chunks * chunk_size,) + y.shape[2:]), out)
    boundary_row = keep(jax.tree.map(lambda b: b[None], boundary))
    if reverse:
        return jax.tree.map(lambda o, b: jnp.concatenate([o[pad:], b]), out, boundary_row)
    return jax.tree.map(lambda b, o: jnp.concatenate([b, o[:length]]), boundary_row, out)

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
    fold: Callable[[PyTree, PyTree], PyTree] | None = None,
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
        fold: optional shortcut for the sequential scan, ``fold(carry, inputs_t)`` equal to
            ``combine(carry, make_element(inputs_t))`` (or ``combine(element, carry)`` with
            ``reverse=True``) for a compact carry, but cheaper: e.g. a vector-matrix forward
            step instead of building a normalized element. Ignored with ``parallel=True``.
            The serial-equals-parallel tests check that the two agree.

    Returns:
        A pytree whose leaves have a leading axis of length ``n + 1``. With ``parallel=False``
        the trailing shape is the shape of ``first`` (compact); with ``parallel=True`` it is the
        full element shape. Callers read the result through indices valid for both.
    """
    if parallel:
        elements = jax.vmap(make_element)(inputs)
        first_full = jax.tree.map(lambda f, e: jnp.broadcast_to(f, e.shape[1:]), first, elements)
        if reverse:
            stacked = jax.tree.map(lambda e, f: jnp.concatenate([e, f[None]]), elements, first_full)
            # lax.associative_scan(reverse=True) calls fn(later, earlier).
            return lax.associative_scan(lambda b, a: combine(a, b), stacked, reverse=True)
        stacked = jax.tree.map(lambda f, e: jnp.concatenate([f[None], e]), first_full, elements)
        return lax.associative_scan(combine, stacked)

    def step(carry, inputs_t):
        if fold is not None:
            new = fold(carry, inputs_t)
        else:
            element = make_element(inputs_t)
            new = combine(element, carry) if reverse else combine(carry, element)
        return new, new

    _, rest = lax.scan(step, first, inputs, reverse=reverse)
    if reverse:
        return jax.tree.map(lambda r, f: jnp.concatenate([r, f[None]]), rest, first)
    return jax.tree.map(lambda f, r: jnp.concatenate([f[None], r]), first, rest)

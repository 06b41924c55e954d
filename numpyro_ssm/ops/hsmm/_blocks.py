"""Steps cut into blocks, and the one place where the HSMM ops choose serial or parallel.

Every HSMM algorithm carries an expanded-state message of shape ``(K, D)`` (state and time left,
or time spent, in the current segment) through the ``T`` steps. The steps after the first are
cut into ``N`` blocks of ``C`` steps (:func:`split_blocks`, padded with steps that change
nothing) and an algorithm provides

- ``block_fn(entry, block)``: the message through one block, serially, from the message before
  it (``entry``), with the block's per-step outputs;
- ``transfer_fn(block)``: the block as one ``(K D) x (K D)`` element of an associative scan (the
  block run from every basis message at once), and the associative ``combine`` of two elements.

:func:`forward_over_blocks` then runs the blocks one after the other (``parallel=False``: a
``lax.scan`` over blocks, a ``lax.scan`` inside), or finds every block's entry message by an
associative scan over the block elements and runs all blocks at once (``parallel=True``:
``vmap``). :func:`backward_over_blocks` does the same for a backward pass whose block exit
messages (``parallel=True``) the algorithm computes from the block elements.

The serial schedule stores one ``(K, D)`` message per block (the checkpoints a backward pass
recomputes a block from), so with ``C >= D`` its memory is O(T K + C K D). The parallel one
holds ``N`` block elements of ``(K D)^2`` entries and every block's messages at once; its depth
is O(C + log N).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.hmm._forward import _chunk_length, _row_0
from numpyro_ssm.ops.scan import prefix_scan


class Steps(NamedTuple):
    """Per-step inputs of one sequence; leaves have a leading time axis.

    Attributes:
        log_lik: shape ``(n, K)``, ``log p(y_t | z_t = k)``, zero at steps that do not count.
        lik: shape ``(n, K)``, ``exp(log_lik - shift)``: each step's likelihoods peaking at one.
        shift: shape ``(n,)``, the largest finite log-likelihood of each step (no gradient).
        index: shape ``(n,)`` int: the 0-based time step ``t``.
        end: shape ``(n,)`` bool: with ``censoring="none"``, True at the last step that counts,
            where the last segment must end; ``None`` (statically) with ``censoring="right"``.
        after_end: shape ``(n,)`` bool: ``end`` of the step before, or ``None``.
        valid: shape ``(n,)`` bool: False on the padding of the last block (steps that change
            nothing); ``None`` when there is no padding.

    Fields that are ``None`` leave their checks out of the compiled loops.
    """

    log_lik: jax.Array
    lik: jax.Array
    shift: jax.Array
    index: jax.Array
    end: jax.Array | None = None
    after_end: jax.Array | None = None
    valid: jax.Array | None = None


def where_valid(step, new, old):
    """``new`` at a real step, ``old`` on padding (``step.valid`` False)."""
    return new if step.valid is None else jnp.where(step.valid, new, old)


def sequence_steps(log_lik, mask, censoring):
    """The :class:`Steps` of one sequence of ``T`` steps (``log_lik (T, K)``, ``mask (T,)``)."""
    num_steps = log_lik.shape[0]
    mask = jnp.broadcast_to(mask, (num_steps,))
    log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    peak = jnp.max(log_lik, axis=-1)
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0.0))
    lik = jnp.exp(log_lik - shift[:, None])
    index = jnp.arange(num_steps)
    if censoring != "none":
        return Steps(log_lik, lik, shift, index)
    last = num_steps - 1 - jnp.argmax(mask[::-1])
    end = (index == last) & jnp.any(mask)
    after_end = jnp.concatenate([jnp.zeros(1, dtype=bool), end[:-1]])
    return Steps(log_lik, lik, shift, index, end, after_end)


WHOLE_BYTES = 2**22  # serial passes keep every message when they fit in this: 4 MB


def block_length(num_steps, max_duration, num_states, itemsize, parallel):
    """Steps per block.

    ``max(D, ceil(sqrt(T)))`` for the parallel schedule, and for the serial one whenever the
    ``T`` messages of ``K x D`` entries would take more than ``WHOLE_BYTES``: the checkpoints
    then take O(T K) memory. Below that the serial passes run as one block, which spares the
    backward passes their recomputation (and the compiler a loop).
    """
    if not parallel and num_steps * num_states * max_duration * itemsize <= WHOLE_BYTES:
        return max(num_steps - 1, 1)
    return max(max_duration, math.isqrt(max(num_steps - 1, 0)) + 1, 1)


def split_blocks(steps, block):
    """Steps ``1..T-1`` (after the first) as blocks: leaves of shape ``(N, block, ...)``.

    The last block is padded with invalid steps (``valid`` False), which every algorithm passes
    through unchanged.
    """
    rest = jax.tree.map(lambda x: x[1:], steps)
    length = rest.index.shape[0]
    num_blocks = max(1, -(-length // block))
    pad = num_blocks * block - length

    def padded(x, fill):
        if x is None:
            return None
        tail = jnp.full((pad,) + x.shape[1:], fill, x.dtype)
        return jnp.concatenate([x, tail]).reshape((num_blocks, block) + x.shape[1:])

    valid = None if pad == 0 else jnp.arange(num_blocks * block) < length
    return Steps(
        padded(rest.log_lik, 0),
        padded(rest.lik, 1),
        padded(rest.shift, 0),
        padded(rest.index, -1),
        padded(rest.end, False),
        padded(rest.after_end, False),
        None if valid is None else valid.reshape(num_blocks, block),
    )


def unsplit(x, num_steps):
    """Per-step outputs ``(N, block, ...)`` of steps ``1..T-1`` as ``(T - 1, ...)``."""
    return x.reshape((-1,) + x.shape[2:])[: num_steps - 1]


def forward_over_blocks(block_fn, transfer_fn, combine, first, blocks, parallel):
    """Run a forward recursion over the blocks, serially or by an associative scan.

    Args:
        block_fn: ``(entry (K, D), block) -> (exit (K, D), outputs)``.
        transfer_fn: ``block -> (matrix (KD, KD), log_offsets (KD,))``, the block as an element
            of ``combine``; used with ``parallel=True`` only.
        combine: associative ``combine(earlier, later)`` of such elements (with leading batch
            axes), whose prefix started from a one-row element keeps equal rows.
        first: shape ``(K, D)``, the message after step 0.
        blocks: pytree with leaves of shape ``(N, C, ...)``.
        parallel: associative scan over the blocks instead of a ``lax.scan``.

    Returns:
        ``(entries (N, K, D), outputs (N, C, ...), last (K, D), elements)``: every block's
        entry message, the per-step outputs, the message after the last block, and the block
        elements (``None`` when serial).
    """
    if not parallel:

        def body(message, block):
            exit_, out = block_fn(message, block)
            return exit_, (message, out)

        if _num_blocks(blocks) == 1:  # no loop over one block (it would stay in the program)
            last, (entries, outputs) = body(first, _only(blocks))
            return entries[None], _stacked(outputs), last, None
        last, (entries, outputs) = lax.scan(body, first, blocks)
        return entries, outputs, last, None
    shape = first.shape
    size = math.prod(shape)
    elements = jax.vmap(transfer_fn)(blocks)
    row = (first.reshape(1, size), jnp.zeros(1, first.dtype))
    chunk = _chunk_length(size, first.dtype)
    rows, _ = prefix_scan(
        combine, lambda e: e, row, elements, parallel=True, chunk_size=chunk, keep=_row_0
    )
    entries = rows[:-1].reshape((-1,) + shape)
    exits, outputs = jax.vmap(block_fn)(entries, blocks)
    return entries, outputs, exits[-1], elements


def backward_over_blocks(block_fn, last, entries, blocks, parallel, exits=None):
    """Run a backward pass over the blocks, serially or all at once.

    Args:
        block_fn: ``(entry (K, D), block, exit_message) -> (message_before, outputs)``: the pass
            through one block from the message at its last step, given the forward message
            before the block.
        last: the message at the last step (serial schedule).
        entries: shape ``(N, K, D)``, the forward messages before each block.
        blocks: pytree with leaves of shape ``(N, C, ...)``.
        parallel: run all blocks at once from ``exits``.
        exits: with ``parallel=True``, every block's exit message (leading axis ``N``),
            computed by the caller from the block elements.

    Returns:
        ``(message_before_first_block, outputs (N, C, ...))``.
    """
    if parallel:
        befores, outputs = jax.vmap(block_fn)(entries, blocks, exits)
        return jax.tree.map(lambda b: b[0], befores), outputs

    def body(message, inputs):
        entry, block = inputs
        return block_fn(entry, block, message)

    if _num_blocks(blocks) == 1:
        before, outputs = body(last, (entries[0], _only(blocks)))
        return before, _stacked(outputs)
    return lax.scan(body, last, (entries, blocks), reverse=True)


def _num_blocks(blocks):
    return jax.tree.leaves(blocks)[0].shape[0]


def _only(blocks):
    return jax.tree.map(lambda x: x[0], blocks)


def _stacked(outputs):
    return jax.tree.map(lambda x: x[None], outputs)

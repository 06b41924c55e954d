"""The filter and forward-backward passes of one sequence, and the log-marginal they differentiate.

**Gradient.** ``p`` enters the time-left recursion linearly (every segment start multiplies by
``A[i, j] p_j(d)``), so the derivatives of ``log p(y)`` with respect to the log-parameters are
posterior expectations: ``d/d log_lik[t, k] = p(z_t = k | y)``, ``d/d log A[i, j]`` the
expected number of switches ``i -> j``, ``d/d log p_k(d)`` the expected number of segments of
``k`` (after the first) with duration ``d``, ``d/d log p(z_1, d_1)`` the posterior of the first
segment. :func:`log_marginal` (the filter) carries a custom JVP that computes them by one
forward-backward pass (:func:`smoother_pass`) instead of autodiff through the scans, whose
residuals would be O(T K D). With the serial schedule the pass keeps one ``(K, D)`` message per
block and recomputes each block's messages in the backward loop, so memory is O(T K + C K D).
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.hmm._forward import _chunk_length, _forward_combine
from numpyro_ssm.ops.hsmm import _sum
from numpyro_ssm.ops.hsmm._blocks import (
    backward_over_blocks,
    block_length,
    forward_over_blocks,
    sequence_steps,
    split_blocks,
    unsplit,
)
from numpyro_ssm.ops.hsmm._common import _LogParams


class FilterPass(NamedTuple):
    """Outputs of :func:`filter_pass` for one sequence (shapes without batch axes)."""

    log_marginal: jax.Array  # ()
    filtered: jax.Array  # (T, K)
    predicted: jax.Array  # (T, K)
    increments: jax.Array  # (T,)
    final: jax.Array  # (K, D)


class SmootherPass(NamedTuple):
    """Outputs of :func:`smoother_pass`: :class:`FilterPass`'s, and the posterior statistics."""

    log_marginal: jax.Array  # ()
    filtered: jax.Array  # (T, K)
    predicted: jax.Array  # (T, K)
    increments: jax.Array  # (T,)
    final: jax.Array  # (K, D)
    smoothed: jax.Array  # (T, K)
    starts: jax.Array  # (T, K), p(a segment of k starts at t | y)
    switches: jax.Array  # (K, K), expected switches i -> j
    durations: jax.Array  # (K, D), expected segments of k with duration d, after the first
    first: jax.Array  # (K, D), p(z_1 = k, d_1 = d | y)


def _setup(params: _LogParams, log_lik, mask, censoring, parallel):
    steps = sequence_steps(log_lik, mask, censoring)
    num_steps = log_lik.shape[0]
    num_states, max_duration = params.dur.shape
    itemsize = jnp.dtype(log_lik.dtype).itemsize
    block = block_length(num_steps, max_duration, num_states, itemsize, parallel)
    blocks = split_blocks(steps, block)
    alpha0, increment0 = _sum.first_message(params.first, jax.tree.map(lambda x: x[0], steps))
    return jnp.exp(params.trans), jnp.exp(params.dur), steps, blocks, alpha0, increment0


def _per_step(first, rest, num_steps):
    return jnp.concatenate([first[None], unsplit(rest, num_steps)])


def filter_pass(params: _LogParams, log_lik, mask, parallel, censoring) -> FilterPass:
    """The filter of one sequence (``log_lik (T, K)``, ``mask (T,)``)."""
    trans, dur, steps, blocks, alpha0, increment0 = _setup(
        params, log_lik, mask, censoring, parallel
    )
    num_steps = log_lik.shape[0]
    _, (filtered, predicted, increments), final, _ = forward_over_blocks(
        partial(_sum.forward_block, trans, dur),
        partial(_sum.transfer, trans, dur),
        _forward_combine,
        alpha0,
        blocks,
        parallel,
    )
    increments = _per_step(increment0, increments, num_steps)
    increments = jnp.where(jnp.broadcast_to(mask, (num_steps,)), increments, 0.0)
    return FilterPass(
        jnp.sum(increments),
        _per_step(jnp.sum(alpha0, -1), filtered, num_steps),
        _per_step(jnp.sum(jnp.exp(params.first), -1), predicted, num_steps),
        increments,
        final,
    )


def smoother_pass(params: _LogParams, log_lik, mask, parallel, censoring) -> SmootherPass:
    """Forward-backward of one sequence: filter outputs and posterior statistics."""
    trans, dur, steps, blocks, alpha0, increment0 = _setup(
        params, log_lik, mask, censoring, parallel
    )
    num_steps = log_lik.shape[0]
    entries, _, _, elements = forward_over_blocks(
        partial(_sum.forward_block, trans, dur),
        partial(_sum.transfer, trans, dur),
        _forward_combine,
        alpha0,
        blocks,
        parallel,
    )
    exits = None
    if parallel:
        chunk = _chunk_length(dur.size, dur.dtype)
        exits = _sum.beta_exits(elements, chunk).reshape(entries.shape)
    beta0, outputs = backward_over_blocks(
        partial(_sum.smooth_block, trans, dur),
        jnp.ones_like(alpha0),
        entries,
        blocks,
        parallel,
        exits,
    )
    filtered, predicted, increments, smoothed, starts, switches, durations, exits = outputs
    final = exits[-1]  # the last block's forward message, recomputed in the backward pass
    joint = alpha0 * beta0
    first = joint / jnp.where(jnp.sum(joint) > 0, jnp.sum(joint), 1.0)
    mask = jnp.broadcast_to(mask, (num_steps,))
    increments = jnp.where(mask, _per_step(increment0, increments, num_steps), 0.0)
    smoothed0 = jnp.sum(first, -1)
    return SmootherPass(
        jnp.sum(increments),
        _per_step(jnp.sum(alpha0, -1), filtered, num_steps),
        _per_step(jnp.sum(jnp.exp(params.first), -1), predicted, num_steps),
        increments,
        final,
        _per_step(smoothed0, smoothed, num_steps),
        _per_step(smoothed0, starts, num_steps),
        jnp.sum(switches, axis=0),
        jnp.sum(durations, axis=0),
        first,
    )


def _weighted_sum(weights, tangent):
    """``sum(weights * tangent)``, skipping zero weights (whose tangent may be ``inf``/NaN)."""
    nonzero = weights != 0
    return jnp.sum(jnp.where(nonzero, weights * jnp.where(nonzero, tangent, 0.0), 0.0))


@partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def log_marginal(params: _LogParams, log_lik, mask, parallel, censoring):
    """``log p(y_{1:T})`` of one sequence by the filter, differentiated by forward-backward."""
    return filter_pass(params, log_lik, mask, parallel, censoring).log_marginal


@log_marginal.defjvp
def _log_marginal_jvp(parallel, censoring, primals, tangents):
    params, log_lik, mask = primals
    d_params, d_lik, _ = tangents
    out = smoother_pass(params, log_lik, mask, parallel, censoring)
    counted = jnp.broadcast_to(mask, log_lik.shape[:1])[:, None]
    tangent = (
        _weighted_sum(out.first, d_params.first)
        + _weighted_sum(out.switches, d_params.trans)
        + _weighted_sum(out.durations, d_params.dur)
        + _weighted_sum(jnp.where(counted, out.smoothed, 0.0), d_lik)
    )
    return out.log_marginal, tangent

"""Max-product (Viterbi) recursion of the HSMM on the time-spent expanded state.

The MAP *segmentation* maximizes ``p(segments, y)``, where the segment in progress at the last
step contributes the survival function ``P(d >= steps seen)``. On the time-left state a path
also fixes that segment's total duration, so a max over paths there maximizes a different
quantity. On the time-spent state ``(k, u)`` (the current segment of ``k`` has lasted ``u =
1..D`` steps, ``t`` included) every path is one segmentation, with the right probability: a step
continues the segment with ``1 - h_k(u)`` or ends it with the hazard ``h_k(u) = p_k(u) /
P(d >= u)`` and switches with ``A``, and the product of the continuations of the last segment is
its survival function. The first segment has hazards of its own (from ``p(z_1, d_1)``); at step
``t`` it is the state with ``u = t + 1``, as no later segment has lasted that long.

Scores are log-space arrays shifted to peak at zero per step. The pointers are O(T K): the only
choice at a step is which ``(k, u)`` ended before a new segment of each state ``j``.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.hsmm._blocks import Steps, where_valid
from numpyro_ssm.ops.hsmm._common import lift


class Hazards(NamedTuple):
    """Log hazards, shape ``(K, D)`` each; index ``u - 1`` is ``u`` steps spent.

    Attributes:
        end: ``log h_k(u)``, the segment ends after ``u`` steps.
        stay: ``log(1 - h_k(u))``, it goes on.
        first_end: ``end`` of the first segment.
        first_stay: ``stay`` of the first segment.
    """

    end: jnp.ndarray
    stay: jnp.ndarray
    first_end: jnp.ndarray
    first_stay: jnp.ndarray


def _log_hazards(log_pmf):
    """``(log h, log(1 - h))`` of duration log-probabilities ``(K, D)``; ``-inf`` if unreachable."""
    log_survival = lax.cumlogsumexp(log_pmf, axis=log_pmf.ndim - 1, reverse=True)
    reachable = jnp.isfinite(log_survival)
    safe = jnp.where(reachable, log_survival, 0.0)
    after = jnp.concatenate(
        [log_survival[..., 1:], jnp.full(log_pmf.shape[:-1] + (1,), -jnp.inf, log_pmf.dtype)], -1
    )
    return (
        jnp.where(reachable, log_pmf - safe, -jnp.inf),
        jnp.where(reachable, after - safe, -jnp.inf),
    )


def hazards(log_first, log_dur):
    """:class:`Hazards` of the later segments (``log_dur (K, D)``) and the first (``log_first``)."""
    return Hazards(*_log_hazards(log_dur), *_log_hazards(log_first))


def _peak(scores):
    peak = jnp.max(scores, axis=(-2, -1))
    return jnp.where(jnp.isfinite(peak), peak, 0.0)


def first_scores(log_first, hz: Hazards, step: Steps):
    """Scores at step 0, shape ``(K, D)``: ``log p(z_1 = k) + log_lik`` at ``u = 1``."""
    max_duration = log_first.shape[-1]
    at_one = (jnp.arange(max_duration) == 0)[None, :]
    initial = logsumexp(log_first, axis=-1)  # log p(z_1 = k)
    scores = jnp.where(at_one, (initial + step.log_lik)[:, None], -jnp.inf)
    if step.end is not None:
        scores = jnp.where(step.end, scores + hz.first_end, scores)
    return scores - _peak(scores)


def update(scores, step: Steps, log_trans, hz: Hazards):
    """One max-product step: ``(scores_next, offset, pointers)``.

    Args:
        scores: shape ``(..., K, D)``, at step ``t - 1``.
        step: the inputs of step ``t``.
        log_trans: shape ``(K, K)``.
        hz: the hazards.

    Returns:
        The scores at ``t`` (peak shifted to zero per leading index), the shift, and the
        pointers ``(..., K)``: the flat index ``k * D + u - 1`` of the state that ended before a
        new segment of each state at ``t``. An invalid step returns ``scores`` unchanged.
    """
    max_duration, ndim = scores.shape[-1], scores.ndim
    position = jnp.arange(max_duration)[None, :]
    was_first = position == step.index - 1
    end = jnp.where(was_first, hz.first_end, hz.end)
    stay = jnp.where(was_first, hz.first_stay, hz.stay)
    if step.after_end is not None:  # after the step where the last segment ended, a new one
        end = jnp.where(step.after_end, 0.0, end)
        stay = jnp.where(step.after_end, -jnp.inf, stay)
    end_scores = scores + lift(end, ndim)
    best_u = jnp.argmax(end_scores, axis=-1)
    best_end = jnp.max(end_scores, axis=-1)
    candidates = best_end[..., :, None] + lift(log_trans, ndim)
    best_k = jnp.argmax(candidates, axis=-2)
    new = jnp.max(candidates, axis=-2)
    pointers = best_k * max_duration + jnp.take_along_axis(best_u, best_k, axis=-1)
    kept = scores + lift(stay, ndim)
    following = jnp.concatenate([new[..., None], kept[..., :-1]], axis=-1)
    following = following + lift(step.log_lik[:, None], ndim)
    if step.end is not None:
        ends_now = jnp.where(position == step.index, hz.first_end, hz.end)
        following = jnp.where(step.end, following + lift(ends_now, ndim), following)
    peak = _peak(following)
    following = following - peak[..., None, None]
    return where_valid(step, following, scores), where_valid(step, peak, 0.0), pointers


def forward_block(log_trans, hz, entry, block: Steps):
    """The max-product scores through one block: ``(exit (K, D), pointers (C, K))``."""

    def body(scores, step):
        new, _, pointers = update(scores, step, log_trans, hz)
        return new, pointers

    return lax.scan(body, entry, block)


def transfer(log_trans, hz, block: Steps):
    """One block as a max-plus element ``(m (KD, KD), offset (KD,))`` (rows of ``m`` peak at 0).

    Row ``x`` holds the block's best log-weights from expanded state ``x`` to every state.
    """
    num_states, max_duration = hz.end.shape
    size = num_states * max_duration
    basis = jnp.where(jnp.eye(size, dtype=bool), 0.0, -jnp.inf).astype(hz.end.dtype)
    basis = basis.reshape(size, num_states, max_duration)

    def body(carry, step):
        rows, offset = carry
        new, peak, _ = update(rows, step, log_trans, hz)
        return (new, offset + peak), None

    (rows, offset), _ = lax.scan(body, (basis, jnp.zeros(size, basis.dtype)), block)
    return rows.reshape(size, size), offset


def backtrack_block(log_trans, hz, entry, block: Steps, exit_state):
    """The MAP states of one block, from the scores before it and the state at its last step.

    Returns:
        ``(state_before, states (C,))``: the flat expanded state at the step before the block,
        and the HSMM state ``k`` at each step of the block.
    """
    max_duration = hz.end.shape[-1]
    _, pointers = forward_block(log_trans, hz, entry, block)

    def body(state, inputs):
        pointer, step = inputs
        k, spent = state // max_duration, state % max_duration
        before = jnp.where(spent > 0, state - 1, pointer[k])
        return where_valid(step, before, state), k

    return lax.scan(body, exit_state, (pointers, block), reverse=True)


def boundary_maps(entries, elements):
    """``g_b(x') = argmax_x entries_b[x] + M_b[x, x']``: the best state before each block.

    Args:
        entries: shape ``(N, K, D)``, the scores before each block.
        elements: ``(m (N, KD, KD), offset (N, KD))`` from :func:`transfer`.

    Returns:
        int array ``(N, KD)``.
    """
    m, offset = elements
    scores = entries.reshape(offset.shape) + offset
    return jnp.argmax(scores[..., :, None] + m, axis=-2)

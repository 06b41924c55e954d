"""The MAP segmentation (Viterbi) and posterior draws of segmentations (FFBS) of an HSMM.

Both run a forward pass over the blocks of steps, then go back block by block from the state at
the last step: each block's forward messages are recomputed from the one stored before it, and
its states are found (Viterbi backpointers) or drawn (backward sampling) from the block's end
to its start. With ``parallel=True`` the state at every block boundary comes first, from maps
``state after -> state before`` of whole blocks composed by an associative scan, and then all
blocks run at once.

With two or more states consecutive segments differ, so a state path *is* a segmentation: both
functions return the state path ``(..., T)``.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.hmm._common import safe_log
from numpyro_ssm.ops.hmm._forward import _forward_combine
from numpyro_ssm.ops.hmm.paths import _backward_compose, _draw_batched, _max_combine
from numpyro_ssm.ops.hsmm import _max, _sum
from numpyro_ssm.ops.hsmm._blocks import (
    backward_over_blocks,
    block_length,
    forward_over_blocks,
    sequence_steps,
    split_blocks,
    unsplit,
    where_valid,
)
from numpyro_ssm.ops.hsmm._common import _CORE_NDIMS, _LogParams, _run_batched, prepare_arguments

__all__ = ["hsmm_posterior_mode", "hsmm_posterior_sample"]


def _layout(params: _LogParams, log_lik, mask, censoring, parallel):
    steps = sequence_steps(log_lik, mask, censoring)
    num_states, max_duration = params.dur.shape
    itemsize = jnp.dtype(log_lik.dtype).itemsize
    block = block_length(log_lik.shape[0], max_duration, num_states, itemsize, parallel)
    blocks = split_blocks(steps, block)
    return jax.tree.map(lambda x: x[0], steps), blocks


def _states(before, states, max_duration, num_steps):
    """The state path ``(T,)`` from the flat state before the first block and the blocks' states."""
    return jnp.concatenate([(before // max_duration)[None], unsplit(states, num_steps)])


def _mode_core(params: _LogParams, log_lik, mask, parallel, censoring):
    step0, blocks = _layout(params, log_lik, mask, censoring, parallel)
    hz = _max.hazards(params.first, params.dur)
    entries, _, last, elements = forward_over_blocks(
        partial(_max.forward_block, params.trans, hz),
        partial(_max.transfer, params.trans, hz),
        _max_combine,
        _max.first_scores(params.first, hz, step0),
        blocks,
        parallel,
    )
    final = jnp.argmax(last.reshape(-1))
    exits = None
    if parallel:
        exits = _backward_compose(final, _max.boundary_maps(entries, elements), True)[1:]
    before, states = backward_over_blocks(
        partial(_max.backtrack_block, params.trans, hz), final, entries, blocks, parallel, exits
    )
    return _states(before, states, params.dur.shape[-1], log_lik.shape[0])


def hsmm_posterior_mode(
    initial_probs=None,
    transition_matrix=None,
    duration_probs=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    duration_logits=None,
    first_segment_probs=None,
    obs_mask=None,
    censoring: str = "right",
    parallel: bool = False,
) -> jax.Array:
    """The MAP segmentation ``argmax p(segments | y_{1:T})``, as its state path.

    The segment in progress at the last step counts with its survival function
    (``censoring="right"``) or must end there (``"none"``), as in the likelihood: the
    max-product runs on the time-spent expanded state, where one path is one segmentation
    (:mod:`numpyro_ssm.ops.hsmm._max`). Work O(T K (K + D_max)), pointers O(T K).

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(..., K, K)``, switch probabilities (diagonal dropped).
        duration_probs: shape ``(..., K, D_max)``, ``[k, d - 1] = p(d | state k)``.
        log_likelihoods: shape ``(..., T, K)``, ``[t, k] = log p(y_t | z_t = k)``.
        initial_logits: give instead of ``initial_probs``.
        transition_logits: give instead of ``transition_matrix``.
        duration_logits: give instead of ``duration_probs``.
        first_segment_probs: shape ``(..., K, D_max)``, instead of ``initial_probs``.
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed.
        censoring: ``"right"`` or ``"none"`` (see :func:`~numpyro_ssm.ops.hsmm_filter`).
        parallel: the parallel schedule (see the module docstring).

    Returns:
        int array of shape ``(..., T)``: the state of the segment covering each step.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    params, log_lik, mask = prepare_arguments("hsmm_posterior_mode", locals())
    return _run_batched(_mode_core, parallel, censoring, params, log_lik, mask)


def _sample_block(trans, dur, entry, inputs, exit_state):
    """Backward sampling through one block given the (flat) expanded state at its last step.

    The state before ``x' = (j, r')`` is ``(j, r' + 1)`` (the segment goes on) with weight
    ``alpha[j, r' + 1]``, or ``(i, 1)`` (a segment of ``i`` ended) with weight ``alpha[i, 1]
    A[i, j] p_j(r')``.
    """
    block, keys = inputs
    num_states, max_duration = dur.shape
    _, (*_, alphas) = _sum.forward_block(trans, dur, entry, block, keep_messages=True)
    previous = jnp.concatenate([entry[None], alphas[:-1]])
    log_trans, log_dur = safe_log(trans), safe_log(dur)
    rows = jnp.arange(num_states)[:, None]
    columns = jnp.arange(max_duration)[None, :]

    def body(state, inputs):
        alpha, step, key = inputs
        j, left = state // max_duration, state % max_duration
        log_alpha = safe_log(alpha)
        goes_on = jnp.where((rows == j) & (columns == left + 1), log_alpha, -jnp.inf)
        switched = log_alpha[:, 0] + log_trans[:, j] + log_dur[j, left]
        logits = goes_on.at[:, 0].set(jnp.logaddexp(goes_on[:, 0], switched))
        before = jax.random.categorical(key, logits.reshape(-1))
        return where_valid(step, before, state), j

    return lax.scan(body, exit_state, (previous, block, keys), reverse=True)


def _sample_maps(key, entries, elements):
    """Random maps ``x' -> x ~ p(state before block b | state after it, y before)``, ``(N, KD)``."""
    logits = safe_log(entries.reshape(entries.shape[0], -1))[..., :, None]
    logits = logits + _sum.log_transfer_matrix(elements)
    gumbel = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jnp.argmax(logits + gumbel, axis=-2)


def _sample_core(key, first, trans, dur, log_lik, mask, parallel, censoring):
    params = _LogParams(first, trans, dur)
    step0, blocks = _layout(params, log_lik, mask, censoring, parallel)
    trans, dur = jnp.exp(params.trans), jnp.exp(params.dur)
    alpha0, _ = _sum.first_message(params.first, step0)
    entries, _, last, elements = forward_over_blocks(
        partial(_sum.forward_block, trans, dur),
        partial(_sum.transfer, trans, dur),
        _forward_combine,
        alpha0,
        blocks,
        parallel,
    )
    final_key, map_key, step_key = jax.random.split(key, 3)
    final = jax.random.categorical(final_key, safe_log(last).reshape(-1))
    num_blocks, block = blocks.index.shape
    keys = jax.random.split(step_key, num_blocks * block)
    keys = keys.reshape((num_blocks, block) + keys.shape[1:])
    exits = None
    if parallel:
        exits = _backward_compose(final, _sample_maps(map_key, entries, elements), True)[1:]
    before, states = backward_over_blocks(
        partial(_sample_block, trans, dur), final, entries, (blocks, keys), parallel, exits
    )
    return _states(before, states, dur.shape[-1], log_lik.shape[0])


@partial(jax.jit, static_argnums=(0, 1, 2))
def _run_sampler(parallel, censoring, sample_shape, key, params, log_lik, mask):
    core = partial(_sample_core, parallel=parallel, censoring=censoring)
    return _draw_batched(core, _CORE_NDIMS, sample_shape, key, (*params, log_lik, mask))


def hsmm_posterior_sample(
    key,
    initial_probs=None,
    transition_matrix=None,
    duration_probs=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    duration_logits=None,
    first_segment_probs=None,
    obs_mask=None,
    censoring: str = "right",
    parallel: bool = False,
    sample_shape: tuple[int, ...] = (),
) -> jax.Array:
    """Forward-filter backward-sample: exact draws of segmentations from ``p(segments | y)``.

    Backward sampling on the time-left expanded state: the last step's state and time left are
    drawn from the filter, then each step's from its successor (a segment goes on, or one of
    another state ended). Memory O(T + C K D_max) serially (blocks recomputed from checkpoints,
    see :mod:`numpyro_ssm.ops.hsmm`).

    Args:
        key: a ``jax.random`` key (no default).
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(..., K, K)``, switch probabilities (diagonal dropped).
        duration_probs: shape ``(..., K, D_max)``, ``[k, d - 1] = p(d | state k)``.
        log_likelihoods: shape ``(..., T, K)``, ``[t, k] = log p(y_t | z_t = k)``.
        initial_logits: give instead of ``initial_probs``.
        transition_logits: give instead of ``transition_matrix``.
        duration_logits: give instead of ``duration_probs``.
        first_segment_probs: shape ``(..., K, D_max)``, instead of ``initial_probs``.
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed.
        censoring: ``"right"`` or ``"none"`` (see :func:`~numpyro_ssm.ops.hsmm_filter`).
        parallel: the parallel schedule (see the module docstring).
        sample_shape: leading shape of independent draws.

    Returns:
        int array of shape ``sample_shape + (..., T)``: the state of the segment covering each
        step.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    params, log_lik, mask = prepare_arguments("hsmm_posterior_sample", locals())
    sample_shape = tuple(int(n) for n in sample_shape)
    return _run_sampler(parallel, censoring, sample_shape, key, params, log_lik, mask)

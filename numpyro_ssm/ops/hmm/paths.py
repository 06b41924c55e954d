"""Most probable paths (Viterbi) and posterior path draws (FFBS) of an HMM.

Viterbi's max-product forward pass is an associative max-plus product; backtracking and
backward sampling are compositions of index maps ``{0..K-1} -> {0..K-1}``, which are
associative too, so every step runs in parallel with ``parallel=True``.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.hmm._common import (
    _CORE_NDIMS,
    _batch_shape,
    _batched,
    _prepare,
    _run_batched,
    _safe_max,
    _with_transitions,
)
from numpyro_ssm.ops.hmm._forward import _chunk_length, _forward
from numpyro_ssm.ops.hmm.filtering import _filter_core
from numpyro_ssm.ops.scan import prefix_scan

__all__ = ["hmm_posterior_mode", "hmm_posterior_sample", "sequential_posterior_sample"]

_MAXPLUS_BROADCAST_LIMIT = 2**22


def _maxplus_matmul(a, b):
    """``out[..., i, k] = max_j a[..., i, j] + b[..., j, k]``.

    Small products broadcast over ``j``; large ones loop over ``j`` to keep O(I K) memory.
    """
    out_shape = jnp.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1,) + b.shape[-1:])
    if math.prod(out_shape) * a.shape[-1] <= _MAXPLUS_BROADCAST_LIMIT:
        return jnp.max(a[..., :, :, None] + b[..., None, :, :], axis=-2)
    a_cols = jnp.moveaxis(a, -1, 0)
    b_rows = jnp.moveaxis(b, -2, 0)
    init = jnp.full(out_shape, -jnp.inf, jnp.result_type(a, b))

    def body(acc, ab):
        a_j, b_j = ab
        return jnp.maximum(acc, a_j[..., :, None] + b_j[..., None, :]), None

    out, _ = lax.scan(body, init, (a_cols, b_rows))
    return out


def _max_combine(earlier, later):
    """Max-plus product of two row-shifted elements ``(M, offset)`` (rows of ``M`` peak at 0)."""
    m1, o1 = earlier
    m2, o2 = later
    shift = _safe_max(o2)
    product = _maxplus_matmul(m1, (o2 - shift)[..., :, None] + m2)
    row_max = _safe_max(product)
    return product - row_max, o1 + shift + row_max[..., 0]


def _max_element(log_trans_t, log_lik_t):
    log_m = log_trans_t + log_lik_t[..., None, :]
    row_max = _safe_max(log_m)
    return log_m - row_max, row_max[..., 0]


def _compose(earlier, later):
    """Composition of index maps stored as arrays: ``(earlier ∘ later)[k] = earlier[later[k]]``."""
    return jnp.take_along_axis(earlier, later, axis=-1)


def _backward_compose(first_state, maps, parallel):
    """States ``z_t = maps[t](z_{t+1})`` from ``z_T = first_state``, as a reverse scan.

    Args:
        first_state: int scalar, the last state ``z_T``.
        maps: int array ``(T - 1, K)``, ``maps[t][k]`` is ``z_t`` given ``z_{t+1} = k``.
        parallel: associative scan over compositions.

    Returns:
        int array ``(T,)``, the states.
    """
    suffix = prefix_scan(
        _compose, lambda g: g, first_state[None], maps, parallel=parallel, reverse=True
    )
    return suffix[:, 0]


def _mode_core(log_init, log_trans, log_lik, mask, parallel):
    log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    first = _max_element(log_init[None, :], log_lik[0])
    make_element, inputs = _with_transitions(_max_element, log_trans, (log_lik[1:],))
    chunk = _chunk_length(log_lik.shape[-1], log_lik.dtype)
    scores, _ = prefix_scan(
        _max_combine, make_element, first, inputs, parallel=parallel, chunk_size=chunk
    )
    scores = scores[:, 0, :]  # (T, K): max log-joint over paths ending in k, up to a constant
    # Backpointers: z_t given z_{t+1} = k is argmax_j scores[t, j] + log A_t[j, k].
    pointers = jnp.argmax(scores[:-1, :, None] + log_trans, axis=-2)
    return _backward_compose(jnp.argmax(scores[-1]), pointers, parallel)


def hmm_posterior_mode(
    initial_probs=None,
    transition_matrix=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    obs_mask=None,
    parallel: bool = False,
) -> jax.Array:
    """Viterbi: the most probable state path ``argmax_z p(z_{1:T} | y_{1:T})``.

    The max-product forward pass is an associative max-plus product; backtracking is a
    composition of backpointer maps, so both run in parallel with ``parallel=True``.

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(K, K)``, or ``(..., T - 1 | 1, K, K)`` with a time axis
            (length 1 is homogeneous): ``[t, i, j] = p(z_{t+1} = j | z_t = i)``.
        log_likelihoods: shape ``(..., T, K)``, ``[t, k] = log p(y_t | z_t = k)``.
        initial_logits: unnormalized log ``initial_probs``; give it instead of ``initial_probs``.
        transition_logits: unnormalized log ``transition_matrix`` (normalized over the last
            axis); give it instead of ``transition_matrix``.
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed. Masked steps
            contribute nothing.
        parallel: use the O(log T)-depth associative scan instead of the sequential one.

    Returns:
        int32 array of shape ``(..., T)``.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    args = _prepare(
        initial_probs,
        transition_matrix,
        log_likelihoods,
        obs_mask,
        initial_logits,
        transition_logits,
        "hmm_posterior_mode",
    )
    return _run_batched(_mode_core, parallel, *args)


def _backward_sample(key, log_trans, filtered, parallel):
    """One path ``z_{1:T} ~ p(z | y)`` from the filtered probabilities of one sequence.

    Backward sampling draws, for every step and every possible next state, the current state
    (Gumbel-max), and composes these maps from the last step backwards.

    Args:
        key: a ``jax.random`` key.
        log_trans: shape ``(T - 1 | 1, K, K)``.
        filtered: shape ``(T, K)``, ``p(z_t | y_{1:t})``.
        parallel: compose the maps by an associative scan.

    Returns:
        int array ``(T,)``.
    """
    log_filtered = jnp.log(filtered)
    num_steps = filtered.shape[0]
    last_key, step_key = jax.random.split(key)
    last = jax.random.categorical(last_key, log_filtered[-1])
    step_keys = jax.random.split(step_key, num_steps - 1)

    def draw_map(log_trans_t, key_t, log_filtered_t):
        # z_t given z_{t+1} = k ~ filtered_t[j] A_t[j, k], drawn for every k with Gumbel-max.
        logits = log_filtered_t[:, None] + log_trans_t
        gumbel = jax.random.gumbel(key_t, logits.shape, logits.dtype)
        return jnp.argmax(logits + gumbel, axis=0)

    make_map, inputs = _with_transitions(draw_map, log_trans, (step_keys, log_filtered[:-1]))
    suffix = prefix_scan(_compose, make_map, last[None], inputs, parallel=parallel, reverse=True)
    return suffix[:, 0]


def _sample_core(key, log_init, log_trans, log_lik, mask, parallel):
    filtered = _filter_core(log_init, log_trans, log_lik, mask, parallel).filtered_probs
    return _backward_sample(key, log_trans, filtered, parallel)


def _draw_batched(core, core_ndims, sample_shape, key, args):
    """``core(key, *args)`` for every sequence of the batch and every draw of ``sample_shape``."""
    batch_shape = _batch_shape(args, core_ndims)
    key_ndim = 0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
    keys = jax.random.split(key, math.prod(sample_shape) * math.prod(batch_shape))
    keys = keys.reshape((math.prod(sample_shape),) + batch_shape + keys.shape[1:])

    def draw(batch_keys):
        return _batched(core, (batch_keys,) + args, (key_ndim,) + core_ndims)

    draws = jax.vmap(draw)(keys)
    return draws.reshape(sample_shape + draws.shape[1:])


@partial(jax.jit, static_argnums=(0, 1))
def _run_sampler(parallel, sample_shape, key, *args):
    core = lambda k, *a: _sample_core(k, *a, parallel)  # noqa: E731
    return _draw_batched(core, _CORE_NDIMS, sample_shape, key, args)


@partial(jax.jit, static_argnames=("parallel", "sample_shape"))
def backward_sample(key, log_trans, filtered_probs, *, parallel=False, sample_shape=()):
    """The backward half of FFBS: state paths given a filter's output, batched.

    A building block for callers that already ran the filter (or the smoother) and want
    posterior paths without a second forward pass; :func:`hmm_posterior_sample` is the whole
    algorithm.

    Args:
        key: a ``jax.random`` key.
        log_trans: shape ``(..., T - 1 | 1, K, K)``, normalized log transition probabilities.
        filtered_probs: shape ``(..., T, K)``, ``p(z_t | y_{1:t})``.
        parallel: compose the backward maps by an associative scan.
        sample_shape: leading shape of independent draws.

    Returns:
        int32 array of shape ``sample_shape + (..., T)``.
    """
    core = lambda k, lt, f: _backward_sample(k, lt, f, parallel)  # noqa: E731
    return _draw_batched(core, (3, 2), tuple(sample_shape), key, (log_trans, filtered_probs))


def hmm_posterior_sample(
    key,
    initial_probs=None,
    transition_matrix=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    obs_mask=None,
    parallel: bool = False,
    sample_shape: tuple[int, ...] = (),
) -> jax.Array:
    """Forward-filter backward-sample: exact draws of state paths from ``p(z_{1:T} | y_{1:T})``.

    Backward sampling draws, for every step and every possible next state, the current state
    (Gumbel-max), and composes these maps: an associative operation, hence ``parallel=True``.

    Args:
        key: a ``jax.random`` key (no default).
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(K, K)``, or ``(..., T - 1 | 1, K, K)`` with a time axis.
        log_likelihoods: shape ``(..., T, K)``, ``[t, k] = log p(y_t | z_t = k)``.
        initial_logits: give instead of ``initial_probs``.
        transition_logits: give instead of ``transition_matrix``.
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed.
        parallel: use associative scans for the filter and the backward pass.
        sample_shape: leading shape of independent draws.

    Returns:
        int32 array of shape ``sample_shape + (..., T)``.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    args = _prepare(
        initial_probs,
        transition_matrix,
        log_likelihoods,
        obs_mask,
        initial_logits,
        transition_logits,
        "hmm_posterior_sample",
    )
    return _run_sampler(parallel, tuple(sample_shape), key, *args)


def _sequential_sample_core(key, log_init, log_trans, log_lik, mask, parallel):
    """One path by the classic backward pass: one uniform and ``O(K)`` work per step."""
    del parallel  # the backward pass is sequential; the forward pass uses the serial filter
    filtered, _ = _forward(log_init, log_trans, jnp.where(mask[:, None], log_lik, 0.0), False)
    T, K = filtered.shape
    uniforms = jax.random.uniform(key, (T,), filtered.dtype)

    def draw(weights, u):
        cdf = jnp.cumsum(weights)
        return jnp.minimum(jnp.sum(cdf < u * cdf[-1]), K - 1).astype(jnp.int32)

    last = draw(filtered[-1], uniforms[-1])
    trans = jnp.exp(log_trans)

    def step(next_state, inputs):
        filtered_t, u, trans_t = inputs
        state = draw(filtered_t * trans_t[:, next_state], u)
        return state, state

    if trans.shape[0] == 1:
        body = lambda z, inp: step(z, inp + (trans[0],))  # noqa: E731
        inputs = (filtered[:-1], uniforms[:-1])
    else:
        body, inputs = step, (filtered[:-1], uniforms[:-1], trans)
    _, states = lax.scan(body, last, inputs, reverse=True)
    return jnp.concatenate([states, last[None]])


@partial(jax.jit, static_argnums=(0,))
def _run_sequential_sampler(sample_shape, key, *args):
    core = lambda k, *a: _sequential_sample_core(k, *a, False)  # noqa: E731
    return _draw_batched(core, _CORE_NDIMS, sample_shape, key, args)


def sequential_posterior_sample(
    key,
    initial_probs=None,
    transition_matrix=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    obs_mask=None,
    sample_shape: tuple[int, ...] = (),
) -> jax.Array:
    """FFBS with the classic sequential backward pass: one uniform draw per step.

    The same law as :func:`hmm_posterior_sample`, whose backward pass draws a map of ``K``
    states per step (``T K`` Gumbel variates and ``O(T K^2)`` work) so that the maps compose
    in parallel. Here ``z_T ~ p(z_T | y)`` and then ``z_t ~ p(z_t | y_{1:t}) A_t[z_t, z_{t+1}]``
    by inverting its CDF with one uniform: ``T`` variates and ``O(T K)`` work, which is what a
    CPU Gibbs sampler wants. The forward pass is the serial filter.

    Args:
        key: a ``jax.random`` key (no default).
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(K, K)``, or ``(..., T - 1 | 1, K, K)`` with a time axis.
        log_likelihoods: shape ``(..., T, K)``, ``[t, k] = log p(y_t | z_t = k)``.
        initial_logits: give instead of ``initial_probs``.
        transition_logits: give instead of ``transition_matrix``.
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed.
        sample_shape: leading shape of independent draws.

    Returns:
        int32 array of shape ``sample_shape + (..., T)``.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    args = _prepare(
        initial_probs,
        transition_matrix,
        log_likelihoods,
        obs_mask,
        initial_logits,
        transition_logits,
        "sequential_posterior_sample",
    )
    return _run_sequential_sampler(tuple(sample_shape), key, *args)

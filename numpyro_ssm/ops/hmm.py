"""Hidden Markov model inference: filter, smoother, Viterbi and FFBS, serial or parallel-in-time.

Every algorithm is an associative operator run by :func:`~numpyro_ssm.ops.scan.prefix_scan`:
``parallel=True`` is ``lax.associative_scan`` (O(log T) depth, Hassan, Särkkä &
García-Fernández 2021) and ``parallel=False`` is ``lax.scan`` (O(T) depth). The sequential
forward pass and forward-backward are the exception: they have loops of their own (see
:mod:`numpyro_ssm.ops._hmm_forward`), which the serial-equals-parallel tests check against
the associative version, time-varying transitions and masks included.

Model and conventions (as TFP, dynamax and Stan): ``z_1 ~ Categorical(initial_probs)``,
``z_{t+1} | z_t ~ Categorical(transition_matrix[t, z_t])`` for the ``T - 1`` transitions, and
``log_likelihoods[t, k] = log p(y_t | z_t = k)``. A step with ``obs_mask[t] = False`` contributes
nothing: its log-likelihoods are treated as zeros.

Numerics. Parallel forward elements are *row-normalized matrices with log-normalizers*: an
element is ``(P, log_z)`` standing for the matrix ``exp(log_z)[:, None] * P`` with rows of ``P``
summing to one. Element construction uses ``logsumexp``, so exact zeros in the transition matrix
and log-likelihoods of ``-1e4`` neither underflow nor produce NaN. The sequential loops carry
messages in probability space, normalized at every step, with each step's likelihoods scaled to
peak at one and the scales added in log space. The marginals are the derivatives
of the log-marginal with respect to the log-potentials, so the log-marginal's derivative (a
custom JVP) is the smoother: one sequential loop that advances the forward and the backward
messages together (serial), or, in parallel, the transposed elements in reverse time, paired
with the forward ones in one associative scan. Gradients cost that one pass, not autodiff
through the scan. The parallel scans run in
chunks that bound their working memory (about 256 MB of K x K elements), so ``parallel=True``
at K = 50, T = 1e5 fits in a few GB. Backtracking
(Viterbi) and backward sampling (FFBS) are compositions of maps ``{0..K-1} -> {0..K-1}``, which
are associative, so they run in parallel too.

Batching: every function broadcasts over leading batch axes of its arguments (see each
``Args:``), so ``vmap`` is rarely needed.
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from numpyro_ssm.ops._hmm_common import (
    _CORE_NDIMS,
    _batch_shape,
    _batched,
    _prepare,
    _run_batched,
    _with_transitions,
    safe_log,
)
from numpyro_ssm.ops._hmm_forward import (
    _chunk_length,
    _forward,
    _log_marginal,
    _parallel_smoother,
)
from numpyro_ssm.ops._hmm_paths import _backward_compose, _compose, _max_combine, _max_element
from numpyro_ssm.ops._hmm_serial import _serial_smoother
from numpyro_ssm.ops.scan import prefix_scan

__all__ = [
    "HMMPosterior",
    "hmm_filter",
    "hmm_posterior_mode",
    "hmm_posterior_sample",
    "hmm_smoother",
]


class HMMPosterior(NamedTuple):
    """Posterior quantities of a hidden Markov model; ``...`` are the broadcast batch axes.

    Attributes:
        log_marginal: shape ``(...)``, ``log p(y_{1:T})`` (masked steps excluded).
        filtered_probs: shape ``(..., T, K)``, ``[t, k] = p(z_t = k | y_{1:t})``.
        predicted_probs: shape ``(..., T, K)``, ``[t, k] = p(z_t = k | y_{1:t-1})``; row 0 is
            the initial distribution.
        log_likelihood_increments: shape ``(..., T)``, ``[t] = log p(y_t | y_{1:t-1})``; zero at
            masked steps, and summing to ``log_marginal``.
        smoothed_probs: shape ``(..., T, K)``, ``[t, k] = p(z_t = k | y_{1:T})``; ``None`` from
            :func:`hmm_filter`.
        expected_transitions: shape ``(..., K, K)``,
            ``[i, j] = sum_t p(z_t = i, z_{t+1} = j | y_{1:T})``: the expected transition counts
            (the E-step statistic of EM); ``None`` from :func:`hmm_filter`.
    """

    log_marginal: jax.Array
    filtered_probs: jax.Array
    predicted_probs: jax.Array
    log_likelihood_increments: jax.Array
    smoothed_probs: jax.Array | None = None
    expected_transitions: jax.Array | None = None


# ---------------------------------------------------------------------------------------------
# Filter and smoother (sum-product).


def _filter_outputs(log_init, log_trans, log_lik, mask, filtered, log_evidence):
    """``HMMPosterior`` fields from a forward pass: predicted probs and per-step increments.

    The increments ``log p(y_t | y_{1:t-1}) = logsumexp_k(log predicted[t, k] + log_lik[t, k])``
    are computed per step, not as differences of the cumulative ``log_evidence``, so they keep
    full relative precision at large T (float32 included).
    """
    predicted = jnp.concatenate(
        [jnp.exp(log_init)[None], (filtered[:-1, None, :] @ jnp.exp(log_trans))[:, 0, :]], axis=0
    )
    increments = logsumexp(safe_log(predicted) + log_lik, axis=-1)
    increments = jnp.where(mask, increments, 0.0)
    return HMMPosterior(log_evidence[-1], filtered, predicted, increments)


def _filter_core(log_init, log_trans, log_lik, mask, parallel):
    log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    filtered, log_evidence = _forward(log_init, log_trans, log_lik, parallel)
    outputs = _filter_outputs(log_init, log_trans, log_lik, mask, filtered, log_evidence)
    # The same value, whose gradient is one backward pass (unused outputs are dropped by XLA, so
    # log_prob under jit runs a single forward scan).
    return outputs._replace(log_marginal=_log_marginal(log_init, log_trans, log_lik, parallel))


def _smoother_core(log_init, log_trans, log_lik, mask, parallel):
    log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    smoother = _parallel_smoother if parallel else _serial_smoother
    _, filtered, log_evidence, smoothed, transitions = smoother(log_init, log_trans, log_lik)
    outputs = _filter_outputs(log_init, log_trans, log_lik, mask, filtered, log_evidence)
    return outputs._replace(
        smoothed_probs=smoothed, expected_transitions=jnp.sum(transitions, axis=0)
    )


def hmm_filter(
    initial_probs=None,
    transition_matrix=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    obs_mask=None,
    parallel: bool = False,
) -> HMMPosterior:
    """Forward algorithm: filtered and predicted state probabilities and the log-marginal.

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
        An :class:`HMMPosterior` with ``smoothed_probs`` and ``expected_transitions`` left
        ``None``.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).

    Example:
        >>> post = hmm_filter(jnp.ones(2) / 2, jnp.eye(2) * 0.8 + 0.1, jnp.zeros((5, 2)))
        >>> float(post.log_marginal)
        0.0
    """
    args = _prepare(
        initial_probs,
        transition_matrix,
        log_likelihoods,
        obs_mask,
        initial_logits,
        transition_logits,
        "hmm_filter",
    )
    return _run_batched(_filter_core, parallel, *args)


def hmm_smoother(
    initial_probs=None,
    transition_matrix=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    obs_mask=None,
    parallel: bool = False,
) -> HMMPosterior:
    """Forward-backward smoother: smoothed marginals and expected transition counts.

    The marginals are computed as the gradient of the log-marginal with respect to the
    log-potentials, so the serial and parallel versions share the forward pass.

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
        An :class:`HMMPosterior` with every field set.

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
        "hmm_smoother",
    )
    return _run_batched(_smoother_core, parallel, *args)


# ---------------------------------------------------------------------------------------------
# Viterbi and FFBS: a max-product or filtered pass, then a backward composition of index maps.


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


def _sample_core(key, log_init, log_trans, log_lik, mask, parallel):
    filtered = _filter_core(log_init, log_trans, log_lik, mask, parallel).filtered_probs
    log_filtered = jnp.log(filtered)
    num_steps = log_lik.shape[0]
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


@partial(jax.jit, static_argnums=(0, 1))
def _run_sampler(parallel, sample_shape, key, *args):
    batch_shape = _batch_shape(args, _CORE_NDIMS)
    key_ndim = 0 if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
    keys = jax.random.split(key, math.prod(sample_shape) * math.prod(batch_shape))
    keys = keys.reshape((math.prod(sample_shape),) + batch_shape + keys.shape[1:])

    def draw(batch_keys):
        core = lambda k, *a: _sample_core(k, *a, parallel)  # noqa: E731
        return _batched(core, (batch_keys,) + args, (key_ndim,) + _CORE_NDIMS)

    draws = jax.vmap(draw)(keys)
    return draws.reshape(sample_shape + draws.shape[1:])


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

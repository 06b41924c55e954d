"""The HMM forward algorithm: filtered and predicted state probabilities and the log-marginal."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.hmm._common import _prepare, _run_batched, safe_log
from numpyro_ssm.ops.hmm._forward import _forward
from numpyro_ssm.ops.hmm._forward_backward import _log_marginal

__all__ = ["HMMPosterior", "hmm_filter", "hmm_log_marginal"]


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


def _log_marginal_core(log_init, log_trans, log_lik, mask, parallel):
    return _log_marginal(log_init, log_trans, jnp.where(mask[:, None], log_lik, 0.0), parallel)


def hmm_log_marginal(
    initial_probs=None,
    transition_matrix=None,
    log_likelihoods=None,
    *,
    initial_logits=None,
    transition_logits=None,
    obs_mask=None,
    parallel: bool = False,
) -> jax.Array:
    """``log p(y_{1:T})`` alone, by the forward pass, with a one-pass derivative.

    The same value as ``hmm_filter(...).log_marginal`` without the per-step outputs. Its
    derivatives are the posterior marginals (``d/d log_likelihoods[t, k] = p(z_t = k | y)``),
    computed by one forward-backward pass instead of autodiff through the scan; forward mode
    and higher derivatives work too.

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
        Shape ``(...)``: the broadcast batch shape.

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
        "hmm_log_marginal",
    )
    return _run_batched(_log_marginal_core, parallel, *args)

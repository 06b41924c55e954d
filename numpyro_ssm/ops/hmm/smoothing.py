"""Forward-backward smoothing of an HMM: smoothed marginals and expected transition counts."""

import jax.numpy as jnp

from numpyro_ssm.ops.hmm._common import _prepare, _run_batched
from numpyro_ssm.ops.hmm._forward_backward import _forward_backward
from numpyro_ssm.ops.hmm.filtering import HMMPosterior, _filter_outputs

__all__ = ["hmm_smoother"]


def _smoother_core(log_init, log_trans, log_lik, mask, parallel):
    log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    _, filtered, log_evidence, smoothed, transitions = _forward_backward(
        log_init, log_trans, log_lik, parallel
    )
    outputs = _filter_outputs(log_init, log_trans, log_lik, mask, filtered, log_evidence)
    return outputs._replace(
        smoothed_probs=smoothed, expected_transitions=jnp.sum(transitions, axis=0)
    )


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

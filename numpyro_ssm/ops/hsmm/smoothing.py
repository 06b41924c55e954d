"""Forward-backward smoothing of an HSMM: state marginals, segment starts, expected counts."""

from numpyro_ssm.ops.hsmm._common import _run_batched, prepare_arguments
from numpyro_ssm.ops.hsmm._passes import smoother_pass
from numpyro_ssm.ops.hsmm.filtering import HSMMPosterior

__all__ = ["hsmm_smoother"]


def _smoother_core(params, log_lik, mask, parallel, censoring):
    out = smoother_pass(params, log_lik, mask, parallel, censoring)
    return HSMMPosterior(
        out.log_marginal,
        out.filtered,
        out.predicted,
        out.increments,
        out.final,
        smoothed_probs=out.smoothed,
        segment_start_probs=out.starts,
        expected_transitions=out.switches,
        expected_durations=out.durations + out.first,
    )


def hsmm_smoother(
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
) -> HSMMPosterior:
    """Forward-backward: smoothed state marginals, segment starts, expected switches and durations.

    One forward pass stores a ``(K, D_max)`` message per block of steps; the backward loop
    recomputes each block's forward messages from it and combines them with the backward ones,
    so memory is O(T K + C K D_max) with the serial schedule (:mod:`numpyro_ssm.ops.hsmm`).

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
        parallel: the parallel schedule (see :func:`~numpyro_ssm.ops.hsmm_filter`).

    Returns:
        An :class:`~numpyro_ssm.ops.HSMMPosterior` with every field set.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    params, log_lik, mask = prepare_arguments("hsmm_smoother", locals())
    return _run_batched(_smoother_core, parallel, censoring, params, log_lik, mask)

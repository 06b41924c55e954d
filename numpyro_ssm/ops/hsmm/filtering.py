"""The HSMM filter (forward algorithm) and the log-marginal likelihood with a one-pass gradient."""

from typing import NamedTuple

import jax

from numpyro_ssm.ops.hsmm._common import _run_batched, prepare_arguments
from numpyro_ssm.ops.hsmm._passes import filter_pass, log_marginal

__all__ = ["HSMMPosterior", "hsmm_filter", "hsmm_log_marginal"]


class HSMMPosterior(NamedTuple):
    """Posterior quantities of a hidden semi-Markov model; ``...`` are the broadcast batch axes.

    Attributes:
        log_marginal: shape ``(...)``, ``log p(y_{1:T})`` (steps that do not count excluded).
        filtered_probs: shape ``(..., T, K)``, ``[t, k] = p(z_t = k | y_{1:t})``.
        predicted_probs: shape ``(..., T, K)``, ``[t, k] = p(z_t = k | y_{1:t-1})``; row 0 is
            the initial distribution.
        log_likelihood_increments: shape ``(..., T)``, ``[t] = log p(y_t | y_{1:t-1})``; zero at
            steps that do not count, and summing to ``log_marginal``.
        final_residual_probs: shape ``(..., K, D_max)``, ``[k, r - 1] = p(z_T = k, the segment
            in progress lasts r more steps, T included | y_{1:T})``: where a forecast starts.
        smoothed_probs: shape ``(..., T, K)``, ``[t, k] = p(z_t = k | y_{1:T})``; ``None`` from
            :func:`hsmm_filter`.
        segment_start_probs: shape ``(..., T, K)``, ``[t, k] = p(a segment of state k starts at
            step t | y_{1:T})`` (row 0 is ``smoothed_probs[..., 0, :]``); ``None`` from
            :func:`hsmm_filter`.
        expected_transitions: shape ``(..., K, K)``, ``[i, j]`` = the expected number of
            switches from a segment of ``i`` to one of ``j`` given ``y_{1:T}``; zero diagonal.
        expected_durations: shape ``(..., K, D_max)``, ``[k, d - 1]`` = the expected number of
            segments of state ``k`` with duration ``d`` given ``y_{1:T}``, every segment
            counted (the first one too). The segment in progress at the last step counts with
            its posterior total duration: beyond the data that is the prior truncated to at
            least the steps seen (right censoring). The M-step statistic of EM; normalize a row
            for a posterior dwell-time distribution.
    """

    log_marginal: jax.Array
    filtered_probs: jax.Array
    predicted_probs: jax.Array
    log_likelihood_increments: jax.Array
    final_residual_probs: jax.Array
    smoothed_probs: jax.Array | None = None
    segment_start_probs: jax.Array | None = None
    expected_transitions: jax.Array | None = None
    expected_durations: jax.Array | None = None


def _filter_core(params, log_lik, mask, parallel, censoring):
    out = filter_pass(params, log_lik, mask, parallel, censoring)
    # the same value, whose gradient is one forward-backward pass (XLA drops the unused scan)
    value = log_marginal(params, log_lik, mask, parallel, censoring)
    return HSMMPosterior(value, out.filtered, out.predicted, out.increments, out.final)


def hsmm_filter(
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
    """Forward algorithm of an explicit-duration HSMM: filtered probabilities and log-marginal.

    The model is a segment process: ``z_1 ~ initial``, a duration ``d ~ p_{z}(d)``, ``d =
    1..D_max``; after the segment a switch to ``j != i`` with probability
    ``transition_matrix[i, j]`` (see :mod:`numpyro_ssm.ops.hsmm` for the self-transition rule),
    and so on; ``y_t`` is emitted from the state of the segment covering ``t``. The work is
    O(T K (K + D_max)).

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``.
        transition_matrix: shape ``(..., K, K)``, ``[i, j] = p(next state j | a segment of i
            ended)``; its diagonal is dropped and rows renormalized. No time axis.
        duration_probs: shape ``(..., K, D_max)``, ``[k, d - 1] = p(d | state k)``.
        log_likelihoods: shape ``(..., T, K)``, ``[t, k] = log p(y_t | z_t = k)``.
        initial_logits: unnormalized log ``initial_probs``; give it instead.
        transition_logits: unnormalized log ``transition_matrix``; give it instead.
        duration_logits: unnormalized log ``duration_probs`` (normalized over the last axis);
            give it instead.
        first_segment_probs: shape ``(..., K, D_max)``, ``p(z_1 = k, the first segment covers
            steps 1..d)``, instead of ``initial_probs`` (a forecast's start, or a start in the
            middle of a segment).
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed. Other steps
            contribute nothing.
        censoring: ``"right"`` (default): the segment in progress at the last step may go on
            after it, its duration contributing ``P(d >= steps seen)``. ``"none"``: the last
            segment ends at the last step that counts.
        parallel: run the blocks of steps at once after an associative scan over them
            (:mod:`numpyro_ssm.ops.hsmm`), instead of one step after the other.

    Returns:
        An :class:`HSMMPosterior` with the smoothing fields left ``None``.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    params, log_lik, mask = prepare_arguments("hsmm_filter", locals())
    return _run_batched(_filter_core, parallel, censoring, params, log_lik, mask)


def hsmm_log_marginal(
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
    """``log p(y_{1:T})`` alone, by the filter, with a one-pass derivative.

    The same value as ``hsmm_filter(...).log_marginal``. Its derivatives are posterior
    expectations (``d/d log_likelihoods[t, k] = p(z_t = k | y)``, expected switch and duration
    counts), computed by one forward-backward pass instead of autodiff through the scans, in
    O(T K + C K D_max) memory with the serial schedule (``C`` steps per block, see
    :mod:`numpyro_ssm.ops.hsmm`); forward mode and higher derivatives work too.

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
        censoring: ``"right"`` or ``"none"`` (see :func:`hsmm_filter`).
        parallel: the parallel schedule (see :func:`hsmm_filter`).

    Returns:
        Shape ``(...)``: the broadcast batch shape.

    Raises:
        ValueError: when shapes disagree (the message names the argument and its shape).
    """
    params, log_lik, mask = prepare_arguments("hsmm_log_marginal", locals())
    return _run_batched(log_marginal, parallel, censoring, params, log_lik, mask)

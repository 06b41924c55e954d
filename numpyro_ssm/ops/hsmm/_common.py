"""Argument handling of the HSMM algorithms: probs | logits, the self-transition rule, shapes.

Every public op goes through :func:`_prepare`, which returns the normalized log-parameters
(:class:`_LogParams`), the log-likelihoods and the step mask with their batch axes in front,
and :func:`_run_batched`, which applies a one-sequence core over those batch axes.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.hmm._common import _batched, safe_log

CENSORING = ("right", "none")


class _LogParams(NamedTuple):
    """Normalized log-parameters of one sequence's HSMM.

    Attributes:
        first: shape ``(K, D)``, ``log p(z_1 = k, d_1 = d)``: the first segment's state and
            duration (``initial + duration`` for a fresh start).
        trans: shape ``(K, K)``, ``log p(next segment's state j | segment of state i ended)``,
            ``-inf`` on the diagonal (for ``K >= 2``).
        dur: shape ``(K, D)``, ``log p(d | state k)`` of every later segment, ``d = 1..D``.
    """

    first: jax.Array
    trans: jax.Array
    dur: jax.Array


def lift(x, ndim):
    """``x`` with leading singleton axes up to ``ndim`` axes (explicit broadcasting)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


def _safe_log_normalize(log_weights, axis=-1):
    """``log_weights`` normalized over ``axis``; all ``-inf`` where the total is zero (no NaN)."""
    total = jax.scipy.special.logsumexp(log_weights, axis=axis, keepdims=True)
    finite = jnp.isfinite(total)
    return jnp.where(finite, log_weights - jnp.where(finite, total, 0.0), -jnp.inf)


def switch_log_probs(log_trans):
    """The self-transition rule: drop the diagonal and renormalize each row over ``j != i``.

    A segment's end is already decided by its duration, so a switch goes to another state:
    ``p(j | i) = A[i, j] / (1 - A[i, i])`` for ``j != i``. With one state, segments of that
    state follow each other (``[[1]]``). A row with no mass off the diagonal becomes all
    ``-inf``: a segment of that state can never be followed.

    Args:
        log_trans: shape ``(..., K, K)``, log transition probabilities or unnormalized logits.

    Returns:
        Shape ``(..., K, K)``, normalized over the last axis, ``-inf`` on the diagonal.
    """
    num_states = log_trans.shape[-1]
    if num_states == 1:
        return jnp.zeros_like(log_trans)
    off_diagonal = jnp.where(jnp.eye(num_states, dtype=bool), -jnp.inf, log_trans)
    return _safe_log_normalize(off_diagonal)


def _log_table(name, probs, logits, probs_name, logits_name):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: give exactly one of {probs_name} and {logits_name}.")
    if logits is not None:
        return _safe_log_normalize(jnp.asarray(logits))
    return safe_log(jnp.asarray(probs))


def _prepare(
    *,
    initial_probs,
    initial_logits,
    first_segment_probs,
    transition_matrix,
    transition_logits,
    duration_probs,
    duration_logits,
    log_likelihoods,
    obs_mask,
    censoring,
    fn_name,
):
    """Check the arguments; return ``(_LogParams, log_lik (..., T, K), mask (..., T))``.

    The parameters keep their own batch axes (``first (..., K, D)``, ``trans (..., K, K)``,
    ``dur (..., K, D)``); :func:`_run_batched` broadcasts them.
    """
    if censoring not in CENSORING:
        raise ValueError(f"{fn_name}: censoring must be one of {CENSORING}, got {censoring!r}.")
    if log_likelihoods is None:
        raise ValueError(f"{fn_name}: log_likelihoods of shape (..., T, K) is required.")
    log_lik = jnp.asarray(log_likelihoods)
    if log_lik.ndim < 2:
        raise ValueError(
            f"{fn_name}: log_likelihoods must have shape (..., T, K), got {log_lik.shape}."
        )
    num_steps, num_states = log_lik.shape[-2:]
    log_dur = _log_table(
        fn_name, duration_probs, duration_logits, "duration_probs", "duration_logits"
    )
    if log_dur.ndim < 2 or log_dur.shape[-2] != num_states or log_dur.shape[-1] < 1:
        raise ValueError(
            f"{fn_name}: duration_probs must have shape (..., K, D_max) with K={num_states} from "
            f"log_likelihoods {log_lik.shape} and D_max >= 1, got {log_dur.shape}."
        )
    max_duration = log_dur.shape[-1]
    given = [a is not None for a in (initial_probs, initial_logits, first_segment_probs)]
    if sum(given) != 1:
        raise ValueError(
            f"{fn_name}: give exactly one of initial_probs, initial_logits and first_segment_probs."
        )
    if first_segment_probs is not None:
        log_first = safe_log(jnp.asarray(first_segment_probs))
        if log_first.ndim < 2 or log_first.shape[-2:] != (num_states, max_duration):
            raise ValueError(
                f"{fn_name}: first_segment_probs must have shape (..., K, D_max) = (..., "
                f"{num_states}, {max_duration}), got {log_first.shape}."
            )
    else:
        log_init = _log_table(
            fn_name, initial_probs, initial_logits, "initial_probs", "initial_logits"
        )
        if log_init.ndim < 1 or log_init.shape[-1] != num_states:
            raise ValueError(
                f"{fn_name}: initial_probs must have shape (..., K) with K={num_states} from "
                f"log_likelihoods {log_lik.shape}, got {log_init.shape}."
            )
        log_first = log_init[..., None] + log_dur
    log_trans = _log_table(
        fn_name, transition_matrix, transition_logits, "transition_matrix", "transition_logits"
    )
    if log_trans.ndim < 2 or log_trans.shape[-2:] != (num_states, num_states):
        raise ValueError(
            f"{fn_name}: transition_matrix must have shape (..., K, K) with K={num_states} from "
            f"log_likelihoods {log_lik.shape}, got {log_trans.shape}. HSMM transitions are "
            "homogeneous: there is no time axis."
        )
    log_trans = switch_log_probs(log_trans)
    dtype = jnp.result_type(float, log_first, log_trans, log_dur, log_lik)
    params = _LogParams(*(x.astype(dtype) for x in (log_first, log_trans, log_dur)))
    if obs_mask is None:
        mask = jnp.ones(log_lik.shape[:-1], dtype=bool)
    else:
        mask = jnp.asarray(obs_mask, dtype=bool)
        if mask.ndim < 1 or mask.shape[-1] not in (1, num_steps):
            raise ValueError(
                f"{fn_name}: obs_mask must have shape (..., T) with T={num_steps}, "
                f"got {mask.shape}."
            )
    return params, log_lik.astype(dtype), mask


_ARGUMENTS = (
    "initial_probs",
    "initial_logits",
    "first_segment_probs",
    "transition_matrix",
    "transition_logits",
    "duration_probs",
    "duration_logits",
    "log_likelihoods",
    "obs_mask",
    "censoring",
)


def prepare_arguments(fn_name, arguments):
    """:func:`_prepare` on a public op's arguments (its ``locals()`` on entry)."""
    return _prepare(fn_name=fn_name, **{name: arguments[name] for name in _ARGUMENTS})


_CORE_NDIMS = (2, 2, 2, 2, 1)  # first (K, D), trans (K, K), dur (K, D), log_lik (T, K), mask (T,)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _run_batched(core, parallel, censoring, params, log_lik, mask):
    """``core(params, log_lik, mask, parallel, censoring)`` over the broadcast batch axes."""

    def one(first, trans, dur, ll, m):
        return core(_LogParams(first, trans, dur), ll, m, parallel, censoring)

    return _batched(one, (*params, log_lik, mask), _CORE_NDIMS)

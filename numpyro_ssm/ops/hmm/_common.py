"""Argument handling shared by the HMM algorithms: probs | logits, shapes, batch axes."""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._fusion import unrolled_reduce


def safe_log(probs):
    """``log(probs)`` with ``-inf`` at exact zeros and a zero (not NaN) gradient there.

    Args:
        probs: nonnegative array, any shape.

    Returns:
        ``log(probs)``, same shape.
    """
    probs = jnp.asarray(probs)
    positive = probs > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, probs, 1.0)), -jnp.inf)


def _log_normalized(name, probs, logits, probs_name, logits_name):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: give exactly one of {probs_name} and {logits_name}.")
    if logits is not None:
        return jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
    return safe_log(probs)


def _prepare(
    initial_probs,
    transition_matrix,
    log_likelihoods,
    obs_mask,
    initial_logits,
    transition_logits,
    fn_name,
):
    """Check shapes and return ``(log_init, log_trans, log_lik, mask)`` with time axes explicit.

    ``log_trans`` gets an explicit time axis (length 1 or T-1), ``mask`` is bool ``(..., T)``.
    """
    if log_likelihoods is None:
        raise ValueError(f"{fn_name}: log_likelihoods of shape (..., T, K) is required.")
    log_lik = jnp.asarray(log_likelihoods)
    if log_lik.ndim < 2:
        raise ValueError(
            f"{fn_name}: log_likelihoods must have shape (..., T, K), got {log_lik.shape}."
        )
    num_steps, num_states = log_lik.shape[-2:]
    log_init = _log_normalized(
        fn_name, initial_probs, initial_logits, "initial_probs", "initial_logits"
    )
    log_trans = _log_normalized(
        fn_name, transition_matrix, transition_logits, "transition_matrix", "transition_logits"
    )
    if log_init.ndim < 1 or log_init.shape[-1] != num_states:
        raise ValueError(
            f"{fn_name}: initial_probs must have shape (..., K) with K={num_states} from "
            f"log_likelihoods {log_lik.shape}, got {log_init.shape}."
        )
    if log_trans.ndim < 2 or log_trans.shape[-2:] != (num_states, num_states):
        raise ValueError(
            f"{fn_name}: transition_matrix must have shape (..., K, K) with K={num_states} from "
            f"log_likelihoods {log_lik.shape}, got {log_trans.shape}."
        )
    if log_trans.ndim == 2:
        log_trans = log_trans[None]
    if log_trans.shape[-3] not in (1, num_steps - 1):
        raise ValueError(
            f"{fn_name}: transition_matrix {log_trans.shape} has a time axis of length "
            f"{log_trans.shape[-3]}; expected 1 or T-1={num_steps - 1} (T from log_likelihoods "
            f"{log_lik.shape})."
        )
    dtype = jnp.result_type(float, log_init, log_trans, log_lik)
    log_init, log_trans, log_lik = (x.astype(dtype) for x in (log_init, log_trans, log_lik))
    if obs_mask is None:
        mask = jnp.ones(log_lik.shape[:-1], dtype=bool)
    else:
        mask = jnp.asarray(obs_mask, dtype=bool)
        if mask.ndim < 1 or mask.shape[-1] not in (1, num_steps):
            raise ValueError(
                f"{fn_name}: obs_mask must have shape (..., T) with T={num_steps}, "
                f"got {mask.shape}."
            )
    return log_init, log_trans, log_lik, mask


def _batch_shape(args, core_ndims):
    batch_shapes = [a.shape[: a.ndim - n] for a, n in zip(args, core_ndims, strict=True)]
    try:
        return jnp.broadcast_shapes(*batch_shapes)
    except ValueError:
        raise ValueError(f"Batch shapes do not broadcast: {batch_shapes}.") from None


def _batched(core, args, core_ndims):
    """Apply ``core`` (written for one sequence) over the broadcast leading batch axes of args.

    Args:
        core: function of the unbatched arrays.
        args: tuple of arrays.
        core_ndims: the number of trailing (non-batch) axes of each argument.

    Returns:
        ``core``'s output with the batch axes in front.
    """
    batch_shape = _batch_shape(args, core_ndims)
    in_axes = tuple(None if a.ndim == n else 0 for a, n in zip(args, core_ndims, strict=True))
    fn = core
    for _ in batch_shape:
        fn = jax.vmap(fn, in_axes=in_axes)
    full = tuple(
        a if a.ndim == n else jnp.broadcast_to(a, batch_shape + a.shape[a.ndim - n :])
        for a, n in zip(args, core_ndims, strict=True)
    )
    return fn(*full)


_CORE_NDIMS = (1, 3, 2, 1)  # log_init (K,), log_trans (T-1|1, K, K), log_lik (T, K), mask (T,)


@partial(jax.jit, static_argnums=(0, 1))
def _run_batched(core, parallel, *args):
    """``core(*args, parallel)`` over the batch axes, compiled once per shape (eager calls too)."""
    return _batched(lambda *a: core(*a, parallel), args, _CORE_NDIMS)


def _with_transitions(element_fn, log_trans, per_step):
    """Build ``(make_element, inputs)`` calling ``element_fn(log_trans_t, *per_step_t)``.

    A homogeneous ``log_trans`` (time axis of length 1) is closed over rather than stacked over
    time, so the sequential scan keeps O(K^2) memory.
    """
    if log_trans.shape[0] == 1:
        return (lambda inp: element_fn(log_trans[0], *inp)), per_step
    return (lambda inp: element_fn(*inp)), (log_trans,) + per_step


_UNROLLED_MAX_K = 16  # rows up to this length are reduced by elementwise ops, not a reduce op


def _row_reduce(op, reduce, x):
    """``reduce(x, axis=-1)``, unrolled into ``op`` calls for rows of up to ``_UNROLLED_MAX_K``.

    On the CPU a reduce over a short last axis runs as a kernel of its own, and the HMM's T x K
    arrays pass through several (``docs/performance.md``, "Why the code is shaped this way").
    """
    return unrolled_reduce(op, reduce, x, -1, _UNROLLED_MAX_K)


def _row_sum(x):
    """``sum(x, axis=-1)``, by :func:`_row_reduce`."""
    return _row_reduce(jnp.add, jnp.sum, x)


def _safe_max(x):
    """Row maxima of ``x`` (keeping the last axis), zero where not finite; no gradient."""
    m = _row_reduce(jnp.maximum, jnp.max, x)[..., None]
    return lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def _normalize(weights, log_offset):
    """Rows of ``weights`` scaled to sum to one, and ``log_offset + log(row sums)``.

    A row summing to zero (an impossible observation) stays zero with log-normalizer ``-inf``.
    """
    total = jnp.sum(weights, axis=-1)
    positive = total > 0
    safe_total = jnp.where(positive, total, 1.0)
    log_total = jnp.where(positive, jnp.log(safe_total), -jnp.inf)
    return weights / safe_total[..., None], log_offset + log_total

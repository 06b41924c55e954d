"""Hidden Markov model inference: filter, smoother, Viterbi and FFBS, serial or parallel-in-time.

Every algorithm is one associative operator run by :func:`~numpyro_ssm.ops.scan.prefix_scan`,
so ``parallel=False`` (``lax.scan``, O(T) depth) and ``parallel=True``
(``lax.associative_scan``, O(log T) depth, Hassan, Särkkä & García-Fernández 2021) share all
code, including time-varying transitions and masks.

Model and conventions (as TFP, dynamax and Stan): ``z_1 ~ Categorical(initial_probs)``,
``z_{t+1} | z_t ~ Categorical(transition_matrix[t, z_t])`` for the ``T - 1`` transitions, and
``log_likelihoods[t, k] = log p(y_t | z_t = k)``. A step with ``obs_mask[t] = False`` contributes
nothing: its log-likelihoods are treated as zeros.

Numerics. Forward messages are kept as *row-normalized matrices with log-normalizers*: an element
is ``(P, log_z)`` standing for the matrix ``exp(log_z)[:, None] * P`` with rows of ``P`` summing
to one. Element construction uses ``logsumexp``, so exact zeros in the transition matrix and
log-likelihoods of ``-1e4`` neither underflow nor produce NaN. The smoother is the gradient of the
log-marginal with respect to the log-potentials (the marginals are its derivatives), so it is
exact and shares the filter's code path. Backtracking (Viterbi) and backward sampling (FFBS) are
compositions of maps ``{0..K-1} -> {0..K-1}``, which are associative, so they run in parallel too.

Batching: every function broadcasts over leading batch axes of its arguments (see each
``Args:``), so ``vmap`` is rarely needed.
"""

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

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
# Argument handling: probs | logits, shapes, batch broadcasting.


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


# ---------------------------------------------------------------------------------------------
# Forward (sum-product) pass.


def _safe_max(x, axis):
    m = jnp.max(x, axis=axis, keepdims=True)
    return lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))


def _forward_element(log_trans_t, log_lik_t):
    """Element ``M[i, j] = A[i, j] p(y_t | z_t = j)`` as ``(P, log_z)``; rows of ``P`` sum to 1."""
    log_m = log_trans_t + log_lik_t[..., None, :]
    log_z = logsumexp(log_m, axis=-1)
    safe_z = jnp.where(jnp.isfinite(log_z), log_z, 0.0)
    return jnp.exp(log_m - safe_z[..., None]), log_z


def _forward_combine(earlier, later):
    """Product of two row-normalized elements, renormalized: ``(M1 M2)`` as ``(P, log_z)``."""
    p1, z1 = earlier
    p2, z2 = later
    shift = _safe_max(z2, axis=-1)
    weighted = p1 * jnp.exp(z2 - shift)[..., None, :]
    return _normalize(weighted @ p2, z1 + shift)


def _normalize(weights, log_offset):
    """Rows of ``weights`` scaled to sum to one, and ``log_offset + log(row sums)``.

    A row summing to zero (an impossible observation) stays zero with log-normalizer ``-inf``.
    """
    total = jnp.sum(weights, axis=-1)
    positive = total > 0
    safe_total = jnp.where(positive, total, 1.0)
    log_total = jnp.where(positive, jnp.log(safe_total), -jnp.inf)
    return weights / safe_total[..., None], log_offset + log_total


def _forward_fold(carry, trans_t, log_lik_t):
    """One sequential forward step on a compact ``(1, K)`` carry: ``combine(carry, element)``.

    Predict with ``A_t`` in probability space, then weight by the likelihood: O(K^2) multiply-adds
    and K exponentials per step, instead of building a normalized K x K element.
    """
    probs, log_z = carry
    shift = _safe_max(log_lik_t, axis=-1)
    weighted = (probs @ trans_t) * jnp.exp(log_lik_t - shift)[..., None, :]
    return _normalize(weighted, log_z + shift)


def _forward(log_init, log_trans, log_lik, parallel):
    """Forward pass of one sequence: ``(filtered_probs (T, K), log_evidence (T,))``.

    ``log_evidence[t] = log p(y_{1:t})``; ``log_lik`` is already masked.
    """
    first_log = log_init + log_lik[0]
    shift = _safe_max(first_log, axis=-1)
    first = _normalize(jnp.exp(first_log - shift)[None, :], shift)
    make_element, inputs = _with_transitions(_forward_element, log_trans, (log_lik[1:],))
    if log_trans.shape[0] == 1:
        trans = jnp.exp(log_trans[0])
        fold = lambda carry, inp: _forward_fold(carry, trans, *inp)  # noqa: E731
    else:
        fold = lambda carry, inp: _forward_fold(carry, jnp.exp(inp[0]), inp[1])  # noqa: E731
    prefix = prefix_scan(
        _forward_combine, make_element, first, inputs, parallel=parallel, fold=fold
    )
    probs, log_z = prefix
    return probs[:, 0, :], log_z[:, 0]


def _serial_smoother(log_init, log_trans, log_lik):
    """Forward-backward with normalized backward messages, for one (masked) sequence.

    ``beta_t`` is known up to a positive scale, so each one is renormalized to sum to one and the
    marginals are normalized at the end: no message over- or underflows, whatever the scale of
    the log-likelihoods.

    Returns:
        ``(log_marginal (), filtered (T, K), log_evidence (T,), smoothed (T, K),
        transitions)`` with ``transitions`` the pairwise marginals
        ``p(z_t = i, z_{t+1} = j | y)``: shape ``(T - 1, K, K)`` for time-varying transitions,
        or summed over time, ``(1, K, K)``, for homogeneous ones.
    """
    filtered, log_evidence = _forward(log_init, log_trans, log_lik, parallel=False)
    trans = jnp.exp(log_trans)
    homogeneous = trans.shape[0] == 1
    lik = jnp.exp(log_lik - _safe_max(log_lik, axis=-1))

    def step(carry, inp):
        beta_next, total = carry
        trans_t, lik_next, filtered_t = inp
        weight = lik_next * beta_next
        pair, _ = _normalize((filtered_t[:, None] * trans_t * weight[None, :]).reshape(1, -1), 0.0)
        beta, _ = _normalize((trans_t @ weight)[None, :], 0.0)
        pair = pair.reshape(trans_t.shape)
        if homogeneous:
            return (beta[0], total + pair), beta[0]
        return (beta[0], total), (beta[0], pair)

    num_states = log_lik.shape[-1]
    if homogeneous:  # keep O(K^2) memory: close over the matrix, accumulate the pair marginals
        inputs = (lik[1:], filtered[:-1])
        body = lambda c, inp: step(c, (trans[0],) + inp)  # noqa: E731
    else:
        inputs = (trans, lik[1:], filtered[:-1])
        body = step
    init = (jnp.ones(num_states, log_lik.dtype), jnp.zeros((num_states, num_states), log_lik.dtype))
    (_, total), outs = lax.scan(body, init, inputs, reverse=True)
    betas, transitions = (outs, total[None]) if homogeneous else outs
    betas = jnp.concatenate([betas, jnp.ones((1, num_states), log_lik.dtype)])
    smoothed, _ = _normalize(filtered * betas, 0.0)
    return log_evidence[-1], filtered, log_evidence, smoothed, transitions


@jax.custom_jvp
def _serial_log_marginal(log_init, log_trans, log_lik):
    """``log p(y_{1:T})`` by the sequential forward pass, differentiated by forward-backward.

    Its derivatives are the posterior marginals (``d/d log_lik[t, k] = p(z_t = k | y)``, and so
    on), computed by one backward recursion instead of autodiff through the scan. A custom JVP
    (not VJP) keeps forward mode and higher derivatives (Hessians, Laplace) working.
    """
    return _forward(log_init, log_trans, log_lik, parallel=False)[1][-1]


@_serial_log_marginal.defjvp
def _serial_log_marginal_jvp(primals, tangents):
    d_init, d_trans, d_lik = tangents
    value, _, _, smoothed, transitions = _serial_smoother(*primals)
    tangent = (
        jnp.sum(smoothed[0] * d_init) + jnp.sum(transitions * d_trans) + jnp.sum(smoothed * d_lik)
    )
    return value, tangent


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
    if parallel:
        return outputs
    # The same value, whose gradient is one backward recursion (unused outputs are dropped by
    # XLA, so log_prob under jit runs a single forward scan).
    return outputs._replace(log_marginal=_serial_log_marginal(log_init, log_trans, log_lik))


def _smoother_core(log_init, log_trans, log_lik, mask, parallel):
    log_lik = jnp.where(mask[:, None], log_lik, 0.0)
    if not parallel:
        value, filtered, log_evidence, smoothed, transitions = _serial_smoother(
            log_init, log_trans, log_lik
        )
        outputs = _filter_outputs(log_init, log_trans, log_lik, mask, filtered, log_evidence)
        return outputs._replace(
            smoothed_probs=smoothed, expected_transitions=jnp.sum(transitions, axis=0)
        )
    # Parallel: the marginals are the gradient of the log-marginal of the associative scan.

    def log_marginal(log_trans, log_lik):
        filtered, log_evidence = _forward(log_init, log_trans, log_lik, parallel)
        return log_evidence[-1], (filtered, log_evidence)

    grad_fn = jax.value_and_grad(log_marginal, argnums=(0, 1), has_aux=True)
    (_, (filtered, log_evidence)), (d_trans, d_lik) = grad_fn(log_trans, log_lik)
    outputs = _filter_outputs(log_init, log_trans, log_lik, mask, filtered, log_evidence)
    return outputs._replace(smoothed_probs=d_lik, expected_transitions=jnp.sum(d_trans, axis=0))


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
# Max-product pass and backward composition of index maps (Viterbi and FFBS).


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
    shift = _safe_max(o2, axis=-1)
    product = _maxplus_matmul(m1, (o2 - shift)[..., :, None] + m2)
    row_max = _safe_max(product, axis=-1)
    return product - row_max, o1 + shift + row_max[..., 0]


def _max_element(log_trans_t, log_lik_t):
    log_m = log_trans_t + log_lik_t[..., None, :]
    row_max = _safe_max(log_m, axis=-1)
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
    scores, _ = prefix_scan(_max_combine, make_element, first, inputs, parallel=parallel)
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

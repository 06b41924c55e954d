"""Sum-product recursions of the HSMM on the time-left expanded state, block by block.

The expanded state at step ``t`` is ``(k, r)``: the current segment is in state ``k`` and lasts
``r = 1..D`` more steps, ``t`` included (index ``r - 1`` of the last axis). One step maps a
message ``alpha (K, D)`` to

    ``pred[k, r] = alpha[k, r + 1] + (sum_i alpha[i, 1] A[i, k]) p_k(r)``

(shift by one step, plus the segments that start: O(K (K + D)) work, never a (K D)^2 matrix),
then multiplies by the step's likelihood and renormalizes. Messages are probability-space arrays
normalized to sum to one, each step's log-likelihoods scaled to peak at one, and the scales
added in log space, so nothing over- or underflows. The duration of the segment in progress at
the last step is summed over (``sum_r``): the right-censored, survival-function likelihood. With
``censoring="none"`` the last step that counts also multiplies by ``[r == 1]``: its segment ends
there.

The backward messages ``beta[k, r] ∝ p(y_{t+1:T} | z_t = k, r_t = r)`` obey the transposed
recursion ``beta_t[k, r] = v[k, r - 1]`` for ``r >= 2`` and ``beta_t[k, 1] = sum_j A[k, j]
sum_d p_j(d) v[j, d]``, with ``v = lik_{t+1} beta_{t+1}``.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.hmm._common import _normalize, safe_log
from numpyro_ssm.ops.hmm._forward import _forward_combine
from numpyro_ssm.ops.hsmm._blocks import Steps, where_valid
from numpyro_ssm.ops.hsmm._common import lift
from numpyro_ssm.ops.scan import prefix_scan


def _first_only(max_duration, dtype):
    """``[r == 1]``, shape ``(1, D)``: the segment ends at this step."""
    return (jnp.arange(max_duration) == 0).astype(dtype)[None, :]


def predict(alpha, trans, dur):
    """One step of the segment process: ``(pred (..., K, D), inflow (..., K))``.

    Args:
        alpha: shape ``(..., K, D)``, the message at step ``t``.
        trans: shape ``(K, K)``, switch probabilities (zero diagonal).
        dur: shape ``(K, D)``, duration probabilities.

    Returns:
        ``pred``, the message pushed to step ``t + 1`` before its likelihood, and ``inflow[j] =
        sum_i alpha[i, 1] A[i, j]``, the mass of segments of ``j`` starting at ``t + 1``.
    """
    inflow = alpha[..., 0] @ trans
    shifted = jnp.concatenate([alpha[..., 1:], jnp.zeros_like(alpha[..., :1])], axis=-1)
    return shifted + inflow[..., None] * lift(dur, alpha.ndim), inflow


def step_weights(step: Steps, max_duration):
    """The likelihood of each expanded state, ``(..., K, D)``, over ``exp(step.shift)``.

    ``lik[k]`` for every ``r``, times ``[r == 1]`` at the step where the last segment must end.
    """
    weights = jnp.broadcast_to(step.lik[..., None], step.lik.shape + (max_duration,))
    if step.end is None:
        return weights
    ends = weights * lift(_first_only(max_duration, weights.dtype), weights.ndim)
    return jnp.where(step.end[..., None, None], ends, weights)


def update(alpha, step: Steps, trans, dur):
    """One filtering step: ``(alpha_next, log_increment, pred)``; rows of ``alpha`` normalized.

    Args:
        alpha: shape ``(..., K, D)``, each message summing to one.
        step: the inputs of step ``t + 1``.
        trans: shape ``(K, K)``.
        dur: shape ``(K, D)``.

    Returns:
        The normalized message at ``t + 1``, ``log p(y_{t+1} | y_{1:t})`` per message (``-inf``
        for an impossible observation, whose message is then zero), and ``pred``. An invalid
        (padding) step returns ``alpha`` and an increment of zero.
    """
    pred, _ = predict(alpha, trans, dur)
    joint = pred * lift(step_weights(step, dur.shape[-1]), pred.ndim)
    total = jnp.sum(joint, axis=(-2, -1))
    positive = total > 0
    safe_total = jnp.where(positive, total, 1.0)
    new = joint / safe_total[..., None, None]
    log_total = jnp.where(positive, jnp.log(safe_total), -jnp.inf) + step.shift
    return where_valid(step, new, alpha), where_valid(step, log_total, 0.0), pred


def first_message(log_first, step: Steps):
    """``(alpha_1 (K, D), log p(y_1))`` from ``log_first (K, D) = log p(z_1, d_1)``."""
    max_duration = log_first.shape[-1]
    log_joint = log_first + step.log_lik[:, None]
    if step.end is not None:
        ends = jnp.where(_first_only(max_duration, bool), log_joint, -jnp.inf)
        log_joint = jnp.where(step.end, ends, log_joint)
    log_total = logsumexp(log_joint)
    safe = jnp.where(jnp.isfinite(log_total), log_total, 0.0)
    return jnp.exp(log_joint - safe), log_total


def forward_block(trans, dur, entry, block: Steps, keep_messages=False):
    """The filter through one block from ``entry (K, D)``.

    Returns:
        ``(exit (K, D), (filtered (C, K), predicted (C, K), increments (C,)[, messages (C, K,
        D)]))``.
    """

    def body(alpha, step):
        new, increment, pred = update(alpha, step, trans, dur)
        out = (jnp.sum(new, -1), jnp.sum(pred, -1), increment)
        return new, out + (new,) if keep_messages else out

    return lax.scan(body, entry, block)


def transfer(trans, dur, block: Steps):
    """One block as an element ``(P (KD, KD), log_z (KD,))`` of :func:`_forward_combine`.

    Row ``x`` is the block run from the basis message at expanded state ``x``: ``exp(log_z[x])
    P[x]`` is ``M[x]``, the row of the block's (K D) x (K D) matrix, each row normalized.
    """
    num_states, max_duration = dur.shape
    size = num_states * max_duration
    basis = jnp.eye(size, dtype=dur.dtype).reshape(size, num_states, max_duration)

    def body(carry, step):
        rows, log_z = carry
        new, log_total, _ = update(rows, step, trans, dur)
        return (new, log_z + log_total), None

    (rows, log_z), _ = lax.scan(body, (basis, jnp.zeros(size, dur.dtype)), block)
    return rows.reshape(size, size), log_z


def backward_step(beta, step: Steps, trans, dur):
    """``(v, seg, beta_prev)``: one step of the backward recursion, ``beta_prev`` normalized.

    ``v = weights_{t+1} beta_{t+1}`` and ``seg[j] = sum_d p_j(d) v[j, d]``.
    """
    v = beta * step_weights(step, dur.shape[-1])
    seg = jnp.sum(dur * v, axis=-1)
    back = jnp.concatenate([(trans @ seg)[:, None], v[:, :-1]], axis=-1)
    back, _ = _normalize(back.reshape(-1), 0.0)
    return v, seg, back.reshape(beta.shape)


def _safe_divide(x, total):
    return x / jnp.where(total > 0, total, 1.0)


def smooth_block(trans, dur, entry, block: Steps, beta_exit):
    """Forward-backward through one block, from the forward message before it and ``beta_exit``.

    The forward messages do not depend on the backward ones, so one loop runs both: iteration
    ``i`` advances the forward message to step ``i`` (recomputed from ``entry``, the
    checkpoint) and the backward message to step ``C - 1 - i``. The posterior statistics then
    come vectorized over the block's steps:

    - ``p(z_t = k | y) ∝ sum_r alpha_t[k, r] beta_t[k, r]``;
    - with ``v = weights_t beta_t``, ``seg[j] = sum_d p_j(d) v[j, d]`` and ``Z = sum pred_t
      v``: a switch ``i -> j`` between ``t - 1`` and ``t`` has probability ``alpha_{t-1}[i, 1]
      A[i, j] seg[j] / Z``, and a segment of ``j`` starting at ``t`` with duration ``d`` has
      ``inflow[j] p_j(d) v[j, d] / Z``.

    Returns:
        ``(beta_before (K, D), outputs)``: the backward message at the step before the block, and
        ``(filtered (C, K), predicted (C, K), increments (C,), smoothed (C, K), starts (C, K),
        switches (K, K), durations (K, D), exit (K, D))`` with ``switches`` and ``durations``
        summed over the block and ``exit`` the forward message after it.
    """
    mirrored = jax.tree.map(lambda x: x[::-1], block)

    def body(carry, inputs):
        alpha, beta = carry
        step, back_step = inputs
        new, increment, pred = update(alpha, step, trans, dur)
        _, _, before = backward_step(beta, back_step, trans, dur)
        out = (new, jnp.sum(new, -1), jnp.sum(pred, -1), increment, beta)
        return (new, where_valid(back_step, before, beta)), out

    (exit_, before), outputs = lax.scan(body, (entry, beta_exit), (block, mirrored))
    alphas, filtered, predicted, increments, betas = outputs
    betas = betas[::-1]
    previous = jnp.concatenate([entry[None], alphas[:-1]])
    joint = alphas * betas
    smoothed = _safe_divide(jnp.sum(joint, -1), jnp.sum(joint, axis=(-2, -1))[:, None])
    v = betas * step_weights(block, dur.shape[-1])
    seg = jnp.sum(dur[None] * v, axis=-1)
    pred, inflow = predict(previous, trans, dur)
    scale = _safe_divide(1.0, jnp.sum(pred * v, axis=(-2, -1)))
    scale = where_valid(block, scale, 0.0)[:, None]
    switches = trans * ((previous[..., 0] * scale).T @ seg)
    durations = dur * jnp.einsum("tk,tkd->kd", inflow * scale, v)
    starts = inflow * seg * scale
    outputs = (filtered, predicted, increments, smoothed, starts, switches, durations, exit_)
    return before, outputs


def _bounded_combine(earlier, later):
    """:func:`_forward_combine` with the log-normalizers shifted to peak at zero.

    For backward messages, needed up to a positive scalar only: no offset grows with T to eat
    the digits of their differences (float32 at large T).
    """
    probs, log_z = _forward_combine(earlier, later)
    peak = jnp.max(jnp.where(jnp.isfinite(log_z), log_z, -jnp.inf), axis=-1, keepdims=True)
    return probs, log_z - jnp.where(jnp.isfinite(peak), peak, 0.0)


def beta_exits(elements, chunk):
    """Every block's exit backward message from the block elements, by a suffix scan.

    ``beta`` at the last step of block ``b`` is ``M_{b+1} ... M_{N-1} 1``: the row sums of the
    suffix product, which are ``exp(log_z)`` of its row-normalized form.

    Args:
        elements: ``(P (N, KD, KD), log_z (N, KD))`` from :func:`transfer`.
        chunk: steps per chunk of the associative scan.

    Returns:
        Shape ``(N, KD)``, each normalized to peak at one.
    """
    size = elements[1].shape[-1]
    ones = (jnp.ones((size, 1), elements[1].dtype), jnp.zeros(size, elements[1].dtype))
    log_beta = prefix_scan(
        _bounded_combine,
        lambda e: e,
        ones,
        elements,
        parallel=True,
        reverse=True,
        chunk_size=chunk,
        keep=lambda c: c[1],
    )[1:]
    peak = jnp.max(log_beta, axis=-1, keepdims=True)
    return jnp.exp(log_beta - jnp.where(jnp.isfinite(peak), peak, 0.0))


def log_transfer_matrix(element):
    """``log M (KD, KD)`` of a :func:`transfer` element."""
    probs, log_z = element
    return safe_log(probs) + log_z[..., :, None]

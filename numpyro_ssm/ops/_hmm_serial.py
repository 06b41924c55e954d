"""The sequential HMM loops: the forward pass, and forward-backward in one loop.

Both carry *lazily normalized* messages: step ``t`` divides by the sum of the message of step
``t - 1``, and that sum comes out of the step's matrix-vector product as one extra column (or
row) of the transition matrix. A step is then one product and one fused elementwise kernel; a
separate sum, divide and log per step made the loop 2 to 3.5 times slower on the CPU at K = 10
and 50 (XLA runs each of them as its own kernel).

Forward-backward is one loop, not two: the backward messages do not depend on the forward ones,
so iteration ``i`` advances the forward message to step ``i + 1`` and the backward message to
step ``T - 2 - i`` (:func:`_paired_loop`). The marginals are computed after the loop,
vectorized over time, from the unnormalized messages (:func:`_serial_smoother`).
"""

import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._hmm_common import _row_sum, _safe_max, safe_log

_FUSED_STEP_MAX_K = 16  # the largest K whose paired products are one broadcast-sum kernel


def _scaled_likelihoods(log_lik):
    """``(lik (T, K), shift (T,))`` with ``lik = exp(log_lik - shift)`` peaking at one per step.

    Also scales the first step's joint ``log_init + log_lik[0]`` (as a (1, K) array).
    """
    shift = _safe_max(log_lik)
    return jnp.exp(log_lik - shift), shift[:, 0]


def _divide_rows(messages, sums):
    """``messages / sums[..., None]``, with zero rows where the sum is zero."""
    return messages / jnp.where(sums > 0, sums, 1.0)[..., None]


def _serial_forward(log_init, log_trans, log_lik, keep_messages):
    """The sequential forward loop: unnormalized messages and the log-evidence increments.

    ``w_1 = exp(log_init + log_lik_1 - c_1)`` and ``w_t = (w_{t-1} / s_{t-1}) A_{t-1} * lik_t``
    with ``s_t = sum(w_t)`` and ``lik_t = exp(log_lik_t - c_t)`` (:func:`_scaled_likelihoods`):
    then ``w_t / s_t = p(z_t | y_{1:t})`` and ``log p(y_t | y_{1:t-1}) = log s_t + c_t``. The
    product ``w_{t-1} [A | 1]`` gives ``w_{t-1} A`` and ``s_{t-1}`` at once. A zero sum (an
    impossible observation) gives zero messages from there on, hence a log-evidence of ``-inf``.

    Args:
        log_init: shape ``(K,)``.
        log_trans: shape ``(T - 1 | 1, K, K)``.
        log_lik: shape ``(T, K)``, masked.
        keep_messages: also return the messages.

    Returns:
        ``(messages (T, K) or None, sums (T,), increments (T,))`` with ``sums[t] = s_t`` and
        ``increments[t] = log p(y_t | y_{1:t-1})``.
    """
    num_states = log_lik.shape[-1]
    first, first_shift = _scaled_likelihoods(log_init[None] + log_lik[:1])  # (1, K), (1,)
    lik, shift = _scaled_likelihoods(log_lik[1:])

    def step(w, inputs):
        augmented, lik_t = inputs
        out = w @ augmented
        total = out[num_states]
        new = _divide_rows(out[:num_states], total) * lik_t
        return new, ((new, total) if keep_messages else total)

    ones = jnp.ones((num_states, 1), log_lik.dtype)
    if log_trans.shape[0] == 1:
        augmented = jnp.concatenate([jnp.exp(log_trans[0]), ones], axis=1)
        body, inputs = (lambda w, lik_t: step(w, (augmented, lik_t))), lik
    else:  # build [A_t | 1] inside the loop: no second (T - 1, K, K) stack in memory
        body = lambda w, inp: step(w, (jnp.concatenate([jnp.exp(inp[0]), ones], 1), inp[1]))  # noqa: E731
        inputs = (log_trans, lik)
    last, out = lax.scan(body, first[0], inputs)
    messages, earlier_sums = out if keep_messages else (None, out)
    sums = jnp.concatenate([earlier_sums, _row_sum(last)[None]])
    increments = safe_log(sums) + jnp.concatenate([first_shift, shift])
    if keep_messages:
        messages = jnp.concatenate([first, messages])
    return messages, sums, increments


def _pair_matrices(trans_f, trans_b):
    """``[A_f | 1]`` and ``[A_b^T | A_b^T 1]``, stacked: shape ``(2, K, K + 1)``.

    A row ``w`` times the first gives ``(w A_f, sum(w))``, a forward step and its
    normalizer; a row ``v`` times the second gives ``((A_b v)^T, 1^T A_b v)``, a backward step
    and its normalizer.
    """
    ones = jnp.ones(trans_f.shape[:-1] + (1,), trans_f.dtype)
    forward = jnp.concatenate([trans_f, ones], axis=-1)
    backward = jnp.concatenate([trans_b.T, jnp.sum(trans_b, axis=0)[:, None]], axis=-1)
    return jnp.stack([forward, backward])


def _paired_product(rows, matrices):
    """``rows[p] @ matrices[p]`` for ``p = 0, 1``: shape ``(2, K + 1)``.

    Up to ``_FUSED_STEP_MAX_K`` states it is one broadcast multiply-and-sum, which XLA fuses
    with the rest of the step: at T = 1e4 on the CPU the serial value+grad took 0.93 (K = 3)
    and 0.74 (K = 10) times as long as with a batched product, and about as long at K = 16.
    From K = 24 on the batched product is faster: 1.15 times at K = 24, 1.3 at K = 32, 2.8 at
    K = 50 (one run each). It is not :func:`~numpyro_ssm.ops.linalg.matmul_small`, which unrolls
    sums of up to 4 terms into adds: inside this loop that doubled the value+grad time at K = 3
    (0.17 to 0.20 against 0.09 us/step, three alternating runs).
    """
    if rows.shape[-1] <= _FUSED_STEP_MAX_K:
        return jnp.sum(rows[:, :, None] * matrices, axis=1)
    return jnp.einsum("pk,pkj->pj", rows, matrices)


def _paired_loop(first, lik, log_trans):
    """The forward and backward recursions of one sequence, in one sequential loop.

    Iteration ``i`` multiplies the forward row ``w_i`` (:func:`_serial_forward`) by
    ``[A_i | 1]`` and the backward row ``v_r = b_r / s'_r * lik_r``, ``r = T - 1 - i``, by
    ``[A_{r-1}^T | A_{r-1}^T 1]``: the products are ``(w_i A_i, s_i)`` and ``(b_{r-1}^T,
    s'_{r-1})``, with ``b_t ∝ p(y_{t+1:T} | z_t)`` and ``b_{T-1} = 1``. Each half is then
    divided by its normalizer and multiplied by its likelihoods, as in :func:`_serial_forward`.

    Args:
        first: shape ``(K,)``, ``w_0 ∝ p(z_0, y_0)``.
        lik: shape ``(T, K)``, ``p(y_t | z_t)`` up to a positive factor per ``t``.
        log_trans: shape ``(T - 1 | 1, K, K)``.

    Returns:
        ``(last (2, K), products (T - 1, 2, K + 1))``: the rows after the loop (``w_{T-1}`` and
        an unused backward row), and the products of every iteration.
    """
    num_steps, num_states = lik.shape
    start = jnp.stack([first, lik[-1]])
    if num_steps == 1:
        return start, jnp.zeros((0, 2, num_states + 1), lik.dtype)
    if log_trans.shape[0] == 1:
        trans = jnp.exp(log_trans[0])
        fixed = _pair_matrices(trans, trans)

    def step(rows, i):
        mirrored = num_steps - 2 - i
        if log_trans.shape[0] == 1:
            matrices = fixed
        else:  # exponentiate inside the loop: no second (T - 1, K, K) array in memory
            matrices = _pair_matrices(
                jnp.exp(lax.dynamic_index_in_dim(log_trans, i, keepdims=False)),
                jnp.exp(lax.dynamic_index_in_dim(log_trans, mirrored, keepdims=False)),
            )
        products = _paired_product(rows, matrices)
        lik_pair = jnp.stack(
            [
                lax.dynamic_index_in_dim(lik, i + 1, keepdims=False),
                lax.dynamic_index_in_dim(lik, mirrored, keepdims=False),
            ]
        )
        new = _divide_rows(products[:, :num_states], products[:, num_states]) * lik_pair
        return new, products

    return lax.scan(step, start, jnp.arange(num_steps - 1))


def _serial_smoother(log_init, log_trans, log_lik):
    """Forward-backward by one sequential loop (:func:`_paired_loop`), for one masked sequence.

    With ``w_t`` and ``s_t`` the forward rows and sums and ``b_t`` the backward rows:

    - ``p(z_t | y) ∝ u_t b_t`` with ``u_0 = w_0`` and ``u_t = (w_{t-1} A_{t-1}) lik_t`` (that
      is ``s_{t-1} w_t``): the loop's products times the likelihoods, never divided;
    - ``p(z_t = i, z_{t+1} = j | y) = w_t[i] A_t[i, j] lik_{t+1}[j] b_{t+1}[j] / n_t``, whose
      normalizer ``n_t = sum_j (w_t A_t)_j lik_{t+1}[j] b_{t+1}[j]`` is the sum of
      ``u_{t+1} b_{t+1}``, already computed for the smoothed marginals.

    Every row is scaled by positive factors only (the likelihoods peak at one per step, the
    messages are divided by their sums), so nothing over- or underflows whatever the scale of
    the log-likelihoods. For a homogeneous ``A`` the pairwise marginals' sum over time is one
    matrix product, ``A * (w^T (lik b / n))``, so memory stays O(T K).

    Returns:
        ``(log_marginal (), filtered (T, K), log_evidence (T,), smoothed (T, K),
        transitions)`` with ``transitions`` the pairwise marginals
        ``p(z_t = i, z_{t+1} = j | y)``: shape ``(T - 1, K, K)`` for time-varying transitions,
        or summed over time, ``(1, K, K)``, for homogeneous ones.
    """
    num_steps, num_states = log_lik.shape
    first, first_shift = _scaled_likelihoods(log_init[None] + log_lik[:1])  # (1, K), (1,)
    lik, shift = _scaled_likelihoods(log_lik)
    last, products = _paired_loop(first[0], lik, log_trans)
    forward, totals = products[:, 0, :num_states], products[:, 0, num_states]
    sums = jnp.concatenate([totals, _row_sum(last[0])[None]])  # s_t
    increments = safe_log(sums) + jnp.concatenate([first_shift, shift[1:]])
    undivided = jnp.concatenate([first, forward * lik[1:]])  # u_t
    backward = jnp.concatenate([products[::-1, 1, :num_states], jnp.ones_like(first)])  # b_t
    joint = undivided * backward
    joint_sums = _row_sum(joint)
    smoothed = _divide_rows(joint, joint_sums)
    # w_t for t < T - 1 (none when T = 1)
    messages = jnp.concatenate([first, _divide_rows(undivided[1:-1], totals[:-1])])
    messages = messages[: num_steps - 1]
    weights = _divide_rows(lik[1:] * backward[1:], joint_sums[1:])
    trans = jnp.exp(log_trans)
    if trans.shape[0] == 1:
        transitions = (trans[0] * (messages.T @ weights))[None]
    else:
        transitions = messages[:, :, None] * trans * weights[:, None, :]
    filtered = _divide_rows(undivided, _row_sum(undivided))
    return jnp.sum(increments), filtered, jnp.cumsum(increments), smoothed, transitions

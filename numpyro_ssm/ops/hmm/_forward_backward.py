"""Forward-backward of one sequence, and the log-marginal whose derivative it is.

**Sequential** (:func:`_serial_smoother`): one loop, not two. The backward messages do not
depend on the forward ones, so iteration ``i`` advances the forward message to step ``i + 1``
and the backward message to step ``T - 2 - i`` (:func:`_paired_loop`). The marginals are
computed after the loop, vectorized over time, from the unnormalized messages.

**Parallel** (:func:`_parallel_smoother`): one associative scan of paired elements, the forward
element of step ``t`` with the transposed element of the mirrored step.

**Gradient.** The posterior marginals are the derivatives of the log-marginal with respect to the
log-potentials, so :func:`_log_marginal` (the forward pass) carries a custom JVP that runs
forward-backward once instead of autodiff through the scan.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.hmm._common import _row_sum, _safe_max, safe_log
from numpyro_ssm.ops.hmm._forward import (
    _chunk_length,
    _divide_rows,
    _first_row,
    _forward,
    _forward_combine,
    _forward_element,
    _row_0,
    _row_normalized,
    _scaled_likelihoods,
    _serial_forward,
)
from numpyro_ssm.ops.scan import prefix_scan

_FUSED_STEP_MAX_K = 16  # the largest K whose paired products are one broadcast-sum kernel


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
    with the rest of the step; above, a batched product. It is not
    :func:`~numpyro_ssm.ops._fusion.matmul_small`, whose unrolled sums were slower inside this
    loop (``docs/performance.md``, "Why the code is shaped this way").
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


def _marginals(filtered, beta, lik_next, log_trans):
    """Smoothed and pairwise marginals from filtered probabilities and backward messages.

    ``p(z_t | y) ∝ filtered_t beta_t`` and
    ``p(z_t = i, z_{t+1} = j | y) ∝ filtered_t[i] A_t[i, j] w_{t+1}[j]`` with
    ``w_t = lik_t beta_t`` and the normalizer ``sum_j (filtered_t A_t)_j w_{t+1}[j]``. For a
    homogeneous ``A`` the pairwise marginals' sum over time is one matrix product,
    ``A * (filtered^T (w / norm))``, so memory stays O(T K) and the work is a GEMM.

    Args:
        filtered: shape ``(T, K)``, ``p(z_t | y_{1:t})``.
        beta: shape ``(T, K)``, ``p(y_{t+1:T} | z_t)`` up to a positive factor per ``t``.
        lik_next: shape ``(T - 1, K)``, ``p(y_t | z_t)`` for ``t >= 2`` up to a positive
            factor per ``t``, peaking at one (:func:`_scaled_likelihoods`).
        log_trans: shape ``(T - 1 | 1, K, K)``.

    Returns:
        ``(smoothed (T, K), transitions)``, ``transitions`` as in :func:`_serial_smoother`.
    """
    joint = filtered * beta
    smoothed = _divide_rows(joint, jnp.sum(joint, axis=-1))
    weights = lik_next * beta[1:]
    trans = jnp.exp(log_trans)
    before = filtered[:-1]
    if trans.shape[0] == 1:
        norm = jnp.sum((before @ trans[0]) * weights, axis=-1)
    else:
        norm = jnp.sum((before[:, None, :] @ trans)[:, 0, :] * weights, axis=-1)
    scaled = _divide_rows(weights, norm)
    if trans.shape[0] == 1:
        return smoothed, (trans[0] * (before.T @ scaled))[None]
    return smoothed, before[:, :, None] * trans * scaled[:, None, :]


_BACKWARD_SHIFT = (0.0, 1.0)  # which half of a pair element has its log-normalizers shifted


def _pair_element(log_trans_t, log_lik_t, log_trans_r, log_lik_r):
    """A forward element and a transposed one, stacked: ``(P (2, K, K), log_z (2, K))``.

    The first is :func:`_forward_element` of step ``t``; the second is ``M_r^T``,
    ``M_r^T[j, i] = A_r[i, j] p(y_r | z_r = j)``, for the mirrored step ``r``.
    """
    forward = _forward_element(log_trans_t, log_lik_t)
    backward = _row_normalized(jnp.swapaxes(log_trans_r, -1, -2) + log_lik_r[..., :, None])
    return jax.tree.map(lambda f, b: jnp.stack([f, b]), forward, backward)


def _pair_combine(earlier, later):
    """:func:`_forward_combine` of both halves of two pair elements.

    The backward half's log-normalizers are shifted to peak at zero: that half is needed only up
    to a positive scalar, and so no offset grows with T to eat the digits of their differences
    (float32 at T = 1e5). The forward half keeps its offsets: they are the log evidence.
    """
    probs, log_z = _forward_combine(earlier, later)
    shifted = jnp.asarray(_BACKWARD_SHIFT, log_z.dtype).reshape((1,) * (log_z.ndim - 2) + (2, 1))
    return probs, log_z - shifted * _safe_max(log_z)


def _parallel_smoother(log_init, log_trans, log_lik, chunk=None):
    """Forward-backward by one associative scan: the outputs of :func:`_serial_smoother`.

    The backward messages are a forward recursion too, on the transposed elements in reverse
    time: ``beta_t^T = 1^T M_T^T ... M_{t+1}^T`` (with ``M_s = A_{s-1} diag(lik_s)``). Its
    prefix products, started from a matrix of equal rows, have equal rows proportional to
    ``beta_t^T``. So one scan runs both recursions: the forward element of the k-th step is
    stacked with the transposed element of the k-th step from the end: half the kernels, each
    handling twice the data, and a shorter compilation than two scans.
    """
    num_states = log_lik.shape[-1]
    if chunk is None:
        chunk = max(1, _chunk_length(num_states, log_lik.dtype) // 2)
    first_probs, first_log_z = _first_row(log_init, log_lik[0])
    uniform = jnp.full((1, num_states), 1.0 / num_states, log_lik.dtype)
    # compact rows, broadcast by prefix_scan: the forward start and the equal rows of ones
    first = (
        jnp.stack([first_probs, uniform]),
        jnp.stack([first_log_z, jnp.zeros_like(first_log_z)]),
    )
    lik = log_lik[1:]
    if log_trans.shape[0] == 1:  # close over the matrix rather than stacking it over time
        trans = log_trans[0]
        make_element = lambda inp: _pair_element(trans, inp[0], trans, inp[1])  # noqa: E731
        inputs = (lik, lik[::-1])
    else:
        make_element = lambda inp: _pair_element(*inp)  # noqa: E731
        inputs = (log_trans, lik, log_trans[::-1], lik[::-1])
    probs, log_z = prefix_scan(
        _pair_combine, make_element, first, inputs, parallel=True, chunk_size=chunk, keep=_row_0
    )
    filtered, log_evidence, beta = probs[:, 0], log_z[:, 0], probs[::-1, 1]
    smoothed, transitions = _marginals(filtered, beta, _scaled_likelihoods(lik)[0], log_trans)
    return log_evidence[-1], filtered, log_evidence, smoothed, transitions


def _forward_backward(log_init, log_trans, log_lik, parallel):
    """Forward-backward of one masked sequence: :func:`_serial_smoother` or its parallel twin.

    Returns:
        ``(log_marginal, filtered (T, K), log_evidence (T,), smoothed (T, K), transitions)``
        (see :func:`_serial_smoother`).
    """
    if parallel:
        return _parallel_smoother(log_init, log_trans, log_lik)
    return _serial_smoother(log_init, log_trans, log_lik)


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _log_marginal(log_init, log_trans, log_lik, parallel):
    """``log p(y_{1:T})`` by the forward pass, differentiated by forward-backward.

    Its derivatives are the posterior marginals (``d/d log_lik[t, k] = p(z_t = k | y)``, and so
    on), computed by forward-backward (one sequential loop, or one associative scan) instead of
    autodiff through the scan. A custom JVP (not VJP) keeps forward mode and higher derivatives
    (Hessians, Laplace) working.
    """
    if parallel:
        return _forward(log_init, log_trans, log_lik, parallel=True)[1][-1]
    return jnp.sum(_serial_forward(log_init, log_trans, log_lik, keep_messages=False)[2])


@_log_marginal.defjvp
def _log_marginal_jvp(parallel, primals, tangents):
    d_init, d_trans, d_lik = tangents
    value, _, _, smoothed, transitions = _forward_backward(*primals, parallel)
    tangent = (
        jnp.sum(smoothed[0] * d_init) + jnp.sum(transitions * d_trans) + jnp.sum(smoothed * d_lik)
    )
    return value, tangent

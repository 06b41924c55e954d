"""The HMM forward pass (sum-product), forward-backward (serial and parallel) and the log marginal.

The parallel scans' elements are row-normalized matrices with log-normalizers: an element
``(P, log_z)`` stands for ``exp(log_z)[:, None] * P`` with rows of ``P`` summing to one, built
with ``logsumexp`` so that exact zeros and log-likelihoods of ``-1e4`` are safe. The sequential
loops live in :mod:`numpyro_ssm.ops._hmm_serial`.

The parallel scans run in chunks of :func:`_chunk_length` steps, so that the K x K elements alive
at once stay within ``_CHUNK_BYTES`` whatever T, and store one row of each prefix
(:func:`_row_0`): the parallel value and gradient at K = 50, T = 1e5 peak at 1.7 GB of RSS
(about 24 GB with neither).
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops._hmm_common import _normalize, _safe_max, _with_transitions
from numpyro_ssm.ops._hmm_serial import (
    _divide_rows,
    _scaled_likelihoods,
    _serial_forward,
    _serial_smoother,
)
from numpyro_ssm.ops.scan import prefix_scan

_CHUNK_BYTES = 2**28  # K x K elements per chunk of a parallel scan: 256 MB
_FUSED_MATMUL_MAX_K = 16  # the largest K whose element products are fused on a GPU


def _chunk_length(num_states, dtype):
    """Steps per chunk of a parallel scan: ``_CHUNK_BYTES`` worth of K x K elements.

    About 3.7 million steps at K = 3 (no chunking in practice), 13 000 at K = 50 in float64.
    """
    return max(1, _CHUNK_BYTES // (num_states * num_states * jnp.dtype(dtype).itemsize))


def _row_normalized(log_m):
    """The matrix ``exp(log_m)`` as ``(P, log_z)``: rows of ``P`` sum to one."""
    log_z = logsumexp(log_m, axis=-1)
    safe_z = jnp.where(jnp.isfinite(log_z), log_z, 0.0)
    return jnp.exp(log_m - safe_z[..., None]), log_z


def _forward_element(log_trans_t, log_lik_t):
    """Element ``M[i, j] = A[i, j] p(y_t | z_t = j)`` as ``(P, log_z)``; rows of ``P`` sum to 1."""
    return _row_normalized(log_trans_t + log_lik_t[..., None, :])


def _fused_matmul(a, b):
    """``a @ b`` as one broadcast multiply and sum, which XLA fuses into a single kernel."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def _element_product(a, b):
    """Batched ``a @ b`` of the parallel scans' K x K elements.

    On a CUDA GPU with K <= ``_FUSED_MATMUL_MAX_K`` the product is a fused broadcast-sum: on one
    H100 at T = 1e5 it made the parallel value+grad (:func:`_parallel_smoother`) 1.04 to 3.8
    times faster than the batched GEMM (K = 3 and 10, float32 and float64). On the CPU it was
    1.15 times (K = 3) to 2.5 times (K = 10) slower, so the CPU keeps the GEMM. The choice is
    made when the code is lowered (``lax.platform_dependent``): the compiled program has no
    branch.
    """
    if a.shape[-1] > _FUSED_MATMUL_MAX_K:
        return a @ b
    return lax.platform_dependent(a, b, cuda=_fused_matmul, default=jnp.matmul)


def _forward_combine(earlier, later):
    """Product of two row-normalized elements, renormalized: ``(M1 M2)`` as ``(P, log_z)``."""
    p1, z1 = earlier
    p2, z2 = later
    shift = _safe_max(z2)
    weighted = p1 * jnp.exp(z2 - shift)[..., None, :]
    return _normalize(_element_product(weighted, p2), z1 + shift)


def _first_row(log_init, log_lik_1):
    """``p(z_1, y_1)`` as a compact row element ``(P (1, K), log_z (1,))`` of the parallel scans."""
    return _normalize(*_scaled_likelihoods((log_init + log_lik_1)[None]))


def _row_0(combinations):
    """Row 0 of prefix combinations ``(P, log_z)``: the only one needed, as all rows are equal.

    A prefix starts from a matrix of equal rows (an initial distribution, or ones), so its rows
    stay equal; keeping one row makes the scans' stored output O(T K) instead of O(T K^2).
    """
    probs, log_z = combinations
    return probs[..., 0, :], log_z[..., 0]


def _forward(log_init, log_trans, log_lik, parallel, chunk=None):
    """Forward pass of one sequence: ``(filtered_probs (T, K), log_evidence (T,))``.

    ``log_evidence[t] = log p(y_{1:t})``; ``log_lik`` is already masked. ``chunk`` overrides
    :func:`_chunk_length` for the parallel scan.
    """
    if not parallel:
        messages, sums, increments = _serial_forward(log_init, log_trans, log_lik, True)
        return _divide_rows(messages, sums), jnp.cumsum(increments)
    first = _first_row(log_init, log_lik[0])
    make_element, inputs = _with_transitions(_forward_element, log_trans, (log_lik[1:],))
    if chunk is None:
        chunk = _chunk_length(log_lik.shape[-1], log_lik.dtype)
    return prefix_scan(
        _forward_combine, make_element, first, inputs, parallel=True, chunk_size=chunk, keep=_row_0
    )


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
    stacked with the transposed element of the k-th step from the end. That halves the number of
    kernels, each handling twice the data. On one H100 at T = 1e5 (K = 3 and 10, float32 and
    float64, batched GEMM products) the value+grad took 0.91 to 0.94 of the time of two scans;
    on the CPU its compile time went from 10.5 s to 6.5 s at K = 3, and its run time rose 1.1 to
    1.3 times at K = 3 and 10 (the serial smoother is the fast one there).
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
    smoother = _parallel_smoother if parallel else _serial_smoother
    value, _, _, smoothed, transitions = smoother(*primals)
    tangent = (
        jnp.sum(smoothed[0] * d_init) + jnp.sum(transitions * d_trans) + jnp.sum(smoothed * d_lik)
    )
    return value, tangent

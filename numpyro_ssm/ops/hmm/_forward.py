"""The HMM forward pass (sum-product) of one sequence: a sequential loop or an associative scan.

**Sequential.** The loop carries *lazily normalized* messages: step ``t`` divides by the sum of
the message of step ``t - 1``, and that sum comes out of the step's matrix-vector product as one
extra column of the transition matrix, so that a step is one product and one fused elementwise
kernel (:func:`_serial_forward`).

**Parallel.** The associative elements are row-normalized matrices with log-normalizers: an
element ``(P, log_z)`` stands for ``exp(log_z)[:, None] * P`` with rows of ``P`` summing to one,
built with ``logsumexp`` so that exact zeros and log-likelihoods of ``-1e4`` are safe. The scans
run in chunks of :func:`_chunk_length` steps, so that the K x K elements alive at once stay
within ``_CHUNK_BYTES`` whatever T, and store one row of each prefix (:func:`_row_0`).

:func:`_forward` chooses between the two.
"""

import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.hmm._common import _normalize, _row_sum, _safe_max, _with_transitions, safe_log
from numpyro_ssm.ops.scan import prefix_scan

_CHUNK_BYTES = 2**28  # K x K elements per chunk of a parallel scan: 256 MB
_FUSED_MATMUL_MAX_K = 16  # the largest K whose element products are fused on a GPU


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

    On a CUDA GPU with K <= ``_FUSED_MATMUL_MAX_K`` the product is a fused broadcast-sum, elsewhere
    the batched GEMM (measured in ``docs/performance.md``, "Why the code is shaped this way").
    The choice is made when the code is lowered (``lax.platform_dependent``): the compiled
    program has no branch.
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

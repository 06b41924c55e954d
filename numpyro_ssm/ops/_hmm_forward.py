"""The HMM forward pass (sum-product), forward-backward (serial and parallel) and the log marginal.

Forward messages are row-normalized matrices with log-normalizers: an element ``(P, log_z)``
stands for ``exp(log_z)[:, None] * P`` with rows of ``P`` summing to one, built with
``logsumexp`` so that exact zeros and log-likelihoods of ``-1e4`` are safe.

The parallel scans run in chunks of :func:`_chunk_length` steps, so that the K x K elements alive
at once stay within ``_CHUNK_BYTES`` whatever T: the parallel value and gradient at K = 50,
T = 1e5 peak at 5.5 GB of RSS instead of about 24.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops._hmm_common import _normalize, _safe_max, _with_transitions, safe_log
from numpyro_ssm.ops.scan import prefix_scan

_CHUNK_BYTES = 2**28  # K x K elements per chunk of a parallel scan: 256 MB


def _chunk_length(num_states, dtype):
    """Steps per chunk of a parallel scan: ``_CHUNK_BYTES`` worth of K x K elements.

    About 3.7 million steps at K = 3 (no chunking in practice), 13 000 at K = 50 in float64.
    """
    return max(1, _CHUNK_BYTES // (num_states * num_states * jnp.dtype(dtype).itemsize))


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


def _forward_fold(carry, trans_t, log_lik_t):
    """One sequential forward step on a compact ``(1, K)`` carry: ``combine(carry, element)``.

    Predict with ``A_t`` in probability space, then weight by the likelihood: O(K^2) multiply-adds
    and K exponentials per step, instead of building a normalized K x K element.
    """
    probs, log_z = carry
    shift = _safe_max(log_lik_t, axis=-1)
    weighted = (probs @ trans_t) * jnp.exp(log_lik_t - shift)[..., None, :]
    return _normalize(weighted, log_z + shift)


def _forward(log_init, log_trans, log_lik, parallel, chunk=None):
    """Forward pass of one sequence: ``(filtered_probs (T, K), log_evidence (T,))``.

    ``log_evidence[t] = log p(y_{1:t})``; ``log_lik`` is already masked. ``chunk`` overrides
    :func:`_chunk_length` for the parallel scan.
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
    if chunk is None:
        chunk = _chunk_length(log_lik.shape[-1], log_lik.dtype)
    prefix = prefix_scan(
        _forward_combine,
        make_element,
        first,
        inputs,
        parallel=parallel,
        fold=fold,
        chunk_size=chunk,
    )
    probs, log_z = prefix
    return probs[:, 0, :], log_z[:, 0]


def _serial_smoother(log_init, log_trans, log_lik):
    """Forward-backward with normalized backward messages, for one (masked) sequence.

    ``beta_t`` is known up to a positive scale, so each one is renormalized to sum to one: no
    message over- or underflows, whatever the scale of the log-likelihoods. The loop carries only
    ``beta``; the marginals are computed after it, vectorized over time (:func:`_marginals`).

    Returns:
        ``(log_marginal (), filtered (T, K), log_evidence (T,), smoothed (T, K),
        transitions)`` with ``transitions`` the pairwise marginals
        ``p(z_t = i, z_{t+1} = j | y)``: shape ``(T - 1, K, K)`` for time-varying transitions,
        or summed over time, ``(1, K, K)``, for homogeneous ones.
    """
    filtered, log_evidence = _forward(log_init, log_trans, log_lik, parallel=False)
    trans = jnp.exp(log_trans)
    lik = jnp.exp(log_lik - _safe_max(log_lik, axis=-1))

    def step(beta_next, inp):
        trans_t, lik_next = inp
        beta, _ = _normalize((trans_t @ (lik_next * beta_next))[None, :], 0.0)
        return beta[0], beta[0]

    if trans.shape[0] == 1:  # close over the matrix rather than stacking it over time
        body, inputs = (lambda b, lik_next: step(b, (trans[0], lik_next))), lik[1:]
    else:
        body, inputs = step, (trans, lik[1:])
    last = jnp.ones(log_lik.shape[-1], log_lik.dtype)
    _, betas = lax.scan(body, last, inputs, reverse=True)
    log_beta = safe_log(jnp.concatenate([betas, last[None]]))
    smoothed, transitions = _marginals(filtered, log_beta, log_trans, log_lik)
    return log_evidence[-1], filtered, log_evidence, smoothed, transitions


def _marginals(filtered, log_beta, log_trans, log_lik):
    """Smoothed and pairwise marginals from filtered probabilities and backward messages.

    ``p(z_t = i, z_{t+1} = j | y) ∝ filtered_t[i] A_t[i, j] w_{t+1}[j]`` with
    ``w_t = p(y_t | z_t) beta_t``. For a homogeneous ``A`` their sum over time is one matrix
    product, ``A * (filtered^T (w / norm))``, so memory stays O(T K) and the work is a GEMM.

    Args:
        filtered: shape ``(T, K)``, ``p(z_t | y_{1:t})``.
        log_beta: shape ``(T, K)``, ``log p(y_{t+1:T} | z_t)`` up to a constant per ``t``.
        log_trans: shape ``(T - 1 | 1, K, K)``.
        log_lik: shape ``(T, K)``, masked.

    Returns:
        ``(smoothed (T, K), transitions)``, ``transitions`` as in :func:`_serial_smoother`.
    """
    smoothed, _ = _normalize(filtered * jnp.exp(log_beta - _safe_max(log_beta, axis=-1)), 0.0)
    log_weights = log_lik[1:] + log_beta[1:]
    weights = jnp.exp(log_weights - _safe_max(log_weights, axis=-1))
    trans = jnp.exp(log_trans)
    before = filtered[:-1]
    if trans.shape[0] == 1:
        norm = jnp.sum((before @ trans[0]) * weights, axis=-1)
    else:
        norm = jnp.sum((before[:, None, :] @ trans)[:, 0, :] * weights, axis=-1)
    positive = norm > 0
    scaled = jnp.where(positive[:, None], weights / jnp.where(positive, norm, 1.0)[:, None], 0.0)
    if trans.shape[0] == 1:
        return smoothed, (trans[0] * (before.T @ scaled))[None]
    return smoothed, before[:, :, None] * trans * scaled[:, None, :]


def _backward_combine(earlier, later):
    """:func:`_forward_combine` with the log-normalizers shifted to peak at zero.

    It is the product up to a positive scalar, which is all backward messages need, and no
    offset grows with T to eat the digits of their differences (float32 at T = 1e5).
    """
    probs, log_z = _forward_combine(earlier, later)
    return probs, log_z - _safe_max(log_z, axis=-1)


def _log_backward(log_trans, log_lik, chunk):
    """Parallel backward messages: ``log beta_t = log p(y_{t+1:T} | z_t) + c_t``, shape (T, K).

    The suffix product ``A_t diag(lik_{t+1}) ... A_{T-1} diag(lik_T)`` applied to a matrix of
    ones has every column equal to ``beta_t``: its rows are uniform and its log-normalizers are
    ``log beta_t`` up to the constant ``c_t``.
    """
    num_states = log_lik.shape[-1]
    make_element, inputs = _with_transitions(_forward_element, log_trans, (log_lik[1:],))
    ones = (
        jnp.full((num_states, num_states), 1.0 / num_states, log_lik.dtype),
        jnp.zeros(num_states, log_lik.dtype),
    )
    _, log_beta = prefix_scan(
        _backward_combine, make_element, ones, inputs, parallel=True, reverse=True, chunk_size=chunk
    )
    return log_beta


def _parallel_smoother(log_init, log_trans, log_lik, chunk=None):
    """Forward-backward by two associative scans: the outputs of :func:`_serial_smoother`."""
    if chunk is None:
        chunk = _chunk_length(log_lik.shape[-1], log_lik.dtype)
    filtered, log_evidence = _forward(log_init, log_trans, log_lik, parallel=True, chunk=chunk)
    log_beta = _log_backward(log_trans, log_lik, chunk)
    smoothed, transitions = _marginals(filtered, log_beta, log_trans, log_lik)
    return log_evidence[-1], filtered, log_evidence, smoothed, transitions


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _log_marginal(log_init, log_trans, log_lik, parallel):
    """``log p(y_{1:T})`` by the forward pass, differentiated by forward-backward.

    Its derivatives are the posterior marginals (``d/d log_lik[t, k] = p(z_t = k | y)``, and so
    on), computed by one backward recursion (or one reverse associative scan) instead of
    autodiff through the scan. A custom JVP (not VJP) keeps forward mode and higher derivatives
    (Hessians, Laplace) working.
    """
    return _forward(log_init, log_trans, log_lik, parallel)[1][-1]


@_log_marginal.defjvp
def _log_marginal_jvp(parallel, primals, tangents):
    d_init, d_trans, d_lik = tangents
    smoother = _parallel_smoother if parallel else _serial_smoother
    value, _, _, smoothed, transitions = smoother(*primals)
    tangent = (
        jnp.sum(smoothed[0] * d_init) + jnp.sum(transitions * d_trans) + jnp.sum(smoothed * d_lik)
    )
    return value, tangent

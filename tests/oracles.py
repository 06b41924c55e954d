"""Independent reference implementations used by the tests (numpy, no numpyro_ssm code).

- ``hmm_brute_force``: enumerates all K^T latent paths of a small HMM.
"""

import itertools
from typing import NamedTuple

import numpy as np


class BruteForceHMM(NamedTuple):
    log_marginal: float
    filtered_probs: np.ndarray  # (T, K)
    predicted_probs: np.ndarray  # (T, K)
    smoothed_probs: np.ndarray  # (T, K)
    expected_transitions: np.ndarray  # (K, K)
    log_likelihood_increments: np.ndarray  # (T,)
    mode: np.ndarray  # (T,)
    paths: np.ndarray  # (K^T, T)
    path_log_probs: np.ndarray  # (K^T,), log p(z_{1:T} | y_{1:T})


def _logsumexp(x):
    x = np.asarray(x, dtype=float)
    m = np.max(x)
    if not np.isfinite(m):
        return m
    return m + np.log(np.sum(np.exp(x - m)))


def hmm_brute_force(initial_probs, transition_matrix, log_likelihoods, obs_mask=None):
    """Enumerate every path z_{1:T} of a small HMM.

    Args:
        initial_probs: (K,).
        transition_matrix: (K, K) or (T-1, K, K).
        log_likelihoods: (T, K).
        obs_mask: (T,) bool or None; masked steps get zero log-likelihood.
    """
    pi = np.asarray(initial_probs, dtype=float)
    ll = np.array(log_likelihoods, dtype=float)
    T, K = ll.shape
    A = np.asarray(transition_matrix, dtype=float)
    if A.ndim == 2:
        A = np.broadcast_to(A, (max(T - 1, 1), K, K))
    if obs_mask is not None:
        ll[~np.asarray(obs_mask, dtype=bool)] = 0.0
    with np.errstate(divide="ignore"):
        log_pi, log_A = np.log(pi), np.log(A)
    paths = np.array(list(itertools.product(range(K), repeat=T)))
    # prefix_log_joint[n, t] = log p(z_{1:t+1}, y_{1:t+1}) for path n
    prefix = np.zeros((len(paths), T))
    for n, z in enumerate(paths):
        acc = log_pi[z[0]] + ll[0, z[0]]
        prefix[n, 0] = acc
        for t in range(1, T):
            acc = acc + log_A[t - 1, z[t - 1], z[t]] + ll[t, z[t]]
            prefix[n, t] = acc
    log_joint = prefix[:, -1]
    log_marginal = _logsumexp(log_joint)
    post = np.exp(log_joint - log_marginal)
    smoothed = np.zeros((T, K))
    expected = np.zeros((K, K))
    for n, z in enumerate(paths):
        smoothed[np.arange(T), z] += post[n]
        for t in range(T - 1):
            expected[z[t], z[t + 1]] += post[n]
    # filtering needs p(z_t, y_{1:t}): marginalize the prefix joint over z_{1:t-1}. Paths share
    # prefixes, so take each prefix once: paths whose later states are all 0.
    filtered = np.zeros((T, K))
    log_evidence = np.zeros(T)
    for t in range(T):
        unique = np.all(paths[:, t + 1 :] == 0, axis=1)
        lp = prefix[unique, t]
        log_evidence[t] = _logsumexp(lp)
        for k in range(K):
            sel = paths[unique, t] == k
            filtered[t, k] = np.exp(_logsumexp(lp[sel]) - log_evidence[t]) if sel.any() else 0.0
    predicted = np.zeros((T, K))
    predicted[0] = pi
    for t in range(1, T):
        predicted[t] = filtered[t - 1] @ A[t - 1]
    increments = np.diff(log_evidence, prepend=0.0)
    return BruteForceHMM(
        log_marginal,
        filtered,
        predicted,
        smoothed,
        expected,
        increments,
        paths[np.argmax(log_joint)],
        paths,
        log_joint - log_marginal,
    )

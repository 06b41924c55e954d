"""The sequential FFBS backward pass against the exact posterior over paths."""

import jax
import numpy as np
from oracles import hmm_brute_force

from numpyro_ssm.ops.hmm import sequential_posterior_sample


def test_path_frequencies_match_the_exact_posterior_with_masks_and_time_varying_transitions():
    rng = np.random.default_rng(4)
    K, T, N = 3, 4, 40_000
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=(T - 1, K))
    A[1, 0, 2] = 0.0  # a structural zero
    A[1, 0] /= A[1, 0].sum()
    ll = rng.normal(size=(T, K))
    mask = np.array([True, False, True, True])
    ref = hmm_brute_force(pi, A, ll, obs_mask=mask)
    draws = np.asarray(
        sequential_posterior_sample(jax.random.key(11), pi, A, ll, obs_mask=mask, sample_shape=(N,))
    )
    assert draws.shape == (N, T) and draws.dtype == np.int32
    codes = draws @ (K ** np.arange(T - 1, -1, -1))
    freq = np.bincount(codes, minlength=K**T) / N
    p = np.exp(ref.path_log_probs)
    se = np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-4)
    assert np.all(freq[p == 0] == 0)
    batched = sequential_posterior_sample(jax.random.key(0), pi, A, np.stack([ll, ll]))
    assert batched.shape == (2, T)

"""Transition counts, Dirichlet rows, Chinese-restaurant table counts and the HDP update.

The table-count sampler is checked against the exact law of the CRT distribution (its mean,
variance and, for a small count, its whole probability mass function through unsigned Stirling
numbers of the first kind); the whole conjugate update by a Geweke test: chains that alternate
"path given transitions" and "transitions given path" and start from the joint prior must stay
at the prior, whose moments are known exactly.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma, gammaln
from scipy.stats import chisquare

from numpyro_ssm.ops.hmm import (
    count_transitions,
    sample_hdp_transitions,
    sample_table_counts,
    sample_transition_matrix,
    sticky_concentration,
)


def test_count_transitions_matches_loops_with_masks_and_lags():
    rng = np.random.default_rng(0)
    K, T = 3, 15
    z = rng.integers(K, size=(2, T))
    mask = rng.uniform(size=(2, T)) > 0.2
    expected = np.zeros((2, K, K), int)
    for b in range(2):
        for t in range(1, T - 1):  # num_lags=1: transitions out of step 0 are ignored
            if mask[b, t] and mask[b, t + 1]:
                expected[b, z[b, t], z[b, t + 1]] += 1
    counts = count_transitions(jnp.asarray(z), K, mask=jnp.asarray(mask), num_lags=1)
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == jnp.int32
    full = count_transitions(jnp.asarray(z[0]), K)
    assert int(full.sum()) == T - 1


def test_count_transitions_bad_input():
    with pytest.raises(ValueError, match=r"states must lie in \[0, num_states\) = \[0, 3\), got 3"):
        count_transitions(jnp.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match="states must be an int array"):
        count_transitions(jnp.array([0.0, 1.0]), 3)


def test_sample_transition_matrix_is_the_dirichlet_conditional():
    conc = sticky_concentration(3, 0.5, 4.0)
    counts = jnp.array([[5, 1, 0], [2, 0, 7], [0, 0, 0]])
    draws = jax.vmap(lambda k: sample_transition_matrix(k, conc, counts))(
        jax.random.split(jax.random.key(0), 20_000)
    )
    post = np.asarray(conc + counts)
    mean = post / post.sum(-1, keepdims=True)
    var = mean * (1 - mean) / (post.sum(-1, keepdims=True) + 1)
    np.testing.assert_allclose(draws.sum(-1), 1.0, rtol=1e-12)
    z = (draws.mean(0) - mean) / np.sqrt(var / 20_000)
    assert np.all(np.abs(z) < 5), z
    # tiny concentrations: no zero rows, no NaN
    tiny = sample_transition_matrix(jax.random.key(1), jnp.full((2, 4), 1e-30))
    np.testing.assert_allclose(tiny.sum(-1), 1.0)


def _crt_moments(n, c):
    p = np.array([1.0] + [c / (c + r) for r in range(1, n)]) if n else np.zeros(0)
    return p.sum(), (p * (1 - p)).sum()


def test_table_counts_have_the_exact_mean_and_variance():
    counts = np.array([[0, 1, 7, 40], [3, 120, 1, 9], [40, 2, 0, 15]])
    conc = np.array([[0.05], [1.0], [30.0]]) * np.ones((1, 4))
    conc[1, 1] = 1e-3  # a nearly-zero concentration still opens the first table
    draw = jax.jit(
        jax.vmap(lambda k: sample_table_counts(k, counts, conc, max_total=300))
    )  # a loose bound
    m = np.asarray(draw(jax.random.split(jax.random.key(0), 20_000)), float)
    exact = np.vectorize(_crt_moments)(counts, conc)
    mean, var = exact
    np.testing.assert_allclose(
        mean,
        np.where(counts > 0, conc * (digamma(conc + counts) - digamma(conc)), 0),
        rtol=1e-10,
        atol=1e-12,
    )
    se = np.sqrt(np.maximum(var, 1e-12) / 20_000)
    assert np.all(np.abs(m.mean(0) - mean) < 5 * se + 1e-12)
    np.testing.assert_array_equal(m[:, counts == 0], 0)
    dev2 = (m - mean) ** 2
    se2 = dev2.std(0) / np.sqrt(20_000)
    assert np.all(np.abs(dev2.mean(0) - var) < 5 * se2 + 1e-9)


def test_table_counts_have_the_exact_distribution():
    n, c, draws = 6, 0.7, 40_000
    stirling = np.zeros((n + 1, n + 1))  # unsigned, first kind
    stirling[0, 0] = 1
    for i in range(1, n + 1):
        for j in range(1, i + 1):
            stirling[i, j] = stirling[i - 1, j - 1] + (i - 1) * stirling[i - 1, j]
    log_pmf = [
        math.log(stirling[n, j]) + j * math.log(c) + gammaln(c) - gammaln(c + n)
        for j in range(1, n + 1)
    ]
    pmf = np.exp(log_pmf)
    np.testing.assert_allclose(pmf.sum(), 1.0, rtol=1e-12)
    m = jax.vmap(lambda k: sample_table_counts(k, jnp.array([n]), jnp.array([c]), max_total=n))(
        jax.random.split(jax.random.key(1), draws)
    )[:, 0]
    observed = np.bincount(np.asarray(m), minlength=n + 1)[1:]
    assert chisquare(observed, pmf * draws).pvalue > 1e-4


def test_table_counts_bad_input():
    with pytest.raises(ValueError, match="counts must be >= 0"):
        sample_table_counts(jax.random.key(0), jnp.array([-1, 2]), 1.0)
    with pytest.raises(ValueError, match="pass max_total"):
        jax.jit(lambda n: sample_table_counts(jax.random.key(0), n, 1.0))(jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"stickiness \(κ\) must be >= 0, got -1.0"):
        sample_hdp_transitions(
            jax.random.key(0),
            jnp.zeros((2, 2), int),
            jnp.ones(2) / 2,
            concentration=1.0,
            stickiness=-1.0,
            gamma=1.0,
        )


K, T, ALPHA, KAPPA, GAMMA = 3, 60, 1.0, 8.0, 1.5


def _prior_draw(key):
    beta_key, rows_key = jax.random.split(key)
    beta = jax.random.dirichlet(beta_key, jnp.full(K, GAMMA / K))
    P = sample_transition_matrix(rows_key, sticky_concentration(K, ALPHA, KAPPA, beta))
    return beta, P


def _path(key, P):
    first_key, step_key = jax.random.split(key)
    z0 = jax.random.randint(first_key, (), 0, K)

    def step(z, k):
        new = jax.random.categorical(k, jnp.log(P[z]))
        return new, new

    _, rest = jax.lax.scan(step, z0, jax.random.split(step_key, T - 1))
    return jnp.concatenate([z0[None], rest])


@partial(jax.jit, static_argnums=1)
def _successive_conditional(key, num_iterations):
    init_key, run_key = jax.random.split(key)
    beta, P = _prior_draw(init_key)

    def sweep(state, k):
        beta, P = state
        path_key, update_key = jax.random.split(k)
        z = _path(path_key, P)  # the "data" given the parameters
        counts = count_transitions(z, K)
        return sample_hdp_transitions(
            update_key,
            counts,
            beta,
            concentration=ALPHA,
            stickiness=KAPPA,
            gamma=GAMMA,
            max_total=T - 1,
        ), None

    (beta, P), _ = jax.lax.scan(sweep, (beta, P), jax.random.split(run_key, num_iterations))
    return beta, P


def test_geweke_hdp_update_leaves_the_prior_invariant():
    chains = 4000
    beta, P = jax.vmap(lambda k: _successive_conditional(k, 15))(
        jax.random.split(jax.random.key(2), chains)
    )
    a = GAMMA / K
    e_beta, e_beta2 = 1 / K, a * (a + 1) / (GAMMA * (GAMMA + 1))
    s = ALPHA + KAPPA
    e_diag = (ALPHA / K + KAPPA) / s
    e_diag2 = (ALPHA**2 * e_beta2 + (2 * KAPPA + 1) * ALPHA * e_beta + KAPPA * (KAPPA + 1)) / (
        s * (s + 1)
    )
    e_off = (ALPHA / K) / s
    stats = {
        "beta_0": (np.asarray(beta[:, 0]), e_beta),
        "beta_0^2": (np.asarray(beta[:, 0]) ** 2, e_beta2),
        "P_kk": (np.asarray(jnp.diagonal(P, axis1=-2, axis2=-1)), e_diag),
        "P_kk^2": (np.asarray(jnp.diagonal(P, axis1=-2, axis2=-1)) ** 2, e_diag2),
        "P_01": (np.asarray(P[:, 0, 1]), e_off),
    }
    for name, (values, expected) in stats.items():
        values = values.reshape(chains, -1).mean(-1)  # the diagonal's states are exchangeable
        z = (values.mean() - expected) / (values.std() / np.sqrt(chains))
        assert abs(z) < 4.5, (name, values.mean(), expected, z)

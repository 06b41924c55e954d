"""stationary_distribution and hmm_log_marginal against independent references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import hmm_brute_force

from numpyro_ssm.ops import hmm_filter, hmm_log_marginal, stationary_distribution

jax.config.update("jax_enable_x64", True)


def _eigen_stationary(matrix):
    """The left eigenvector of eigenvalue 1, normalized (NumPy, an independent reference)."""
    values, vectors = np.linalg.eig(matrix.T)
    v = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return v / v.sum()


@pytest.mark.parametrize("K", [2, 3, 7])
def test_stationary_distribution_is_the_unit_eigenvector(K):
    rng = np.random.default_rng(K)
    matrices = rng.dirichlet(np.ones(K), size=(4, K))  # a batch of 4 chains
    pi = stationary_distribution(matrices)
    assert pi.shape == (4, K)
    for b in range(4):
        np.testing.assert_allclose(pi[b], _eigen_stationary(matrices[b]), rtol=1e-10)
        np.testing.assert_allclose(pi[b] @ matrices[b], pi[b], rtol=1e-10)
    logits = np.log(matrices) + 2.0
    np.testing.assert_allclose(stationary_distribution(transition_logits=logits), pi, rtol=1e-10)


def test_stationary_distribution_gradient_and_float32():
    def pi_0(a, b):  # the chain [[1 - a, a], [b, 1 - b]] has pi_0 = b / (a + b)
        return stationary_distribution(jnp.array([[1 - a, a], [b, 1 - b]]))[0]

    a, b = 0.1, 0.3
    grad = jax.grad(pi_0, argnums=(0, 1))(a, b)
    np.testing.assert_allclose(grad, [-b / (a + b) ** 2, a / (a + b) ** 2], rtol=1e-10)
    matrix = jnp.array([[1 - a, a], [b, 1 - b]])
    pi32 = stationary_distribution(matrix.astype(jnp.float32))
    assert pi32.dtype == jnp.float32
    np.testing.assert_allclose(pi32, [0.75, 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        stationary_distribution()
    with pytest.raises(ValueError, match=r"transition_matrix must have shape \(\.\.\., K, K\)"):
        stationary_distribution(jnp.ones((2, 3)) / 3)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_hmm_log_marginal_equals_enumeration_and_filter(parallel):
    rng = np.random.default_rng(0)
    K, T = 3, 6
    init = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=(T - 1, K))
    log_lik = rng.normal(size=(2, T, K))  # a batch of 2
    mask = np.array([[True] * T, [True, False, True, True, False, True]])
    value = hmm_log_marginal(init, trans, log_lik, obs_mask=mask, parallel=parallel)
    assert value.shape == (2,)
    for b in range(2):
        ref = hmm_brute_force(init, trans, np.where(mask[b, :, None], log_lik[b], 0.0))
        np.testing.assert_allclose(value[b], ref.log_marginal, rtol=1e-10)
    post = hmm_filter(init, trans, log_lik, obs_mask=mask, parallel=parallel)
    np.testing.assert_allclose(value, post.log_marginal, rtol=1e-12)
    grad = jax.grad(lambda ll: hmm_log_marginal(init, trans, ll, parallel=parallel).sum())(log_lik)
    assert np.isfinite(grad).all()

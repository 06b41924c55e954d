"""The exact companion form: the Kalman ops on it against the dense Gaussian of the SLDS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import slds_dense_given_path
from scipy.stats import multivariate_normal

from numpyro_ssm.ops import kalman_log_marginal
from numpyro_ssm.ops.switching import ar_params, ar_to_lds, get_lags, lag_matrix, resample_latents
from numpyro_ssm.ops.switching.gibbs import SLDSEmission


def _slds(L, seed=0, K=2, D=2, Dy=3, T=6):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, D, L * D)) * 0.3
    b = rng.normal(size=(K, D)) * 0.5
    Q = (
        np.stack([np.eye(D) * 0.3 + 0.05] * K)
        + np.eye(D) * np.arange(1, K + 1)[:, None, None] * 0.1
    )
    C = rng.normal(size=(Dy, D))
    d = rng.normal(size=Dy)
    R = np.eye(Dy) * 0.4
    m0 = rng.normal(size=L * D)
    P0 = np.eye(L * D) * 1.5 + 0.2
    z = rng.integers(K, size=T)
    y = rng.normal(size=(T, Dy))
    return A, b, Q, C, d, R, m0, P0, z, y


@pytest.mark.parametrize("L", [1, 2])
def test_companion_lgssm_is_the_slds_given_its_path(L):
    A, b, Q, C, d, R, m0, P0, z, y = _slds(L)
    ar = ar_params(A, b, cov=Q)
    params = ar_to_lds(
        ar,
        jnp.asarray(z),
        emission_matrix=C,
        emission_scale_tril=np.linalg.cholesky(R),
        emission_bias=d,
        initial_mean=m0,
        initial_scale_tril=np.linalg.cholesky(P0),
    )
    if L > 1:  # the shift block has exactly zero noise
        np.testing.assert_array_equal(params.transition_scale_tril[:, 2:, :], 0.0)
    _, _, mean_y, cov_y, _ = slds_dense_given_path(A, b, Q, z, C, d, R, m0, P0, len(z))
    expected = multivariate_normal(mean_y, cov_y).logpdf(y.reshape(-1))
    for parallel in (False, True):
        np.testing.assert_allclose(
            kalman_log_marginal(params, jnp.asarray(y), parallel=parallel), expected, rtol=1e-10
        )


@pytest.mark.parametrize("L", [1, 2])
def test_latent_draws_have_the_exact_posterior_moments(L):
    A, b, Q, C, d, R, m0, P0, z, y = _slds(L, seed=1)
    T = len(z)
    emission = SLDSEmission(
        jnp.asarray(C),
        jnp.asarray(d),
        jnp.linalg.cholesky(R),
        jnp.asarray(m0),
        jnp.linalg.cholesky(P0),
    )
    n = 20_000
    draw = jax.jit(
        jax.vmap(
            lambda k: resample_latents(
                k,
                jnp.asarray(z)[None],
                jnp.asarray(y)[None],
                None,
                ar_params(A, b, cov=Q),
                emission,
            )[0][0]
        )
    )
    x = np.asarray(draw(jax.random.split(jax.random.key(0), n)))
    mean_x, cov_x, mean_y, cov_y, cov_xy = slds_dense_given_path(A, b, Q, z, C, d, R, m0, P0, T)
    gain = cov_xy @ np.linalg.inv(cov_y)
    post_mean = mean_x.reshape(-1) + gain @ (y.reshape(-1) - mean_y)
    post_cov = cov_x - gain @ cov_xy.T
    sd = np.sqrt(np.diag(post_cov))
    zscore = (x.reshape(n, -1).mean(0) - post_mean) / (sd / np.sqrt(n))
    assert np.all(np.abs(zscore) < 5), zscore
    np.testing.assert_allclose(
        np.cov(x.reshape(n, -1).T), post_cov, atol=6 * sd.max() ** 2 / np.sqrt(n)
    )


def test_get_lags_and_lag_matrix():
    x = np.arange(12.0).reshape(6, 2)
    lags = get_lags(jnp.asarray(x), 2)
    assert lags.shape == (4, 4)
    np.testing.assert_array_equal(lags[0], np.r_[x[1], x[0]])  # the lags of x_3, most recent first
    full = lag_matrix(jnp.asarray(x), 2, initial_lags=np.array([[-2.0, -1.0], [-4.0, -3.0]]))
    np.testing.assert_array_equal(full[0], [-4.0, -3.0, -2.0, -1.0])
    with pytest.raises(ValueError, match=r"num_lags must be an int in \[1, T\) with T=6"):
        get_lags(jnp.asarray(x), 6)


def test_ar_log_likelihoods_broadcast_parameters_of_different_batch_shapes():
    from numpyro_ssm.ops.switching import ARParams, ar_log_likelihoods

    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 2, 2, 2))  # a batch of 3 AR matrices; b and U unbatched
    b = rng.normal(size=(2, 2))
    U = np.linalg.cholesky(np.eye(2) + 0.3 * np.stack([np.eye(2), np.ones((2, 2))]))
    y, x = rng.normal(size=(4, 3, 5, 2)), rng.normal(size=(4, 3, 5, 2))
    out = ar_log_likelihoods(ARParams(jnp.asarray(A), jnp.asarray(b), jnp.asarray(U)), y, x)
    assert out.shape == (4, 3, 5, 2)
    for i, j, t, k in [(0, 0, 0, 0), (3, 2, 4, 1), (1, 1, 2, 0)]:
        mean = A[j, k] @ x[i, j, t] + b[k]
        expected = multivariate_normal(mean, U[k] @ U[k].T).logpdf(y[i, j, t])
        np.testing.assert_allclose(out[i, j, t, k], expected, rtol=1e-12)

"""The MNIW update: posterior parameters against the textbook formulas, draws against moments."""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops.switching import MNIWParams, mniw_posterior, regression_stats, sample_mniw


def _problem(seed=0, N=30, D=2, P=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, P))
    y = x @ rng.normal(size=(P, D)) + rng.normal(size=(N, D)) * 0.5
    w = rng.uniform(size=(N, 2)) * (rng.uniform(size=(N, 1)) > 0.2)
    M0 = rng.normal(size=(D, P))
    Lam0 = np.eye(P) * 0.5 + 0.1
    S0 = np.eye(D) * 2.0 + 0.3
    return (
        x,
        y,
        w,
        MNIWParams(jnp.asarray(M0), jnp.asarray(Lam0), jnp.asarray(5.0), jnp.asarray(S0)),
    )


def test_posterior_matches_the_textbook_formulas():
    x, y, w, prior = _problem()
    post = mniw_posterior(prior, regression_stats(x, y, w))
    M0, Lam0, nu0, S0 = (np.asarray(a) for a in prior)
    for k in range(2):
        W = np.diag(w[:, k])
        Lam = Lam0 + x.T @ W @ x
        M = (M0 @ Lam0 + y.T @ W @ x) @ np.linalg.inv(Lam)
        S = S0 + y.T @ W @ y + M0 @ Lam0 @ M0.T - M @ Lam @ M.T
        np.testing.assert_allclose(post.column_precision[k], Lam, rtol=1e-12)
        np.testing.assert_allclose(post.mean[k], M, rtol=1e-10)
        np.testing.assert_allclose(post.scale[k], S, rtol=1e-10)
        np.testing.assert_allclose(post.df[k], nu0 + w[:, k].sum(), rtol=1e-12)


def test_draws_have_the_mniw_moments():
    x, y, w, prior = _problem(1)
    post = jax.tree.map(lambda a: a[0], mniw_posterior(prior, regression_stats(x, y, w)))
    n = 40_000
    W, U = jax.vmap(lambda k: sample_mniw(k, post))(jax.random.split(jax.random.key(0), n))
    Sigma = np.asarray(U @ jnp.swapaxes(U, -1, -2))
    M, Lam, nu, S = (np.asarray(a) for a in post)
    D, P = M.shape
    assert np.all(np.asarray(jnp.diagonal(U, axis1=-2, axis2=-1)) > 0)
    np.testing.assert_array_equal(np.triu(np.asarray(U), 1), 0)

    def check(samples, expected, name):
        z = (samples.mean(0) - expected) / (samples.std(0) / np.sqrt(n))
        assert np.all(np.abs(z) < 5), (name, z)

    check(Sigma, S / (nu - D - 1), "E[Sigma]")
    check(np.linalg.inv(Sigma), nu * np.linalg.inv(S), "E[Sigma^-1]")
    check(np.asarray(W), M, "E[W]")
    resid = (np.asarray(W) - M).reshape(n, -1)
    cov = np.kron(S / (nu - D - 1), np.linalg.inv(Lam))  # Cov(vec_row W) = E[Sigma] (x) Lam^-1
    outer = resid[:, :, None] * resid[:, None, :]
    check(outer, cov, "Cov[W]")


def test_grouped_statistics_equal_the_one_hot_weighted_ones():
    from numpyro_ssm.ops.switching import grouped_regression_stats

    rng = np.random.default_rng(2)
    N, K = 9000, 4  # more frames than one chunk
    x, y = rng.normal(size=(N, 3)), rng.normal(size=(N, 2))
    z = rng.integers(K, size=N)
    mask = rng.uniform(size=N) > 0.1
    dense = regression_stats(x, y, np.eye(K)[z] * mask[:, None])
    grouped = grouped_regression_stats(x, y, jnp.asarray(z), K, jnp.asarray(mask))
    for a, b in zip(grouped, dense, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)

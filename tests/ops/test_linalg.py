"""Square-root linear algebra (``numpyro_ssm.ops.linalg``) against NumPy / SciPy.

``tria``, ``cholesky`` and the triangular solves each have unrolled arithmetic for small
matrices, a ``fori_loop`` for batched stacks and large matrices, and (``tria`` and the solves)
one LAPACK call for a single larger matrix. Every path is checked here, in float64 against
NumPy's Cholesky and SciPy's triangular solves, and in float32; the derivatives of ``tria``
(which accumulates the orthogonal factor in the same loop) and ``cholesky`` against central
differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from numpyro_ssm.ops.linalg import (
    cholesky,
    matmul_small,
    matmul_stack,
    solve_lower,
    solve_lower_transpose,
    tria,
)

# A single matrix of at most 4 rows is unrolled, a taller one is one LAPACK QR; anything batched
# runs the loop (vmapped: see test_tria_under_jit_and_vmap_agree_with_the_loop).
TRIA_SHAPES = [
    (3, 7),  # wide, unrolled
    (4, 2),  # narrow (zero-padded), unrolled
    (6, 6),  # square, LAPACK
    (5, 2),  # narrow (zero-padded), LAPACK
    (4, 3, 7),  # batched: loop
    (2, 3, 8, 4),  # two batch axes, narrow: loop
    (20, 33),  # tall single matrix: LAPACK
]


def _reference_tria(a):
    """The lower Cholesky factor of ``a aᵀ`` (full row rank), by NumPy."""
    return np.linalg.cholesky(a @ np.swapaxes(a, -1, -2))


@pytest.mark.parametrize("shape", TRIA_SHAPES, ids=str)
def test_tria_equals_cholesky_of_the_product(shape):
    rng = np.random.default_rng(0)
    a = rng.normal(size=shape)
    if shape[-1] < shape[-2]:  # narrow: a aᵀ is singular, compare the product instead
        lower = np.asarray(tria(jnp.asarray(a)))
        np.testing.assert_allclose(
            lower @ np.swapaxes(lower, -1, -2), a @ np.swapaxes(a, -1, -2), rtol=1e-12, atol=1e-12
        )
    else:
        np.testing.assert_allclose(tria(jnp.asarray(a)), _reference_tria(a), rtol=1e-10)
    lower = np.asarray(tria(jnp.asarray(a)))
    assert np.all(np.triu(lower, 1) == 0.0)
    assert np.all(np.diagonal(lower, axis1=-2, axis2=-1) >= 0.0)


@pytest.mark.parametrize("batched", [False, True])
def test_tria_rank_deficient_rows(batched):
    """A zero row (an exactly known state) gives a zero row and column, no NaN."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 5, 8) if batched else (5, 8))
    a[..., 2, :] = 0.0
    lower = np.asarray(tria(jnp.asarray(a)))
    assert np.isfinite(lower).all()
    np.testing.assert_allclose(
        lower @ np.swapaxes(lower, -1, -2), a @ np.swapaxes(a, -1, -2), atol=1e-12
    )
    np.testing.assert_array_equal(lower[..., 2, :], 0.0)


@pytest.mark.parametrize("n", [5, 20], ids=["small", "large"])
@pytest.mark.parametrize("rhs", ["vector", "matrix"])
@pytest.mark.parametrize("batch", [(), (4,)], ids=["single", "batched"])
def test_triangular_solves_match_scipy(n, rhs, batch):
    rng = np.random.default_rng(2)
    lower = np.tril(rng.normal(size=batch + (n, n))) + 4.0 * np.eye(n)
    b = rng.normal(size=batch + ((n,) if rhs == "vector" else (n, 3)))
    x = np.asarray(solve_lower(jnp.asarray(lower), jnp.asarray(b)))
    x_t = np.asarray(solve_lower_transpose(jnp.asarray(lower), jnp.asarray(b)))
    assert x.shape == b.shape and x_t.shape == b.shape
    for idx in np.ndindex(batch):
        np.testing.assert_allclose(
            x[idx], scipy.linalg.solve_triangular(lower[idx], b[idx], lower=True), rtol=1e-12
        )
        np.testing.assert_allclose(
            x_t[idx],
            scipy.linalg.solve_triangular(lower[idx], b[idx], lower=True, trans="T"),
            rtol=1e-12,
        )


@pytest.mark.parametrize(
    "shape", [(4, 8), (6, 12), (8, 16, 16)], ids=["unrolled", "lapack", "loop"]
)
def test_float32_paths(shape):
    rng = np.random.default_rng(3)
    a = rng.normal(size=shape)
    lower = tria(jnp.asarray(a, jnp.float32))
    assert lower.dtype == jnp.float32
    np.testing.assert_allclose(lower, _reference_tria(a), rtol=2e-4, atol=2e-5)
    b = rng.normal(size=shape[:-1])
    x = solve_lower(lower, jnp.asarray(b, jnp.float32))
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(
        jnp.einsum("...ij,...j->...i", lower, x), b.astype(np.float32), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("rows", [4, 6, 16], ids=["unrolled", "lapack-vmapped", "largest"])
def test_tria_under_jit_and_vmap_agree_with_the_loop(rows):
    """Vmapped, a single-matrix ``tria`` is unrolled over the batch up to 16 rows (above 4 rows
    through the LAPACK path's ``custom_vmap`` rule); the batched stack runs the loop."""
    rng = np.random.default_rng(4)
    a = jnp.asarray(rng.normal(size=(5, rows, rows + 5)))
    np.testing.assert_allclose(jax.vmap(jax.jit(tria))(a), tria(a), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(tria(a), _reference_tria(np.asarray(a)), rtol=1e-10)
    # never a batched LAPACK call (README: it can hang jaxlib 0.10.2's CPU runtime)
    assert "lapack" not in jax.jit(jax.vmap(tria)).lower(a).as_text()
    assert ("lapack" in jax.jit(tria).lower(a[0]).as_text()) == (rows > 4)


@pytest.mark.parametrize(
    "shape", [(3, 5), (6, 9), (4, 3, 5), (18, 20)], ids=["single", "lapack", "batched", "tall"]
)
def test_tria_derivative_matches_central_differences(shape):
    rng = np.random.default_rng(5)
    a = jnp.asarray(rng.normal(size=shape))
    direction = jnp.asarray(rng.normal(size=shape))
    _, tangent = jax.jvp(tria, (a,), (direction,))
    h = 1e-6
    difference = (tria(a + h * direction) - tria(a - h * direction)) / (2 * h)
    np.testing.assert_allclose(tangent, difference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (3, 1, 4, 4), (20, 20), (2, 18, 18)], ids=str)
def test_cholesky_matches_numpy(shape):
    rng = np.random.default_rng(6)
    a = rng.normal(size=shape[:-1] + (shape[-1] + 2,))
    cov = a @ np.swapaxes(a, -1, -2)
    np.testing.assert_allclose(cholesky(cov), np.linalg.cholesky(cov), rtol=1e-10, atol=1e-12)
    # float32 input stays float32
    lower32 = cholesky(jnp.asarray(cov, jnp.float32))
    assert lower32.dtype == jnp.float32
    np.testing.assert_allclose(lower32, np.linalg.cholesky(cov), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("n", [3, 17], ids=["unrolled", "loop"])
def test_cholesky_gradient_matches_central_differences(n):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(n, n + 1))
    cov = jnp.asarray(a @ a.T)
    direction = rng.normal(size=(n, n))
    direction = jnp.asarray(direction + direction.T)
    weights = jnp.asarray(rng.normal(size=(n, n)))

    def f(c):
        return jnp.sum(weights * cholesky(c))

    h = 1e-6
    difference = (f(cov + h * direction) - f(cov - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.sum(jax.grad(f)(cov) * direction), difference, rtol=1e-6)


def test_cholesky_of_an_indefinite_matrix_is_nan_like_lapack():
    cov = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert np.isnan(np.asarray(cholesky(cov))).any()
    assert np.isnan(np.asarray(jnp.linalg.cholesky(cov))).any()


def test_large_single_matrix_path_under_vmap_and_jit():
    """Above 16 rows one matrix takes one LAPACK call; under vmap, the batched jnp loop."""
    rng = np.random.default_rng(8)
    a = rng.normal(size=(3, 20, 30))
    expected = _reference_tria(a)
    np.testing.assert_allclose(jax.vmap(tria)(a), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(jax.vmap(tria)))(a[None]), expected[None], rtol=1e-10, atol=1e-12
    )
    lower = jnp.asarray(expected)
    b = rng.normal(size=(3, 20, 4))
    for solve, trans in ((solve_lower, False), (solve_lower_transpose, True)):
        want = [
            scipy.linalg.solve_triangular(expected[i], b[i], lower=True, trans=int(trans))
            for i in range(3)
        ]
        np.testing.assert_allclose(jax.vmap(solve)(lower, b), want, rtol=1e-10)
        np.testing.assert_allclose(
            jax.vmap(solve, (None, 0))(lower[0], b),
            [
                scipy.linalg.solve_triangular(expected[0], b[i], lower=True, trans=int(trans))
                for i in range(3)
            ],
            rtol=1e-10,
        )
        np.testing.assert_allclose(
            jax.vmap(solve)(lower, b[..., 0]), np.asarray(want)[..., 0], rtol=1e-10
        )


@pytest.mark.parametrize("solve", [solve_lower, solve_lower_transpose], ids=["L", "Lt"])
def test_large_single_solve_gradients_match_central_differences(solve):
    rng = np.random.default_rng(9)
    n = 18
    lower = jnp.asarray(np.tril(rng.normal(size=(n, n))) + 4 * np.eye(n))
    b = jnp.asarray(rng.normal(size=(n, 3)))
    d_lower, d_b = (
        jnp.asarray(np.tril(rng.normal(size=(n, n)))),
        jnp.asarray(rng.normal(size=(n, 3))),
    )
    weights = jnp.asarray(rng.normal(size=(n, 3)))

    def f(lo, rhs):
        return jnp.sum(weights * solve(lo, rhs))

    h = 1e-6
    difference = (f(lower + h * d_lower, b + h * d_b) - f(lower - h * d_lower, b - h * d_b)) / (
        2 * h
    )
    g_lower, g_b = jax.grad(f, argnums=(0, 1))(lower, b)
    np.testing.assert_allclose(
        jnp.sum(g_lower * d_lower) + jnp.sum(g_b * d_b), difference, rtol=1e-6
    )
    _, tangent = jax.jvp(f, (lower, b), (d_lower, d_b))
    np.testing.assert_allclose(tangent, difference, rtol=1e-6)


@pytest.mark.parametrize("inner", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("batch", [(), (7,), (2, 3)], ids=str)
def test_fused_products_equal_numpy(inner, batch):
    """``matmul_small`` (column-times-row sums up to 4 inner terms, a broadcast sum above) and
    ``matmul_stack`` (that on the CPU up to 4 inner terms, a dot otherwise) against NumPy: a
    stack times a stack, a stack times one matrix, and (``matmul_small``) a matrix-vector."""
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=batch + (3, inner)), rng.normal(size=batch + (inner, 2))
    one = rng.normal(size=(inner, 2))
    for product in (matmul_small, matmul_stack, jax.jit(matmul_stack)):
        np.testing.assert_allclose(product(a, b), a @ b, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(product(a, one), a @ one, rtol=1e-13, atol=1e-14)
    vector = rng.normal(size=inner)
    np.testing.assert_allclose(matmul_small(a, vector), a @ vector, rtol=1e-13, atol=1e-14)


def test_tria_under_jit_when_a_pivot_is_rounding_noise():
    """A factor of ``[R, L]`` with ``R`` rounding noise around 0 (a regression's residual).

    The unrolled reflections once chose the reflection's sign from the pivot ``x_0`` and flipped
    the column by that sign afterwards. Under ``jit`` XLA recomputed the noisy ``x_0`` in two
    fusions, the signs disagreed and a column came out negated (L Lᵀ off by 0.28). The residual
    below is that of a sigma-point regression of a linear map, as the unscented smoother
    computes it; the moments come from the Kalman filter of a small model.
    """
    from numpyro_ssm.ops import LGSSMParams, kalman_filter

    rng = np.random.default_rng(0)
    n, T = 2, 6

    def tril(lead=()):
        a = np.tril(rng.normal(size=lead + (n, n))) * 0.2
        a[..., range(n), range(n)] = 0.6 + 0.5 * rng.uniform(size=lead + (n,))
        return a

    m0, L0, F = rng.normal(size=n), tril(), rng.normal(size=(n, n))
    F = 0.8 * F / np.linalg.norm(F, 2)
    B, b, LQ = rng.normal(size=(n, 1)), rng.normal(size=n) * 0.3, tril((T - 1,))
    H, C, d = rng.normal(size=(n, n)), rng.normal(size=(n, 1)), rng.normal(size=n) * 0.3
    LR = tril((T,))
    u, y = rng.normal(size=(T, 1)), rng.normal(size=(T, n)) * 2.0
    params = LGSSMParams(m0, L0, F, LQ, H, LR, u[1:] @ B.T + b, u @ C.T + d)
    post = kalman_filter(params, y)
    means, chols = post.filtered_means[:-1], cholesky(post.filtered_covariances[:-1])

    lam = 2.0  # unscented points and weights
    xi = np.concatenate([np.zeros((1, n)), np.eye(n), -np.eye(n)]) * np.sqrt(n + lam)
    w = np.concatenate([[lam / (n + lam)], np.full(2 * n, 1 / (2 * (n + lam)))])

    def factor(m, chol, u_t, chol_q):
        values = jax.vmap(lambda z: F @ z + B @ u_t + b)(m + xi @ chol.T)
        dev = values - w @ values
        AL = (dev * w[:, None]).T @ xi
        residual = (dev * np.sqrt(w)[:, None]).T - AL @ (xi * np.sqrt(w)[:, None]).T  # ~ 0
        return tria(jnp.concatenate([residual, chol_q], axis=1))

    out = jax.jit(jax.vmap(factor))(means, chols, u[1:], LQ)
    np.testing.assert_allclose(
        out @ np.swapaxes(out, -1, -2), LQ @ np.swapaxes(LQ, -1, -2), rtol=0, atol=1e-12
    )

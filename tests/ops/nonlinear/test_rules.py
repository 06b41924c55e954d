"""Linearization rules against exact Gaussian moments (``oracles.gaussian_moment``)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import gaussian_moment

from numpyro_ssm.ops.nonlinear import (
    GaussHermite,
    SphericalCubature,
    Taylor,
    Unscented,
    get_rule,
    linearize,
    sigma_points,
)
from numpyro_ssm.ops.nonlinear.rules import joint_factor, regress

MEAN = np.array([0.3, -0.7])
CHOL = np.array([[0.9, 0.0], [0.4, 0.6]])
COV = CHOL @ CHOL.T


def _expectation(rule, powers):
    pts = sigma_points(rule, jnp.asarray(MEAN), jnp.asarray(CHOL))
    values = jnp.prod(pts.points ** jnp.asarray(powers), axis=-1)
    return float(pts.mean_weights @ values)


@pytest.mark.parametrize("order", [2, 3, 5])
def test_gauss_hermite_is_exact_up_to_degree_2n_minus_1(order):
    """Every monomial ``z_1^a z_2^b`` with ``a + b <= 2n - 1`` of a correlated Gaussian.

    Such a monomial is a polynomial of the same total degree in the unit coordinates, where the
    tensor rule integrates each coordinate's powers up to ``2n - 1`` exactly.
    """
    rule = GaussHermite(order)
    top = 2 * order - 1
    for a, b in itertools.product(range(top + 1), repeat=2):
        if a + b <= top:
            exact = gaussian_moment(MEAN, COV, (a, b))
            assert _expectation(rule, (a, b)) == pytest.approx(exact, rel=1e-12, abs=1e-12)
    # and not beyond: the 1-D moment of degree 2n is missed
    one_d = sigma_points(rule, jnp.zeros(1), jnp.eye(1))
    moment = float(one_d.mean_weights @ one_d.points[:, 0] ** (2 * order))
    assert abs(moment - gaussian_moment([0.0], [[1.0]], (2 * order,))) > 1e-3


@pytest.mark.parametrize("rule", [Unscented(), SphericalCubature(), Unscented(1.0, 0.0, 2.0)])
def test_sigma_point_rules_are_exact_up_to_degree_3(rule):
    for a, b in itertools.product(range(4), repeat=2):
        if a + b <= 3:
            exact = gaussian_moment(MEAN, COV, (a, b))
            assert _expectation(rule, (a, b)) == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_statistical_linear_regression_of_a_quadratic():
    """``A = E[∇g]`` (Stein's lemma), ``b = E[g] - A m`` and ``Ω = Cov[g] - A P Aᵀ`` exactly.

    ``g(z) = (z_1 z_2, z_1²)``: a quadratic, whose regression needs moments up to degree 4,
    so the Gauss-Hermite rule of order 3 is exact and Taylor gives ``∇g(m)`` with ``Ω = 0``.
    """

    def g(z):
        return jnp.stack([z[0] * z[1], z[0] ** 2])

    monomials = {(1, 1): 0, (2, 0): 1}
    mean_g = np.array([gaussian_moment(MEAN, COV, p) for p in monomials])
    second = np.array(
        [[gaussian_moment(MEAN, COV, np.add(p, q)) for q in monomials] for p in monomials]
    )
    cov_g = second - np.outer(mean_g, mean_g)
    grad_mean = np.array([[MEAN[1], MEAN[0]], [2 * MEAN[0], 0.0]])  # E[∇g] = ∇g(m)
    lin = linearize(GaussHermite(3), g, jnp.asarray(MEAN), jnp.asarray(CHOL))
    np.testing.assert_allclose(lin.matrix, grad_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.offset, mean_g - grad_mean @ MEAN, rtol=1e-12, atol=1e-12)
    omega = cov_g - grad_mean @ COV @ grad_mean.T
    np.testing.assert_allclose(lin.residual @ lin.residual.T, omega, rtol=1e-12, atol=1e-12)
    taylor = linearize(Taylor(), g, jnp.asarray(MEAN), jnp.asarray(CHOL))
    np.testing.assert_allclose(taylor.matrix, grad_mean, rtol=1e-14)
    np.testing.assert_allclose(taylor.offset, np.asarray(g(MEAN)) - grad_mean @ MEAN, rtol=1e-14)
    assert taylor.residual is None


@pytest.mark.parametrize("rule", [Taylor(), Unscented(), GaussHermite(3), SphericalCubature()])
def test_regression_is_the_exact_moments_times_the_factor(rule):
    """``regress`` (no solve) gives ``A L`` and ``E[g]`` of the quadratic above exactly.

    The oracle is the exact regression (Stein's lemma: ``A = E[∇g] = ∇g(m)`` for this ``g``)
    times the factor, for the Gauss–Hermite rule; every rule's ``A L`` and ``E[g]`` equal its own
    :func:`linearize` (which solves for ``A``). The Taylor rule accepts a factor that is not
    triangular (what Potter's update hands it).
    """

    def g(z):
        return jnp.stack([z[0] * z[1], z[0] ** 2])

    grad_mean = np.array([[MEAN[1], MEAN[0]], [2 * MEAN[0], 0.0]])
    reg = regress(rule, g, jnp.asarray(MEAN), jnp.asarray(CHOL))
    lin = linearize(rule, g, jnp.asarray(MEAN), jnp.asarray(CHOL))
    np.testing.assert_allclose(reg.factor, lin.matrix @ CHOL, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reg.mean, lin.matrix @ MEAN + lin.offset, rtol=1e-12, atol=1e-12)
    if isinstance(rule, GaussHermite):
        np.testing.assert_allclose(reg.factor, grad_mean @ CHOL, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(reg.residual, lin.residual, rtol=1e-12, atol=1e-12)
    if isinstance(rule, Taylor):
        rotation = np.array([[0.6, -0.8], [0.8, 0.6]])
        turned = regress(rule, g, jnp.asarray(MEAN), jnp.asarray(CHOL @ rotation))
        np.testing.assert_allclose(turned.factor, grad_mean @ CHOL @ rotation, rtol=1e-14)
        assert turned.residual is None


# Unscented(1, 2, 1): a covariance weight of the centre point (7/3) unlike its mean weight (1/3)
@pytest.mark.parametrize(
    "rule",
    [Taylor(), Unscented(), Unscented(1.0, 2.0, 1.0), GaussHermite(3), SphericalCubature()],
)
def test_joint_factor_is_the_joint_covariance_of_the_rule(rule):
    """``joint_factor`` times its transpose is the joint covariance of ``(z, g(z))``.

    Oracle: the exact moments of the quadratic ``g`` (``gaussian_moment``) for the
    Gauss–Hermite rule of order 3, exact up to degree 5 (``Cov(g)`` needs degree 4). Every rule:
    the same Gram matrix as its regression ``[A L, residual]`` and ``[L, 0]``, and the same
    mean.
    """

    def g(z):
        return jnp.stack([z[0] * z[1], z[0] ** 2])

    joint = joint_factor(rule, g, jnp.asarray(MEAN), jnp.asarray(CHOL))
    stacked = np.concatenate([joint.state, joint.output])
    gram = stacked @ stacked.T
    reg = regress(rule, g, jnp.asarray(MEAN), jnp.asarray(CHOL))
    residual = np.zeros((2, 1)) if reg.residual is None else np.asarray(reg.residual)
    width = residual.shape[1]
    regression = np.block(
        [[CHOL, np.zeros((2, width))], [np.asarray(reg.factor), residual]]
    )  # [[L, 0], [A L, residual]]
    np.testing.assert_allclose(gram, regression @ regression.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(joint.mean, reg.mean, rtol=1e-12, atol=1e-12)
    if isinstance(rule, GaussHermite):
        powers = [(1, 1), (2, 0)]  # g's monomials
        mean_g = np.array([gaussian_moment(MEAN, COV, p) for p in powers])
        second = np.array(
            [[gaussian_moment(MEAN, COV, np.add(p, q)) for q in powers] for p in powers]
        )
        cross = np.array(  # E[z_i g_j]
            [
                [gaussian_moment(MEAN, COV, np.add(p, e)) for p in powers]
                for e in np.eye(2, dtype=int)
            ]
        )
        exact = np.block(
            [
                [COV, cross - np.outer(MEAN, mean_g)],
                [(cross - np.outer(MEAN, mean_g)).T, second - np.outer(mean_g, mean_g)],
            ]
        )
        np.testing.assert_allclose(gram, exact, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(joint.mean, mean_g, rtol=1e-12, atol=1e-12)


def test_rule_names_and_bad_settings():
    assert get_rule("ekf") == Taylor() and get_rule("ghkf") == GaussHermite(3)
    assert get_rule(Unscented(alpha=2.0)) == Unscented(alpha=2.0)
    with pytest.raises(ValueError, match="method must be one of"):
        get_rule("particle")
    with pytest.raises(ValueError, match="negative sigma-point weights"):
        sigma_points(Unscented(alpha=1e-3, beta=2.0, kappa=0.0), jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match="order must be an integer >= 2"):
        sigma_points(GaussHermite(1), jnp.zeros(2), jnp.eye(2))


def test_float32_points_stay_float32():
    pts = sigma_points(GaussHermite(3), jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    assert pts.points.dtype == jnp.float32 and pts.mean_weights.dtype == jnp.float32
    lin = jax.jit(lambda m: linearize(Unscented(), jnp.sin, m, jnp.eye(2, dtype=jnp.float32)))(
        jnp.ones(2, jnp.float32)
    )
    assert lin.matrix.dtype == jnp.float32

r"""Linearization rules: Gaussian integrals of a nonlinear function, as a statistical regression.

Every nonlinear filter and smoother here is a Kalman filter on a *linearized* model. A rule
approximates ``g(z)`` for ``z ~ N(m, P)`` by an affine map plus independent Gaussian noise,

.. math::

    g(z) \approx A z + b + e, \qquad e \sim \mathcal N(0, \Omega),

and :func:`linearize` returns ``(A, b, factor of Ω)``:

- :class:`Taylor` (the extended Kalman filter): ``A = ∂g/∂z(m)`` by ``jax.jacfwd``,
  ``b = g(m) - A m``, ``Ω = 0``.
- The sigma-point rules (statistical linear regression): ``g`` is evaluated at points
  ``χ_i = m + L ξ_i`` (``P = L Lᵀ``) with weights ``w_i``; ``ĝ = Σ w_i g(χ_i)``,
  ``A = C_gz P⁻¹`` with ``C_gz = Σ w_i (g(χ_i) - ĝ)(χ_i - m)ᵀ``, ``b = ĝ - A m`` and
  ``Ω = Cov[g] - A P Aᵀ``. With ``Γ = [√w_i (g(χ_i) - ĝ)]`` and ``Ξ = [√w_i ξ_i]`` (so that
  ``Ξ Ξᵀ = I``), ``A L = Γ Ξᵀ`` and ``Ω`` has the factor ``Γ - (A L) Ξ`` (the part of ``Γ``
  orthogonal to the rows of ``Ξ``): square-root form without a downdate.

  - :class:`Unscented` (UKF): ``2S + 1`` points ``0, ±√(S + λ) e_i``,
    ``λ = α² (S + κ) - S``; mean weights ``λ / (S + λ)`` and ``1 / (2 (S + λ))``, covariance
    weight of the centre ``λ / (S + λ) + 1 - α² + β``.
  - :class:`GaussHermite` (GHKF) of order ``p``: the ``p^S`` tensor-product points of the
    ``p``-point Gauss–Hermite rule; exact for polynomials of degree up to ``2p - 1`` in each
    coordinate.
  - :class:`SphericalCubature` (CKF): ``2S`` points ``±√S e_i`` of weight ``1 / (2S)``
    (Arasaratnam & Haykin 2009), the third-degree spherical-radial rule.

**Weights must be non-negative**, so that the covariances stay square roots (a negative
weight needs a Cholesky downdate, which can fail); :class:`Unscented` raises a ``ValueError``
for ``α, β, κ`` that break this (the classic ``α = 10⁻³`` does). Its defaults
(``α = √3, β = 2, κ = 1``) are dynamax's, which keep every weight positive for any ``S``.
The sigma-point rules solve with ``L``, so they need a nonsingular covariance at every point
where they linearize (positive-definite ``P_0`` and ``Q_t`` guarantee it); the Taylor rule does
not.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops.linalg import matmul_small, solve_lower_transpose

__all__ = [
    "METHODS",
    "GaussHermite",
    "JointFactor",
    "Linearization",
    "Regression",
    "SigmaPoints",
    "SphericalCubature",
    "Taylor",
    "Unscented",
    "get_rule",
    "joint_factor",
    "linearize",
    "regress",
    "sigma_points",
]


@dataclasses.dataclass(frozen=True)
class Taylor:
    """First-order Taylor expansion at the mean: the extended Kalman filter's rule."""

    def unit_points(self, dim):
        """The Taylor rule has one point, the mean, of weight one."""
        return _unit(np.zeros((1, dim)), np.ones(1), np.ones(1))


@dataclasses.dataclass(frozen=True)
class Unscented:
    """The unscented transform with ``2S + 1`` sigma points (UKF).

    Attributes:
        alpha: spread of the points, ``α > 0``.
        beta: prior knowledge of the distribution (2 is optimal for a Gaussian).
        kappa: secondary scaling, ``λ = α² (S + κ) - S``.
    """

    alpha: float = math.sqrt(3.0)
    beta: float = 2.0
    kappa: float = 1.0

    def unit_points(self, dim):
        """Unit points ``(2S+1, S)``, mean and covariance weights; non-negative or ValueError."""
        lam = self.alpha**2 * (dim + self.kappa) - dim
        if dim + lam <= 0 or lam < 0 or lam / (dim + lam) + 1 - self.alpha**2 + self.beta < 0:
            raise ValueError(
                f"Unscented(alpha={self.alpha}, beta={self.beta}, kappa={self.kappa}) gives "
                f"negative sigma-point weights for state dim {dim} (lambda = {lam:.4g}); the "
                "square-root filters need non-negative weights: alpha**2 * (S + kappa) >= S and "
                "lambda / (S + lambda) + 1 - alpha**2 + beta >= 0. The defaults "
                "(alpha=sqrt(3), beta=2, kappa=1) always qualify."
            )
        scale = math.sqrt(dim + lam)
        eye = np.eye(dim)
        points = np.concatenate([np.zeros((1, dim)), scale * eye, -scale * eye])
        side = np.full(2 * dim, 1.0 / (2 * (dim + lam)))
        w_mean = np.concatenate([[lam / (dim + lam)], side])
        w_cov = np.concatenate([[lam / (dim + lam) + 1 - self.alpha**2 + self.beta], side])
        return _unit(points, w_mean, w_cov)


@dataclasses.dataclass(frozen=True)
class GaussHermite:
    """Gauss–Hermite cubature: the ``order^S`` tensor-product points (GHKF).

    Attributes:
        order: points per dimension, ``p >= 2``; exact for polynomials of degree ``2p - 1``.
    """

    order: int = 3

    def unit_points(self, dim):
        """Unit points ``(p^S, S)`` and weights (the same for mean and covariance)."""
        if int(self.order) != self.order or self.order < 2:
            raise ValueError(f"GaussHermite: order must be an integer >= 2, got {self.order}.")
        nodes, weights = np.polynomial.hermite_e.hermegauss(int(self.order))
        weights = weights / weights.sum()
        grids = np.meshgrid(*([nodes] * dim), indexing="ij")
        points = np.stack([g.ravel() for g in grids], axis=-1)
        w = np.prod(np.stack(np.meshgrid(*([weights] * dim), indexing="ij")), axis=0).ravel()
        return _unit(points, w, w)


@dataclasses.dataclass(frozen=True)
class SphericalCubature:
    """The third-degree spherical-radial cubature rule: ``2S`` points ``±√S e_i`` (CKF)."""

    def unit_points(self, dim):
        """Unit points ``(2S, S)`` of equal weight ``1 / (2S)``."""
        eye = math.sqrt(dim) * np.eye(dim)
        w = np.full(2 * dim, 1.0 / (2 * dim))
        return _unit(np.concatenate([eye, -eye]), w, w)


#: the rules behind the ``method`` names, with their default settings
METHODS = {
    "ekf": Taylor(),
    "ukf": Unscented(),
    "ghkf": GaussHermite(),
    "ckf": SphericalCubature(),
}

_RULE_TYPES = (Taylor, Unscented, GaussHermite, SphericalCubature)


def get_rule(method):
    """The rule named ``method`` (``"ekf"``, ``"ukf"``, ``"ghkf"``, ``"ckf"``), or a rule itself.

    Args:
        method: a name from :data:`METHODS` or an instance of one of the rule classes (to set
            ``alpha``, ``beta``, ``kappa`` or ``order``).

    Returns:
        The rule.

    Raises:
        ValueError: for an unknown name or object.
    """
    if isinstance(method, _RULE_TYPES):
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    raise ValueError(
        f"method must be one of {sorted(METHODS)} or a rule (Taylor(), Unscented(alpha, beta, "
        f"kappa), GaussHermite(order), SphericalCubature()), got {method!r}."
    )


class _Unit(NamedTuple):
    points: np.ndarray  # (N, S) unit points ξ_i
    w_mean: np.ndarray  # (N,)
    w_cov: np.ndarray  # (N,)


def _unit(points, w_mean, w_cov):
    return _Unit(np.asarray(points, float), np.asarray(w_mean, float), np.asarray(w_cov, float))


@functools.lru_cache(maxsize=64)
def _unit_points(rule, dim):
    return rule.unit_points(dim)


class SigmaPoints(NamedTuple):
    """The points of a rule for ``N(m, L Lᵀ)``.

    Attributes:
        points: shape ``(N, S)``, ``χ_i = m + L ξ_i``.
        unit: shape ``(N, S)``, the unit points ``ξ_i``.
        mean_weights: shape ``(N,)``, non-negative, summing to one.
        cov_weights: shape ``(N,)``, non-negative.
    """

    points: jax.Array
    unit: jax.Array
    mean_weights: jax.Array
    cov_weights: jax.Array


def sigma_points(rule, mean, chol) -> SigmaPoints:
    """The rule's points and weights for ``N(mean, chol cholᵀ)`` (the mean alone for Taylor).

    Args:
        rule: a linearization rule.
        mean: shape ``(S,)``.
        chol: shape ``(S, S)``, a lower-triangular factor of the covariance.

    Returns:
        A :class:`SigmaPoints`.
    """
    unit = _unit_points(rule, mean.shape[-1])
    dtype = mean.dtype
    xi = jnp.asarray(unit.points, dtype)
    return SigmaPoints(
        mean + matmul_small(xi, chol.T),
        xi,
        jnp.asarray(unit.w_mean, dtype),
        jnp.asarray(unit.w_cov, dtype),
    )


class Linearization(NamedTuple):
    """``g(z) ≈ A z + b + e`` with ``e ~ N(0, R Rᵀ)`` for ``z`` near ``N(m, P)``.

    Attributes:
        matrix: shape ``(G, S)``, ``A``.
        offset: shape ``(G,)``, ``b``; ``A m + b`` is the rule's ``E[g(z)]``.
        residual: shape ``(G, N)``, a (wide) factor ``R`` of the residual covariance ``Ω``, or
            None for the Taylor rule (``Ω = 0``).
    """

    matrix: jax.Array
    offset: jax.Array
    residual: jax.Array | None


class Regression(NamedTuple):
    """A :class:`Linearization` as the filter steps use it: ``A L`` in place of ``A``.

    Attributes:
        factor: shape ``(G, S)``, ``A L`` for the factor ``L`` of the belief's covariance.
        mean: shape ``(G,)``, ``A m + b``, the rule's ``E[g(z)]``.
        residual: as :attr:`Linearization.residual`.
    """

    factor: jax.Array
    mean: jax.Array
    residual: jax.Array | None


def regress(rule, fn, mean, chol, has_aux=False):
    """:func:`linearize` without solving for ``A``: ``(A L, E[g(z)], residual)``.

    A Kalman step at the belief the rule linearizes for needs ``A`` only through ``A L`` and
    ``A m + b``, which the sigma-point rules give directly (no triangular solve). ``chol`` may
    be any square factor for the Taylor rule; the sigma-point rules need the triangular one
    (their points are placed by it).

    Args:
        rule: as :func:`linearize`.
        fn: as :func:`linearize`.
        mean: shape ``(S,)``.
        chol: shape ``(S, S)``, a factor of the covariance (see above).
        has_aux: as :func:`linearize`.

    Returns:
        A :class:`Regression`; with ``has_aux``, ``(regression, aux)`` as :func:`linearize`.
    """
    if not has_aux:
        return regress(rule, lambda z: (fn(z), None), mean, chol, has_aux=True)[0]
    if isinstance(rule, Taylor):
        jac, value, aux = _taylor(fn, mean)
        return Regression(matmul_small(jac, chol), value, None), aux
    return _sigma_regression(rule, fn, mean, chol)


class JointFactor(NamedTuple):
    """A factor of the joint covariance of ``(z, g(z))`` under a rule, and ``E[g(z)]``.

    ``[state; output]`` times its transpose is ``[[P, Cov(z, g)], [Cov(g, z), Cov(g)]]`` as
    the rule computes them: for the sigma-point rules the weighted deviations of the points,
    ``L ξ_i √w_i`` and ``(g(χ_i) - ĝ) √w_i`` (the rules' ``Σ w_i ξ_i ξ_iᵀ = I`` makes the
    first a factor of ``P``); for the Taylor rule ``L`` and ``J L``, the linearized model.

    Attributes:
        state: shape ``(S, N)``.
        output: shape ``(G, N)``.
        mean: shape ``(G,)``, the rule's ``E[g(z)]``.
    """

    state: jax.Array
    output: jax.Array
    mean: jax.Array


def joint_factor(rule, fn, mean, chol) -> JointFactor:
    """The :class:`JointFactor` of ``(z, fn(z))`` for ``z ~ N(mean, chol cholᵀ)``.

    A conditioning step needs nothing else: stacked with the noise factor it gives the
    innovation factor, the gain and the conditional factor in one triangularization, and
    ``[output, chol_Q]`` is a factor of a prediction's covariance. It equals the regression's
    ``[A L, residual]`` (:func:`regress`) in the Gram sense, without forming ``A L`` or the
    residual, and with ``N`` columns where those have ``S + N``.

    Args:
        rule: as :func:`linearize`.
        fn: ``z (S,) -> (G,)``.
        mean: shape ``(S,)``.
        chol: shape ``(S, S)``, a factor of the covariance: triangular for the sigma-point
            rules (their points are placed by it), any width for Taylor.

    Returns:
        A :class:`JointFactor`, ``N = 2S + 1`` (unscented), ``n^S`` (Gauss–Hermite), ``2S``
        (cubature) or ``chol``'s width (Taylor).
    """
    if isinstance(rule, Taylor):
        jac, value, _ = _taylor(lambda z: (fn(z), None), mean)
        return JointFactor(chol, matmul_small(jac, chol), value)
    pts = sigma_points(rule, mean, chol)
    values = jax.vmap(fn)(pts.points)  # (N, G)
    g_mean = matmul_small(values.T, pts.mean_weights)
    sqrt_w = jnp.sqrt(pts.cov_weights)
    state = matmul_small(chol, (pts.unit * sqrt_w[:, None]).T)
    return JointFactor(state, ((values - g_mean) * sqrt_w[:, None]).T, g_mean)


def _taylor(fn, mean):
    """``(∂g/∂z(m), g(m), aux)`` for ``fn: z -> (g(z), aux)``; ``aux`` gets a points axis."""
    jac, (value, aux) = jax.jacfwd(lambda z: (fn(z)[0], fn(z)), has_aux=True)(mean)
    return jac, value, jax.tree.map(lambda a: a[None], aux)


def _sigma_regression(rule, fn, mean, chol):
    """The sigma-point regression: ``(Regression, aux)``."""
    pts = sigma_points(rule, mean, chol)
    values, aux = jax.vmap(fn)(pts.points)  # (N, G)
    g_mean = matmul_small(values.T, pts.mean_weights)
    dev = values - g_mean
    # Σ w_i (g_i - ĝ) ξ_iᵀ = A L, (G, S)
    AL = matmul_small((dev * pts.cov_weights[:, None]).T, pts.unit)
    sqrt_w = jnp.sqrt(pts.cov_weights)
    residual = (dev * sqrt_w[:, None]).T - matmul_small(AL, (pts.unit * sqrt_w[:, None]).T)
    return Regression(AL, g_mean, residual), aux


def linearize(rule, fn, mean, chol, has_aux=False):
    """Linearize ``fn`` for ``z ~ N(mean, chol cholᵀ)`` by ``rule`` (module docstring).

    Args:
        rule: :class:`Taylor`, :class:`Unscented`, :class:`GaussHermite` or
            :class:`SphericalCubature`.
        fn: ``z (S,) -> (G,)``, a JAX function; with ``has_aux``, ``z -> ((G,), aux)``.
        mean: shape ``(S,)``.
        chol: shape ``(S, S)``, lower-triangular factor of the covariance (nonsingular for the
            sigma-point rules; unused by Taylor).
        has_aux: ``fn`` also returns a pytree ``aux``, wanted at every point of the rule.

    Returns:
        A :class:`Linearization`; with ``has_aux``, ``(linearization, aux)`` where ``aux`` has a
        leading axis over the rule's points (length 1, the mean, for Taylor).
    """
    if not has_aux:
        return linearize(rule, lambda z: (fn(z), None), mean, chol, has_aux=True)[0]
    if isinstance(rule, Taylor):
        jac, value, aux = _taylor(fn, mean)
        return Linearization(jac, value - jac @ mean, None), aux
    reg, aux = _sigma_regression(rule, fn, mean, chol)
    A = solve_lower_transpose(chol, reg.factor.T).T
    return Linearization(A, reg.mean - matmul_small(A, mean), reg.residual), aux

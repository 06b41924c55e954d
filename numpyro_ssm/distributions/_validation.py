"""Argument validation that explains itself, and the constraints NumPyro lacks.

NumPyro's ``validate_args`` raises "got invalid X parameter". Here the message says *why*: which
row does not sum to one, which diagonal entry is negative, which entry is NaN. Traced parameters
(under ``jit``, ``grad``, NUTS) are skipped instead of staging checks whose result is dropped.
"""

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

__all__ = [
    "check_bool_mask",
    "check_real",
    "log_probability_vector",
    "lower_cholesky_psd",
    "validate_concrete_args",
]


class _LowerCholeskyPSD(constraints._SingletonConstraint):
    """Lower-triangular matrices with a non-negative diagonal: factors of PSD covariances."""

    event_dim = 2

    def __call__(self, x):
        x = jnp.asarray(x)
        lower = jnp.all(jnp.triu(x, 1) == 0, axis=(-2, -1))
        diag = jnp.diagonal(x, axis1=-2, axis2=-1)
        return lower & jnp.all(diag >= 0, axis=-1) & jnp.all(jnp.isfinite(x), axis=(-2, -1))

    def feasible_like(self, prototype):
        rows, cols = prototype.shape[-2:]  # thin (S, q) factors too
        return jnp.broadcast_to(jnp.eye(rows, cols, dtype=prototype.dtype), prototype.shape)


class _LogProbabilityVector(constraints._SingletonConstraint):
    """Vectors of unnormalized log-probabilities: ``-inf`` allowed, with one finite entry."""

    event_dim = 1

    def __call__(self, x):
        x = jnp.asarray(x)
        ok = ~jnp.isnan(x) & (x < jnp.inf)
        return jnp.all(ok, axis=-1) & jnp.any(jnp.isfinite(x), axis=-1)

    def feasible_like(self, prototype):
        return jnp.zeros_like(prototype)


#: lower-triangular factors with a non-negative diagonal (singular covariances allowed)
lower_cholesky_psd = _LowerCholeskyPSD()
#: logits over the last axis, structural zeros as ``-inf`` allowed
log_probability_vector = _LogProbabilityVector()


def _entries(mask, limit=3):
    """Up to ``limit`` indices of True entries, as text."""
    idx = np.argwhere(np.asarray(mask))[:limit]
    return ", ".join(str(tuple(int(i) for i in row)) for row in idx)


def _explain(constraint, value):
    """Why ``value`` violates ``constraint``: a short sentence."""
    value = np.asarray(value)
    base = constraint
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    nan = np.isnan(value) if np.issubdtype(value.dtype, np.inexact) else np.zeros(value.shape, bool)
    if nan.any():
        return f"it has NaN entries at {_entries(nan)}"
    if base is constraints.simplex:
        negative = value < 0
        if negative.any():
            return f"it has negative probabilities at {_entries(negative)}"
        sums = value.sum(-1)
        bad = np.abs(sums - 1) > 1e-6
        rows = np.argwhere(bad)[:3]
        listing = ", ".join(
            f"row {tuple(int(i) for i in r)} sums to {sums[tuple(r)]:.6g}" for r in rows
        )
        return f"its rows must sum to one, but {listing}"
    if isinstance(base, _LogProbabilityVector):
        if (value == np.inf).any():
            return f"it has +inf entries at {_entries(value == np.inf)}"
        dead = ~np.isfinite(value).any(-1)
        return f"rows with no finite entry (no possible outcome) at {_entries(dead)}"
    if base in (constraints.lower_cholesky, constraints.positive_definite) or isinstance(
        base, _LowerCholeskyPSD
    ):
        if not np.isfinite(value).all():
            return f"it has infinite entries at {_entries(~np.isfinite(value))}"
    if base is constraints.lower_cholesky or isinstance(base, _LowerCholeskyPSD):
        upper = np.triu(value, 1) != 0
        if upper.any():
            return (
                "it must be lower triangular, but has nonzero entries above the diagonal at "
                f"{_entries(upper)}"
            )
        diag = np.diagonal(value, axis1=-2, axis2=-1)
        if base is constraints.lower_cholesky:
            bad = diag <= 0
            return (
                f"its diagonal must be positive, but entries {_entries(bad)} are "
                f"{diag[bad][:3].tolist()} (a singular factor is allowed only where the docs say "
                "so)"
            )
        bad = diag < 0
        return (
            f"its diagonal must be non-negative, but entries {_entries(bad)} are "
            f"{diag[bad][:3].tolist()}"
        )
    if base is constraints.positive_definite:
        asym = np.abs(value - np.swapaxes(value, -1, -2)) > 1e-8 * (1 + np.abs(value))
        if asym.any():
            return f"it must be symmetric, but differs from its transpose at {_entries(asym)}"
        eig = np.linalg.eigvalsh(value)
        return (
            f"it must be positive definite, but its smallest eigenvalue is {eig.min():.6g} (give a "
            "*_scale_tril instead for a singular covariance where the docs allow it)"
        )
    if not np.isfinite(value).all():
        return f"it has infinite entries at {_entries(~np.isfinite(value))}"
    return f"it violates {type(base).__name__.lstrip('_')}"


def validate_concrete_args(dist, strict=True):
    """NumPyro's ``Distribution.validate_args`` with reasons, skipping traced parameters.

    NumPyro evaluates every parameter's constraint and raises only when the result is concrete.
    For a traced parameter (under ``jit``, ``grad``, NUTS) the check is staged out and its
    result dropped, and building it compiles a few dozen small eager kernels on cold caches.
    Here traced parameters are skipped; concrete ones are checked, so a bad constant still
    raises ``ValueError`` under ``jit``, with the reason.

    Args:
        dist: the distribution whose ``arg_constraints`` to check.
        strict: raise ``RuntimeError`` when a parameter is traced, as NumPyro does.

    Raises:
        ValueError: a concrete parameter violates its constraint; the message says where.
        RuntimeError: ``strict`` and a parameter is traced.
    """
    with jax.ensure_compile_time_eval():
        for param, value in dist.get_args().items():
            constraint = dist.arg_constraints[param]
            if constraints.is_dependent(constraint):
                continue
            if isinstance(value, jax.core.Tracer):
                if strict:
                    raise RuntimeError("Cannot validate arguments inside jitted code.")
                continue
            if not np.all(constraint(value)):
                raise ValueError(
                    f"{type(dist).__name__} distribution got invalid {param} parameter: "
                    f"{_explain(constraint, value)}."
                )


def check_real(name, value, owner):
    """Raise ``TypeError`` when ``value`` (an array or None) is complex.

    Args:
        name: the argument's name, for the message.
        value: the array, or None.
        owner: the distribution's or function's name, for the message.

    Raises:
        TypeError: for a complex dtype.
    """
    if value is not None and jnp.iscomplexobj(value):
        raise TypeError(
            f"{owner}: {name} is complex ({jnp.result_type(value)}); the models here are "
            "real-valued. Pass real and imaginary parts as separate dimensions if you need both."
        )


def check_bool_mask(obs_mask, owner):
    """``obs_mask`` as a bool array; any other dtype is a ``ValueError``, never reinterpreted.

    Args:
        obs_mask: the user's mask, or None.
        owner: the distribution's name, for the message.

    Returns:
        The mask as a bool ``jax.Array``, or None.

    Raises:
        ValueError: for a non-boolean dtype.
    """
    if obs_mask is None:
        return None
    mask = jnp.asarray(obs_mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(
            f"{owner}: obs_mask must be a bool array (True where observed, NumPyro's sense of "
            f"mask), got dtype {mask.dtype}. If 1 marks an observed step, pass "
            "obs_mask.astype(bool)."
        )
    return mask

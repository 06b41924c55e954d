"""Regression on covariates: static (coefficients sampled) and dynamic (coefficients as states)."""

import jax.numpy as jnp

from numpyro_ssm.sts._component import (
    block_dtype,
    builder,
    checked_scale,
    initial_block,
    make_component,
    stateless_component,
    time_varying_rows,
)

__all__ = ["dynamic_regression", "regression"]


@builder
def regression(covariates, coefficients, *, name="regression"):
    r"""A static regression effect :math:`x_t = X_t \beta` with sampled coefficients.

    The effect enters the emission bias (no states): put a prior on ``coefficients`` in the
    model. For coefficients that are integrated out exactly, or drift, use
    :func:`dynamic_regression`.

    Args:
        covariates: shape ``(T', k)`` or ``(T',)``: one row per step. ``T'`` may exceed the
            series' length; the extra rows are the covariates of the forecast horizon.
        coefficients: shape ``(k,)`` (or a scalar for one covariate).
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` without states.
    """
    dtype, weak = block_dtype(name, covariates=covariates, coefficients=coefficients)
    X = time_varying_rows(name, "covariates", covariates, dtype)
    beta = jnp.asarray(coefficients, dtype)
    if beta.ndim > 1 or beta.size != X.shape[1]:
        raise ValueError(
            f"{name}: coefficients must have shape ({X.shape[1]},), one per covariate column "
            f"(covariates {X.shape}), got {beta.shape}."
        )
    return stateless_component(name, dtype, weak, bias=(X @ beta.reshape(-1))[:, None])


@builder
def dynamic_regression(
    covariates, drift_scale=0.0, *, initial_mean=0.0, initial_scale=None, name="regression"
):
    r"""Regression coefficients as states, :math:`x_t = X_t \beta_t`.

    The coefficients follow random walks, :math:`\beta_{t+1} = \beta_t + \eta_t`.

    With ``drift_scale = 0`` and the default diffuse start this is a static regression whose
    coefficients are integrated out exactly (statsmodels' ``mle_regression=False``).

    Args:
        covariates: shape ``(T', k)`` or ``(T',)``; rows past the series are the forecast
            horizon's.
        drift_scale: the standard deviation of the coefficients' increments (scalar or
            ``(k,)``).
        initial_mean: the mean of the coefficients at ``t = 1`` when proper.
        initial_scale: None or ``"diffuse"``, or standard deviations.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` with ``k`` states ``beta_0, ...``.
    """
    dtype, weak = block_dtype(name, covariates=covariates, drift_scale=drift_scale)
    X = time_varying_rows(name, "covariates", covariates, dtype)
    k = X.shape[1]
    sd = checked_scale(name, "drift_scale", drift_scale, dtype, (k,))
    return make_component(
        name,
        dtype,
        weak,
        initial=initial_block(name, initial_mean, initial_scale, dtype, k, "diffuse"),
        F=jnp.eye(k, dtype=dtype),
        chol_Q=jnp.diag(sd),
        H=X[:, None, :],
        names=tuple(f"beta_{i}" for i in range(k)),
    )

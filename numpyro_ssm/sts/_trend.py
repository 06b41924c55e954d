"""Trend components: the local level, the local linear trend and the smooth trend."""

import jax.numpy as jnp

from numpyro_ssm.sts._component import (
    block_dtype,
    builder,
    checked_scale,
    initial_block,
    make_component,
)

__all__ = ["local_level", "local_linear_trend", "smooth_trend"]


@builder
def local_level(level_scale, *, initial_mean=0.0, initial_scale=None, name="level"):
    r"""A random-walk level: :math:`\mu_{t+1} = \mu_t + \eta_t`, :math:`x_t = \mu_t`.

    Args:
        level_scale: the standard deviation of :math:`\eta_t` (0: a constant level).
        initial_mean: the mean of :math:`\mu_1` when its start is proper.
        initial_scale: None or ``"diffuse"`` (diffuse), or the standard deviation of
            :math:`\mu_1`.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` with one state, ``level``.
    """
    dtype, weak = block_dtype(name, level_scale=level_scale, initial_mean=initial_mean)
    sd = checked_scale(name, "level_scale", level_scale, dtype)
    initial = initial_block(name, initial_mean, initial_scale, dtype, 1, "diffuse")
    return make_component(
        name,
        dtype,
        weak,
        initial=initial,
        F=jnp.eye(1, dtype=dtype),
        chol_Q=sd.reshape(1, 1),
        H=jnp.ones((1, 1), dtype),
        names=("level",),
    )


@builder
def local_linear_trend(
    level_scale, slope_scale, *, initial_mean=0.0, initial_scale=None, name="trend"
):
    r"""A level with a random-walk slope (Durbin & Koopman §3.2.1).

    :math:`\mu_{t+1} = \mu_t + \nu_t + \xi_t`, :math:`\nu_{t+1} = \nu_t + \zeta_t`,
    :math:`x_t = \mu_t`. With ``level_scale = 0`` this is the smooth (integrated random walk)
    trend; with both scales 0 a deterministic linear trend.

    Args:
        level_scale: the standard deviation of :math:`\xi_t`.
        slope_scale: the standard deviation of :math:`\zeta_t`.
        initial_mean: the mean of ``(level, slope)`` at ``t = 1`` (scalar or ``(2,)``).
        initial_scale: None or ``"diffuse"``, or standard deviations (scalar or ``(2,)``).
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` with states ``level``, ``slope``.
    """
    dtype, weak = block_dtype(
        name, level_scale=level_scale, slope_scale=slope_scale, initial_mean=initial_mean
    )
    sd = jnp.stack(
        [
            checked_scale(name, "level_scale", level_scale, dtype),
            checked_scale(name, "slope_scale", slope_scale, dtype),
        ]
    )
    return make_component(
        name,
        dtype,
        weak,
        initial=initial_block(name, initial_mean, initial_scale, dtype, 2, "diffuse"),
        F=jnp.asarray([[1.0, 1.0], [0.0, 1.0]], dtype),
        chol_Q=jnp.diag(sd),
        H=jnp.asarray([[1.0, 0.0]], dtype),
        names=("level", "slope"),
    )


@builder
def smooth_trend(slope_scale, *, initial_mean=0.0, initial_scale=None, name="trend"):
    """:func:`local_linear_trend` without level noise: an integrated random walk.

    Args:
        slope_scale: the standard deviation of the slope's increments.
        initial_mean: the mean of ``(level, slope)`` at ``t = 1``.
        initial_scale: None or ``"diffuse"``, or standard deviations.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` with states ``level``, ``slope``.
    """
    zero = jnp.zeros((), jnp.result_type(slope_scale))
    return local_linear_trend(
        zero if not isinstance(slope_scale, int | float) else 0.0,
        slope_scale,
        initial_mean=initial_mean,
        initial_scale=initial_scale,
        name=name,
    )

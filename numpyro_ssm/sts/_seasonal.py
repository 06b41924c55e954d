"""Seasonal components, in dummy and trigonometric form (Durbin & Koopman 2012, §3.2.2)."""

import math

import jax.numpy as jnp
import numpy as np

from numpyro_ssm.sts._component import (
    block_diag,
    block_dtype,
    builder,
    checked_scale,
    initial_block,
    is_concrete,
    make_component,
)

__all__ = ["seasonal"]


def _check_period(name, period, integer):
    if not is_concrete(period) or np.ndim(period) != 0:
        raise ValueError(f"{name}: period must be a concrete number, got {period!r}.")
    period = float(period)
    if not period >= 2 or (integer and period != int(period)):
        kind = "an integer >= 2" if integer else "a number >= 2"
        raise ValueError(
            f"{name}: period must be {kind} (steps per cycle), got {period:g}."
            + (" Use form='trigonometric' for a non-integer period." if integer else "")
        )
    return period


@builder
def seasonal(
    period,
    drift_scale=0.0,
    *,
    form="dummy",
    num_harmonics=None,
    initial_mean=0.0,
    initial_scale=None,
    name="seasonal",
):
    r"""A seasonal pattern of ``period`` steps, in dummy or trigonometric form (D&K §3.2.2).

    **Dummy** (``form="dummy"``, integer period ``s``): ``s - 1`` states,
    :math:`\gamma_{t+1} = -\sum_{j=1}^{s-1} \gamma_{t+1-j} + \omega_t`, the effects summing to
    zero over a period up to the noise; :math:`x_t = \gamma_t`.

    **Trigonometric** (``form="trigonometric"``, any period ``s >= 2``, e.g. 365.25 or 52.18):
    harmonics :math:`j = 1..h` at frequencies :math:`\lambda_j = 2\pi j / s`, each a pair
    :math:`(\gamma_j, \gamma^*_j)` rotated by :math:`\lambda_j` per step with noise of standard
    deviation ``drift_scale`` on both, and :math:`x_t = \sum_j \gamma_{j,t}`. ``h`` defaults to
    ``floor(s / 2)``, the full pattern of an integer period. When ``2 h = s`` the last harmonic
    (at :math:`\pi`) has one state: its :math:`\gamma^*` never reaches the observation.

    Add several for several periods (``seasonal(7) + seasonal(365.25, form="trigonometric",
    num_harmonics=3)``), each with its own ``name``.

    Args:
        period: steps per cycle (concrete).
        drift_scale: the standard deviation of the seasonal noise (0: a fixed pattern).
        form: ``"dummy"`` or ``"trigonometric"``.
        num_harmonics: ``h`` for the trigonometric form.
        initial_mean: the mean of the states at ``t = 1`` when proper.
        initial_scale: None or ``"diffuse"``, or standard deviations.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component`.

    Raises:
        ValueError: for a period below 2 (or not an integer in dummy form), a harmonic count
            outside ``1..floor(period / 2)``, or an unknown form.
    """
    dtype, weak = block_dtype(name, drift_scale=drift_scale, initial_mean=initial_mean)
    sd = checked_scale(name, "drift_scale", drift_scale, dtype)
    if form == "dummy":
        if num_harmonics is not None:
            raise ValueError(f"{name}: num_harmonics is for form='trigonometric' only.")
        s = int(_check_period(name, period, integer=True)) - 1
        F = jnp.zeros((s, s), dtype).at[0].set(-1.0)
        F = F.at[jnp.arange(1, s), jnp.arange(s - 1)].set(1.0)
        chol_Q = jnp.zeros((s, 1), dtype).at[0, 0].set(sd)  # one noise, on the newest effect
        H = jnp.zeros((1, s), dtype).at[0, 0].set(1.0)
        names = tuple(f"gamma_{i}" for i in range(s))
    elif form == "trigonometric":
        period = _check_period(name, period, integer=False)
        most = int(math.floor(period / 2))
        h = most if num_harmonics is None else num_harmonics
        if int(h) != h or not 1 <= h <= most:
            raise ValueError(
                f"{name}: num_harmonics must be an integer in 1..floor(period / 2) = 1..{most}, "
                f"got {num_harmonics!r}."
            )
        blocks, names = [], []
        for j in range(1, int(h) + 1):
            lam = 2 * math.pi * j / period
            c, s_ = math.cos(lam), math.sin(lam)
            if 2 * j == period:  # frequency pi: the sine state is identically unobserved
                blocks.append(np.array([[c]]))
                names.append(f"cos_{j}")
            else:
                blocks.append(np.array([[c, s_], [-s_, c]]))
                names += [f"cos_{j}", f"sin_{j}"]
        s = len(names)
        F = jnp.asarray(block_diag(blocks), dtype)
        chol_Q = sd * jnp.eye(s, dtype=dtype)
        H = jnp.asarray([[1.0 if n.startswith("cos") else 0.0 for n in names]], dtype)
    else:
        raise ValueError(f"{name}: form must be 'dummy' or 'trigonometric', got {form!r}.")
    return make_component(
        name,
        dtype,
        weak,
        initial=initial_block(name, initial_mean, initial_scale, dtype, s, "diffuse"),
        F=F,
        chol_Q=chol_Q,
        H=H,
        names=tuple(names),
    )

"""Stationary components and noise: an autoregression, the stochastic cycle, the irregular."""

import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops.linalg import cholesky, qr_solve
from numpyro_ssm.sts._component import (
    block_dtype,
    builder,
    checked_scale,
    initial_block,
    is_concrete,
    make_component,
    stateless_component,
)

__all__ = ["autoregressive", "cycle", "irregular"]


def _stationary_factor(F, chol_Q):
    """A factor of the solution ``P`` of ``P = F P Fᵀ + Q`` (``Q = chol_Q chol_Qᵀ``).

    ``vec P = (I - F ⊗ F)⁻¹ vec Q`` by Householder QR (no LAPACK, differentiable), for the
    small companion matrices of an autoregression.
    """
    p = F.shape[0]
    Q = chol_Q @ chol_Q.T
    P = qr_solve(jnp.eye(p * p, dtype=F.dtype) - jnp.kron(F, F), Q.reshape(-1)).reshape(p, p)
    return cholesky(0.5 * (P + P.T))


@builder
def autoregressive(
    coefficients, noise_scale, *, initial_mean=0.0, initial_scale=None, name="autoregressive"
):
    r"""A stationary AR(p) component: :math:`x_{t+1} = \sum_{i=1}^p \phi_i x_{t+1-i} + \eta_t`.

    Companion form with states :math:`(x_t, x_{t-1}, ..., x_{t-p+1})` (statsmodels' order).
    The default start is the stationary distribution (the discrete Lyapunov equation, solved
    without LAPACK); a prior keeping the coefficients stationary is the user's (e.g. partial
    autocorrelations in ``(-1, 1)``).

    Args:
        coefficients: shape ``(p,)``, :math:`\phi_1, ..., \phi_p`.
        noise_scale: the standard deviation of :math:`\eta_t`, positive for the stationary
            start.
        initial_mean: the mean of the states at ``t = 1`` when proper and not stationary.
        initial_scale: None (stationary), ``"diffuse"``, or standard deviations.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` with ``p`` states ``x_lag0, ...``.

    Raises:
        ValueError: for coefficients that are not a 1-D array, or (when concrete) that are not
            stationary while the start is the stationary distribution.
    """
    dtype, weak = block_dtype(name, coefficients=coefficients, noise_scale=noise_scale)
    phi = jnp.asarray(coefficients, dtype)
    if phi.ndim != 1 or phi.shape[0] < 1:
        raise ValueError(f"{name}: coefficients must have shape (p,) with p >= 1, got {phi.shape}.")
    p = phi.shape[0]
    sd = checked_scale(name, "noise_scale", noise_scale, dtype)
    F = jnp.zeros((p, p), dtype).at[0].set(phi)
    F = F.at[jnp.arange(1, p), jnp.arange(p - 1)].set(1.0)
    chol_Q = jnp.zeros((p, 1), dtype).at[0, 0].set(sd)  # one noise, on the newest lag
    if initial_scale is None and is_concrete(phi):
        roots = np.abs(np.linalg.eigvals(np.asarray(F, float)))
        if roots.max() >= 1:
            raise ValueError(
                f"{name}: coefficients {np.asarray(phi).tolist()} are not stationary (largest "
                f"root modulus {roots.max():.4g}); the stationary start needs them inside the "
                "unit circle. Pass initial_scale='diffuse' or standard deviations."
            )

    def stationary():
        # sd * factor of the unit-noise solution: finite also for noise_scale = 0
        unit = jnp.zeros((p, p), dtype).at[0, 0].set(1.0)
        return sd * _stationary_factor(F, unit)

    return make_component(
        name,
        dtype,
        weak,
        initial=initial_block(name, initial_mean, initial_scale, dtype, p, stationary),
        F=F,
        chol_Q=chol_Q,
        H=jnp.zeros((1, p), dtype).at[0, 0].set(1.0),
        names=tuple(f"x_lag{i}" for i in range(p)),
    )


@builder
def cycle(frequency, damping, noise_scale, *, initial_mean=0.0, initial_scale=None, name="cycle"):
    r"""Harvey's stochastic cycle (Durbin & Koopman §3.2.3).

    .. math::

        \begin{pmatrix} c_{t+1} \\ c^*_{t+1} \end{pmatrix} = \rho
        \begin{pmatrix} \cos\lambda & \sin\lambda \\ -\sin\lambda & \cos\lambda \end{pmatrix}
        \begin{pmatrix} c_t \\ c^*_t \end{pmatrix} + \kappa_t, \qquad x_t = c_t,

    with :math:`\kappa_t \sim \mathcal N(0, \sigma^2 I_2)`. For :math:`\rho < 1` the default
    start is the stationary :math:`\mathcal N(0, \sigma^2 / (1 - \rho^2) I_2)` (statsmodels
    starts it diffuse: ``initial_scale="diffuse"``).

    Args:
        frequency: :math:`\lambda \in (0, \pi]`, radians per step (period ``2π / λ``).
        damping: :math:`\rho \in [0, 1]`; below 1 for the stationary start.
        noise_scale: :math:`\sigma`.
        initial_mean: the mean of ``(c, c*)`` at ``t = 1`` when proper and not stationary.
        initial_scale: None (stationary), ``"diffuse"``, or standard deviations.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` with states ``cycle``, ``cycle_star``.

    Raises:
        ValueError: (when concrete) for a frequency outside ``(0, π]``, a damping outside
            ``[0, 1]``, or a damping of 1 with the stationary start.
    """
    dtype, weak = block_dtype(name, frequency=frequency, damping=damping, noise_scale=noise_scale)
    lam, rho = jnp.asarray(frequency, dtype), jnp.asarray(damping, dtype)
    for argument, value in (("frequency", lam), ("damping", rho)):
        if value.ndim:
            raise ValueError(f"{name}: {argument} must be a scalar, got shape {value.shape}.")
    if is_concrete(lam) and not 0 < float(lam) <= np.pi:
        raise ValueError(f"{name}: frequency must lie in (0, pi], got {float(lam):g}.")
    if is_concrete(rho):
        top = 1.0 if initial_scale is not None else np.nextafter(1.0, 0.0)
        if not 0 <= float(rho) <= top:
            limit = "[0, 1]" if initial_scale is not None else "[0, 1) for the stationary start"
            raise ValueError(f"{name}: damping must lie in {limit}, got {float(rho):g}.")
    sd = checked_scale(name, "noise_scale", noise_scale, dtype)
    c, s = jnp.cos(lam), jnp.sin(lam)
    F = rho * jnp.stack([jnp.stack([c, s]), jnp.stack([-s, c])])

    def stationary():
        return sd / jnp.sqrt(1.0 - rho * rho) * jnp.eye(2, dtype=dtype)

    return make_component(
        name,
        dtype,
        weak,
        initial=initial_block(name, initial_mean, initial_scale, dtype, 2, stationary),
        F=F,
        chol_Q=sd * jnp.eye(2, dtype=dtype),
        H=jnp.asarray([[1.0, 0.0]], dtype),
        names=("cycle", "cycle_star"),
    )


@builder
def irregular(scale, *, name="irregular"):
    r"""The observation noise :math:`\varepsilon_t \sim \mathcal N(0, \sigma^2)`.

    Every model needs one (a Gaussian observation density); it has no states.

    Args:
        scale: :math:`\sigma > 0`.
        name: the component's name.

    Returns:
        A :class:`~numpyro_ssm.sts.Component` without states.
    """
    dtype, weak = block_dtype(name, scale=scale)
    sd = checked_scale(name, "scale", scale, dtype)
    return stateless_component(name, dtype, weak, chol_R=sd.reshape(1, 1))

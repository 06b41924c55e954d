"""Shared nonlinear test models: a linear model written as functions, and the pendulum.

Not oracles (those are in ``oracles.py``): these build the inputs the nonlinear tests share.
"""

import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops import LGSSMParams
from numpyro_ssm.ops.nonlinear import NonlinearGaussianParams


def _tril(rng, n, lead=()):
    a = np.tril(rng.normal(size=lead + (n, n))) * 0.2
    idx = np.arange(n)
    a[..., idx, idx] = 0.6 + 0.5 * rng.uniform(size=lead + (n,))
    return a


def linear_transition(z, u, p):
    return p["F"] @ z + p["B"] @ u + p["b"]


def linear_emission(z, u, p):
    return p["H"] @ z + p["C"] @ u + p["d"]


def linear_case(seed=0, S=2, D=2, T=6):
    """A linear-Gaussian model with inputs, time-varying noise and missing entries.

    Returns ``(theta, y, mask, inputs)``: ``theta`` is a dict of every array (what gradients
    are taken with respect to); :func:`nonlinear_params` and :func:`kalman_params` build the
    two equivalent models from it. ``u_{t+1}`` drives the transition into step ``t + 1`` and
    ``u_t`` the emission of step ``t``.
    """
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(S, S))
    theta = dict(
        m0=rng.normal(size=S),
        L0=_tril(rng, S),
        F=0.8 * F / np.linalg.norm(F, 2),
        B=rng.normal(size=(S, 1)),
        b=rng.normal(size=S) * 0.3,
        LQ=_tril(rng, S, (T - 1,)),
        H=rng.normal(size=(D, S)),
        C=rng.normal(size=(D, 1)),
        d=rng.normal(size=D) * 0.3,
        LR=_tril(rng, D, (T,)),
    )
    inputs = rng.normal(size=(T, 1))
    y = rng.normal(size=(T, D)) * 2.0
    y[1, 0] = np.nan
    mask = np.ones((T, D), bool)
    mask[3, D - 1] = False
    mask[T - 2] = False
    return theta, y, mask, inputs


def nonlinear_params(theta):
    fn_params = {k: theta[k] for k in ("F", "B", "b", "H", "C", "d")}
    return NonlinearGaussianParams(
        initial_mean=theta["m0"],
        initial_scale_tril=theta["L0"],
        transition_fn=linear_transition,
        transition_scale_tril=theta["LQ"],
        emission_fn=linear_emission,
        emission_scale_tril=theta["LR"],
        params=fn_params,
    )


def kalman_params(theta, inputs):
    u = jnp.asarray(inputs)
    return LGSSMParams(
        initial_mean=theta["m0"],
        initial_scale_tril=theta["L0"],
        transition_matrix=theta["F"],
        transition_scale_tril=theta["LQ"],
        emission_matrix=theta["H"],
        emission_scale_tril=theta["LR"],
        transition_bias=u[1:] @ theta["B"].T + theta["b"],
        emission_bias=u @ theta["C"].T + theta["d"],
    )


# The pendulum of Särkkä, Bayesian Filtering and Smoothing (2013), Example 3.7 / 5.1: the state
# is (angle, angular velocity), the sensor measures the horizontal position sin(angle).


def pendulum_transition(z, u, p):
    dt = p["dt"]
    return jnp.stack([z[0] + dt * z[1], z[1] - p["g"] * dt * jnp.sin(z[0])])


def pendulum_emission(z, u, p):
    return jnp.sin(z[:1])


def pendulum_noise(q_c, dt):
    """The book's process noise covariance ``q_c [[dt³/3, dt²/2], [dt²/2, dt]]``."""
    return q_c * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])


def pendulum_case(T=20, dt=0.1, q_c=0.1, r=0.1, seed=0):
    """Simulated pendulum data: ``(params, y, states)`` (NumPy simulation, fixed seed)."""
    rng = np.random.default_rng(seed)
    Q = pendulum_noise(q_c, dt)
    LQ = np.linalg.cholesky(Q)
    z = np.array([1.5, 0.0])
    states, y = [], []
    for _ in range(T):
        states.append(z)
        y.append(np.sin(z[:1]) + np.sqrt(r) * rng.normal(size=1))
        z = np.array([z[0] + dt * z[1], z[1] - 9.81 * dt * np.sin(z[0])]) + LQ @ rng.normal(size=2)
    params = NonlinearGaussianParams(
        initial_mean=jnp.array([1.5, 0.0]),
        initial_scale_tril=jnp.eye(2) * 0.5,
        transition_fn=pendulum_transition,
        transition_scale_tril=jnp.asarray(LQ),
        emission_fn=pendulum_emission,
        emission_scale_tril=jnp.array([[np.sqrt(r)]]),
        params={"g": jnp.asarray(9.81), "dt": jnp.asarray(dt)},
    )
    return params, np.stack(y), np.stack(states)

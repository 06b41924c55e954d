"""Shared Kalman test cases: parameter dicts, data with missing entries, and a jitted caller.

Not oracles (those are in ``oracles.py``): these build the inputs the Kalman tests share.
"""

import jax
import numpy as np
import pytest
from oracles import random_lgssm

from numpyro_ssm.ops import LGSSMParams, kalman_posterior_sample

RTOL = 1e-8


POSITIONAL = [
    "initial_mean",
    "initial_scale_tril",
    "transition_matrix",
    "transition_scale_tril",
    "emission_matrix",
    "emission_scale_tril",
]


def trend_seasonal(period, noise_scales):
    """A local linear trend plus a dummy seasonal of ``period``: ``F, chol_Q, H`` (``D = 1``).

    ``S = period + 1``; ``F`` mostly shifts (the seasonal's rows copy one entry), ``chol_Q`` has
    three columns (level, slope, seasonal) with ``noise_scales`` on its diagonal, ``H`` observes
    the level and the current season.
    """
    S = period + 1
    F = np.zeros((S, S))
    F[:2, :2] = [[1.0, 1.0], [0.0, 1.0]]
    F[2, 2:] = -1.0
    F[3:, 2:-1] = np.eye(period - 2)
    chol_Q = np.zeros((S, 3))
    chol_Q[[0, 1, 2], [0, 1, 2]] = noise_scales
    H = np.zeros((1, S))
    H[0, [0, 2]] = 1.0
    return F, chol_Q, H


_JITTED = {}


def call(fn, params, y, *lead, **kw):
    """Call an op, jitted, with the parameter dict as one LGSSMParams."""
    if fn not in _JITTED:
        static = ("parallel", "sample_shape") if fn is kalman_posterior_sample else ("parallel",)
        _JITTED[fn] = jax.jit(fn, static_argnames=static)
    return _JITTED[fn](*lead, LGSSMParams(**params), y, **kw)


def close(a, b, rtol=RTOL, atol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def make_case(seed, S=3, D=2, T=7, time_varying=True, missing="entries"):
    rng = np.random.default_rng(seed)
    params = random_lgssm(rng, S, D, T, time_varying=time_varying)
    y = rng.normal(size=(T, D)) * 2.0
    mask = np.ones((T, D), bool)
    if missing == "entries":
        y[1, 0] = np.nan  # NaN missing
        mask[3, D - 1] = False  # mask missing
        mask[T - 2] = False  # whole step
    elif missing == "steps":
        mask[2] = False
    return params, y, mask


CASES = [
    pytest.param(dict(time_varying=False, missing=None), id="homogeneous"),
    pytest.param(dict(time_varying=True, missing=None), id="time-varying"),
    pytest.param(dict(time_varying=True, missing="entries"), id="tv-missing-entries"),
    pytest.param(dict(time_varying=False, missing="entries", S=2, D=4), id="D>S-missing"),
    pytest.param(dict(time_varying=True, missing="steps", S=4, D=1), id="D=1-missing-steps"),
]


def local_linear_trend(level_sd, slope_sd, obs_sd, T, initial_sd=(1.0, 1.0)):
    F = np.array([[1.0, 1.0], [0.0, 1.0]])
    return dict(
        initial_mean=np.zeros(2),
        initial_scale_tril=np.diag(initial_sd),
        transition_matrix=F,
        transition_scale_tril=np.diag([level_sd, slope_sd]),
        emission_matrix=np.array([[1.0, 0.0]]),
        emission_scale_tril=np.array([[obs_sd]]),
    )

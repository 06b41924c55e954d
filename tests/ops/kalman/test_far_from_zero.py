"""The parallel schedule where the data sit far from zero (issue 23, section 4).

A local linear trend with a noiseless level, observed with little noise, at a level of 1e3: the
one-step innovation variance ``S`` is tiny, so the associative elements' information vectors
are of size ``|y| / S``. The elements once combined them with state means of size ``|y|`` and
lost ``log10(1/S)`` digits relative to the level (parallel log-likelihood off by 3e-8 relative
in float64 here, filtered means by 9e-8 absolute; in float32 by 8e-3 on a level of 1e3). The
oracles: the serial filter (on this model it agreed with a 50-digit covariance filter to 1e-14
relative when the defect was fixed), and shift invariance (the same data centred on zero, whose
filtered and smoothed level shifts by the level exactly and whose log-likelihood and noise-scale
gradients do not change).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import close

from numpyro_ssm.ops import LGSSMParams, kalman_log_marginal, kalman_smoother

LEVEL = 1e3
T = 48


def _model(dtype, obs_sd, level):
    """Smooth trend: level_{t+1} = level_t + slope_t (no noise), slope a random walk."""
    rng = np.random.default_rng(0)
    slope = np.cumsum(rng.normal(size=T) * 1e-2)
    y = np.cumsum(slope) + obs_sd * rng.normal(size=T)
    y = (y - y.mean())[:, None]
    y[7] = np.nan  # one missing step
    params = LGSSMParams(
        initial_mean=jnp.asarray([y[0, 0] + level, 0.0], dtype),
        initial_scale_tril=jnp.eye(2, dtype=dtype),
        transition_matrix=jnp.asarray([[1.0, 1.0], [0.0, 1.0]], dtype),
        transition_scale_tril=jnp.diag(jnp.asarray([0.0, 1e-2], dtype)),
        emission_matrix=jnp.asarray([[1.0, 0.0]], dtype),
        emission_scale_tril=jnp.asarray([[obs_sd]], dtype),
    )
    return params, jnp.asarray(y + level, dtype)


@functools.partial(jax.jit, static_argnames="parallel")
def _run(params, y, parallel):
    post = kalman_smoother(params, y, parallel=parallel)
    # the noise scales' gradient is shift invariant (the initial mean's and F's are not)
    value, grad = jax.value_and_grad(lambda p: kalman_log_marginal(p, y, parallel=parallel))(params)
    return post, value, grad


@pytest.fixture(scope="module", params=["float64", "float32"])
def runs(request):
    dtype = jnp.dtype(request.param)
    obs_sd = 1e-3 if dtype == jnp.float64 else 0.1
    far = _model(dtype, obs_sd, LEVEL)
    centred = _model(dtype, obs_sd, 0.0)
    return dtype, {
        "serial": _run(*far, parallel=False),
        "parallel": _run(*far, parallel=True),
        "centred": _run(*centred, parallel=False),
    }


def _tolerances(dtype):
    # float64: a few units in the last place of the level; float32: 16 units (the unfixed
    # elements were 66 units off)
    if dtype == jnp.float64:
        return dict(mean=1e-10, rel=1e-10, grad=1e-8)
    return dict(mean=16 * LEVEL * np.finfo(np.float32).eps, rel=1e-3, grad=2e-2)


def test_filter_and_smoother_match_serial_and_shifted_centred_data(runs):
    dtype, out = runs
    tol = _tolerances(dtype)
    serial, parallel, centred = (out[k][0] for k in ("serial", "parallel", "centred"))
    assert parallel.filtered_means.dtype == dtype
    for post in (serial, parallel):
        shift = jnp.asarray([LEVEL, 0.0])
        close(post.filtered_means, centred.filtered_means + shift, rtol=0, atol=tol["mean"])
        close(post.smoothed_means, centred.smoothed_means + shift, rtol=0, atol=tol["mean"])
        close(post.log_marginal, centred.log_marginal, rtol=tol["rel"], atol=0)
    close(parallel.filtered_means, serial.filtered_means, rtol=0, atol=tol["mean"])
    close(parallel.smoothed_means, serial.smoothed_means, rtol=0, atol=tol["mean"])
    close(parallel.log_marginal, serial.log_marginal, rtol=tol["rel"], atol=0)
    close(
        parallel.log_likelihood_increments,
        serial.log_likelihood_increments,
        rtol=0,
        atol=tol["rel"] * abs(float(serial.log_marginal)),
    )
    scale = float(jnp.max(serial.smoothed_covariances))
    close(
        parallel.smoothed_covariances, serial.smoothed_covariances, rtol=0, atol=tol["rel"] * scale
    )


def test_gradients_match_serial_and_shifted_centred_data(runs):
    dtype, out = runs
    tol = _tolerances(dtype)
    (_, v_s, g_s), (_, v_p, g_p), (_, v_c, g_c) = (
        out[k] for k in ("serial", "parallel", "centred")
    )
    close(v_p, v_s, rtol=tol["rel"], atol=0)
    for name in ("transition_scale_tril", "emission_scale_tril", "transition_matrix"):
        ref = np.asarray(getattr(g_s, name))
        close(getattr(g_p, name), ref, rtol=0, atol=tol["grad"] * np.abs(ref).max())
    for name in ("transition_scale_tril", "emission_scale_tril"):
        ref = np.asarray(getattr(g_c, name))
        close(getattr(g_p, name), ref, rtol=0, atol=tol["grad"] * np.abs(ref).max())

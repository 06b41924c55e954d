"""A transition noise factor with fewer columns than states, ``(S, q)``, through every Kalman op.

Oracles: the dense joint Gaussian of ``y_1:T`` (``oracles.dense_log_marginal`` and
``dense_posterior``), and the same op with the square factor ``[L, 0]`` (zero columns: the same
``Q``), whose results the rest of the suite checks against the dense Gaussian.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import call, close, make_case
from oracles import dense_filtered, dense_log_marginal, dense_posterior

from numpyro_ssm.ops import (
    LGSSMParams,
    diffuse_kalman_log_marginal,
    diffuse_kalman_smoother,
    kalman_log_marginal,
    kalman_posterior_sample,
    kalman_smoother,
    lgssm_sample,
)

jax.config.update("jax_enable_x64", True)


def _thin_case(S, D, T, q, time_varying, missing, seed=3):
    """A random model whose transition factor is ``(S, q)``, lower-trapezoidal."""
    params, y, mask = make_case(seed, S=S, D=D, T=T, time_varying=time_varying, missing=missing)
    params["transition_scale_tril"] = np.asarray(params["transition_scale_tril"])[..., :q]
    return params, y, mask


def _padded(params):
    """The same model with the square factor ``[L, 0]``."""
    L = np.asarray(params["transition_scale_tril"])
    S = L.shape[-2]
    pad = np.zeros(L.shape[:-1] + (S - L.shape[-1],))
    return {**params, "transition_scale_tril": np.concatenate([L, pad], axis=-1)}


CASES = [
    pytest.param(dict(S=4, D=1, T=9, q=2, time_varying=False, missing="steps"), id="D=1"),
    pytest.param(dict(S=3, D=2, T=7, q=1, time_varying=True, missing="entries"), id="tv-D=2"),
]
# the serial pass of a time-invariant model whose covariance settles (``_steady``)
SETTLED = dict(S=4, D=1, T=600, q=1, time_varying=False, missing=None)


@pytest.mark.parametrize(
    "case, parallel",
    [pytest.param(c.values[0], p, id=f"{c.id}-{p}") for c in CASES for p in (False, True)]
    + [pytest.param(SETTLED, False, id="settled-serial")],
)
def test_log_marginal_and_smoother_match_dense_gaussian(case, parallel):
    params, y, mask = _thin_case(**case)
    value = call(kalman_log_marginal, params, y, obs_mask=mask, parallel=parallel)
    close(value, dense_log_marginal(params, y, mask), rtol=1e-10)
    if y.shape[0] > 50:  # the dense posterior of 600 steps is slow; the value covers the pass
        return
    post = call(kalman_smoother, params, y, obs_mask=mask, parallel=parallel)
    means, covs, cross = dense_posterior(params, y, mask)
    close(post.smoothed_means, means, rtol=1e-9)
    close(post.smoothed_covariances, covs, rtol=1e-9)
    close(post.smoothed_cross_covariances, cross, rtol=1e-9)
    fm, fc = dense_filtered(params, y, mask)
    close(post.filtered_means, fm, rtol=1e-9)
    close(post.filtered_covariances, fc, rtol=1e-9)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("parallel", [False, True])
def test_gradient_is_the_square_factors_first_columns(case, parallel):
    """The derivative in a thin factor is that of ``[L, 0]`` in its first ``q`` columns."""
    params, y, mask = _thin_case(**case)
    q = params["transition_scale_tril"].shape[-1]

    def grads(p):
        def f(p):
            return kalman_log_marginal(LGSSMParams(**p), y, obs_mask=mask, parallel=parallel)

        return jax.jit(jax.grad(f))({k: jnp.asarray(v) for k, v in p.items()})

    thin, square = grads(params), grads(_padded(params))
    for name in thin:
        expected = square[name][..., :q] if name == "transition_scale_tril" else square[name]
        close(thin[name], expected, rtol=1e-9)


@pytest.mark.parametrize("parallel", [False, True])
def test_draws_equal_those_of_the_square_factor(parallel):
    """A thin factor uses the first ``q`` of each step's normals: the same paths as ``[L, 0]``."""
    params, y, mask = _thin_case(S=4, D=1, T=9, q=2, time_varying=True, missing="steps")
    key = jax.random.key(1)
    kw = dict(num_steps=9, sample_shape=(3,), parallel=parallel)
    a = lgssm_sample(key, LGSSMParams(**params), **kw)
    b = lgssm_sample(key, LGSSMParams(**_padded(params)), **kw)
    for x, z in zip(a, b, strict=True):
        close(x, z, rtol=0, atol=1e-12)
    kw = dict(obs_mask=mask, parallel=parallel, sample_shape=(3,))
    a = call(kalman_posterior_sample, params, y, key, **kw)
    b = call(kalman_posterior_sample, _padded(params), y, key, **kw)
    close(a, b, rtol=1e-9)


def test_diffuse_start_with_a_thin_factor():
    params, y, mask = _thin_case(S=4, D=1, T=12, q=2, time_varying=False, missing="steps")
    diffuse = (True, True, False, False)
    kw = dict(diffuse_states=diffuse, obs_mask=mask)
    thin, square = LGSSMParams(**params), LGSSMParams(**_padded(params))
    close(
        diffuse_kalman_log_marginal(thin, y, **kw),
        diffuse_kalman_log_marginal(square, y, **kw),
        rtol=1e-10,
    )
    a, b = diffuse_kalman_smoother(thin, y, **kw), diffuse_kalman_smoother(square, y, **kw)
    close(a.smoothed_means, b.smoothed_means, rtol=1e-9)
    close(a.smoothed_covariances, b.smoothed_covariances, rtol=1e-9)


@pytest.mark.parametrize("shape", [(4, 0), (4, 5), (3, 4, 5), (4,)])
def test_a_factor_of_no_or_too_many_columns_is_refused(shape):
    params, y, _ = _thin_case(S=4, D=1, T=4, q=4, time_varying=False, missing=None)
    params["transition_scale_tril"] = np.zeros(shape)
    with pytest.raises(ValueError, match=r"transition_scale_tril must have shape \(4, q\)"):
        kalman_log_marginal(LGSSMParams(**params), y)

"""LGSSMParams, lgssm_params and the deprecated eight-argument call of the Kalman ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import dense_log_marginal, random_lgssm

from numpyro_ssm.ops import (
    LGSSMParams,
    kalman_filter,
    kalman_log_marginal,
    kalman_posterior_sample,
    lgssm_params,
    lgssm_sample,
)

jax.config.update("jax_enable_x64", True)


def test_lgssm_params_from_covariances_equals_square_roots():
    rng = np.random.default_rng(0)
    p = random_lgssm(rng, 2, 1, 6, time_varying=False)
    cov = lambda u: u @ u.T  # noqa: E731
    built = lgssm_params(
        p["initial_mean"],
        p["transition_matrix"],
        p["emission_matrix"],
        initial_cov=cov(p["initial_scale_tril"]),
        transition_cov=cov(p["transition_scale_tril"]),
        emission_scale_tril=p["emission_scale_tril"],
        transition_bias=p["transition_bias"],
    )
    for name in ("initial_scale_tril", "transition_scale_tril"):
        np.testing.assert_allclose(getattr(built, name), p[name], rtol=1e-12)
    y = rng.normal(size=(6, 1))
    expected = dense_log_marginal({**p, "emission_bias": None}, y)
    np.testing.assert_allclose(kalman_log_marginal(built, y), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="exactly one of emission_cov and emission_scale_tril"):
        lgssm_params(
            jnp.zeros(1), jnp.eye(1), jnp.eye(1), initial_cov=jnp.eye(1), transition_cov=jnp.eye(1)
        )


def test_the_eight_argument_form_still_works_and_warns():
    rng = np.random.default_rng(1)
    p = random_lgssm(rng, 2, 2, 5, time_varying=True)
    y = rng.normal(size=(5, 2))
    params = LGSSMParams(**p)
    order = [p[k] for k in LGSSMParams._fields[:6]]
    biases = {"transition_bias": p["transition_bias"], "emission_bias": p["emission_bias"]}
    with pytest.warns(DeprecationWarning, match="LGSSMParams"):
        old = kalman_filter(*order, y, **biases)
    np.testing.assert_allclose(old.log_marginal, kalman_filter(params, y).log_marginal, rtol=1e-14)
    key = jax.random.key(0)
    with pytest.warns(DeprecationWarning):
        old_draws = kalman_posterior_sample(key, *order, y, **biases, sample_shape=(2,))
    np.testing.assert_allclose(
        old_draws, kalman_posterior_sample(key, params, y, sample_shape=(2,)), rtol=1e-14
    )
    with pytest.warns(DeprecationWarning):
        old_prior = lgssm_sample(key, *order, num_steps=5, **biases)
    np.testing.assert_allclose(old_prior[1], lgssm_sample(key, params, num_steps=5)[1])


def test_ops_reject_what_is_not_lgssm_params_and_complex_inputs():
    rng = np.random.default_rng(2)
    p = random_lgssm(rng, 2, 1, 4, time_varying=False)
    y = rng.normal(size=(4, 1))
    with pytest.raises(TypeError, match="params must be an LGSSMParams"):
        kalman_filter(dict(p), y)
    with pytest.raises(TypeError, match="transition_matrix is complex"):
        kalman_filter(LGSSMParams(**{**p, "transition_matrix": p["transition_matrix"] + 0j}), y)
    with pytest.raises(TypeError, match="observations are complex"):
        kalman_filter(LGSSMParams(**p), y + 0j)
    with pytest.raises(ValueError, match="obs_mask must be a bool array"):
        kalman_filter(LGSSMParams(**p), y, obs_mask=np.ones((4, 1)))

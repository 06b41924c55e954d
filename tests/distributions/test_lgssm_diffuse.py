"""``LinearGaussianSSM(diffuse_states=...)``: the exact diffuse start through the distribution.

The Nile local level at Durbin & Koopman's variances: ``log_prob`` is statsmodels' diffuse
log-likelihood, and the ``infer`` helpers (unchanged) follow the diffuse start: per-step terms
sum to ``log_prob``, smoothed latents are statsmodels' smoothed level.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from kalman_cases import close
from oracles import statsmodels_diffuse_smoother

from numpyro_ssm import LinearGaussianSSM
from numpyro_ssm.datasets import load_nile
from numpyro_ssm.infer import pointwise_log_likelihood, posterior_latents

Y = np.asarray(load_nile().volume, float)[:, None]
Y[[20, 21]] = np.nan


def model(y):
    sigma = numpyro.sample("sigma", numpyro.distributions.HalfNormal(300.0))
    ssm = LinearGaussianSSM(
        jnp.zeros(1),
        jnp.eye(1),
        jnp.eye(1),
        initial_scale_tril=jnp.zeros((1, 1)),
        transition_scale_tril=jnp.sqrt(1469.1) * jnp.eye(1),
        emission_scale_tril=jnp.reshape(sigma, (1, 1)),
        num_steps=y.shape[0],
        diffuse_states=np.array([True]),
    )
    numpyro.sample("y", ssm, obs=y)


def test_infer_helpers_follow_the_diffuse_start():
    params = dict(
        initial_mean=np.zeros(1),
        initial_scale_tril=np.zeros((1, 1)),
        transition_matrix=np.eye(1),
        transition_scale_tril=np.sqrt([[1469.1]]),
        emission_matrix=np.eye(1),
        emission_scale_tril=np.sqrt([[15099.0]]),
    )
    ref = statsmodels_diffuse_smoother(params, Y, 1)
    draws = {"sigma": np.sqrt([15099.0, 15099.0])}
    terms = np.asarray(pointwise_log_likelihood(model, draws, Y)["y"])
    assert np.isnan(terms[:, [20, 21]]).all()  # missing steps are marked NaN
    close(np.nansum(terms, -1), ref.llf)
    latents = posterior_latents(model, draws, Y)["y"]
    close(latents["means"][0, :, 0], ref.smoothed_state[0])


def test_bad_diffuse_arguments():
    kw = dict(
        initial_scale_tril=jnp.zeros((1, 1)),
        transition_scale_tril=jnp.eye(1),
        emission_scale_tril=jnp.eye(1),
        num_steps=5,
    )
    with pytest.raises(ValueError, match="diffuse_states must be a bool array of shape"):
        LinearGaussianSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), diffuse_states=[1], **kw)
    with pytest.raises(ValueError, match="num_diffuse_steps is given but diffuse_states is None"):
        LinearGaussianSSM(jnp.zeros(1), jnp.eye(1), jnp.eye(1), num_diffuse_steps=2, **kw)


def test_default_diffuse_length_waits_for_a_missing_season():
    """Level + dummy seasonal of period 4 (4 diffuse states) with step 2 missing: its season is
    seen again only at step 6, so 4 observed steps do not resolve the start; the default
    follows the diffuse directions and matches statsmodels."""
    F = np.zeros((4, 4))
    F[0, 0] = 1.0
    F[1, 1:] = -1.0
    F[2, 1] = F[3, 2] = 1.0
    params = dict(
        initial_mean=np.zeros(4),
        initial_scale_tril=np.zeros((4, 4)),
        transition_matrix=F,
        transition_scale_tril=np.diag([0.5, 0.2, 0.0, 0.0]),
        emission_matrix=np.array([[1.0, 1.0, 0.0, 0.0]]),
        emission_scale_tril=np.array([[0.7]]),
    )
    y = np.sin(np.arange(16.0))[:, None] + np.arange(16.0)[:, None] * 0.1
    y[1] = np.nan
    ssm = LinearGaussianSSM(
        params["initial_mean"],
        F,
        params["emission_matrix"],
        initial_scale_tril=params["initial_scale_tril"],
        transition_scale_tril=params["transition_scale_tril"],
        emission_scale_tril=params["emission_scale_tril"],
        num_steps=16,
        diffuse_states=np.ones(4, bool),
    )
    close(ssm.log_prob(y), statsmodels_diffuse_smoother(params, y, 4).llf)

"""The scalar (Potter) conditioning step against the triangularizing one (x64).

``_update_to_predict`` is what the log-marginal passes run for one-entry emissions; every
filter oracle with ``D = 1`` goes through it. Here it is checked alone: the same filtered mean
and log-likelihood, a factor of the same covariance, for observed and missing entries, zero
observation noise and a rank-deficient predicted covariance. Then the log-marginal pass that
lets the factor widen for a few steps between triangularizations, against the dense Gaussian.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import call, close, make_case
from oracles import dense_log_marginal, random_lgssm

from numpyro_ssm.ops import LGSSMParams, kalman_filter, kalman_log_marginal
from numpyro_ssm.ops.kalman._steps import _DEFER, _update, _update_to_predict
from numpyro_ssm.ops.kalman.filtering import _deferred_pass
from numpyro_ssm.ops.kalman.params import _inputs as _model_inputs

jax.config.update("jax_enable_x64", True)


def _inputs(S, rank, noise, seed=0):
    rng = np.random.default_rng(seed)
    chol_P = np.tril(rng.normal(size=(S, S)))
    chol_P[:, rank:] = 0.0  # P of rank `rank`
    return (
        jnp.asarray(rng.normal(size=S)),
        jnp.asarray(chol_P),
        jnp.asarray(rng.normal(size=(1, S))),
        jnp.asarray([[noise]]),
        jnp.asarray(rng.normal(size=1)),
        jnp.asarray(rng.normal(size=1) * 3.0),
    )


@pytest.mark.parametrize("observed", [True, False])
@pytest.mark.parametrize(
    ("S", "rank", "noise"), [(1, 1, 0.7), (5, 5, 0.3), (5, 3, -0.3), (8, 8, 0.0)]
)
def test_scalar_update_matches_the_triangular_one(S, rank, noise, observed):
    m, chol_P, H, chol_R, d, y = _inputs(S, rank, noise)
    mask = jnp.asarray([observed])
    m_f, chol_f, ll = jax.jit(_update)(m, chol_P, H, chol_R, d, y, mask)
    m_p, factor, ll_p = jax.jit(_update_to_predict)(m, chol_P, H, chol_R, d, y, mask)
    close(m_p, m_f, rtol=1e-10, atol=1e-12)
    close(ll_p, ll, rtol=1e-10)
    close(factor @ factor.T, chol_f @ chol_f.T, rtol=1e-10, atol=1e-12)
    if not observed:
        close(factor, chol_P, rtol=0, atol=0)  # nothing observed: the factor is untouched
        assert float(ll_p) == 0.0
    elif S > 1:  # the factor is a square root, not a triangular one: the other path ran
        assert np.abs(np.triu(np.asarray(factor), 1)).max() > 1e-3


def test_wider_emissions_take_the_triangular_update():
    rng = np.random.default_rng(1)
    S, D = 3, 2
    args = (
        jnp.asarray(rng.normal(size=S)),
        jnp.asarray(np.tril(rng.normal(size=(S, S)))),
        jnp.asarray(rng.normal(size=(D, S))),
        jnp.asarray(np.diag([0.5, 0.4])),
        jnp.zeros(D),
        jnp.asarray(rng.normal(size=D)),
        jnp.ones(D, bool),
    )
    for a, b in zip(_update(*args), _update_to_predict(*args), strict=True):
        close(a, b, rtol=0, atol=0)


# T: shorter than a group (the step-by-step loop), a whole number of groups, and one group
# and a bit (padding steps after the last one)
@pytest.mark.parametrize("T", [3, 8, 11])
def test_log_marginal_triangularizing_every_few_steps_matches_dense_gaussian(T):
    """``kalman_log_marginal`` with one entry triangularizes every ``_DEFER`` steps
    (``_steps._deferred_steps``): time-varying parameters, a missing step, a
    rank-deficient process noise and a factor of ``Q`` of another width than ``S``."""
    assert _DEFER == 4
    params, y, mask = make_case(5, S=4, D=1, T=T, missing="steps")
    chol_Q = np.asarray(params["transition_scale_tril"]).copy()
    chol_Q[..., :, 1] = 0.0  # rank 3
    params["transition_scale_tril"] = chol_Q
    value = call(kalman_log_marginal, params, y, obs_mask=mask)
    close(value, dense_log_marginal(params, y, mask), rtol=1e-10)
    # the loop itself, with Q given as a (4, 3) factor: the same log-likelihoods
    model, yy, observed = _model_inputs(LGSSMParams(**params), jnp.asarray(y), mask, "test")
    thin = model._replace(varying={**model.varying, "chol_Q": jnp.asarray(chol_Q[..., [0, 2, 3]])})
    per_step = jnp.sum(call(kalman_filter, params, y, obs_mask=mask).log_likelihood_increments)
    close(jnp.sum(_deferred_pass(thin, yy, observed)), per_step, rtol=1e-10)


# T = 300: the plain pass; T = 600: the settled pass's first phase (both defer with D = 1)
@pytest.mark.parametrize("T", [300, 600])
def test_log_marginal_triangularizing_every_few_steps_in_float32(T):
    """float32 with x64 off, as a float32 user runs it, against the float64 per-step filter."""
    rng = np.random.default_rng(7)
    params = random_lgssm(rng, 5, 1, T, time_varying=False)
    y = rng.normal(size=(T, 1)) * 2.0
    ref = jnp.sum(call(kalman_filter, params, y).log_likelihood_increments)
    args32 = [np.asarray(params.get(k), np.float32) for k in LGSSMParams._fields]
    with jax.enable_x64(False):
        value = jax.jit(kalman_log_marginal)(LGSSMParams(*args32), np.asarray(y, np.float32))
        assert value.dtype == jnp.float32
    close(value, ref, rtol=2e-5)

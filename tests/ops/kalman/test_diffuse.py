"""Exact diffuse initialization (``numpyro_ssm.ops.kalman.diffuse``) against oracles (x64).

Oracles: statsmodels' exact diffuse filter and smoother (Durbin & Koopman's univariate
treatment, in Cython) on the Nile local level at Durbin & Koopman's variances and on a
multivariate model with missing entries; the limit of a known start as its variance grows; the
de Jong (augmented) form of the same likelihood, an independent route; autodiff through the
exact initial filter run over every step.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import close, trend_seasonal
from oracles import random_lgssm, statsmodels_diffuse_smoother

from numpyro_ssm.datasets import load_nile
from numpyro_ssm.ops import (
    LGSSMParams,
    diffuse_kalman_filter,
    diffuse_kalman_log_marginal,
    diffuse_kalman_posterior_sample,
    diffuse_kalman_smoother,
    kalman_log_marginal,
)
from numpyro_ssm.ops.kalman._diffuse_augmented import _augmented
from numpyro_ssm.ops.kalman.params import _inputs

# Durbin & Koopman (2012, §2.10) for the Nile local level
NILE_OBS_VAR, NILE_LEVEL_VAR = 15099.0, 1469.1
# Their diffuse log-likelihood in the convention of §7.2.5 (statsmodels, Stata; every observed
# entry keeps its -log(2π)/2). KFAS drops that term for the one diffuse observation.
NILE_LOG_LIK = -633.4646
NILE_LOG_LIK_KFAS = -632.5456


def _nile():
    y = np.asarray(load_nile().volume, float)[:, None]
    params = dict(
        initial_mean=np.zeros(1),
        initial_scale_tril=np.zeros((1, 1)),
        transition_matrix=np.eye(1),
        transition_scale_tril=np.sqrt([[NILE_LEVEL_VAR]]),
        emission_matrix=np.eye(1),
        emission_scale_tril=np.sqrt([[NILE_OBS_VAR]]),
    )
    return params, y, 1


def _general():
    """S = 3 with the first two entries diffuse (a random walk and an integrated one), D = 2."""
    rng = np.random.default_rng(3)
    T = 24
    params = random_lgssm(rng, 3, 2, T, time_varying=False)
    F = params["transition_matrix"]
    F[:2, :] = [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    params["initial_mean"][:2] = [5.0, -3.0]  # ignored: diffuse
    y = rng.normal(size=(T, 2)).cumsum(0) + 50.0
    y[2, 1] = np.nan
    y[5] = np.nan
    return params, y, 2


CASES = {"nile": _nile, "general": _general}


def _mask(S, q):
    return np.arange(S) < q


@functools.partial(jax.jit, static_argnames=("q", "parallel"))
def _ours(params, y, q, parallel):
    S = params.initial_mean.shape[0]
    kw = dict(diffuse_states=tuple(_mask(S, q)), parallel=parallel)
    return (
        diffuse_kalman_smoother(params, y, **kw),
        diffuse_kalman_log_marginal(params, y, **kw),
        diffuse_kalman_filter(params, y, **kw),
    )


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    params, y, q = CASES[request.param]()
    reference = statsmodels_diffuse_smoother(params, y, q)
    return request.param, params, y, q, reference


def test_matches_statsmodels_exact_diffuse(case):
    name, params, y, q, ref = case
    _check_against_statsmodels(name, params, y, q, ref, parallel=False)


def test_parallel_matches_statsmodels_exact_diffuse():
    """The associative-scan schedule on the multivariate case with missing entries (the
    compile is what costs, so one case)."""
    params, y, q = _general()
    ref = statsmodels_diffuse_smoother(params, y, q)
    _check_against_statsmodels("general", params, y, q, ref, parallel=True)


def _check_against_statsmodels(name, params, y, q, ref, parallel):
    smoothed, log_marginal, filtered = _ours(LGSSMParams(**params), y, q, parallel)
    scale = float(np.max(np.abs(ref.smoothed_state_cov)))
    close(log_marginal, ref.llf)
    close(smoothed.log_marginal, ref.llf)
    close(filtered.log_likelihood_increments, ref.llf_obs)
    close(smoothed.log_likelihood_increments, ref.llf_obs)
    close(filtered.filtered_means, ref.filtered_state.T)
    close(
        filtered.filtered_covariances,
        np.moveaxis(ref.filtered_state_cov, -1, 0),
        atol=1e-10 * scale,
    )
    close(filtered.predicted_means[1:], ref.predicted_state.T[1:-1])
    close(smoothed.smoothed_means, ref.smoothed_state.T)
    close(
        smoothed.smoothed_covariances,
        np.moveaxis(ref.smoothed_state_cov, -1, 0),
        atol=1e-10 * scale,
    )
    if name == "nile":
        assert round(float(log_marginal), 4) == NILE_LOG_LIK
        n_diffuse = q  # one diffuse observation per diffuse entry here
        kfas = float(log_marginal) + n_diffuse * 0.5 * math.log(2 * math.pi)
        assert round(kfas, 4) == NILE_LOG_LIK_KFAS


def test_limit_of_a_known_start_as_its_variance_grows(case):
    """``log p_κ(y) + (q/2) log κ`` with ``P_0 = P_* + κ P_∞`` tends to the diffuse value.

    The error is of order ``y²/κ`` (the Nile sits near 10³), so κ runs from 10⁷ to 10⁹."""
    _, params, y, q, _ = case
    S = params["initial_mean"].shape[0]
    mask = _mask(S, q)
    exact = float(diffuse_kalman_log_marginal(LGSSMParams(**params), y, diffuse_states=mask))
    P_star = params["initial_scale_tril"] @ params["initial_scale_tril"].T
    P_star[mask] = 0.0
    P_star[:, mask] = 0.0
    errors = []
    for kappa in (1e7, 1e8, 1e9):
        cov = P_star + kappa * np.diag(mask.astype(float))
        proper = LGSSMParams(**dict(params, initial_scale_tril=np.linalg.cholesky(cov)))
        value = float(kalman_log_marginal(proper, y)) + 0.5 * q * math.log(kappa)
        errors.append(abs(value - exact))
    assert errors[-1] < 1e-2
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5  # first order in 1/κ


def test_de_jong_augmented_likelihood_equals_koopman(case):
    _, params, y, q, _ = case
    p = LGSSMParams(**params)
    model, yy, observed = _inputs(p, y, None, "test")
    mask = tuple(_mask(p.initial_mean.shape[0], q))
    # serial only: the parallel augmented pass feeds the parallel smoother, checked above
    augmented = jax.jit(lambda m, yy, o: _augmented(m, yy, o, mask, False, smooth=False))
    close(
        augmented(model, yy, observed).log_marginal,
        diffuse_kalman_log_marginal(p, y, diffuse_states=mask),
    )


def test_gradient_matches_autodiff_through_the_exact_initial_filter(case):
    """Default: autodiff through the short diffuse scan + the one-pass rule for the rest; the
    oracle runs the exact initial filter over every step and differentiates it by autodiff.
    Serial only: the parallel schedule's values are checked against statsmodels above, and its
    gradient goes through the same one-pass rule."""
    _, params, y, q, _ = case
    p = jax.tree.map(jnp.asarray, LGSSMParams(**params))
    mask = _mask(p.initial_mean.shape[0], q)

    @functools.partial(jax.jit, static_argnums=1)
    @functools.partial(jax.grad)
    def grad(p, steps):
        return diffuse_kalman_log_marginal(p, y, diffuse_states=mask, num_diffuse_steps=steps)

    grads = grad(p, None)
    reference = grad(p, y.shape[0])
    for name in ("transition_matrix", "transition_scale_tril", "emission_scale_tril"):
        ref = np.asarray(getattr(reference, name))
        close(getattr(grads, name), ref, atol=1e-9 * np.abs(ref).max())
    # the diffuse entries of the initial moments do not matter (to rounding)
    size = np.abs(np.asarray(reference.transition_matrix)).max()
    assert np.all(np.abs(np.asarray(grads.initial_mean)[mask]) < 1e-12 * size)


def test_posterior_draws_match_the_smoother(case):
    _, params, y, q, _ = case
    p = LGSSMParams(**params)
    mask = _mask(p.initial_mean.shape[0], q)
    n = 4000

    @jax.jit
    def run(key, p):
        draws = diffuse_kalman_posterior_sample(key, p, y, diffuse_states=mask, sample_shape=(n,))
        return draws, diffuse_kalman_smoother(p, y, diffuse_states=mask)

    draws, post = run(jax.random.PRNGKey(0), p)
    draws = np.asarray(draws)
    sd = np.sqrt(np.einsum("tii->ti", np.asarray(post.smoothed_covariances)))
    z = (draws.mean(0) - np.asarray(post.smoothed_means)) / (sd / np.sqrt(n))
    assert np.abs(z).max() < 5
    # variances: the standard error of a sample variance is about var * sqrt(2 / n)
    ratio = draws.var(0) / sd**2
    assert np.abs(ratio - 1).max() < 5 * np.sqrt(2 / n)


def test_unresolved_diffuse_direction_gives_nan_and_float32():
    params, y, q = _nile()
    p = LGSSMParams(**params)
    y_late = y.copy()
    y_late[:3] = np.nan  # nothing observed in the only diffuse step
    y[[20, 21, 50]] = np.nan
    mask = np.array([True])
    assert np.isnan(diffuse_kalman_log_marginal(p, y_late, diffuse_states=mask))
    steps = diffuse_kalman_log_marginal(p, y_late, diffuse_states=mask, num_diffuse_steps=4)
    assert np.isfinite(steps)
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    value32 = diffuse_kalman_log_marginal(p32, jnp.asarray(y, jnp.float32), diffuse_states=mask)
    assert value32.dtype == jnp.float32
    close(value32, diffuse_kalman_log_marginal(p, y, diffuse_states=mask), rtol=1e-5)


def test_bad_diffuse_states_raise():
    params, y, _ = _nile()
    p = LGSSMParams(**params)
    with pytest.raises(ValueError, match=r"diffuse_states must be a bool array of shape \(S,\)"):
        diffuse_kalman_filter(p, y, diffuse_states=np.array([1]))
    with pytest.raises(ValueError, match="diffuse_states"):
        diffuse_kalman_filter(p, y, diffuse_states=np.array([True, False]))
    with pytest.raises(ValueError, match="num_diffuse_steps"):
        diffuse_kalman_filter(p, y, diffuse_states=np.array([True]), num_diffuse_steps=-1)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda m: diffuse_kalman_filter(p, y, diffuse_states=m))(jnp.array([True]))


def test_long_diffuse_phase_value_and_gradient():
    """The log-likelihood's diffuse steps share their triangularizations four at a time
    (``_diffuse_filter._diffuse_value_phase``): eleven steps, two groups and three left over,
    with a missing step in each part, against the filter's log-marginal (the step-by-step
    phase) and, for the gradient, autodiff through the exact initial filter over every step."""
    rng = np.random.default_rng(21)
    T, n = 40, 11
    F, chol_Q, H = trend_seasonal(6, [0.4, 0.05, 0.3])
    S = F.shape[0]
    p = jax.tree.map(
        jnp.asarray,
        LGSSMParams(np.zeros(S), np.zeros((S, S)), F, chol_Q, H, np.array([[0.7]])),
    )
    y = np.cumsum(rng.normal(size=(T, 1)), 0) + 3.0 * np.sin(np.arange(T)[:, None])
    y[[2, 9, 20]] = np.nan
    mask = np.ones(S, bool)

    def value(p, steps):
        return diffuse_kalman_log_marginal(p, y, diffuse_states=mask, num_diffuse_steps=steps)

    filtered = diffuse_kalman_filter(p, y, diffuse_states=mask, num_diffuse_steps=n)
    close(value(p, n), filtered.log_marginal, rtol=1e-10)
    grad = jax.jit(jax.grad(value), static_argnums=1)
    grads, reference = grad(p, n), grad(p, T)
    for name in ("transition_scale_tril", "emission_scale_tril", "emission_matrix"):
        ref = np.asarray(getattr(reference, name))
        close(getattr(grads, name), ref, atol=1e-9 * np.abs(ref).max())
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
    value32 = diffuse_kalman_log_marginal(
        p32, jnp.asarray(y, jnp.float32), diffuse_states=mask, num_diffuse_steps=n
    )
    close(value32, value(p, n), rtol=1e-5)

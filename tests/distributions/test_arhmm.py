"""AutoregressiveHMM against path enumeration, statsmodels (Hamilton 1989) and dynamax."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from oracles import arhmm_log_likelihoods, arhmm_path_moments, hmm_brute_force
from scipy.stats import multivariate_normal

from numpyro_ssm import AutoregressiveHMM, pad_sequences
from numpyro_ssm.distributions import mean_switching_autoregression

K, D, L, T = 3, 2, 2, 6


def _params(seed=0, K=K, D=D, L=L):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, D, L * D)) * 0.4
    b = rng.normal(size=(K, D))
    tril = np.tril(rng.normal(size=(K, D, D)) * 0.3)
    tril[:, np.arange(D), np.arange(D)] = rng.uniform(0.5, 1.0, size=(K, D))
    Q = tril @ np.swapaxes(tril, -1, -2)
    P = rng.dirichlet(np.ones(K) * 2 + 3 * np.eye(K)[0], size=K)
    pi = rng.dirichlet(np.ones(K) * 3)
    return dict(initial_probs=pi, transition_matrix=P, ar_matrix=A, ar_bias=b, ar_cov=Q)


PARAMS = _params()
RNG = np.random.default_rng(1)
Y = RNG.normal(size=(T, D)) * 2.0
INITIAL_LAGS = RNG.normal(size=(L, D))
INITIAL_LOCS = RNG.normal(size=(K, D))


def _initial_emission():
    return dist.MultivariateNormal(jnp.asarray(INITIAL_LOCS), jnp.eye(D) * 1.5)


def _initial_logpdf(y_t, k):
    return multivariate_normal(INITIAL_LOCS[k], np.eye(D) * 1.5).logpdf(y_t)


CONVENTIONS = {
    # name -> (constructor kwargs, oracle kwargs, counted steps of a fully observed series)
    "conditioned": ({}, {}, np.arange(T) >= L),
    "initial_lags": ({"initial_lags": INITIAL_LAGS}, {"initial_lags": INITIAL_LAGS}, None),
    "initial_emission": (
        {"initial_emission_dist": _initial_emission()},
        {"initial_logpdf": _initial_logpdf},
        None,
    ),
}


def _model(convention, parallel=False, **extra):
    kwargs = CONVENTIONS[convention][0]
    return AutoregressiveHMM(**PARAMS, **kwargs, num_steps=T, parallel=parallel, **extra)


def _oracle(convention, y, counted):
    oracle_kwargs = CONVENTIONS[convention][1]
    ll = arhmm_log_likelihoods(
        PARAMS["ar_matrix"], PARAMS["ar_bias"], PARAMS["ar_cov"], y, L, counted, **oracle_kwargs
    )
    return hmm_brute_force(PARAMS["initial_probs"], PARAMS["transition_matrix"], ll)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_log_prob_and_posteriors_match_path_enumeration(convention, parallel):
    model = _model(convention, parallel)
    counted = CONVENTIONS[convention][2]
    counted = np.ones(T, bool) if counted is None else counted
    oracle = _oracle(convention, Y, counted)
    np.testing.assert_allclose(model.log_prob(Y), oracle.log_marginal, rtol=1e-10)
    np.testing.assert_array_equal(model.step_mask(Y), counted)
    post = model.smooth(Y)
    np.testing.assert_allclose(post.smoothed_probs, oracle.smoothed_probs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.filtered_probs, oracle.filtered_probs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        post.log_likelihood_increments.sum(), oracle.log_marginal, rtol=1e-10
    )
    np.testing.assert_array_equal(model.posterior_mode(Y), oracle.mode)


@pytest.mark.parametrize("convention", ["conditioned", "initial_lags"])
def test_a_missing_step_drops_itself_and_the_next_L_steps(convention):
    y = Y.copy()
    y[1] = np.nan
    obs_mask = np.ones(T, bool)
    obs_mask[T - 1] = False  # a masked last step, as in a padded batch
    model = _model(convention, obs_mask=jnp.asarray(obs_mask))
    # y_2 is missing, so are the lags of y_3 and y_4; y_6 is masked: y_5 alone counts, and y_1
    # too when its lags are given
    counted = np.array([convention == "initial_lags", False, False, False, True, False])
    np.testing.assert_array_equal(model.step_mask(y), counted)
    oracle = _oracle(convention, np.nan_to_num(y), counted)
    np.testing.assert_allclose(model.log_prob(y), oracle.log_marginal, rtol=1e-10, atol=1e-12)
    grads = jax.grad(lambda A: _model(convention, obs_mask=jnp.asarray(obs_mask)).log_prob(y))
    assert np.all(np.isfinite(grads(PARAMS["ar_matrix"])))


def test_ragged_batch_equals_separate_series():
    rng = np.random.default_rng(3)
    series = [rng.normal(size=(n, D)) for n in (T, 4)]
    padded, mask = pad_sequences(series)
    batched = AutoregressiveHMM(**PARAMS, num_steps=T, obs_mask=mask)
    singles = [AutoregressiveHMM(**PARAMS, num_steps=len(s)).log_prob(s) for s in series]
    np.testing.assert_allclose(batched.log_prob(padded), singles, rtol=1e-10)


def test_matches_dynamax_with_explicit_zero_initial_lags():
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    arhmm = LinearAutoregressiveHMM(K, D, num_lags=L)
    params, _ = arhmm.initialize(
        jax.random.key(0),
        initial_probs=jnp.asarray(PARAMS["initial_probs"]),
        transition_matrix=jnp.asarray(PARAMS["transition_matrix"]),
        emission_weights=jnp.asarray(PARAMS["ar_matrix"]),
        emission_biases=jnp.asarray(PARAMS["ar_bias"]),
        emission_covariances=jnp.asarray(PARAMS["ar_cov"]),
    )
    inputs = arhmm.compute_inputs(jnp.asarray(Y))  # zero-padded lags, dynamax's convention
    ours = AutoregressiveHMM(**PARAMS, initial_lags=np.zeros((L, D)), num_steps=T)
    np.testing.assert_allclose(
        ours.log_prob(Y), arhmm.marginal_log_prob(params, jnp.asarray(Y), inputs), rtol=1e-10
    )
    np.testing.assert_allclose(
        ours.smooth(Y).smoothed_probs,
        arhmm.smoother(params, jnp.asarray(Y), inputs).smoothed_probs,
        rtol=1e-8,
        atol=1e-12,
    )


def test_hamilton_gnp_matches_statsmodels_and_the_published_log_likelihood():
    from statsmodels.tsa.regime_switching.markov_autoregression import MarkovAutoregression
    from statsmodels.tsa.regime_switching.tests.test_markov_autoregression import (
        hamilton_ar4_smoothed,
        rgnp,
    )

    # Hamilton (1989)'s estimates as published by statsmodels' tests (from E-Views), and the
    # published log-likelihood -181.26339 at them.
    params = np.r_[
        0.754673,
        0.095915,
        -0.358811,
        1.163516,
        np.exp(-0.262658) ** 2,
        0.013486,
        -0.057521,
        -0.246983,
        -0.212923,
    ]
    y = np.asarray(rgnp)[:, None]
    p00, p10, mu0, mu1, sigma2, *phi = params
    P = np.array([[p00, 1 - p00], [p10, 1 - p10]])
    model, regimes = mean_switching_autoregression(P, [mu0, mu1], phi, sigma2, num_steps=len(y))
    high_growth = np.asarray(regimes) == 1  # statsmodels regime 1: the higher mean
    sm = MarkovAutoregression(np.asarray(rgnp), k_regimes=2, order=4, switching_ar=False)
    sm_result = sm.smooth(params)
    np.testing.assert_allclose(model.log_prob(y), sm.loglike(params), rtol=1e-10)
    np.testing.assert_allclose(model.log_prob(y), -181.26339, atol=1e-5)
    smoothed = model.smooth(y).smoothed_probs[4:, high_growth].sum(-1)
    np.testing.assert_allclose(smoothed, sm_result.smoothed_marginal_probabilities[:, 1], atol=1e-9)
    np.testing.assert_allclose(smoothed, hamilton_ar4_smoothed, atol=1e-5)


def test_mean_and_variance_match_path_enumeration():
    model = _model("initial_lags")
    mean, var = arhmm_path_moments(
        PARAMS["initial_probs"],
        PARAMS["transition_matrix"],
        PARAMS["ar_matrix"],
        PARAMS["ar_bias"],
        PARAMS["ar_cov"],
        INITIAL_LAGS,
        T,
    )
    np.testing.assert_allclose(model.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(model.variance, var, rtol=1e-10)


def test_forecast_draws_are_recursive_and_match_the_exact_moments():
    model = _model("conditioned")
    forecast = model.forecast(Y, 4)
    post = model.filter(Y)
    initial = post.filtered_probs[-1] @ PARAMS["transition_matrix"]
    mean, var = arhmm_path_moments(
        initial,
        PARAMS["transition_matrix"],
        PARAMS["ar_matrix"],
        PARAMS["ar_bias"],
        PARAMS["ar_cov"],
        Y[-L:],
        4,
    )
    np.testing.assert_allclose(forecast.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(forecast.variance, var, rtol=1e-10)
    draws = forecast.sample(jax.random.key(0), (20_000,))
    z = (draws.mean(0) - mean) / np.sqrt(var / 20_000)
    assert np.all(np.abs(z) < 5), z
    # a draw conditioned on observed lags instead of its own would have the one-step variance
    # at every horizon; the recursion's variance grows, and the draws follow it
    ratio = draws.var(0) / var
    assert np.all(np.abs(ratio - 1) < 0.06), ratio


def test_prior_draws_have_the_exact_moments():
    model = _model("initial_lags")
    draws = model.sample(jax.random.key(1), (20_000,))
    z = (draws.mean(0) - model.mean) / np.sqrt(model.variance / 20_000)
    assert np.all(np.abs(z) < 5), z
    states, y = model.sample_with_states(jax.random.key(2))
    assert states.shape == (T,) and y.shape == (T, D)


def test_float32_log_prob_and_long_gradients():
    params32 = {k: jnp.asarray(v, jnp.float32) for k, v in PARAMS.items()}
    model32 = AutoregressiveHMM(**params32, num_steps=T)
    value32 = model32.log_prob(jnp.asarray(Y, jnp.float32))
    assert value32.dtype == jnp.float32
    np.testing.assert_allclose(value32, _model("conditioned").log_prob(Y), rtol=1e-5)
    long_T = 100_000
    y = jnp.asarray(np.random.default_rng(5).normal(size=(long_T, D)), jnp.float32)

    def total(A):
        return AutoregressiveHMM(**{**params32, "ar_matrix": A}, num_steps=long_T).log_prob(y)

    value, grad = jax.jit(jax.value_and_grad(total))(params32["ar_matrix"])
    assert value.dtype == jnp.float32 and np.isfinite(value)
    assert np.all(np.isfinite(grad))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="L=2 lags.*T=2"):
        AutoregressiveHMM(**PARAMS, num_steps=2)
    with pytest.raises(ValueError, match="ar_matrix must have shape"):
        AutoregressiveHMM(**{**PARAMS, "ar_matrix": np.zeros((K, D, 3))}, num_steps=T)
    with pytest.raises(ValueError, match="ar_matrix must have shape.*K=3"):
        AutoregressiveHMM(**{**PARAMS, "ar_matrix": np.zeros((2, D, 2 * D))}, num_steps=T)
    with pytest.raises(ValueError, match="ar_bias must have shape"):
        AutoregressiveHMM(**{**PARAMS, "ar_bias": np.zeros((K, 3))}, num_steps=T)
    with pytest.raises(ValueError, match="initial_lags must have shape"):
        AutoregressiveHMM(**PARAMS, initial_lags=np.zeros((1, D)), num_steps=T)
    with pytest.raises(ValueError, match="at most one of initial_lags"):
        _model("initial_lags", initial_emission_dist=_initial_emission())
    with pytest.raises(ValueError, match="conditions on its first L=2"):
        _model("conditioned").sample(jax.random.key(0))
    with pytest.raises(ValueError, match="observations must have shape"):
        _model("conditioned").log_prob(np.zeros((T, D + 1)))
    with pytest.raises(ValueError, match="ar_cov parameter"):
        bad = PARAMS["ar_cov"].copy()
        bad[0] = -np.eye(D)
        AutoregressiveHMM(**{**PARAMS, "ar_cov": bad}, num_steps=T, validate_args=True)

"""HMCGibbs steps of switching models, and the distributions of their explicit sites."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS, HMCGibbs
from oracles import arhmm_log_likelihoods, slds_dense_given_path
from scipy.stats import multivariate_normal

from numpyro_ssm import AutoregressiveHMM, MarkovChain, StickyDirichlet, SwitchingAutoregression
from numpyro_ssm.infer.gibbs import (
    ar_step,
    compose_gibbs,
    latents_step,
    path_step,
    slds_regression,
    transition_step,
)
from numpyro_ssm.ops.hmm import count_transitions, sample_hdp_transitions
from numpyro_ssm.ops.switching import MNIWParams, ar_params, ar_to_lds, resample_ar

K, D, L, T, DY = 2, 1, 2, 8, 2
RNG = np.random.default_rng(0)
A = np.array([[[0.8, -0.1]], [[-0.4, 0.2]]])
B = np.array([[0.3], [-0.3]])
Q = np.array([[[0.1]], [[0.3]]])
M0, P0 = np.zeros(L * D), np.eye(L * D)
C, DBIAS = np.array([[1.0], [0.6]]), np.zeros(DY)
Z = RNG.integers(K, size=T)


def test_markov_chain_log_prob_and_draws():
    P = np.array([[0.9, 0.1], [0.3, 0.7]])
    chain = MarkovChain(np.array([0.2, 0.8]), P, num_steps=T)
    expected = np.log([0.2, 0.8][Z[0]]) + sum(np.log(P[Z[t], Z[t + 1]]) for t in range(T - 1))
    np.testing.assert_allclose(chain.log_prob(Z), expected, rtol=1e-12)
    draws = chain.sample(jax.random.key(0), (20_000,))
    assert draws.shape == (20_000, T) and chain.support.is_discrete
    np.testing.assert_allclose((draws[:, 0] == 1).mean(), 0.8, atol=0.015)
    varying = MarkovChain(np.ones(2) / 2, np.stack([P] * (T - 1)))
    expected_varying = expected - np.log([0.2, 0.8][Z[0]]) + np.log(0.5)
    np.testing.assert_allclose(varying.log_prob(Z), expected_varying, rtol=1e-12)


def _switching_ar():
    return SwitchingAutoregression(
        jnp.asarray(Z), A, ar_bias=B, ar_cov=Q, initial_mean=M0, initial_cov=P0
    )


def test_switching_autoregression_log_prob_and_draws():
    model = _switching_ar()
    x = np.asarray(model.sample(jax.random.key(1)))
    assert x.shape == (T + L - 1, D)
    s1 = x[:L][::-1].reshape(-1)
    counted = np.arange(T + L - 1) >= L
    per_step = arhmm_log_likelihoods(A, B, Q, x, L, counted)  # lags read from x itself
    states = np.concatenate([np.zeros(L - 1, int), Z])
    expected = multivariate_normal(M0, P0).logpdf(s1) + per_step[counted, states[counted]].sum()
    np.testing.assert_allclose(model.log_prob(x), expected, rtol=1e-12)
    draws = np.asarray(model.sample(jax.random.key(2), (20_000,)))[:, L - 1 :, 0]
    mean_x, cov_x, *_ = slds_dense_given_path(A, B, Q, Z, C, DBIAS, np.eye(DY), M0, P0, T)
    sd = np.sqrt(np.diag(cov_x))
    assert np.all(np.abs(draws.mean(0) - mean_x[:, 0]) < 5 * sd / np.sqrt(20_000))
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.05)


def test_steps_draw_what_the_ops_draw():
    x = _switching_ar().sample(jax.random.key(3))
    z = jnp.asarray(Z)
    beta = jnp.array([0.7, 0.3])
    sites = {
        "z": z,
        "x": x,
        "P": jnp.eye(K),
        "beta": beta,
        "w": jnp.zeros((K, D, L * D + 1)),
        "Q": jnp.zeros((K, D, D)),
    }
    key = jax.random.key(4)
    got = transition_step(
        "P", "z", concentration=1.0, stickiness=5.0, weights_site="beta", gamma=2.0
    )(key, sites)
    want = sample_hdp_transitions(
        key,
        count_transitions(z, K),
        beta,
        concentration=1.0,
        stickiness=5.0,
        gamma=2.0,
        max_total=T - 1,
    )
    np.testing.assert_allclose(got["beta"], want[0], rtol=1e-12)
    np.testing.assert_allclose(got["P"], want[1], rtol=1e-12)
    prior = MNIWParams(jnp.zeros((D, L * D + 1)), jnp.eye(L * D + 1), jnp.asarray(4.0), jnp.eye(D))
    got = ar_step("w", "Q", prior=prior, data_fn=lambda s: slds_regression(s["x"], s["z"], L))(
        key, sites
    )
    series, lags, counted, states = slds_regression(x, z, L)
    want = resample_ar(key, series, lags, counted, states, prior, K)
    np.testing.assert_allclose(got["w"][..., :-1], want.matrix, rtol=1e-12)
    np.testing.assert_allclose(got["w"][..., -1], want.bias, rtol=1e-12)


def _model(y, prior_cov_tril):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    beta = numpyro.sample("beta", dist.Dirichlet(jnp.full(K, 1.0)))
    P = numpyro.sample("P", StickyDirichlet(1.0, 5.0, weights=beta))
    Qs = numpyro.sample("ar_cov", dist.InverseWishart(4.0, jnp.eye(D)).expand([K]).to_event(1))
    Ab = numpyro.sample(
        "ar_weights",
        dist.MatrixNormal(
            jnp.zeros((D, L * D + 1)), jnp.linalg.cholesky(Qs), prior_cov_tril
        ).to_event(1),
    )
    z = numpyro.sample("z", MarkovChain(jnp.ones(K) / K, P, num_steps=T))
    x = numpyro.sample(
        "x",
        SwitchingAutoregression(
            z, Ab[..., :-1], ar_bias=Ab[..., -1], ar_cov=Qs, initial_mean=M0, initial_cov=P0
        ),
    )
    numpyro.sample("y", dist.Normal(x[L - 1 :] @ C.T + DBIAS, sigma).to_event(2), obs=y)


@pytest.mark.slow
def test_hmc_gibbs_on_an_slds():
    col_tril = jnp.eye(L * D + 1)
    prior = MNIWParams(jnp.zeros((D, L * D + 1)), jnp.eye(L * D + 1), jnp.asarray(4.0), jnp.eye(D))
    y = jnp.asarray(RNG.normal(size=(T, DY)))

    def arhmm_on_latents(s):
        x = s["x"]
        lags_before = jnp.concatenate([jnp.full((1, D), jnp.nan), x[: L - 1]])
        Ab = s["ar_weights"]
        ssm = AutoregressiveHMM(
            jnp.ones(K) / K,
            s["P"],
            Ab[..., :-1],
            ar_bias=Ab[..., -1],
            ar_cov=s["ar_cov"],
            initial_lags=lags_before,
            num_steps=T,
        )
        return ssm, x[L - 1 :]

    def lgssm(s):
        Ab = s["ar_weights"]
        ar = ar_params(Ab[..., :-1], Ab[..., -1], cov=s["ar_cov"])
        params = ar_to_lds(
            ar,
            s["z"],
            emission_matrix=C,
            emission_scale_tril=s["sigma"] * jnp.eye(DY),
            emission_bias=DBIAS,
            initial_mean=M0,
            initial_scale_tril=jnp.linalg.cholesky(P0),
        )
        return params, y, None

    gibbs_fn = compose_gibbs(
        latents_step("x", lgssm),
        path_step("z", arhmm_on_latents),
        ar_step(
            "ar_weights",
            "ar_cov",
            prior=prior,
            data_fn=lambda s: slds_regression(s["x"], s["z"], L),
        ),
        transition_step(
            "P", "z", concentration=1.0, stickiness=5.0, weights_site="beta", gamma=2.0
        ),
    )
    kernel = HMCGibbs(
        NUTS(partial(_model, prior_cov_tril=col_tril)),
        gibbs_fn=gibbs_fn,
        gibbs_sites=["x", "z", "ar_weights", "ar_cov", "P", "beta"],
    )
    mcmc = MCMC(kernel, num_warmup=30, num_samples=30, progress_bar=False)
    mcmc.run(jax.random.key(5), y)
    samples = mcmc.get_samples()
    assert samples["x"].shape == (30, T + L - 1, D) and samples["z"].shape == (30, T)
    assert np.all(np.isfinite(np.asarray(samples["sigma"])))
    np.testing.assert_allclose(np.asarray(samples["P"]).sum(-1), 1.0, rtol=1e-10)

"""DiscreteHMM: emission families against brute force, missing data, ragged batches, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from oracles import hmm_brute_force
from scipy import stats

from numpyro_ssm import DiscreteHMM, pad_sequences, unpad
from numpyro_ssm.ops import hmm_posterior_mode, hmm_smoother

K, T = 3, 5
RNG = np.random.default_rng(0)
PI = RNG.dirichlet(np.ones(K))
A = RNG.dirichlet(np.ones(K) * 2, size=K)
A_TV = RNG.dirichlet(np.ones(K) * 2, size=(T - 1, K))


def _loop_log_lik(emission_of_state, y):
    """(T, K) log-likelihoods by evaluating each state's emission on each step separately."""
    return np.array([[emission_of_state(t, k, y[t]) for k in range(K)] for t in range(T)])


def _families():
    rates = np.array([1.0, 4.0, 9.0])
    loc = np.array([-1.0, 0.5, 2.0])
    loc_tv = RNG.normal(size=(T, K))
    probs = RNG.dirichlet(np.ones(4), size=K)
    mvn_loc = RNG.normal(size=(K, 2))
    mvn_cov = np.array([[[1.0, 0.3], [0.3, 0.5]]] * K) * np.array([1.0, 2.0, 0.5])[:, None, None]
    mix_w = RNG.dirichlet(np.ones(2), size=K)
    mix_loc = RNG.normal(size=(K, 2)) * 2
    yield (
        "poisson",
        dist.Poisson(rates),
        lambda t, k, v: stats.poisson.logpmf(v, rates[k]),
    )
    yield (
        "normal",
        dist.Normal(loc, 0.7),
        lambda t, k, v: stats.norm.logpdf(v, loc[k], 0.7),
    )
    yield (
        "normal-time-varying",
        dist.Normal(loc_tv, 0.7),
        lambda t, k, v: stats.norm.logpdf(v, loc_tv[t, k], 0.7),
    )
    yield (
        "categorical",
        dist.Categorical(probs=probs),
        lambda t, k, v: np.log(probs[k, int(v)]),
    )
    yield (
        "bernoulli",
        dist.Bernoulli(probs=np.array([0.1, 0.5, 0.8])),
        lambda t, k, v: stats.bernoulli.logpmf(v, [0.1, 0.5, 0.8][k]),
    )
    yield (
        "mvn",
        dist.MultivariateNormal(mvn_loc, mvn_cov),
        lambda t, k, v: stats.multivariate_normal.logpdf(v, mvn_loc[k], mvn_cov[k]),
    )
    yield (
        "independent-normal",
        dist.Normal(mvn_loc, 0.9).to_event(1),
        lambda t, k, v: stats.norm.logpdf(v, mvn_loc[k], 0.9).sum(),
    )
    yield (
        "mixture",
        dist.MixtureSameFamily(dist.Categorical(probs=mix_w), dist.Normal(mix_loc, 1.0)),
        lambda t, k, v: np.log(np.sum(mix_w[k] * stats.norm.pdf(v, mix_loc[k], 1.0))),
    )


FAMILIES = list(_families())


@pytest.mark.parametrize("name, emission, oracle", FAMILIES, ids=[f[0] for f in FAMILIES])
@pytest.mark.parametrize("time_varying", [False, True])
def test_emission_families_against_brute_force(name, emission, oracle, time_varying):
    trans = A_TV if time_varying else A
    hmm = DiscreteHMM(PI, trans, emission, num_steps=T)
    y = np.asarray(hmm.sample(jax.random.PRNGKey(1)))
    assert y.shape == (T,) + emission.event_shape
    ref = hmm_brute_force(PI, trans, _loop_log_lik(oracle, y))
    np.testing.assert_allclose(hmm.log_prob(y), ref.log_marginal, rtol=1e-10)
    post = hmm.smooth(y)
    np.testing.assert_allclose(post.smoothed_probs, ref.smoothed_probs, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(hmm.posterior_mode(y), ref.mode)
    parallel = DiscreteHMM(PI, trans, emission, num_steps=T, parallel=True)
    np.testing.assert_allclose(parallel.log_prob(y), ref.log_marginal, rtol=1e-10)


def test_samples_follow_log_prob():
    # All 2^4 binary sequences: empirical frequencies of prior draws match exp(log_prob).
    hmm = DiscreteHMM(PI, A, dist.Bernoulli(probs=np.array([0.1, 0.5, 0.9])), num_steps=4)
    n = 40_000
    states, ys = hmm.sample_with_states(jax.random.PRNGKey(2), (n,))
    assert states.shape == ys.shape == (n, 4)
    codes = np.asarray(ys).astype(int) @ (2 ** np.arange(3, -1, -1))
    freq = np.bincount(codes, minlength=16) / n
    seqs = np.array(list(itertools.product([0, 1], repeat=4)), dtype=float)
    p = np.exp(np.asarray(hmm.log_prob(seqs)))
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-4)
    # States follow the prior chain: p(z_1) = PI and p(z_2) = PI @ A.
    z = np.asarray(states)
    np.testing.assert_allclose(np.bincount(z[:, 0], minlength=K) / n, PI, atol=0.01)
    np.testing.assert_allclose(np.bincount(z[:, 1], minlength=K) / n, PI @ A, atol=0.01)


def test_helpers_delegate_to_ops():
    rates = np.array([1.0, 5.0, 12.0])
    hmm = DiscreteHMM(PI, A_TV, dist.Poisson(rates), parallel=True)
    y = hmm.sample(jax.random.PRNGKey(3))
    ll = stats.poisson.logpmf(np.asarray(y)[:, None], rates)
    ref = hmm_smoother(PI, A_TV, ll)
    for a, b in zip(hmm.smooth(y), ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(hmm.filter(y).filtered_probs, ref.filtered_probs, rtol=1e-10)
    np.testing.assert_array_equal(hmm.posterior_mode(y), hmm_posterior_mode(PI, A_TV, ll))
    draws = hmm.sample_posterior(jax.random.PRNGKey(4), y, sample_shape=(20_000,))
    assert draws.shape == (20_000, T)
    freq = np.stack([(np.asarray(draws) == k).mean(0) for k in range(K)], -1)
    np.testing.assert_allclose(freq, ref.smoothed_probs, atol=0.015)


@pytest.mark.parametrize("parallel", [False, True])
def test_missing_steps_mask_and_nan(parallel):
    loc = np.array([-2.0, 0.0, 2.0])
    y = RNG.normal(size=T)
    mask = np.array([True, False, True, True, False])
    ll = stats.norm.logpdf(y[:, None], loc, 1.0)
    ref = hmm_brute_force(PI, A, ll, obs_mask=mask)

    def make(loc, obs_mask=None):
        return DiscreteHMM(
            PI, A, dist.Normal(loc, 1.0), num_steps=T, obs_mask=obs_mask, parallel=parallel
        )

    np.testing.assert_allclose(make(loc, mask).log_prob(y), ref.log_marginal, rtol=1e-10)
    y_nan = np.where(mask, y, np.nan)
    np.testing.assert_allclose(make(loc).log_prob(y_nan), ref.log_marginal, rtol=1e-10)
    np.testing.assert_allclose(
        make(loc).smooth(y_nan).smoothed_probs, ref.smoothed_probs, atol=1e-12
    )
    grad = jax.grad(lambda m: make(m).log_prob(y_nan))(loc)
    assert np.all(np.isfinite(grad))
    # Garbage in masked steps (out of the support of a Gamma) changes nothing.
    gamma_y = np.where(mask, np.abs(y) + 0.1, -5.0)
    gamma = DiscreteHMM(PI, A, dist.Gamma(np.array([1.0, 2.0, 3.0])), obs_mask=mask)
    g = jax.grad(lambda c: DiscreteHMM(PI, A, dist.Gamma(c), obs_mask=mask).log_prob(gamma_y))
    assert np.isfinite(gamma.log_prob(gamma_y))
    assert np.all(np.isfinite(g(np.array([1.0, 2.0, 3.0]))))


def test_ragged_batch_in_a_plate_sums_per_sequence_log_likelihoods():
    rates = np.array([2.0, 8.0, 15.0])
    lengths = [7, 3, 5]
    seqs = [
        DiscreteHMM(PI, A, dist.Poisson(rates), num_steps=n).sample(jax.random.PRNGKey(n))
        for n in lengths
    ]
    padded, mask = pad_sequences(seqs)
    assert padded.shape == (3, 7) and mask.shape == (3, 7)
    for a, b in zip(unpad(padded, mask), seqs, strict=True):
        np.testing.assert_array_equal(a, b)
    expected = sum(
        float(DiscreteHMM(PI, A, dist.Poisson(rates), num_steps=len(s)).log_prob(s)) for s in seqs
    )

    def model(y, obs_mask):
        with numpyro.plate("series", y.shape[0]):
            numpyro.sample("y", DiscreteHMM(PI, A, dist.Poisson(rates), obs_mask=obs_mask), obs=y)

    tr = handlers.trace(handlers.seed(model, 0)).get_trace(padded, mask)
    total = tr["y"]["fn"].log_prob(padded).sum()
    np.testing.assert_allclose(total, expected, rtol=1e-12)


def test_forecast_is_the_conditional_of_the_longer_model():
    rates = np.array([1.0, 6.0, 14.0])
    H = 3
    longer = DiscreteHMM(PI, A, dist.Poisson(rates), num_steps=T + H)
    y = longer.sample(jax.random.PRNGKey(5))
    past = DiscreteHMM(PI, A, dist.Poisson(rates), num_steps=T)
    future = past.forecast(y[:T], H)
    assert future.event_shape == (H,)
    np.testing.assert_allclose(
        future.log_prob(y[T:]), longer.log_prob(y) - past.log_prob(y[:T]), rtol=1e-10
    )
    tv = DiscreteHMM(PI, A_TV, dist.Poisson(rates))
    with pytest.raises(ValueError, match="time-varying"):
        tv.forecast(y[:T], H)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(transition_matrix=np.ones((2, 2)) / 2), r"transition_matrix.*K=2 states but initial"),
        (dict(transition_matrix=np.ones((3, 2)) / 2), r"square.*\(3, 2\)"),
        (dict(transition_matrix=np.ones((3, 3, 3)) / 3), r"implies T=5.*\(3, 3, 3\)\) implies T=4"),
        (dict(transition_logits=np.zeros((3, 3))), "exactly one of transition_matrix"),
        (dict(initial_probs=None), "exactly one of initial_probs"),
        (dict(num_steps=None), "Pass num_steps"),
        (dict(obs_mask=np.ones((2, 4), bool)), r"obs_mask.*\(2, 4\)"),
        (dict(initial_probs=np.ones(2) / 2), r"K=3 states but initial_probs/initial_logits \(2,\)"),
        (dict(emission_dist=dist.Poisson(3.0)), "rightmost batch axis"),
    ],
)
def test_bad_construction_raises_value_error(kwargs, match):
    args = dict(
        initial_probs=PI,
        transition_matrix=A,
        emission_dist=dist.Poisson(np.ones(K)),
        num_steps=T,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DiscreteHMM(**args)


def test_bad_observation_shape_raises_value_error():
    hmm = DiscreteHMM(PI, A, dist.Poisson(np.ones(K)), num_steps=T)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\).*got \(4,\)"):
        hmm.log_prob(np.zeros(4))
    mvn = DiscreteHMM(PI, A, dist.MultivariateNormal(np.zeros((K, 2)), np.eye(2)), num_steps=T)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 2\).*got \(5, 3\)"):
        mvn.log_prob(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="do not broadcast"):
        DiscreteHMM(PI[None].repeat(2, 0), A, dist.Poisson(np.ones(K)), num_steps=T).log_prob(
            np.zeros((3, 5))
        )


def test_validate_args_rejects_non_stochastic_rows_and_negative_probs():
    bad_rows = A.copy()
    bad_rows[0] *= 1.5
    with pytest.raises(ValueError, match="transition_matrix"):
        DiscreteHMM(PI, bad_rows, dist.Poisson(np.ones(K)), num_steps=T, validate_args=True)
    negative = np.array([1.2, -0.2, 0.0])
    with pytest.raises(ValueError, match="initial_probs"):
        DiscreteHMM(negative, A, dist.Poisson(np.ones(K)), num_steps=T, validate_args=True)
    ok = DiscreteHMM(PI, A, dist.Poisson(np.ones(K)), num_steps=T, validate_args=True)
    with pytest.warns(UserWarning, match="Out-of-support"):
        ok.log_prob(np.array([1.0, -1.0, 0.0, 2.0, 1.0]))


@pytest.mark.slow
def test_nuts_recovers_simulated_parameters():
    true_rates = np.array([3.0, 12.0])
    true_A = np.array([[0.9, 0.1], [0.2, 0.8]])
    n = 400
    truth = DiscreteHMM(np.array([0.5, 0.5]), true_A, dist.Poisson(true_rates), num_steps=n)
    y = truth.sample(jax.random.PRNGKey(6))

    def model(y):
        trans = numpyro.sample("trans", dist.Dirichlet(jnp.ones((2, 2))).to_event(1))
        base = numpyro.sample("base", dist.Exponential(0.1))
        gap = numpyro.sample("gap", dist.Exponential(0.1))
        rates = numpyro.deterministic("rates", jnp.stack([base, base + gap]))
        hmm = DiscreteHMM(jnp.array([0.5, 0.5]), trans, dist.Poisson(rates), num_steps=n)
        numpyro.sample("y", hmm, obs=y)

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=300, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(7), y)
    samples = mcmc.get_samples()
    for draws, true in [
        (samples["rates"], true_rates),
        (samples["trans"][:, [0, 1], [0, 1]], np.diag(true_A)),
    ]:
        mean, sd = draws.mean(0), draws.std(0)
        assert np.all(np.abs(mean - true) < 4 * sd), (mean, sd, true)

    guide = AutoNormal(model)
    svi = SVI(model, guide, numpyro.optim.Adam(0.02), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(8), 300, y, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    assert result.losses[-20:].mean() < result.losses[:20].mean()

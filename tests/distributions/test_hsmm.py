"""DiscreteHSMM: duration distributions against HMM chains, emissions, missing data, ragged
batches, forecasts, the infer entry points, and errors that name the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from oracles import hsmm_brute_force, hsmm_expanded_hmm, negative_binomial_chain_hmm
from scipy import stats

from numpyro_ssm import DiscreteHMM, DiscreteHSMM, infer, pad_sequences
from numpyro_ssm.ops import hsmm_log_marginal

K, T = 2, 25
RATES = np.array([2.0, 9.0])
SWITCH = np.array([[0.0, 1.0], [1.0, 0.0]])
PI = np.array([0.3, 0.7])
Y = np.array(
    DiscreteHSMM(
        PI, SWITCH, dist.Poisson(RATES), dist.Poisson(np.array([3.0, 5.0])),
        duration_offset=1, max_duration=30, num_steps=T,
    ).sample(jax.random.key(0))
)  # fmt: skip


def test_negative_binomial_durations_equal_an_hmm_on_a_chain():
    # d - r ~ NegativeBinomial(r, q): r geometric stages in series (tests/oracles.py)
    stages, stay = np.array([2, 3]), np.array([0.4, 0.5])
    d = np.arange(1, 121)  # the truncated tail is below 1e-20
    table = stats.nbinom.pmf(d[None, :] - stages[:, None], stages[:, None], 1 - stay[:, None])
    hsmm = DiscreteHSMM(PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=T)
    init, matrix, owner = negative_binomial_chain_hmm(PI, SWITCH, stages, stay)
    hmm = DiscreteHMM(init, matrix, dist.Poisson(RATES[owner]), num_steps=T)
    np.testing.assert_allclose(hsmm.log_prob(Y), hmm.log_prob(Y), rtol=1e-10)
    chain = np.asarray(hmm.smooth(Y).smoothed_probs)
    merged = np.stack([chain[:, owner == k].sum(-1) for k in range(K)], -1)
    np.testing.assert_allclose(hsmm.smooth(Y).smoothed_probs, merged, rtol=1e-8, atol=1e-12)
    # the same durations from NumPyro's NegativeBinomialProbs, d - 2 ~ NB(2, q); its log_prob
    # is accurate to about 1e-6 relative in the tail (checked against scipy)
    from_dist = DiscreteHSMM(
        PI, SWITCH, dist.Poisson(RATES), dist.NegativeBinomialProbs(2, stay), duration_offset=2,
        max_duration=120, num_steps=T,
    )  # fmt: skip
    two_stages = stats.nbinom.pmf(d[None, :] - 2, 2, 1 - stay[:, None])
    np.testing.assert_allclose(from_dist.duration_probs, two_stages, rtol=1e-5, atol=1e-300)


def test_geometric_durations_equal_an_hmm():
    # d - 1 ~ Geometric(1 - q): the HMM with self-transition q (D_max large: untruncated limit)
    stay = np.array([0.6, 0.8])
    hsmm = DiscreteHSMM(
        PI, SWITCH, dist.Poisson(RATES), dist.Geometric(probs=1 - stay),
        duration_offset=1, max_duration=200, num_steps=T,
    )  # fmt: skip
    matrix = np.diag(stay) + (1 - stay)[:, None] * SWITCH
    hmm = DiscreteHMM(PI, matrix, dist.Poisson(RATES), num_steps=T)
    np.testing.assert_allclose(hsmm.log_prob(Y), hmm.log_prob(Y), rtol=1e-10)
    np.testing.assert_allclose(
        hsmm.smooth(Y).smoothed_probs, hmm.smooth(Y).smoothed_probs, rtol=1e-8, atol=1e-12
    )
    np.testing.assert_array_equal(hsmm.posterior_mode(Y), hmm.posterior_mode(Y))


def test_duration_table_and_dist_agree_and_truncation_renormalizes():
    lam = np.array([3.0, 5.0])
    from_dist = DiscreteHSMM(
        PI, SWITCH, dist.Poisson(RATES), dist.Poisson(lam), duration_offset=1, max_duration=8,
        num_steps=T,
    )  # fmt: skip
    d = np.arange(1, 9)
    table = stats.poisson.pmf(d[None, :] - 1, lam[:, None])
    table /= table.sum(-1, keepdims=True)
    np.testing.assert_allclose(from_dist.duration_probs, table, rtol=1e-12)
    from_table = DiscreteHSMM(PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=T)
    np.testing.assert_allclose(from_dist.log_prob(Y), from_table.log_prob(Y), rtol=1e-12)
    # a distribution with bounded support: outside it the table is zero, not clipped
    uniform = DiscreteHSMM(
        PI, SWITCH, dist.Poisson(RATES), dist.DiscreteUniform(np.array([2, 1]), 4),
        max_duration=6, num_steps=T,
    )  # fmt: skip
    np.testing.assert_allclose(
        uniform.duration_probs, [[0, 1 / 3, 1 / 3, 1 / 3, 0, 0], [1 / 4] * 4 + [0, 0]]
    )


def test_posterior_durations_against_brute_force():
    table = np.random.default_rng(7).dirichlet(np.ones(4), size=K)
    hsmm = DiscreteHSMM(PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=7)
    y = Y[:7]
    log_lik = stats.poisson.logpmf(y[:, None], RATES)
    ref = hsmm_brute_force(PI[:, None] * table, SWITCH, table, log_lik).expected_durations
    got = hsmm.posterior_durations(y)
    np.testing.assert_allclose(got, ref / ref.sum(-1, keepdims=True), rtol=1e-9)
    # a state no posterior segmentation visits keeps its prior row
    never = DiscreteHSMM(
        np.array([1.0, 0.0]), SWITCH, dist.Poisson(RATES), duration_probs=np.eye(4)[[3, 3]],
        num_steps=3,
    )  # fmt: skip
    np.testing.assert_allclose(never.posterior_durations(y[:3]), np.eye(4)[[3, 3]])


def test_emissions_time_varying_and_multivariate():
    rng = np.random.default_rng(1)
    loc = rng.normal(size=(T, K))
    y = rng.normal(size=T)
    table = rng.dirichlet(np.ones(6), size=K)
    hsmm = DiscreteHSMM(PI, SWITCH, dist.Normal(loc, 0.8), duration_probs=table)
    ll = dist.Normal(loc, 0.8).log_prob(y[:, None])
    np.testing.assert_allclose(hsmm.log_prob(y), hsmm_log_marginal(PI, SWITCH, table, ll))
    mvn_loc = rng.normal(size=(K, 2))
    y2 = rng.normal(size=(T, 2))
    mvn = DiscreteHSMM(
        PI, SWITCH, dist.MultivariateNormal(mvn_loc, jnp.eye(2)), duration_probs=table,
        num_steps=T,
    )  # fmt: skip
    assert mvn.event_shape == (T, 2) and mvn.sample(jax.random.key(1)).shape == (T, 2)
    ll2 = dist.MultivariateNormal(mvn_loc, jnp.eye(2)).log_prob(y2[:, None, :])
    np.testing.assert_allclose(mvn.log_prob(y2), hsmm_log_marginal(PI, SWITCH, table, ll2))


@pytest.mark.parametrize("censoring", ["right", "none"])
def test_missing_data_and_ragged_batches(censoring):
    table = np.random.default_rng(2).dirichlet(np.ones(6), size=K)

    def make(n, mask=None):
        return DiscreteHSMM(
            PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=n, obs_mask=mask,
            censoring=censoring,
        )  # fmt: skip

    y = Y.astype(float)
    nan = y.copy()
    nan[[3, 10]] = np.nan
    mask = ~np.isnan(nan)
    np.testing.assert_allclose(make(T).log_prob(nan), make(T, mask).log_prob(y), rtol=1e-12)
    # ragged: each padded sequence scores as the unpadded one (a padded tail is not data)
    lengths = (T, 17, 9)
    padded, pad_mask = pad_sequences([y[:n] for n in lengths])
    batch = make(T, pad_mask).log_prob(padded)
    single = [make(n).log_prob(y[:n]) for n in lengths]
    np.testing.assert_allclose(batch, single, rtol=1e-10)


def test_forecast_equals_the_expanded_hmm_forecast():
    table = np.random.default_rng(3).dirichlet(np.ones(5), size=K)
    hsmm = DiscreteHSMM(PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=T)
    init, matrix = hsmm_expanded_hmm(PI[:, None] * table, SWITCH, table)
    hmm = DiscreteHMM(init, matrix, dist.Poisson(np.repeat(RATES, 5)), num_steps=T)
    ours, ref = hsmm.forecast(Y, 6), hmm.forecast(Y, 6)
    assert ours.event_shape == (6,)
    np.testing.assert_allclose(ours.mean, ref.mean, rtol=1e-10)
    np.testing.assert_allclose(ours.variance, ref.variance, rtol=1e-10)
    future = ours.sample(jax.random.key(2))
    np.testing.assert_allclose(ours.log_prob(future), ref.log_prob(future), rtol=1e-10)


def test_prior_moments_and_samples():
    table = np.random.default_rng(4).dirichlet(np.ones(5), size=K)
    hsmm = DiscreteHSMM(PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=8)
    states, y = hsmm.sample_with_states(jax.random.key(3), (4000,))
    assert states.shape == y.shape == (4000, 8)
    np.testing.assert_allclose(y.mean(0), hsmm.mean, atol=0.35)  # about 4 standard errors
    init, matrix = hsmm_expanded_hmm(PI[:, None] * table, SWITCH, table)
    hmm = DiscreteHMM(init, matrix, dist.Poisson(np.repeat(RATES, 5)), num_steps=8)
    np.testing.assert_allclose(hsmm.mean, hmm.mean, rtol=1e-10)
    np.testing.assert_allclose(hsmm.variance, hmm.variance, rtol=1e-10)
    # censoring="none": the process given that a segment ends at the last step
    none = DiscreteHSMM(
        PI, SWITCH, dist.Poisson(RATES), duration_probs=table, num_steps=8, censoring="none"
    )
    ref = hsmm_brute_force(PI[:, None] * table, SWITCH, table, np.zeros((8, K)), end_at=7)
    np.testing.assert_allclose(none.mean, ref.smoothed_probs @ RATES, rtol=1e-10)
    paths = np.asarray(none.sample_with_states(jax.random.key(4), (4000,))[0])
    np.testing.assert_allclose((paths == 1).mean(0), ref.smoothed_probs[:, 1], atol=0.035)


def _model(y, censoring="right"):
    rates = numpyro.sample("rates", dist.Gamma(2.0, 0.3).expand([K]).to_event(1))
    dwell = numpyro.sample("dwell", dist.Gamma(3.0, 0.5).expand([K]).to_event(1))
    numpyro.sample(
        "y",
        DiscreteHSMM(
            jnp.ones(K) / K, SWITCH, dist.Poisson(rates), dist.Poisson(dwell),
            duration_offset=1, max_duration=20, num_steps=y.shape[-1], censoring=censoring,
        ),
        obs=y,
    )  # fmt: skip


DRAWS = {
    "rates": jnp.array([[[2.0, 9.0], [1.5, 8.0], [2.5, 10.0]]]),
    "dwell": jnp.array([[[3.0, 5.0], [2.0, 4.0], [4.0, 6.0]]]),
}  # (chains, draws, K)


@pytest.mark.arviz
def test_infer_entry_points():
    y = jnp.asarray(Y)
    flat = {k: v[0] for k, v in DRAWS.items()}
    pointwise = infer.pointwise_log_likelihood(_model, flat, y)["y"]
    assert pointwise.shape == (3, T)
    for i in range(3):
        d = DiscreteHSMM(
            jnp.ones(K) / K, SWITCH, dist.Poisson(flat["rates"][i]), dist.Poisson(flat["dwell"][i]),
            duration_offset=1, max_duration=20, num_steps=T,
        )  # fmt: skip
        np.testing.assert_allclose(pointwise[i].sum(), d.log_prob(y), rtol=1e-10)
        np.testing.assert_allclose(
            infer.posterior_latents(_model, flat, y)["y"][i], d.smooth(y).smoothed_probs
        )
    paths = infer.posterior_latents(_model, flat, y, method="sample", key=jax.random.key(5))
    assert paths["y"].shape == (3, T)
    idata = infer.to_inference_data(
        DRAWS, _model, y, latents=["smooth", "mode"], coords={"time": np.arange(T) + 1}
    )
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "time")
    assert idata.posterior["y_smoothed_probs"].dims == ("chain", "draw", "time", "state")
    assert idata.posterior["y_posterior_mode"].shape == (1, 3, T)


@pytest.mark.slow
def test_nuts_on_the_duration_parameters():
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(_model), num_warmup=100, num_samples=100, progress_bar=False)
    mcmc.run(jax.random.key(6), jnp.asarray(Y))
    samples = mcmc.get_samples()
    assert np.all(np.isfinite(samples["dwell"]))
    idata = infer.to_inference_data(mcmc, latents="smooth")
    assert idata.log_likelihood["y"].shape == (1, 100, T)
    # the emission rates are recovered (data drawn with rates 2 and 9)
    np.testing.assert_allclose(np.sort(samples["rates"].mean(0)), RATES, rtol=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_duration=0), "max_duration must be an integer D_max >= 1"),
        (dict(duration_offset=0), "duration_offset=1 makes d - 1 ~ Poisson"),
        (dict(max_duration=None), "max_duration .* is required with duration_dist"),
        (dict(duration_dist=dist.Normal(jnp.ones(K))), "scalar discrete distribution"),
        (dict(duration_dist=dist.Poisson(jnp.ones(3))), "duration_dist must have batch shape"),
        (dict(duration_offset=40), "beyond max_duration=20"),
        (dict(transition_matrix=np.ones((3, 3)) / 3), "transition_matrix/transition_logits must"),
        (dict(transition_matrix=np.ones((T - 1, K, K)) / 2), "HSMM transitions are homogeneous"),
        (dict(duration_probs=np.ones((3, 4)) / 4), "duration_probs/duration_logits must"),
        (dict(duration_probs=np.ones((K, 0))), "max_duration must be an integer D_max >= 1"),
        (dict(duration_probs=np.ones((K, 4)) / 4, max_duration=20), "disagrees with the"),
        (dict(censoring="left"), "censoring must be one of"),
        (dict(initial_logits=np.zeros(K)), "exactly one of initial_probs"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(
        initial_probs=PI, transition_matrix=SWITCH, emission_dist=dist.Poisson(RATES),
        duration_dist=dist.Poisson(jnp.ones(K)), duration_offset=1, max_duration=20, num_steps=T,
    )  # fmt: skip
    if "duration_probs" in kwargs:
        args.update(duration_dist=None, duration_offset=0, max_duration=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DiscreteHSMM(**args)


def test_validation_explains_bad_parameters():
    with pytest.raises(ValueError, match="no mass off the diagonal"):
        DiscreteHSMM(
            PI, np.array([[1.0, 0.0], [1.0, 0.0]]), dist.Poisson(RATES),
            duration_probs=np.ones((K, 3)) / 3, num_steps=T, validate_args=True,
        )  # fmt: skip
    with pytest.raises(ValueError, match="duration_probs"):
        DiscreteHSMM(
            PI, SWITCH, dist.Poisson(RATES), duration_probs=np.ones((K, 3)), num_steps=T,
            validate_args=True,
        )  # fmt: skip

"""numpyro_ssm.infer: latent posteriors, per-step log-likelihoods and InferenceData."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from arviz_versions import ARVIZ_1, group_names, loo, waic_elpd
from numpyro import handlers

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM
from numpyro_ssm.infer import pointwise_log_likelihood, posterior_latents, to_inference_data

# az.loo/az.waic warn about Pareto k on these tiny posteriors; the tests check they run.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:arviz"),
    pytest.mark.filterwarnings("ignore::UserWarning:arviz_stats"),  # ArviZ 1.x
]


K, T = 2, 8
A = np.array([[0.85, 0.15], [0.25, 0.75]])
Y = np.array([1.0, 2.0, 9.0, 11.0, 8.0, 0.0, 3.0, 12.0])


def hmm_model(y, obs_mask=None):
    rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([K]).to_event(1))
    hmm = DiscreteHMM(
        np.ones(K) / K, A, dist.Poisson(rates), num_steps=y.shape[-1], obs_mask=obs_mask
    )
    numpyro.sample("y", hmm, obs=y)


def plate_model(y, obs_mask=None):
    """A plate of series sharing the rates; y has shape (series, T)."""
    rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([K]).to_event(1))
    with numpyro.plate("series", y.shape[0]):
        hmm = DiscreteHMM(
            np.ones(K) / K, A, dist.Poisson(rates), num_steps=y.shape[-1], obs_mask=obs_mask
        )
        numpyro.sample("y", hmm, obs=y)


def rate_draws(shape):
    rng = np.random.default_rng(0)
    low = rng.uniform(0.5, 2.0, size=shape)
    return {"rates": np.stack([low, low + rng.uniform(6.0, 9.0, size=shape)], axis=-1)}


def true_hmm(rates, **kw):
    return DiscreteHMM(np.ones(K) / K, A, dist.Poisson(np.asarray(rates)), num_steps=T, **kw)


def close(a, b, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# -- posterior_latents ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_latents_with_all_draws_equal_match_the_helpers(chunk_size):
    rates = np.array([1.0, 9.0])
    samples = {"rates": np.broadcast_to(rates, (5, K))}
    hmm = true_hmm(rates)
    smooth = posterior_latents(hmm_model, samples, Y, chunk_size=chunk_size)
    assert set(smooth) == {"y"} and smooth["y"].shape == (5, T, K)
    close(smooth["y"], np.broadcast_to(hmm.smooth(Y).smoothed_probs, (5, T, K)))
    mode = posterior_latents(hmm_model, samples, Y, method="mode", chunk_size=chunk_size)["y"]
    close(mode, np.broadcast_to(hmm.posterior_mode(Y), (5, T)))


@pytest.mark.arviz
def test_latents_per_draw_and_chains_by_draws():
    samples = rate_draws((2, 3))  # (chains, draws, K)
    out = posterior_latents(hmm_model, samples, Y, batch_ndims=2)["y"]
    assert out.shape == (2, 3, T, K)
    for c in range(2):
        for d in range(3):
            close(out[c, d], true_hmm(samples["rates"][c, d]).smooth(Y).smoothed_probs)


def test_ffbs_frequencies_match_smoothed_marginals():
    rates = np.array([2.0, 7.0])
    n = 4000
    samples = {"rates": np.broadcast_to(rates, (n, K))}
    paths = posterior_latents(
        hmm_model, samples, Y, method="sample", key=jax.random.key(1), chunk_size=1000
    )["y"]
    assert paths.shape == (n, T) and paths.dtype.kind == "i"
    probs = np.asarray(true_hmm(rates).smooth(Y).smoothed_probs)[:, 1]
    freq = np.asarray(paths == 1).mean(0)
    se = np.sqrt(probs * (1 - probs) / n) + 1e-12
    assert np.all(np.abs(freq - probs) <= 4 * se + 1e-9)
    # The mode path is the most frequent one when one path dominates.
    mode = np.asarray(true_hmm(rates).posterior_mode(Y))
    assert np.mean(np.all(np.asarray(paths) == mode, axis=1)) > 0.1


def test_latents_plate_keeps_series_axis():
    y = np.stack([Y, Y[::-1]])
    samples = rate_draws((4,))
    out = posterior_latents(plate_model, samples, y)["y"]
    assert out.shape == (4, 2, T, K)
    close(out[1, 1], true_hmm(samples["rates"][1]).smooth(y[1]).smoothed_probs)


@pytest.mark.arviz
def test_latents_as_xarray_has_named_dims_and_coords():
    y = np.stack([Y, Y[::-1]])
    years = np.arange(1900, 1900 + T)
    out = posterior_latents(
        plate_model, rate_draws((2, 3)), y, batch_ndims=2, as_xarray=True, coords={"time": years}
    )["y"]
    assert out.dims == ("chain", "draw", "series", "time", "state")
    np.testing.assert_array_equal(out["time"], years)
    out = posterior_latents(hmm_model, rate_draws((3,)), Y, method="mode", as_xarray=True)["y"]
    assert out.dims == ("chain", "draw", "time") and out.shape == (1, 3, T)


def test_latents_errors():
    samples = rate_draws((3,))
    with pytest.raises(ValueError, match="key"):
        posterior_latents(hmm_model, samples, Y, method="sample")
    with pytest.raises(ValueError, match="method"):
        posterior_latents(hmm_model, samples, Y, method="viterbi")
    with pytest.raises(ValueError, match="rates"):
        posterior_latents(hmm_model, {"other": np.zeros(3)}, Y)
    with pytest.raises(ValueError, match="state-space-model protocol"):
        posterior_latents(hmm_model, samples, Y, site="rates")


# -- pointwise_log_likelihood ---------------------------------------------------------------------


def test_pointwise_log_likelihood_sums_to_log_prob_and_masks_are_nan():
    mask = np.ones(T, bool)
    mask[[2, 5]] = False
    y = Y.copy()
    y[6] = np.nan  # NaN is missing too
    samples = rate_draws((6,))
    ll = pointwise_log_likelihood(hmm_model, samples, y, mask)["y"]
    assert ll.shape == (6, T)
    missing = np.isnan(np.asarray(ll))
    np.testing.assert_array_equal(missing, np.broadcast_to(~mask | np.isnan(y), (6, T)))
    for d in range(6):
        lp = true_hmm(samples["rates"][d], obs_mask=mask).log_prob(y)
        close(np.nansum(ll[d]), lp)


@pytest.mark.arviz
def test_pointwise_log_likelihood_plate():
    y = np.stack([Y, Y[::-1], Y + 1])
    samples = rate_draws((2, 2))
    ll = pointwise_log_likelihood(plate_model, samples, y, batch_ndims=2)["y"]
    assert ll.shape == (2, 2, 3, T)
    lp = jax.vmap(
        lambda r: (
            handlers.trace(handlers.substitute(plate_model, {"rates": r}))
            .get_trace(y)["y"]["fn"]
            .log_prob(y)
        )
    )(samples["rates"].reshape(-1, K)).reshape(2, 2, 3)
    close(ll.sum(-1), lp)


# -- to_inference_data ---------------------------------------------------------------------------


@pytest.mark.arviz
def test_inference_data_groups_dims_coords_and_loo():
    y = np.stack([Y, Y[::-1]])
    samples = rate_draws((2, 15))  # ArviZ 1.x PSIS needs >= 25 draws
    years = np.arange(1950, 1950 + T)
    idata = to_inference_data(
        samples,
        plate_model,
        y,
        latents=["smooth", "sample"],
        key=jax.random.key(0),
        coords={"time": years, "series": ["a", "b"]},
        sample_stats={"diverging": np.zeros((2, 15), bool)},
    )
    import arviz as az
    import xarray as xr

    # what each ArviZ major expects: InferenceData (0.2x), an xarray DataTree (1.x)
    assert isinstance(idata, xr.DataTree if ARVIZ_1 else az.InferenceData)
    assert group_names(idata) == {"posterior", "sample_stats", "observed_data", "log_likelihood"}
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "series", "time")
    np.testing.assert_array_equal(ll["time"], years)
    np.testing.assert_array_equal(ll["series"], ["a", "b"])
    post = idata.posterior
    assert post["y_smoothed_probs"].dims == ("chain", "draw", "series", "time", "state")
    assert post["y_posterior_sample"].dims == ("chain", "draw", "series", "time")
    assert post["rates"].shape == (2, 15, K)
    assert idata.observed_data["y"].dims == ("series", "time")
    direct = pointwise_log_likelihood(plate_model, samples, y, batch_ndims=2)["y"]
    close(ll.values, direct)
    elpd, num_points = loo(idata)
    assert np.isfinite(elpd) and num_points == 2 * T
    assert np.isfinite(waic_elpd(idata))


@pytest.mark.arviz
def test_inference_data_drops_masked_steps():
    samples = rate_draws((1, 30))
    years = np.arange(1950, 1950 + T)
    mask = np.ones(T, bool)
    mask[[0, 4]] = False
    idata = to_inference_data(samples, hmm_model, Y, mask, coords={"time": years})
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "time")
    np.testing.assert_array_equal(ll["time"], years[mask])
    assert np.isfinite(loo(idata)[0])
    # ragged series (padded): one flat axis over the observed (series, time) pairs
    y = np.stack([Y, Y[::-1]])
    ragged = np.ones((2, T), bool)
    ragged[1, 5:] = False
    idata = to_inference_data(samples, plate_model, y, ragged, coords={"time": years})
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "y_observed_step") and ll.shape[-1] == ragged.sum()
    np.testing.assert_array_equal(ll["y_series"], np.nonzero(ragged)[0])
    np.testing.assert_array_equal(ll["y_time"], years[np.nonzero(ragged)[1]])
    direct = pointwise_log_likelihood(plate_model, samples, y, ragged, batch_ndims=2)["y"]
    close(np.nansum(np.asarray(direct), axis=(-2, -1)), ll.values.sum(-1))
    assert np.isfinite(loo(idata)[0])


@pytest.mark.slow
def test_inference_data_from_mcmc():
    mcmc = numpyro.infer.MCMC(
        numpyro.infer.NUTS(hmm_model),
        num_warmup=40,
        num_samples=20,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), Y, extra_fields=("potential_energy",))
    idata = to_inference_data(mcmc, latents="mode")
    assert {"diverging", "lp"} <= set(idata.sample_stats.data_vars)
    assert idata.sample_stats["lp"].shape == (2, 20)
    assert idata.posterior["y_posterior_mode"].dims == ("chain", "draw", "time")
    assert idata.log_likelihood["y"].shape == (2, 20, T)
    assert np.isfinite(loo(idata)[0])


# -- LinearGaussianSSM ---------------------------------------------------------------------------


def lgssm_model(y):
    q = numpyro.sample("q", dist.HalfNormal(1.0))
    r = numpyro.sample("r", dist.HalfNormal(1.0))
    ssm = LinearGaussianSSM(
        jnp.zeros(1),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * 10.0,
        transition_cov=jnp.eye(1) * q**2,
        emission_cov=jnp.eye(1) * r**2,
        num_steps=y.shape[-2],
    )
    numpyro.sample("y", ssm, obs=y)


def test_lgssm_latents_and_log_likelihood():
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=(T, 1)), axis=0) + rng.normal(size=(T, 1))
    y[3] = np.nan
    samples = {"q": np.array([0.5, 1.0, 1.5]), "r": np.array([1.0, 0.7, 0.3])}

    def ssm(i):
        tr = handlers.trace(handlers.substitute(lgssm_model, {k: v[i] for k, v in samples.items()}))
        return tr.get_trace(y)["y"]["fn"]

    smooth = posterior_latents(lgssm_model, samples, y)["y"]
    assert smooth["means"].shape == (3, T, 1) and smooth["covariances"].shape == (3, T, 1, 1)
    mode = posterior_latents(lgssm_model, samples, y, method="mode")["y"]
    paths = posterior_latents(lgssm_model, samples, y, method="sample", key=jax.random.key(0))
    assert paths["y"].shape == (3, T, 1)
    ll = pointwise_log_likelihood(lgssm_model, samples, y)["y"]
    assert np.isnan(ll[:, 3]).all() and np.isfinite(np.delete(np.asarray(ll), 3, axis=1)).all()
    for i in range(3):
        post = ssm(i).smooth(y)
        close(smooth["means"][i], post.smoothed_means)
        close(smooth["covariances"][i], post.smoothed_covariances)
        close(mode[i], post.smoothed_means)
        close(np.nansum(ll[i]), ssm(i).log_prob(y))


@pytest.mark.arviz
def test_lgssm_inference_data():
    rng = np.random.default_rng(4)
    y = rng.normal(size=(T, 1))
    samples = {"q": rng.uniform(0.5, 1, (2, 3)), "r": rng.uniform(0.5, 1, (2, 3))}
    idata = to_inference_data(samples, lgssm_model, y, latents="smooth")
    assert idata.posterior["y_smoothed_means"].dims == ("chain", "draw", "time", "state")
    assert idata.posterior["y_smoothed_covariances"].dims[-2:] == ("state", "state_2")
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "time")
    assert idata.observed_data["y"].dims[0] == "time"

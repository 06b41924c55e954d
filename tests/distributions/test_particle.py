"""``ParticleSSM``: the NumPyro adapter over the particle filters, and what infer reaches of it.

It cannot join the generic contract table (``test_contract.py``), whose rows must run NUTS, HMC
and SVI on ``log_prob``: a particle likelihood needs a key (see the module docstring of
``numpyro_ssm.distributions.particle``). What of the contract applies is checked here: shapes,
sampling, jit/vmap, handlers, ``expand``/``mask``, ``Predictive``, and the protocol through
``infer`` (with a key).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, Predictive
from particle_cases import categorical_from_noise

from numpyro_ssm import ParticleSSM, infer
from numpyro_ssm.distributions._particle_functions import from_noise
from numpyro_ssm.ops import kalman_filter, lgssm_params
from numpyro_ssm.ops.particle import Kernel, ParticleModel, particle_filter

T = 12


def transition_fn(z, u, params):
    phi, q, r = params
    return dist.Normal(phi * z, q)


def emission_fn(z, u, params):
    phi, q, r = params
    return dist.Normal(z, r)


def two_entry_emission(z, u, params):  # independent entries: event shape ()
    return dist.Normal(jnp.stack([z, -z]), params[2])


PARAMS = (0.8, 0.6, 0.5)


def make(obs_mask=None, emission=emission_fn, **kwargs):
    kwargs.setdefault("num_particles", 256)
    return ParticleSSM(
        dist.Normal(0.0, 1.0),
        transition_fn,
        emission,
        PARAMS,
        num_steps=T,
        obs_mask=obs_mask,
        **kwargs,
    )


def kalman(y, mask=None, D=1):
    phi, q, r = PARAMS
    H = np.array([[1.0], [-1.0]])[:D]
    params = lgssm_params(
        jnp.zeros(1),
        jnp.array([[phi]]),
        jnp.asarray(H),
        initial_cov=jnp.eye(1),
        transition_cov=jnp.eye(1) * q**2,
        emission_cov=jnp.eye(D) * r**2,
    )
    return float(kalman_filter(params, y.reshape(T, D), obs_mask=mask).log_marginal)


Y = np.asarray(make().sample(jax.random.key(0)))


def test_shapes_and_simulation():
    ssm = make(obs_mask=jnp.ones((3, T), bool))
    assert ssm.batch_shape == (3,) and ssm.event_shape == (T,)
    states, ys = ssm.sample_with_states(jax.random.key(1), (2,))
    assert states.shape == (2, 3, T) and ys.shape == (2, 3, T)
    two = make(emission=two_entry_emission)
    assert two.event_shape == (T, 2) and two.sample(jax.random.key(0)).shape == (T, 2)
    # simulated paths follow the model: the emission noise has the stated scale
    states, ys = make().sample_with_states(jax.random.key(2), (4000,))
    assert abs(float(jnp.std(ys - states)) - PARAMS[2]) < 0.01


def test_filter_is_the_ops_filter():
    key = jax.random.key(3)
    ours = make().filter(key, Y)
    model = ParticleModel(
        Kernel(lambda k, u, p: jax.random.normal(k), lambda z, u, p: dist.Normal().log_prob(z)),
        Kernel(
            lambda k, z, u, p: transition_fn(z, u, p).sample(k),
            lambda z2, z, u, p: transition_fn(z, u, p).log_prob(z2),
            lambda eps, z, u, p: p[0] * z + p[1] * eps,
        ),
        lambda y, z, u, p: emission_fn(z, u, p).log_prob(y),
    )
    model = model._replace(initial=model.initial._replace(from_noise=lambda eps, u, p: eps))
    direct = particle_filter(key, model, PARAMS, Y, 256, gradient="none")
    np.testing.assert_allclose(ours.log_marginal, direct.log_marginal, rtol=1e-12)
    np.testing.assert_allclose(ours.particles, direct.particles, rtol=1e-12)


def test_unbiased_with_entrywise_missing_data():
    mask = np.ones((T, 2), bool)
    mask[2, 0] = mask[5, 1] = False
    mask[7] = False
    ssm = make(obs_mask=jnp.asarray(mask), emission=two_entry_emission)
    y = np.array(ssm.sample(jax.random.key(4)))
    y[9, 1] = np.nan  # NaN is missing too
    observed = mask & ~np.isnan(y)
    log_z = kalman(np.nan_to_num(y), observed, D=2)
    estimates = jax.jit(jax.vmap(lambda k: ssm.log_likelihood_estimate(k, jnp.asarray(y))))(
        jax.random.split(jax.random.key(5), 300)
    )
    ratio = np.exp(np.asarray(estimates) - log_z)
    assert abs(ratio.mean() - 1) < 5 * ratio.std() / np.sqrt(ratio.size)
    np.testing.assert_array_equal(ssm.step_mask(y), observed.any(-1))


def test_ragged_batch_equals_separate_sequences():
    mask = np.ones((2, T), bool)
    mask[0, 8:] = False
    batch = make(obs_mask=jnp.asarray(mask))
    y = jnp.stack([Y, Y])
    out = batch.filter(jax.random.key(6), y, history=False)
    keys = jax.random.split(jax.random.key(6), 2)
    short = ParticleSSM(
        dist.Normal(0.0, 1.0), transition_fn, emission_fn, PARAMS, num_steps=8, num_particles=256
    )
    alone = short.filter(keys[0], Y[:8], history=False)
    np.testing.assert_allclose(out.log_marginal[0], alone.log_marginal, rtol=1e-12)
    assert (out.log_likelihood_increments[0, 8:] == 0).all()


@pytest.mark.parametrize(
    "d",
    [
        dist.Normal(jnp.array([0.5, -1.0]), 2.0),
        dist.MultivariateNormal(jnp.zeros(2), jnp.array([[2.0, 0.5], [0.5, 1.0]])),
        dist.LogNormal(0.3, 0.5),
        dist.Normal(0.0, 1.0).expand([2]).to_event(1),
        dist.Gumbel(1.0, 2.0),
        dist.Categorical(jnp.array([0.2, 0.5, 0.3])),
    ],
    ids=["normal", "mvn", "lognormal", "independent", "icdf", "categorical"],
)
def test_noise_maps_have_the_distribution(d):
    """``from_noise(d, eps)`` has ``d``'s law: its moments match ``d.sample``'s (20 000 draws)."""
    eps = jax.random.normal(jax.random.key(0), (20_000,) + d.batch_shape + d.event_shape)
    mapped = np.asarray(jax.vmap(lambda e: from_noise(d, e))(eps), float)
    sampled = np.asarray(d.sample(jax.random.key(1), (20_000,)), float)
    for moment in (1, 2):
        a, b = mapped**moment, sampled**moment
        error = np.abs(a.mean(0) - b.mean(0))
        assert (error < 5 * np.sqrt((a.var(0) + b.var(0)) / 20_000)).all()
    if isinstance(d, dist.CategoricalProbs):
        assert (
            int(from_noise(d, jnp.array(-9.0))) == 0 == int(categorical_from_noise(-9.0, d.probs))
        )


def test_log_prob_raises_and_nuts_says_why():
    with pytest.raises(NotImplementedError, match="numpyro_ssm.infer.PMMH"):
        make().log_prob(Y)

    def model(y):
        phi = numpyro.sample("phi", dist.Uniform(-1, 1))
        ssm = ParticleSSM(
            dist.Normal(0.0, 1.0), transition_fn, emission_fn, (phi, 0.6, 0.5), num_steps=T
        )
        numpyro.sample("y", ssm, obs=y)

    with pytest.raises(NotImplementedError, match="PMMH"):
        MCMC(NUTS(model), num_warmup=2, num_samples=2, progress_bar=False).run(jax.random.key(0), Y)


def test_pytree_handlers_and_predictive():
    ssm = make()
    leaves, treedef = jax.tree.flatten(ssm)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert rebuilt.event_shape == (T,) and rebuilt.num_particles == 256
    estimate = jax.jit(lambda d, k: d.log_likelihood_estimate(k, Y))(ssm, jax.random.key(0))
    assert np.isfinite(estimate)
    expanded = ssm.expand([3])
    assert expanded.batch_shape == (3,) and expanded.sample(jax.random.key(0)).shape == (3, T)
    assert ssm.mask(False).batch_shape == ()

    def model(y=None):
        phi = numpyro.sample("phi", dist.Uniform(0, 1))
        ssm = ParticleSSM(
            dist.Normal(0.0, 1.0), transition_fn, emission_fn, (phi, 0.6, 0.5), num_steps=T
        )
        with numpyro.plate("series", 2):
            numpyro.sample("y", ssm, obs=y)

    prior = Predictive(model, num_samples=5)(jax.random.key(1))
    assert prior["y"].shape == (5, 2, T)
    trace = handlers.trace(handlers.seed(handlers.condition(model, {"phi": 0.5}), 0)).get_trace()
    assert trace["y"]["value"].shape == (2, T)


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="emission_fn must return a numpyro Distribution"):
        make(emission=lambda z, u, p: z)
    with pytest.raises(ValueError, match="proposal_fn returns a distribution of batch_shape"):
        make(proposal_fn=lambda z, y, u, p: dist.Normal(jnp.zeros(2), 1.0))
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="num_particles must be a positive Python int"):
            make(num_particles=bad)
    with pytest.raises(ValueError, match="transition_fn returns a distribution"):
        ParticleSSM(
            dist.Normal(0.0, 1.0),
            lambda z, u, p: dist.Normal(jnp.zeros(3), 1.0),
            emission_fn,
            PARAMS,
            num_steps=T,
        )
    with pytest.raises(ValueError, match="num_steps is required"):
        ParticleSSM(dist.Normal(0.0, 1.0), transition_fn, emission_fn, PARAMS)
    with pytest.raises(TypeError, match="initial_dist must be a numpyro Distribution"):
        ParticleSSM(0.0, transition_fn, emission_fn, PARAMS, num_steps=T)
    mvn = lambda z, u, p: dist.MultivariateNormal(jnp.stack([z, z]), jnp.eye(2))  # noqa: E731
    with pytest.raises(ValueError, match="masks single entries"):
        make(obs_mask=jnp.ones((T, 2), bool), emission=mvn)


@pytest.mark.arviz
def test_infer_reaches_the_filter_with_a_key():
    def model(y):
        phi = numpyro.sample("phi", dist.Uniform(0, 1))
        ssm = ParticleSSM(
            dist.Normal(0.0, 1.0),
            transition_fn,
            emission_fn,
            (phi, 0.6, 0.5),
            num_steps=T,
            num_particles=128,
        )
        numpyro.sample("y", ssm, obs=y)

    draws = {"phi": jnp.array([0.3, 0.8])}
    paths = infer.posterior_latents(model, draws, Y, method="sample", key=jax.random.key(0))
    assert paths["y"].shape == (2, T)
    smooth = infer.posterior_latents(model, draws, Y, method="smooth", key=jax.random.key(1))
    assert smooth["y"]["means"].shape == (2, T)
    idata = infer.to_inference_data({"phi": draws["phi"][None]}, model, Y, key=jax.random.key(2))
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "time")
    total = idata.log_likelihood["y"].values.sum(-1)[0]
    phi = 0.8
    exact = kalman_filter(
        lgssm_params(
            jnp.zeros(1),
            jnp.array([[phi]]),
            jnp.eye(1),
            initial_cov=jnp.eye(1),
            transition_cov=jnp.eye(1) * 0.36,
            emission_cov=jnp.eye(1) * 0.25,
        ),
        Y[:, None],
    ).log_marginal
    assert abs(total[1] - float(exact)) < 0.5  # one estimate at N = 128: sd about 0.1
    with pytest.raises(ValueError, match="pass key="):
        infer.posterior_latents(model, draws, Y, method="sample")
    with pytest.raises(ValueError, match="needs a key"):
        infer.pointwise_log_likelihood(model, draws, Y)

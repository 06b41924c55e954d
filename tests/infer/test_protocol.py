"""A model family defined only here goes through every ``numpyro_ssm.infer`` entry point.

``IIDMixture`` is a state space model without dynamics: ``z_t ~ Categorical(weights)``
independently and ``y_t | z_t = k ~ Normal(locs[k], 1)``. Its posteriors have closed forms,
which are the oracles below. It implements the protocol of
:class:`numpyro_ssm.distributions.StateSpaceModel` and nothing else, so these tests prove that a
new family needs no edit under ``numpyro_ssm/infer``. Its latent dim is named ``regime`` (not
``state``) to show that the dims come from the model.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.special import logsumexp
from numpyro.distributions import constraints

from numpyro_ssm import infer
from numpyro_ssm.distributions import SSMLatents, StateSpaceModel

jax.config.update("jax_enable_x64", True)

INFER_DIR = Path(__file__).resolve().parents[2] / "numpyro_ssm" / "infer"


class _Filtered(NamedTuple):
    log_likelihood_increments: jax.Array


class IIDMixture(StateSpaceModel):
    """``z_t`` i.i.d. ``Categorical(weights)``, ``y_t | z_t = k ~ Normal(locs[k], 1)``."""

    arg_constraints = {"weights": constraints.simplex, "locs": constraints.real_vector}
    support = constraints.independent(constraints.real, 1)
    pytree_data_fields = ("weights", "locs")
    pytree_aux_fields = ("num_steps",)
    calls = {"latents": 0, "filter": 0}  # traces of each method, for the one-pass test

    def __init__(self, weights, locs, num_steps, validate_args=None):
        self.weights, self.locs = jnp.asarray(weights), jnp.asarray(locs)
        self.num_steps = num_steps
        batch_shape = jnp.broadcast_shapes(self.weights.shape[:-1], self.locs.shape[:-1])
        super().__init__(batch_shape, (num_steps,), validate_args=validate_args)

    def _joint(self, value):  # log p(z_t = k, y_t), (..., T, K); missing steps give the prior
        value = jnp.asarray(value)
        observed = ~jnp.isnan(value)
        log_lik = dist.Normal(self.locs[..., None, :], 1.0).log_prob(
            jnp.where(observed, value, 0.0)[..., None]
        )
        return jnp.log(self.weights)[..., None, :] + jnp.where(observed[..., None], log_lik, 0.0)

    def step_mask(self, value):
        value = jnp.asarray(value)
        shape = jnp.broadcast_shapes(value.shape, self.batch_shape + (self.num_steps,))
        return jnp.broadcast_to(~jnp.isnan(value), shape)

    def log_likelihood_increments(self, value):
        return jnp.where(self.step_mask(value), logsumexp(self._joint(value), -1), 0.0)

    def log_prob(self, value):
        return self.log_likelihood_increments(value).sum(-1)

    def sample(self, key, sample_shape=()):
        kz, ky = jax.random.split(key)
        shape = tuple(sample_shape) + self.batch_shape + (self.num_steps,)
        logits = jnp.broadcast_to(jnp.log(self.weights)[..., None, :], shape + self.locs.shape[-1:])
        z = jax.random.categorical(kz, logits)
        locs = jnp.broadcast_to(self.locs[..., None, :], logits.shape)
        mean = jnp.take_along_axis(locs, z[..., None], axis=-1)[..., 0]
        return mean + jax.random.normal(ky, shape)

    def filter(self, value):
        IIDMixture.calls["filter"] += 1
        return _Filtered(self.log_likelihood_increments(value))

    def smooth(self, value):
        return jax.nn.softmax(self._joint(value), axis=-1)

    def sample_posterior(self, key, value, sample_shape=()):
        logits = self._joint(value)
        return jax.random.categorical(key, logits, shape=tuple(sample_shape) + logits.shape[:-1])

    def posterior_mode(self, value):
        return jnp.argmax(self._joint(value), axis=-1)

    def latent_dims(self, method):
        return {"probs": ("time", "regime")} if method == "smooth" else {"": ("time",)}

    def latents(self, value, methods=(), key=None):
        IIDMixture.calls["latents"] += 1
        out = {}
        if "smooth" in methods:
            out["smooth"] = {"probs": self.smooth(value)}
        if "sample" in methods:
            out["sample"] = {"": self.sample_posterior(key, value)}
        if "mode" in methods:
            out["mode"] = {"": self.posterior_mode(value)}
        return SSMLatents(self.log_likelihood_increments(value), out)

    def forecast(self, value, num_steps, **future):
        return IIDMixture(self.weights, self.locs, num_steps)

    @property
    def mean(self):
        m = jnp.sum(self.weights * self.locs, -1)[..., None]
        return jnp.broadcast_to(m, self.batch_shape + (self.num_steps,))

    @property
    def variance(self):
        m = jnp.sum(self.weights * self.locs, -1)
        v = 1.0 + jnp.sum(self.weights * self.locs**2, -1) - m**2
        return jnp.broadcast_to(v[..., None], self.batch_shape + (self.num_steps,))


def model(y):
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    locs = numpyro.sample("locs", dist.Normal(jnp.array([-2.0, 2.0]), 1.0).to_event(1))
    numpyro.sample("y", IIDMixture(weights, locs, y.shape[-1]), obs=y)


def plated_model(y):
    weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
    locs = numpyro.sample("locs", dist.Normal(jnp.array([-2.0, 2.0]), 1.0).to_event(1))
    with numpyro.plate("series", y.shape[0]):
        numpyro.sample("y", IIDMixture(weights, locs, y.shape[-1]), obs=y)


T = 12
Y = np.array(IIDMixture(jnp.array([0.4, 0.6]), jnp.array([-2.0, 2.0]), T).sample(jax.random.key(0)))
Y[4] = np.nan
DRAWS = {
    "weights": jnp.array([[0.3, 0.7], [0.5, 0.5], [0.8, 0.2]]),
    "locs": jnp.array([[-2.0, 2.0], [-1.0, 1.5], [-2.5, 3.0]]),
}


def direct(i):
    return IIDMixture(DRAWS["weights"][i], DRAWS["locs"][i], T)


def close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **{"rtol": 1e-12, **kw})


def test_infer_names_no_model_class():
    for path in INFER_DIR.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"import[^\n]*\b(DiscreteHMM|LinearGaussianSSM)\b", source), path
        assert not re.search(r"isinstance\([^)]*(DiscreteHMM|LinearGaussianSSM)", source), path
        assert "is_hmm" not in source, path


@pytest.mark.arviz
def test_posterior_latents_all_methods():
    smooth = infer.posterior_latents(model, DRAWS, Y)["y"]
    mode = infer.posterior_latents(model, DRAWS, Y, method="mode")["y"]
    paths = infer.posterior_latents(model, DRAWS, Y, method="sample", key=jax.random.key(1))["y"]
    assert smooth.shape == (3, T, 2) and mode.shape == (3, T) and paths.shape == (3, T)
    for i in range(3):
        close(smooth[i], direct(i).smooth(Y))
        close(mode[i], direct(i).posterior_mode(Y))
    close(smooth[:, 4], DRAWS["weights"])  # a missing step keeps the prior
    da = infer.posterior_latents(model, DRAWS, Y, as_xarray=True, coords={"time": np.arange(T)})
    assert da["y"].dims == ("chain", "draw", "time", "regime")
    assert da["y"].name == "y_smoothed_probs"


def test_pointwise_log_likelihood():
    loglik = infer.pointwise_log_likelihood(model, DRAWS, Y)["y"]
    assert np.isnan(loglik[:, 4]).all()
    for i in range(3):
        expected = np.array(direct(i).log_likelihood_increments(Y))
        expected[4] = np.nan
        close(loglik[i], expected)


@pytest.mark.arviz
def test_to_inference_data_one_pass_per_draw():
    samples = {k: v[None] for k, v in DRAWS.items()}  # (chains=1, draws=3, ...)
    IIDMixture.calls.update(latents=0, filter=0)
    idata = infer.to_inference_data(
        samples, model, Y, latents=["smooth", "sample", "mode"], key=jax.random.key(2)
    )
    # one compiled trace: one latents() call for log-likelihoods and latents, no filter()
    assert IIDMixture.calls == {"latents": 1, "filter": 0}
    post = idata.posterior
    assert post["y_smoothed_probs"].dims == ("chain", "draw", "time", "regime")
    assert post["y_posterior_sample"].dims == ("chain", "draw", "time")
    assert post["y_posterior_mode"].dims == ("chain", "draw", "time")
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "time") and ll.sizes["time"] == T - 1  # missing dropped
    close(ll.values[0, 0], np.delete(np.asarray(direct(0).log_likelihood_increments(Y)), 4))
    close(post["y_smoothed_probs"].values[0, 1], direct(1).smooth(Y))


def test_posterior_latents_compiles_once():
    traces = {"n": 0}

    def counted(y):
        traces["n"] += 1
        model(y)

    infer.posterior_latents(counted, DRAWS, Y)
    first = traces["n"]
    new_draws = {k: v[::-1] for k, v in DRAWS.items()}
    out = infer.posterior_latents(counted, new_draws, Y)["y"]
    # the second call traces the model once, eagerly, to find its sites; no recompilation
    assert traces["n"] == first + 1
    close(out[0], direct(2).smooth(Y))


@pytest.mark.arviz
def test_run_blackjax_and_mcmc_inference_data():
    pytest.importorskip("blackjax")
    result = infer.run_blackjax(model, Y, key=jax.random.key(3), num_warmup=60, num_samples=40)
    assert result.samples["locs"].shape == (1, 40, 2)
    assert result.inference_data.log_likelihood["y"].dims == ("chain", "draw", "time")


def test_lfo_with_a_fixed_posterior():
    draws = {k: v[:1] for k, v in DRAWS.items()}

    def fit(key, past, num_observed):
        return draws

    out = infer.exact_lfo(model, Y, key=jax.random.key(4), min_train=8, fit=fit)
    increments = np.asarray(direct(0).log_likelihood_increments(Y))
    close(out.pointwise, increments[8:])
    psis = infer.psis_lfo(model, Y, key=jax.random.key(4), min_train=8, fit=fit)
    close(psis.elpd, out.elpd)


@pytest.mark.arviz
def test_forecast_law_of_total_variance():
    res = infer.forecast(model, DRAWS, Y, num_steps=3)["y"]
    means = np.stack([np.asarray(direct(i).forecast(Y, 3).mean) for i in range(3)])
    variances = np.stack([np.asarray(direct(i).forecast(Y, 3).variance) for i in range(3)])
    close(res.means, means)
    close(res.mean, means.mean(0))
    close(res.variance, variances.mean(0) + means.var(0))
    assert np.all(res.lower < res.mean) and np.all(res.mean < res.upper)
    sampled = infer.forecast(model, DRAWS, Y, num_steps=3, key=jax.random.key(5), as_xarray=True)
    assert sampled["y"]["samples"].dims == ("chain", "draw", "time")


SHARDED = textwrap.dedent(
    """
    import importlib.util, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    spec = importlib.util.spec_from_file_location("toy", sys.argv[1])
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    from numpyro_ssm.infer import pointwise_log_likelihood, posterior_latents

    assert jax.device_count() == 4, jax.devices()
    y = np.stack([toy.Y[~np.isnan(toy.Y)][:10] + i for i in range(8)])
    mesh = Mesh(np.array(jax.devices()), ("series",))
    y_sharded = jax.device_put(y, NamedSharding(mesh, P("series", None)))
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    close(
        pointwise_log_likelihood(toy.plated_model, toy.DRAWS, y_sharded)["y"],
        pointwise_log_likelihood(toy.plated_model, toy.DRAWS, y)["y"],
    )
    close(
        posterior_latents(toy.plated_model, toy.DRAWS, y_sharded)["y"],
        posterior_latents(toy.plated_model, toy.DRAWS, y)["y"],
    )
    print("OK")
    """
)


def test_sharded_plate_equals_unsharded():
    # imported here: the subprocess imports this file without tests/ on its path
    from emulated_devices import emulated_devices_env

    env = emulated_devices_env(4)
    env["PYTHONPATH"] = os.pathsep.join([str(INFER_DIR.parents[1]), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", SHARDED, __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")

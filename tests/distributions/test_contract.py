"""The NumPyro contract, checked generically: every sequence distribution joins by adding a row.

A row (``Case``) says how to build the distribution from a dict of parameter arrays, the
constraint of each parameter (used to run NUTS and SVI over all of them), and the keyword
arguments of ``infer_shapes``. Every check below then runs for every row, serial and parallel,
except the inference runs: NUTS and SVI on one row per family (``INFERENCE_ROWS``), HMC and
AutoMultivariateNormal on two of those (``SECOND_KERNEL_ROWS``).
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer import HMC, MCMC, NUTS, SVI, Predictive, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from numpyro.infer.util import log_density

from numpyro_ssm import (
    AutoregressiveHMM,
    DiscreteHMM,
    DiscreteHSMM,
    GeneralizedGaussianSSM,
    LinearGaussianSSM,
    NonlinearGaussianSSM,
)


@dataclass
class Case:
    name: str
    make: Callable  # (params: dict, parallel: bool) -> Distribution
    params: dict  # name -> array
    constraints: dict  # name -> numpyro constraint
    shape_kwargs: Callable  # (params: dict) -> kwargs of type(d).infer_shapes
    parallel_sample: bool = False  # does ``sample`` itself take the parallel schedule?


def _rng(seed):
    return np.random.default_rng(seed)


def _hmm_case(name, seed, K, T, *, time_varying=False, batch=(), emission="poisson", masked=False):
    rng = _rng(seed)
    lead = batch + ((1,) if batch else ())
    params = {
        "initial_probs": rng.dirichlet(np.ones(K), size=batch),
        "transition_matrix": rng.dirichlet(
            np.ones(K) * 3, size=batch + ((T - 1,) if time_varying else lead[len(batch) :]) + (K,)
        ),
    }
    cons = {
        "initial_probs": constraints.simplex,
        "transition_matrix": constraints.independent(constraints.simplex, 1),
    }
    if emission == "poisson":
        params["rates"] = rng.uniform(1.0, 10.0, size=lead + (K,))
        cons["rates"] = constraints.positive

        def emit(p):
            return dist.Poisson(p["rates"])

    elif emission == "normal":
        params["loc"] = rng.normal(
            size=batch + ((T,) if time_varying else lead[len(batch) :]) + (K,)
        )
        params["scale"] = rng.uniform(0.5, 2.0, size=(K,))
        cons.update(loc=constraints.real, scale=constraints.positive)

        def emit(p):
            return dist.Normal(p["loc"], p["scale"])

    elif emission == "mvn":
        params["loc"] = rng.normal(size=lead + (K, 2)) * 2
        cons["loc"] = constraints.real_vector

        def emit(p):
            return dist.MultivariateNormal(p["loc"], jnp.eye(2))

    else:  # bernoulli, parameterized by logits
        params["logits"] = rng.normal(size=lead + (K,))
        cons["logits"] = constraints.real

        def emit(p):
            return dist.BernoulliLogits(p["logits"])

    obs_mask = (rng.uniform(size=batch + (T,)) > 0.3) if masked else None
    needs_T = not time_varying

    def make(p, parallel):
        return DiscreteHMM(
            p["initial_probs"],
            p["transition_matrix"],
            emit(p),
            num_steps=T if needs_T else None,
            obs_mask=obs_mask,
            parallel=parallel,
        )

    def shape_kwargs(p):
        return dict(
            initial_probs=jnp.shape(p["initial_probs"]),
            transition_matrix=jnp.shape(p["transition_matrix"]),
            emission_dist=emit(p),
            num_steps=T if needs_T else None,
            obs_mask=None if obs_mask is None else obs_mask.shape,
        )

    return Case(name, make, params, cons, shape_kwargs)


def _lgssm_case(name, seed, S, D, T, *, time_varying=False, batch=(), masked=False):
    rng = _rng(seed)
    lead = batch + ((1,) if batch else ())
    t_lead = batch + (T - 1,) if time_varying else lead
    tril = np.tril(rng.normal(size=(S, S))) * 0.2 + np.eye(S)
    params = {
        "initial_mean": rng.normal(size=batch + (S,)),
        "transition_matrix": 0.8 * np.broadcast_to(np.eye(S), t_lead + (S, S))
        + 0.1 * rng.normal(size=t_lead + (S, S)),
        "transition_scale_tril": 0.5 * tril,
        "emission_matrix": rng.normal(size=(D, S)),
        "emission_cov": np.eye(D) * 0.7 + 0.1,
        "transition_bias": rng.normal(size=t_lead + (S,)) * 0.1,
    }
    cons = {
        "initial_mean": constraints.real_vector,
        "transition_matrix": constraints.real_matrix,
        "transition_scale_tril": constraints.lower_cholesky,
        "emission_matrix": constraints.real_matrix,
        "emission_cov": constraints.positive_definite,
        "transition_bias": constraints.real_vector,
    }
    obs_mask = (rng.uniform(size=batch + (T, D)) > 0.3) if masked else None

    def make(p, parallel):
        return LinearGaussianSSM(
            p["initial_mean"],
            p["transition_matrix"],
            p["emission_matrix"],
            initial_cov=jnp.eye(S),
            transition_scale_tril=p["transition_scale_tril"],
            emission_cov=p["emission_cov"],
            transition_bias=p["transition_bias"],
            num_steps=T,
            obs_mask=obs_mask,
            parallel=parallel,
        )

    def shape_kwargs(p):
        return dict(
            initial_mean=jnp.shape(p["initial_mean"]),
            transition_matrix=jnp.shape(p["transition_matrix"]),
            emission_matrix=jnp.shape(p["emission_matrix"]),
            initial_cov=(S, S),
            transition_scale_tril=jnp.shape(p["transition_scale_tril"]),
            emission_cov=jnp.shape(p["emission_cov"]),
            transition_bias=jnp.shape(p["transition_bias"]),
            num_steps=T,
            obs_mask=None if obs_mask is None else obs_mask.shape,
        )

    return Case(name, make, params, cons, shape_kwargs, parallel_sample=True)


def _swing(z, u, p):
    """A damped pendulum-like transition (module level: the distributions' static aux data)."""
    return jnp.stack([z[0] + 0.3 * z[1], 0.9 * z[1] - p["a"] * jnp.sin(z[0])])


def _sine_sensor(z, u, p):
    return jnp.sin(z[:1]) + 0.2 * z[1:]


def _shrink(z, u, p):
    return 0.9 * z


def _log_rates(z, u, p):
    return p["c"] + z


def _poisson(eta):
    return dist.Poisson(jnp.exp(eta))


def _nonlinear_case(name, seed, T, *, batch=(), masked=False, method="ukf"):
    """Sine sensor on a pendulum-like state (S=2, D=1); ``a`` goes through ``params``."""
    rng = _rng(seed)
    params = {
        "initial_mean": rng.normal(size=batch + (2,)) * 0.3,
        "transition_scale_tril": np.tril(rng.normal(size=(2, 2))) * 0.05 + 0.3 * np.eye(2),
        "emission_cov": np.array([[0.3]]),
        "a": np.asarray(0.5),
    }
    cons = {
        "initial_mean": constraints.real_vector,
        "transition_scale_tril": constraints.lower_cholesky,
        "emission_cov": constraints.positive_definite,
        "a": constraints.real,
    }
    obs_mask = (rng.uniform(size=batch + (T, 1)) > 0.3) if masked else None

    def make(p, parallel):
        return NonlinearGaussianSSM(
            p["initial_mean"],
            _swing,
            _sine_sensor,
            initial_cov=0.5 * jnp.eye(2),
            transition_scale_tril=p["transition_scale_tril"],
            emission_cov=p["emission_cov"],
            params={"a": p["a"]},
            num_steps=T,
            obs_mask=obs_mask,
            method=method,
            parallel=parallel,
        )

    def shape_kwargs(p):
        return dict(
            initial_mean=jnp.shape(p["initial_mean"]),
            initial_cov=(2, 2),
            transition_scale_tril=jnp.shape(p["transition_scale_tril"]),
            emission_cov=jnp.shape(p["emission_cov"]),
            num_steps=T,
            obs_mask=None if obs_mask is None else obs_mask.shape,
        )

    return Case(name, make, params, cons, shape_kwargs)


def _generalized_case(name, seed, T, *, smoother_iterations=1):
    """Poisson counts of two series sharing a random walk (S=2, D=2), iterated smoother."""
    rng = _rng(seed)
    params = {
        "initial_mean": rng.normal(size=2) * 0.3,
        "transition_scale_tril": 0.3 * np.eye(2),
        "c": np.array([1.0, 0.5]),
    }
    cons = {
        "initial_mean": constraints.real_vector,
        "transition_scale_tril": constraints.lower_cholesky,
        "c": constraints.real_vector,
    }

    def make(p, parallel):
        return GeneralizedGaussianSSM(
            p["initial_mean"],
            _shrink,
            _log_rates,
            _poisson,
            initial_cov=jnp.eye(2),
            transition_scale_tril=p["transition_scale_tril"],
            params={"c": p["c"]},
            num_steps=T,
            method="ekf",
            smoother_iterations=smoother_iterations,
            parallel=parallel,
        )

    def shape_kwargs(p):
        return dict(
            initial_mean=jnp.shape(p["initial_mean"]),
            transition_fn=_shrink,
            emission_fn=_log_rates,
            emission_dist=_poisson,
            initial_cov=(2, 2),
            transition_scale_tril=jnp.shape(p["transition_scale_tril"]),
            params={"c": p["c"]},
            num_steps=T,
        )

    return Case(name, make, params, cons, shape_kwargs)


def _arhmm_case(name, seed, K, D, L, T, *, batch=(), initial="lags", masked=False):
    rng = _rng(seed)
    tril = np.tril(rng.normal(size=(K, D, D)) * 0.2)
    tril[:, np.arange(D), np.arange(D)] = rng.uniform(0.5, 1.0, size=(K, D))
    params = {
        "initial_probs": rng.dirichlet(np.ones(K), size=batch),
        "transition_matrix": rng.dirichlet(
            np.ones(K) * 3, size=batch + ((1,) if batch else ()) + (K,)
        ),
        "ar_matrix": rng.normal(size=batch + (K, D, L * D)) * 0.3,
        "ar_bias": rng.normal(size=(K, D)),
        "ar_scale_tril": tril,
    }
    cons = {
        "initial_probs": constraints.simplex,
        "transition_matrix": constraints.independent(constraints.simplex, 1),
        "ar_matrix": constraints.independent(constraints.real, 3),
        "ar_bias": constraints.independent(constraints.real, 2),
        "ar_scale_tril": constraints.independent(constraints.lower_cholesky, 1),
    }
    first = (
        {"initial_lags": rng.normal(size=(L, D))}
        if initial == "lags"
        else {"initial_emission_dist": dist.MultivariateNormal(jnp.zeros((K, D)), jnp.eye(D))}
    )
    obs_mask = (rng.uniform(size=batch + (T,)) > 0.2) if masked else None

    def make(p, parallel):
        return AutoregressiveHMM(
            p["initial_probs"],
            p["transition_matrix"],
            p["ar_matrix"],
            ar_bias=p["ar_bias"],
            ar_scale_tril=p["ar_scale_tril"],
            num_steps=T,
            obs_mask=obs_mask,
            parallel=parallel,
            **first,
        )

    def shape_kwargs(p):
        shapes = {k: jnp.shape(v) for k, v in p.items()}
        return dict(
            shapes,
            initial_lags=jnp.shape(first["initial_lags"]) if initial == "lags" else None,
            initial_emission_dist=first.get("initial_emission_dist"),
            num_steps=T,
            obs_mask=None if obs_mask is None else obs_mask.shape,
        )

    return Case(name, make, params, cons, shape_kwargs)


def _hsmm_case(name, seed, K, T, D, *, batch=(), table=False, masked=False, censoring="right"):
    """A DiscreteHSMM row: Poisson durations (d - 1 ~ Poisson) or a duration table."""
    rng = _rng(seed)
    lead = batch + ((1,) if batch else ())
    params = {
        "initial_probs": rng.dirichlet(np.ones(K), size=batch),
        # a full matrix: its diagonal is dropped (the self-transition rule)
        "transition_matrix": rng.dirichlet(np.ones(K) * 3, size=lead + (K,)),
        "rates": rng.uniform(1.0, 10.0, size=(K,)),
    }
    cons = {
        "initial_probs": constraints.simplex,
        "transition_matrix": constraints.independent(constraints.simplex, 1),
        "rates": constraints.positive,
    }
    if table:
        params["duration_probs"] = rng.dirichlet(np.ones(D), size=batch + (K,))
        cons["duration_probs"] = constraints.independent(constraints.simplex, 1)
    else:
        params["dwell"] = rng.uniform(1.0, 4.0, size=(K,))
        cons["dwell"] = constraints.positive
    obs_mask = (rng.uniform(size=batch + (T,)) > 0.3) if masked else None

    def durations(p):
        if table:
            return dict(duration_probs=p["duration_probs"])
        return dict(duration_dist=dist.Poisson(p["dwell"]), duration_offset=1, max_duration=D)

    def make(p, parallel):
        return DiscreteHSMM(
            p["initial_probs"],
            p["transition_matrix"],
            dist.Poisson(p["rates"]),
            num_steps=T,
            obs_mask=obs_mask,
            censoring=censoring,
            parallel=parallel,
            **durations(p),
        )

    def shape_kwargs(p):
        kwargs = dict(
            initial_probs=jnp.shape(p["initial_probs"]),
            transition_matrix=jnp.shape(p["transition_matrix"]),
            emission_dist=dist.Poisson(p["rates"]),
            num_steps=T,
            obs_mask=None if obs_mask is None else obs_mask.shape,
        )
        if table:
            return dict(kwargs, duration_probs=jnp.shape(p["duration_probs"]))
        return dict(kwargs, duration_dist=dist.Poisson(p["dwell"]), max_duration=D)

    return Case(name, make, params, cons, shape_kwargs)


CASES = [
    _hmm_case("hmm-poisson", 0, K=2, T=8),
    _hmm_case("hmm-normal-time-varying", 1, K=3, T=6, time_varying=True, emission="normal"),
    _hmm_case("hmm-batched", 2, K=3, T=5, batch=(2,), emission="normal"),
    _hmm_case("hmm-mvn", 3, K=2, T=5, emission="mvn"),
    _hmm_case("hmm-bernoulli-masked", 4, K=2, T=7, emission="bernoulli", masked=True),
    _lgssm_case("lgssm", 10, S=2, D=2, T=6),
    _lgssm_case("lgssm-time-varying-masked", 11, S=2, D=3, T=5, time_varying=True, masked=True),
    _lgssm_case("lgssm-batched", 12, S=2, D=1, T=4, batch=(2,)),
    # d - 1 ~ Poisson durations, a batch and a mask; the duration-table path and
    # censoring="none" are covered in tests/distributions/test_hsmm.py
    _hsmm_case("hsmm-batched-masked", 20, K=2, T=7, D=4, batch=(2,), masked=True),
    _arhmm_case("arhmm-initial-lags", 20, K=2, D=2, L=2, T=6),
    _arhmm_case(
        "arhmm-initial-emission-batched-masked",
        21,
        K=2,
        D=1,
        L=1,
        T=5,
        batch=(2,),
        initial="emission",
        masked=True,
    ),
    _nonlinear_case("nonlinear-ukf-batched-masked", 20, T=5, batch=(2,), masked=True),
    _generalized_case("generalized-poisson-iterated", 21, T=5),
]

every_row = pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)


def _params(case):
    return {k: jnp.asarray(v) for k, v in case.params.items()}


def _data(case, parallel=False, sample_shape=()):
    d = case.make(_params(case), parallel)
    return d, d.sample(jax.random.PRNGKey(0), sample_shape)


@every_row
def test_shapes_and_infer_shapes(case):
    d, y = _data(case, sample_shape=(2, 3))
    assert y.shape == (2, 3) + d.batch_shape + d.event_shape
    assert d.log_prob(y).shape == (2, 3) + d.batch_shape
    assert type(d).infer_shapes(**case.shape_kwargs(_params(case))) == (
        d.batch_shape,
        d.event_shape,
    )
    assert d.support.event_dim == len(d.event_shape)


@every_row
def test_serial_equals_parallel(case):
    d, y = _data(case, sample_shape=(3,))
    dp = case.make(_params(case), True)
    np.testing.assert_allclose(d.log_prob(y), dp.log_prob(y), rtol=1e-10)


@every_row
def test_jit_vmap_and_lax_map_over_the_distribution(case):
    d, y = _data(case)
    expected = d.log_prob(y)
    np.testing.assert_allclose(jax.jit(lambda d, y: d.log_prob(y))(d, y), expected, rtol=1e-12)
    other = case.make({k: v * 1.0 for k, v in _params(case).items()}, False)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), d, other)
    ys = jnp.stack([y, y])
    np.testing.assert_allclose(
        jax.vmap(lambda d, y: d.log_prob(y))(stacked, ys), jnp.stack([expected] * 2), rtol=1e-12
    )
    mapped = jax.lax.map(lambda dy: dy[0].log_prob(dy[1]), (stacked, ys))
    np.testing.assert_allclose(mapped, jnp.stack([expected] * 2), rtol=1e-12)


@every_row
def test_expand_to_event_and_mask(case):
    d, y = _data(case)
    expanded = d.expand((4,) + d.batch_shape)
    assert expanded.sample(jax.random.PRNGKey(1)).shape == (4,) + d.batch_shape + d.event_shape
    np.testing.assert_allclose(
        expanded.log_prob(y), jnp.broadcast_to(d.log_prob(y), (4,) + d.batch_shape)
    )
    as_event = d.expand((4,) + d.batch_shape).to_event(1 + len(d.batch_shape))
    np.testing.assert_allclose(as_event.log_prob(y), 4 * d.log_prob(y).sum(), rtol=1e-12)
    assert jnp.all(d.mask(False).log_prob(y) == 0)


def _model(case, parallel):
    def model(y=None):
        numpyro.sample("u", dist.Normal())  # a latent site for Predictive's posterior draws
        return numpyro.sample("y", case.make(_params(case), parallel), obs=y)

    return model


@every_row
def test_handlers_and_plate(case):
    d, y = _data(case)
    model = _model(case, False)
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(y)
    assert tr["y"]["is_observed"]
    np.testing.assert_allclose(tr["y"]["fn"].log_prob(tr["y"]["value"]), d.log_prob(y))
    u_only = dist.Normal().log_prob(0.0)
    ll = d.log_prob(y).sum()
    base, _ = log_density(model, (y,), {}, {"u": 0.0})
    np.testing.assert_allclose(base, u_only + ll, rtol=1e-12)
    scaled, _ = log_density(handlers.scale(model, 2.5), (y,), {}, {"u": 0.0})
    np.testing.assert_allclose(scaled, 2.5 * (u_only + ll), rtol=1e-12)
    masked, _ = log_density(handlers.mask(model, mask=False), (y,), {}, {"u": 0.0})
    np.testing.assert_allclose(masked, 0.0)
    conditioned = handlers.trace(handlers.seed(handlers.condition(model, {"y": y}), 0)).get_trace()
    np.testing.assert_array_equal(conditioned["y"]["value"], y)
    substituted = handlers.trace(handlers.seed(handlers.substitute(model, {"y": y}), 0)).get_trace()
    np.testing.assert_array_equal(substituted["y"]["value"], y)

    def plated(y=None):
        with numpyro.plate("series", 3, dim=-1 - len(d.batch_shape)):
            return numpyro.sample("y", case.make(_params(case), False), obs=y)

    ys = jnp.broadcast_to(y, (3,) + y.shape)
    tr = handlers.trace(handlers.seed(plated, 0)).get_trace(ys)
    assert tr["y"]["fn"].batch_shape == (3,) + d.batch_shape
    np.testing.assert_allclose(tr["y"]["fn"].log_prob(ys).sum(), 3 * d.log_prob(y).sum())


@every_row
def test_predictive(case):
    # Predictive only samples: the parallel schedule is drawn too where ``sample`` takes it
    for parallel in (False, True) if case.parallel_sample else (False,):
        d = case.make(_params(case), parallel)
        model = _model(case, parallel)
        draws = Predictive(model, num_samples=5, parallel=True)(jax.random.PRNGKey(2))
        assert draws["y"].shape == (5,) + d.batch_shape + d.event_shape
        posterior = {"u": jnp.zeros((2, 3))}
        predictive = Predictive(model, posterior_samples=posterior, batch_ndims=2)
        draws = predictive(jax.random.PRNGKey(3))
        assert draws["y"].shape == (2, 3) + d.batch_shape + d.event_shape


@pytest.mark.parametrize("parallel", [False, True])
@every_row
def test_gradients_finite_for_every_parameter(case, parallel):
    _, y = _data(case)

    def total(params):
        return case.make(params, parallel).log_prob(y).sum()

    grads = jax.grad(total)(_params(case))
    for name, g in grads.items():
        assert g.shape == jnp.shape(case.params[name])
        assert jnp.all(jnp.isfinite(g)), name
    assert any(jnp.any(g != 0) for g in grads.values())


def _inference_model(case, y, parallel=False):
    def model():
        params = {
            name: numpyro.sample(
                name,
                dist.ImproperUniform(
                    case.constraints[name], (), event_shape=jnp.shape(case.params[name])
                ),
            )
            for name in case.params
        }
        numpyro.sample("y", case.make(params, parallel), obs=y)

    return model


# NUTS and AutoNormal run on one row per family, a row with a batch, a mask, time-varying
# parameters or iterations where the family has one: what they see of a row is its log density
# and its gradient through the constraints' transforms, which the gradient test above checks on
# every row, and each run is mostly compilation. HMC and AutoMultivariateNormal add nothing per
# row that NUTS and AutoNormal do not (the same potential, the same ELBO): one HMM and one LGSSM
# row.
INFERENCE_ROWS = (
    "hmm-normal-time-varying",
    "lgssm-time-varying-masked",
    "hsmm-batched-masked",
    "arhmm-initial-emission-batched-masked",
    "nonlinear-ukf-batched-masked",
    "generalized-poisson-iterated",
)
SECOND_KERNEL_ROWS = ("hmm-normal-time-varying", "lgssm-time-varying-masked")
inference_rows = pytest.mark.parametrize(
    "case", [c for c in CASES if c.name in INFERENCE_ROWS], ids=lambda c: c.name
)


def test_inference_rows_cover_every_family():
    families = {type(c.make(_params(c), False)) for c in CASES}
    covered = {type(c.make(_params(c), False)) for c in CASES if c.name in INFERENCE_ROWS}
    assert covered == families and len(INFERENCE_ROWS) == len(families)


@pytest.mark.slow
@inference_rows
def test_mcmc_runs_over_all_parameters(case):
    _, y = _data(case)
    init = init_to_value(values=_params(case))
    kernels = [NUTS(_inference_model(case, y), init_strategy=init, max_tree_depth=4)]
    if case.name in SECOND_KERNEL_ROWS:
        kernels.append(
            HMC(_inference_model(case, y), init_strategy=init, num_steps=4, trajectory_length=None)
        )
    for kernel in kernels:
        mcmc = MCMC(kernel, num_warmup=20, num_samples=20, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(4))
        for name, draws in mcmc.get_samples().items():
            assert draws.shape == (20,) + jnp.shape(case.params[name])
            assert jnp.all(jnp.isfinite(draws))


@pytest.mark.slow
@inference_rows
def test_svi_runs_with_autoguides(case):
    _, y = _data(case)
    model = _inference_model(case, y)
    guides = [AutoNormal] + [AutoMultivariateNormal] * (case.name in SECOND_KERNEL_ROWS)
    for guide_cls in guides:
        guide = guide_cls(model, init_loc_fn=init_to_value(values=_params(case)))
        svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
        result = svi.run(jax.random.PRNGKey(5), 30, progress_bar=False)
        assert jnp.all(jnp.isfinite(result.losses))

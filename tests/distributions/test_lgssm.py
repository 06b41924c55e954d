"""LinearGaussianSSM: the distribution against dense oracles, its helpers, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import dense_joint, dense_log_marginal, dense_posterior, random_lgssm
from scipy.stats import multivariate_normal

from numpyro_ssm import LinearGaussianSSM

jax.config.update("jax_enable_x64", True)


def close(a, b, rtol=1e-8, atol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def make(params, **kw):
    """A LinearGaussianSSM from an ops-style parameter dict (scale_tril form)."""
    return LinearGaussianSSM(
        params["initial_mean"],
        params["transition_matrix"],
        params["emission_matrix"],
        initial_scale_tril=params["initial_scale_tril"],
        transition_scale_tril=params["transition_scale_tril"],
        emission_scale_tril=params["emission_scale_tril"],
        transition_bias=params.get("transition_bias"),
        emission_bias=params.get("emission_bias"),
        **kw,
    )


def cov(L):
    return L @ np.swapaxes(L, -1, -2)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_log_prob_time_varying_with_mask_and_sample_axes(parallel):
    rng = np.random.default_rng(0)
    T, S, D = 6, 3, 2
    params = random_lgssm(rng, S, D, T, time_varying=True)
    mask = np.ones((T, D), bool)
    mask[2, 1] = False
    mask[4] = False
    d = make(params, obs_mask=mask, parallel=parallel)
    assert d.batch_shape == () and d.event_shape == (T, D)
    y = rng.normal(size=(2, 3, T, D))
    y[0, 0, 1, 0] = np.nan
    lp = d.log_prob(y)
    assert lp.shape == (2, 3)
    expected = [[dense_log_marginal(params, y[i, j], mask) for j in range(3)] for i in range(2)]
    close(lp, expected)


def test_batch_of_homogeneous_models_and_covariance_form():
    """A batch of B homogeneous models is (B, 1, S, S); covariances can be given as *_cov."""
    rng = np.random.default_rng(1)
    T, S, D, B = 5, 2, 2, 3
    models = [random_lgssm(rng, S, D, T, time_varying=False) for _ in range(B)]
    stack = {k: np.stack([m[k] for m in models]) for k in models[0]}
    d = LinearGaussianSSM(
        stack["initial_mean"],
        stack["transition_matrix"][:, None],
        stack["emission_matrix"][:, None],
        initial_cov=cov(stack["initial_scale_tril"]),
        transition_cov=cov(stack["transition_scale_tril"])[:, None],
        emission_cov=cov(stack["emission_scale_tril"])[:, None],
        transition_bias=stack["transition_bias"][:, None],
        emission_bias=stack["emission_bias"][:, None],
        num_steps=T,
        obs_mask=np.array([True, True, False, True, True])[:, None],  # (T, 1): whole steps
    )
    assert d.batch_shape == (B,) and d.event_shape == (T, D)
    y = rng.normal(size=(B, T, D))
    step_mask = np.broadcast_to(np.array([1, 1, 0, 1, 1], bool)[:, None], (T, D))
    close(d.log_prob(y), [dense_log_marginal(models[b], y[b], step_mask) for b in range(B)])
    # posterior helpers carry the batch axis first
    post = d.smooth(y)
    assert post.smoothed_means.shape == (B, T, S)
    assert post.smoothed_cross_covariances.shape == (B, T - 1, S, S)
    sm, sc, _ = dense_posterior(models[1], y[1], step_mask)
    close(post.smoothed_means[1], sm)
    close(post.smoothed_covariances[1], sc)
    assert d.filter(y).filtered_means.shape == (B, T, S)
    draws = d.sample_posterior(jax.random.PRNGKey(0), y, sample_shape=(4,))
    assert draws.shape == (4, B, T, S)
    assert d.sample(jax.random.PRNGKey(0), (7,)).shape == (7, B, T, D)
    assert d.mean.shape == d.variance.shape == (B, T, D)


def test_mean_variance_and_sample_moments():
    rng = np.random.default_rng(2)
    T, S, D, n = 5, 2, 2, 20000
    params = random_lgssm(rng, S, D, T, time_varying=True)
    d = make(params)
    _, _, my, cy, _ = dense_joint(params, T)
    close(d.mean, my.reshape(T, D))
    close(d.variance, np.diag(cy).reshape(T, D))
    y = np.asarray(d.sample(jax.random.PRNGKey(3), (n,))).reshape(n, -1)
    se = np.sqrt(np.diag(cy) / n)
    assert np.all(np.abs(y.mean(0) - my) < 5 * se)
    sd = np.sqrt(np.diag(cy))
    se = np.sqrt((np.outer(sd, sd) ** 2 + cy**2) / n)
    assert np.all(np.abs(np.cov(y.T) - cy) < 5 * se)


def test_sample_is_reparameterized():
    assert LinearGaussianSSM.reparametrized_params
    rng = np.random.default_rng(4)
    params = random_lgssm(rng, 2, 1, 4, time_varying=False)
    d = make(params, num_steps=4)
    assert d.has_rsample

    def f(scale):
        p = dict(params, emission_scale_tril=scale * np.eye(1))
        return make(p, num_steps=4).rsample(jax.random.PRNGKey(0)).sum()

    # y = ... + scale * eps: d/dscale is the sum of the standard normals, nonzero and finite
    g = jax.grad(f)(1.0)
    assert np.isfinite(g) and g != 0


def test_forecast_matches_dense_conditional():
    rng = np.random.default_rng(5)
    T, h, S, D = 6, 3, 2, 2
    params = random_lgssm(rng, S, D, T, time_varying=False)
    d = make(params, num_steps=T)
    y = rng.normal(size=(T, D))
    y[4, 0] = np.nan
    f = d.forecast(y, h)
    assert isinstance(f, LinearGaussianSSM) and f.event_shape == (h, D)
    _, _, my, cy, _ = dense_joint(params, T + h)
    obs = np.concatenate([~np.isnan(y).reshape(-1), np.zeros(h * D, bool)])
    fut = np.arange(T * D, (T + h) * D)
    gain = cy[np.ix_(fut, obs)] @ np.linalg.inv(cy[np.ix_(obs, obs)])
    mean = my[fut] + gain @ (y.reshape(-1)[~np.isnan(y.reshape(-1))] - my[obs])
    covariance = cy[np.ix_(fut, fut)] - gain @ cy[np.ix_(obs, fut)]
    close(f.mean.reshape(-1), mean)
    close(f.variance.reshape(-1), np.diag(covariance))
    future = rng.normal(size=(h, D))
    close(f.log_prob(future), multivariate_normal(mean, covariance).logpdf(future.reshape(-1)))


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_thin_transition_factor(parallel):
    """A ``(S, q)`` noise factor: the dense Gaussian's log-density, forecasts and draws."""
    rng = np.random.default_rng(8)
    T, h, S, D = 6, 3, 3, 1
    params = random_lgssm(rng, S, D, T, time_varying=False)
    params["transition_scale_tril"] = params["transition_scale_tril"][:, :1]  # (3, 1)
    d = make(params, num_steps=T, parallel=parallel, validate_args=True)
    y = rng.normal(size=(2, T, D))
    close(d.log_prob(y), [dense_log_marginal(params, yy) for yy in y])
    close(d.transition_cov, cov(params["transition_scale_tril"]))
    assert d.sample(jax.random.key(0), (4,)).shape == (4, T, D)
    # the forecast (built from Q itself) against the dense conditional, as for square factors
    _, _, my, cy, _ = dense_joint(params, T + h)
    past, fut = np.arange(T * D), np.arange(T * D, (T + h) * D)
    gain = cy[np.ix_(fut, past)] @ np.linalg.inv(cy[np.ix_(past, past)])
    close(d.forecast(y[0], h).mean.reshape(-1), my[fut] + gain @ (y[0].reshape(-1) - my[past]))
    above = np.zeros((S, 2))
    above[0, 1] = 1.0  # an entry above the diagonal: not lower-trapezoidal
    with pytest.raises(ValueError, match="transition_scale_tril"):
        make({**params, "transition_scale_tril": above}, num_steps=T, validate_args=True)


def test_forecast_time_varying_needs_future_parameters():
    rng = np.random.default_rng(6)
    T, h, S, D = 5, 2, 2, 1
    params = random_lgssm(rng, S, D, T, time_varying=True)
    d = make(params)
    y = rng.normal(size=(T, D))
    with pytest.raises(ValueError, match="transition_matrix is time-varying"):
        d.forecast(y, h)
    # the same model extended by h steps: its forecast equals conditioning the longer model
    longer = random_lgssm(rng, S, D, T + h, time_varying=True)
    for k in longer:
        if k.startswith(("transition", "emission")):
            lead = T - 1 if k.startswith("transition") else T
            longer[k][:lead] = params[k]
        else:
            longer[k] = params[k]
    future = {k: v[T - 1 :] if k.startswith("transition") else v[T:] for k, v in longer.items()}
    future = {k: v for k, v in future.items() if not k.startswith("initial")}
    f = d.forecast(y, h, **future)
    _, _, my, cy, _ = dense_joint(longer, T + h)
    o, fut = np.arange(T * D), np.arange(T * D, (T + h) * D)
    gain = cy[np.ix_(fut, o)] @ np.linalg.inv(cy[np.ix_(o, o)])
    close(f.mean.reshape(-1), my[fut] + gain @ (y.reshape(-1) - my[o]))


def test_jit_and_grad_through_log_prob():
    rng = np.random.default_rng(7)
    params = random_lgssm(rng, 2, 2, 5, time_varying=True)
    y = rng.normal(size=(5, 2))
    y[1, 1] = np.nan

    @jax.jit
    def f(p):
        return make(p).log_prob(y)

    p = {k: jnp.asarray(v) for k, v in params.items()}
    close(f(p), dense_log_marginal(params, y))
    g = jax.grad(f)(p)
    assert all(np.isfinite(v).all() for v in g.values())


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

S, D, T = 2, 3, 4
GOOD = dict(
    initial_mean=np.zeros(S),
    transition_matrix=np.eye(S),
    emission_matrix=np.ones((D, S)),
    initial_cov=np.eye(S),
    transition_cov=np.eye(S),
    emission_cov=np.eye(D),
    num_steps=T,
)


def build(**changes):
    kw = dict(GOOD)
    kw.update(changes)
    kw = {k: v for k, v in kw.items() if v is not None}
    return LinearGaussianSSM(
        kw.pop("initial_mean"), kw.pop("transition_matrix"), kw.pop("emission_matrix"), **kw
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(transition_matrix=np.ones((2, 3))), r"transition_matrix must be square.*\(2, 3\)"),
        (dict(transition_matrix=np.eye(3)), r"transition_matrix \(3, 3\).*S=2"),
        (dict(emission_matrix=np.ones((3, 5))), r"emission_matrix.*S=2.*\(3, 5\)"),
        (dict(transition_cov=np.eye(3)), r"transition_cov/_scale_tril.*\(3, 3\)"),
        (dict(emission_cov=np.eye(2)), r"emission_cov/_scale_tril.*\(2, 2\)"),
        (dict(initial_cov=np.eye(3)), r"initial_cov/_scale_tril.*\(3, 3\)"),
        (dict(transition_scale_tril=np.eye(2)), "exactly one of transition_cov and"),
        (dict(transition_cov=np.ones((2, 1))), r"transition_cov must be square.*\(2, 1\)"),
        (
            dict(transition_cov=None, transition_scale_tril=np.ones((2, 3))),
            r"transition_cov/_scale_tril.*\(2, q\) with 1 <= q <= 2.*\(2, 3\)",
        ),
        (dict(emission_cov=None), "exactly one of emission_cov and emission_scale_tril"),
        (
            dict(transition_matrix=np.ones((5, S, S))),
            r"T=4.*transition_matrix \(shape \(5, 2, 2\)\) implies T=6",
        ),
        (
            dict(emission_bias=np.zeros((3, D))),
            r"T=4.*emission_bias \(shape \(3, 3\)\) implies T=3",
        ),
        (dict(num_steps=None), "Pass num_steps"),
        (dict(obs_mask=np.ones((T, 2), bool)), r"obs_mask.*\(4, 2\)"),
        (dict(obs_mask=np.ones((2, T, D), bool), initial_mean=np.zeros((3, S))), r"broadcast"),
    ],
)
def test_bad_input_raises(changes, match):
    with pytest.raises(ValueError, match=match):
        build(**changes)


def test_bad_observations_raise():
    d = build()
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 3\).*\(4, 2\)"):
        d.log_prob(np.zeros((T, 2)))
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        d.log_prob(np.zeros((5, D)))
    batched = build(initial_mean=np.zeros((2, S)))
    with pytest.raises(ValueError, match="do not broadcast"):
        batched.log_prob(np.zeros((3, T, D)))


def test_validate_args_rejects_non_psd_covariances():
    with pytest.raises(ValueError, match="transition_cov"):
        build(transition_cov=np.array([[1.0, 2.0], [2.0, 1.0]]), validate_args=True)
    with pytest.raises(ValueError, match="emission_scale_tril"):
        build(emission_cov=None, emission_scale_tril=-np.eye(D), validate_args=True)
    build(validate_args=True)  # valid arguments pass


# ---------------------------------------------------------------------------------------------
# Inference smoke test
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_nuts_recovers_noise_scales():
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    true_level, true_obs, T = 0.5, 1.0, 200
    ssm = LinearGaussianSSM(
        jnp.zeros(1),
        jnp.eye(1),
        jnp.eye(1),
        initial_cov=jnp.eye(1) * 4.0,
        transition_scale_tril=true_level * jnp.eye(1),
        emission_scale_tril=true_obs * jnp.eye(1),
        num_steps=T,
    )
    y = ssm.sample(jax.random.PRNGKey(0))

    def model(y):
        level = numpyro.sample("sigma_level", dist.HalfNormal(2.0))
        obs = numpyro.sample("sigma_obs", dist.HalfNormal(2.0))
        numpyro.sample(
            "y",
            LinearGaussianSSM(
                jnp.zeros(1),
                jnp.eye(1),
                jnp.eye(1),
                initial_cov=jnp.eye(1) * 4.0,
                transition_scale_tril=level * jnp.eye(1),
                emission_scale_tril=obs * jnp.eye(1),
                num_steps=T,
            ),
            obs=y,
        )

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=300, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), y)
    samples = mcmc.get_samples()
    for name, truth in (("sigma_level", true_level), ("sigma_obs", true_obs)):
        draws = np.asarray(samples[name])
        lo, hi = np.quantile(draws, [0.005, 0.995])
        # the truth lies in the 99% posterior interval, and the posterior is informative
        assert lo < truth < hi, (name, lo, hi)
        assert hi - lo < 1.5 * truth, (name, lo, hi)

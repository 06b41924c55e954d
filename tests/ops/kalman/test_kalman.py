"""numpyro_ssm.ops Kalman filter / smoother / sampler against dense and library oracles (x64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import CASES, call, close, local_linear_trend, make_case
from oracles import (
    dense_filtered,
    dense_joint,
    dense_log_marginal,
    dense_posterior,
    random_lgssm,
    statsmodels_filter,
)

from numpyro_ssm.ops import (
    LGSSMParams,
    kalman_filter,
    kalman_log_marginal,
    kalman_posterior_sample,
    kalman_smoother,
    lgssm_sample,
)

jax.config.update("jax_enable_x64", True)

RTOL = 1e-8


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("case", CASES)
def test_filter_and_smoother_match_dense_gaussian(case, parallel):
    params, y, mask = make_case(0, **case)
    post = call(kalman_smoother, params, y, obs_mask=mask, parallel=parallel)
    close(post.log_marginal, dense_log_marginal(params, y, mask))
    close(post.log_likelihood_increments.sum(), post.log_marginal)
    fm, fc = dense_filtered(params, y, mask)
    close(post.filtered_means, fm)
    close(post.filtered_covariances, fc)
    sm, sc, sx = dense_posterior(params, y, mask)
    close(post.smoothed_means, sm)
    close(post.smoothed_covariances, sc)
    close(post.smoothed_cross_covariances, sx)
    # increments: log p(y_t | y_{1:t-1}) as differences of dense marginals
    T = y.shape[0]
    cum = [0.0]
    for t in range(1, T + 1):
        m = mask.copy()
        m[t:] = False
        cum.append(dense_log_marginal(params, y, m))
    close(post.log_likelihood_increments, np.diff(cum))
    for t in range(T):  # predicted: given y_{1:t-1}
        pm, pc, _ = dense_posterior(params, y, mask, upto=t)
        close(post.predicted_means[t], pm[t])
        close(post.predicted_covariances[t], pc[t])


@pytest.mark.parametrize("case", [CASES[2], CASES[3]])
def test_serial_equals_parallel(case):
    params, y, mask = make_case(1, T=33, **case)
    a = call(kalman_smoother, params, y, obs_mask=mask, parallel=False)
    b = call(kalman_smoother, params, y, obs_mask=mask, parallel=True)
    for name, x in a._asdict().items():
        close(getattr(b, name), x, rtol=1e-9)


@pytest.mark.parametrize("parallel", [False, True])
def test_smoothed_factors_are_square_roots_of_the_smoothed_covariances(parallel):
    from numpyro_ssm.ops.kalman.filtering import _filter
    from numpyro_ssm.ops.kalman.params import _inputs
    from numpyro_ssm.ops.kalman.smoothing import _smoothed_factors

    params, y, mask = make_case(7, T=6)
    post = call(kalman_smoother, params, y, obs_mask=mask, parallel=parallel)
    model, yy, observed = _inputs(LGSSMParams(**params), y, mask, "test")
    _, out = _smoothed_factors(model, _filter(model, yy, observed, parallel), parallel)
    close(out.g, post.smoothed_means)
    close(out.L @ np.swapaxes(out.L, -1, -2), post.smoothed_covariances)
    assert np.allclose(np.triu(out.L, 1), 0.0)


def test_filter_fields_and_shapes():
    params, y, mask = make_case(2, S=3, D=2, T=5)
    post = call(kalman_filter, params, y, obs_mask=mask)
    assert post.filtered_means.shape == (5, 3)
    assert post.filtered_covariances.shape == (5, 3, 3)
    assert post.predicted_covariances.shape == (5, 3, 3)
    assert post.log_likelihood_increments.shape == (5,)
    assert post.smoothed_means is None
    post = call(kalman_smoother, params, y, obs_mask=mask)
    assert post.smoothed_cross_covariances.shape == (4, 3, 3)
    # a fully missing step contributes exactly 0 and is a pure prediction
    assert float(post.log_likelihood_increments[mask.sum(1) == 0].sum()) == 0.0


def test_single_step_and_vmap():
    params, y, _ = make_case(3, T=1, time_varying=False, missing=None)
    for parallel in (False, True):
        post = call(kalman_smoother, params, y, parallel=parallel)
        close(post.log_marginal, dense_log_marginal(params, y))
        close(post.smoothed_means, post.filtered_means)
    # ops are vmappable over a batch of sequences
    params, _, _ = make_case(3, T=6, time_varying=False, missing=None)
    ys = np.random.default_rng(0).normal(size=(4, 6, 2))
    batched = jax.vmap(lambda yy: call(kalman_filter, params, yy).log_marginal)(ys)
    close(batched, [dense_log_marginal(params, yy) for yy in ys])


def test_state_dim_above_16_takes_single_lapack_calls():
    """S = 18: each step's stacks are over 16 rows, so tria and the solves make one LAPACK call
    each (the batched jnp loop under vmap). Checked against the dense Gaussian, for
    a vmapped batch of models, and with gradients (serial against parallel, which loops)."""
    params, y, mask = make_case(11, S=18, D=3, T=4, missing="entries")
    post = call(kalman_smoother, params, y, obs_mask=mask)
    close(post.log_marginal, dense_log_marginal(params, y, mask))
    sm, sc, _ = dense_posterior(params, y, mask)
    close(post.smoothed_means, sm)
    close(post.smoothed_covariances, sc)
    ys = np.stack([np.nan_to_num(y), np.nan_to_num(y)[::-1]])
    batched = jax.vmap(lambda yy: call(kalman_log_marginal, params, yy, obs_mask=mask))(ys)
    close(batched, [dense_log_marginal(params, yy, mask) for yy in ys])
    keys = ("transition_matrix", "transition_scale_tril", "emission_scale_tril")

    def f(vals, parallel):
        return call(
            kalman_log_marginal,
            params | dict(zip(keys, vals, strict=True)),
            y,
            obs_mask=mask,
            parallel=parallel,
        )

    vals = [jnp.asarray(params[k]) for k in keys]
    serial, parallel = (jax.grad(f)(vals, p) for p in (False, True))
    for a, b in zip(serial, parallel, strict=True):
        close(a, b, rtol=1e-8)


def test_mask_and_nan_are_equivalent_and_gradients_finite():
    params, y, mask = make_case(4, missing="entries")
    y_nan = np.where(mask, y, np.nan)
    a = call(kalman_filter, params, y, obs_mask=mask).log_marginal
    b = call(kalman_filter, params, y_nan).log_marginal
    close(a, b)

    def loss(F, yy):
        p = dict(params, transition_matrix=F)
        return (
            call(kalman_smoother, p, yy).smoothed_means.sum()
            + call(kalman_filter, p, yy).log_marginal
        )

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(params["transition_matrix"]), y_nan)
    assert np.isfinite(g[0]).all()
    assert np.all(np.asarray(g[1])[np.isnan(y_nan)] == 0)


# ---------------------------------------------------------------------------------------------
# Library oracles
# ---------------------------------------------------------------------------------------------


def _homogeneous(seed, S=3, D=2, T=12):
    rng = np.random.default_rng(seed)
    params = random_lgssm(rng, S, D, T, time_varying=False)
    y = rng.normal(size=(T, D))
    return params, y


def test_against_tfp():
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    params, y = _homogeneous(5)
    T = y.shape[0]
    mask = np.zeros(T, bool)  # TFP: True = missing, whole steps
    mask[[3, 7]] = True
    cov = lambda L: L @ L.T  # noqa: E731
    # TFP: z_0 ~ initial_state_prior is the state of the FIRST observation; transitions act
    # between consecutive steps, as ours (T-1 transitions). Biases enter through the noise means.
    tfp_model = tfd.LinearGaussianStateSpaceModel(
        num_timesteps=T,
        transition_matrix=params["transition_matrix"],
        transition_noise=tfd.MultivariateNormalTriL(
            params["transition_bias"], params["transition_scale_tril"]
        ),
        observation_matrix=params["emission_matrix"],
        observation_noise=tfd.MultivariateNormalFullCovariance(
            params["emission_bias"], cov(params["emission_scale_tril"])
        ),
        initial_state_prior=tfd.MultivariateNormalTriL(
            params["initial_mean"], params["initial_scale_tril"]
        ),
    )

    @jax.jit
    def reference(y, mask):
        return tfp_model.log_prob(y, mask=mask), tfp_model.posterior_marginals(y, mask=mask)

    lp, (means, covs) = reference(y, np.zeros(T, bool))
    ours = call(kalman_smoother, params, y, obs_mask=np.ones((T, 1), bool))
    close(ours.log_marginal, lp)
    close(ours.smoothed_means, means)
    close(ours.smoothed_covariances, covs)
    masked = call(kalman_smoother, params, y, obs_mask=~mask[:, None])
    lp, (means, covs) = reference(y, mask)
    close(masked.log_marginal, lp)
    close(masked.smoothed_means, means)
    close(masked.smoothed_covariances, covs)


def test_against_statsmodels_with_nan():
    params, y = _homogeneous(6, S=3, D=2, T=15)
    y[4, 1] = np.nan
    y[9] = np.nan
    res = statsmodels_filter(params, y).filter()
    ours = call(kalman_filter, params, y)
    close(ours.log_likelihood_increments, res.llf_obs)
    close(ours.filtered_means, res.filtered_state.T)
    close(ours.filtered_covariances, np.moveaxis(res.filtered_state_cov, -1, 0))
    close(ours.predicted_means, res.predicted_state.T[:-1])


def test_against_dynamax():
    from dynamax.linear_gaussian_ssm import (
        ParamsLGSSM,
        ParamsLGSSMDynamics,
        ParamsLGSSMEmissions,
        ParamsLGSSMInitial,
        lgssm_smoother,
    )

    params, y = _homogeneous(7, S=3, D=2, T=10)
    S = 3
    cov = lambda L: jnp.asarray(L @ L.T)  # noqa: E731
    # dynamax: z_1 ~ N(initial.mean, initial.cov), z_{t+1} = F z_t + B u_t + b, same timing.
    dx = ParamsLGSSM(
        initial=ParamsLGSSMInitial(
            mean=jnp.asarray(params["initial_mean"]), cov=cov(params["initial_scale_tril"])
        ),
        dynamics=ParamsLGSSMDynamics(
            weights=jnp.asarray(params["transition_matrix"]),
            bias=jnp.asarray(params["transition_bias"]),
            input_weights=jnp.zeros((S, 0)),
            cov=cov(params["transition_scale_tril"]),
        ),
        emissions=ParamsLGSSMEmissions(
            weights=jnp.asarray(params["emission_matrix"]),
            bias=jnp.asarray(params["emission_bias"]),
            input_weights=jnp.zeros((2, 0)),
            cov=cov(params["emission_scale_tril"]),
        ),
    )
    ref = jax.jit(lgssm_smoother)(dx, jnp.asarray(y))
    ours = call(kalman_smoother, params, y)
    # dynamax runs the covariance form (P - K S K^T); it differs from the dense oracle by
    # ~1e-10 absolute, hence the absolute floor next to rtol=1e-8.
    tol = dict(rtol=1e-8, atol=1e-9)
    close(ours.log_marginal, ref.marginal_loglik, **tol)
    close(ours.filtered_means, ref.filtered_means, **tol)
    close(ours.filtered_covariances, ref.filtered_covariances, **tol)
    close(ours.smoothed_means, ref.smoothed_means, **tol)
    close(ours.smoothed_covariances, ref.smoothed_covariances, **tol)


# ---------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_ffbs_moments_match_smoother(parallel):
    params, y, mask = make_case(8, S=2, D=2, T=6, missing="entries")
    n = 20000
    z = call(
        kalman_posterior_sample,
        params,
        y,
        jax.random.PRNGKey(0),
        obs_mask=mask,
        sample_shape=(n,),
        parallel=parallel,
    )
    assert z.shape == (n, 6, 2)
    sm, sc, sx = dense_posterior(params, y, mask)
    z = np.asarray(z)
    # means: standard error sqrt(var / n); 5 standard errors
    se = np.sqrt(np.einsum("tii->ti", sc) / n)
    assert np.all(np.abs(z.mean(0) - sm) < 5 * se)
    # covariances incl. lag-one cross terms: SE of a sample covariance is
    # sqrt((s_ii s_jj + s_ij^2) / n) for Gaussians
    flat = z.reshape(n, -1)
    emp = np.cov(flat.T)
    # the exact joint over adjacent states
    T, S = 6, 2
    for t in range(T - 1):
        blk = slice(t * S, (t + 2) * S)
        exact = np.block([[sc[t], sx[t]], [sx[t].T, sc[t + 1]]])
        d = np.sqrt(np.diag(exact))
        se = np.sqrt((np.outer(d, d) ** 2 + exact**2) / n)
        assert np.all(np.abs(emp[blk, blk] - exact) < 5 * se)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_prior_sample_moments(parallel):
    rng = np.random.default_rng(9)
    T, n = 5, 20000
    params = random_lgssm(rng, 2, 2, T, time_varying=True)
    z, y = lgssm_sample(
        jax.random.PRNGKey(1),
        LGSSMParams(**params),
        num_steps=T,
        sample_shape=(n,),
        parallel=parallel,
    )
    assert z.shape == (n, T, 2) and y.shape == (n, T, 2)
    c, cz, my, cy, _ = dense_joint(params, T)
    flat = np.asarray(y).reshape(n, -1)
    se = np.sqrt(np.diag(cy) / n)
    assert np.all(np.abs(flat.mean(0) - my) < 5 * se)
    d = np.sqrt(np.diag(cy))
    se = np.sqrt((np.outer(d, d) ** 2 + cy**2) / n)
    assert np.all(np.abs(np.cov(flat.T) - cy) < 5 * se)


# ---------------------------------------------------------------------------------------------
# Gradients and numerics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_gradients_match_finite_differences(parallel):
    from jax.test_util import check_grads

    params, y, mask = make_case(10, S=3, D=2, T=6, missing="entries")
    keys = list(LGSSMParams._fields)

    def f(*vals):
        p = dict(zip(keys, vals, strict=True))
        post = call(kalman_smoother, p, y, obs_mask=mask, parallel=parallel)
        return post.log_marginal + post.smoothed_means.sum() + post.smoothed_covariances.sum()

    check_grads(f, [jnp.asarray(params[k]) for k in keys], order=1, modes=["rev"], eps=1e-5)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_rank_deficient_process_noise(parallel):
    """Local linear trend with exactly zero level noise: Q = diag(0, s²)."""
    T = 25
    params = local_linear_trend(0.0, 0.3, 0.5, T)
    y = np.cumsum(np.random.default_rng(11).normal(size=(T, 1)), axis=0)
    y[7] = np.nan
    post = call(kalman_smoother, params, y, parallel=parallel)
    close(post.log_marginal, dense_log_marginal(params, y))
    sm, sc, _ = dense_posterior(params, y)
    close(post.smoothed_means, sm)
    close(post.smoothed_covariances, sc, atol=1e-9)

    if parallel:
        # the log-marginal's gradient at a singular Q (both schedules) is checked against the
        # dense Gaussian in test_kalman_gradient.py; autodiff through the sequential
        # smoother's scan is checked here, once
        return

    def f(log_sd):
        p = dict(params, transition_scale_tril=jnp.diag(jnp.exp(log_sd) * jnp.array([0.0, 1.0])))
        return call(kalman_smoother, p, y).log_marginal

    g = jax.grad(f)(jnp.log(0.3))
    h = 1e-6
    fd = (f(jnp.log(0.3) + h) - f(jnp.log(0.3) - h)) / (2 * h)
    close(g, fd, rtol=1e-6)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_diffuse_like_initial_covariance(parallel):
    T = 30
    params = local_linear_trend(0.2, 0.1, 0.5, T, initial_sd=(np.sqrt(1e7), 0.1))
    y = np.cumsum(np.random.default_rng(12).normal(size=(T, 1)), axis=0) + 100.0
    post = call(kalman_smoother, params, y, parallel=parallel)
    close(post.log_marginal, dense_log_marginal(params, y), rtol=1e-8)
    sm, sc, _ = dense_posterior(params, y)
    # the dense oracle inverts a covariance with entries ~1e7 (condition ~1e9): it is itself
    # only accurate to ~1e-9 absolute on O(1) quantities
    close(post.smoothed_means, sm, rtol=1e-8, atol=1e-8)
    close(post.smoothed_covariances, sc, rtol=1e-8, atol=1e-8)
    g = jax.grad(
        lambda m: call(kalman_log_marginal, dict(params, initial_mean=m), y, parallel=parallel)
    )(jnp.zeros(2))
    assert np.isfinite(g).all()


# Both schedules. The parallel one used to wedge XLA's CPU runtime here (batched LAPACK calls
# inside the associative scan waiting on the thread pool they occupied); the scans now run
# LAPACK-free (numpyro_ssm.ops.linalg), and pytest-timeout turns any regression into a failure.
@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_float32_long_sequence_is_finite(parallel, num_steps=100_000):
    """State dim 8, float32: finite log-likelihood and gradients on long sequences."""
    S, D = 8, 4
    rng = np.random.default_rng(13)
    params = {
        k: jnp.asarray(v, jnp.float32)
        for k, v in random_lgssm(rng, S, D, 2, time_varying=False).items()
    }
    _, y = lgssm_sample(jax.random.PRNGKey(0), LGSSMParams(**params), num_steps=num_steps)
    assert y.dtype == jnp.float32

    def log_marginal(F, chol_R, y):
        p = dict(params, transition_matrix=F, emission_scale_tril=chol_R)
        return call(kalman_log_marginal, p, y, parallel=parallel)

    F, chol_R = params["transition_matrix"], params["emission_scale_tril"]
    val, grads = jax.jit(jax.value_and_grad(log_marginal, argnums=(0, 1, 2)))(F, chol_R, y)
    assert val.dtype == jnp.float32 and np.isfinite(val)
    assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in grads)
    # and accurate: float64 on the same data
    p64 = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
    y64 = jnp.asarray(y, jnp.float64)
    ref, ref_grads = jax.value_and_grad(
        lambda F: call(kalman_log_marginal, dict(p64, transition_matrix=F), y64), argnums=0
    )(p64["transition_matrix"])
    close(val, ref, rtol=1e-3)
    close(grads[0], ref_grads, rtol=1e-2, atol=1e-2 * np.abs(ref_grads).max())


def test_bad_shapes_raise():
    params, y, _ = make_case(14, time_varying=False, missing=None)
    with pytest.raises(ValueError, match="transition_matrix"):
        call(kalman_filter, dict(params, transition_matrix=np.zeros((5, 3, 3))), y)
    with pytest.raises(ValueError, match="emission_matrix"):
        call(kalman_filter, dict(params, emission_matrix=np.zeros((2, 4))), y)
    with pytest.raises(ValueError, match="observations"):
        call(kalman_filter, params, y[:, :1])
    with pytest.raises(ValueError, match="obs_mask"):
        call(kalman_filter, params, y, obs_mask=np.ones((3, 2), bool))

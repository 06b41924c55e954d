"""The particle filter against exact likelihoods: Kalman, the HMM forward algorithm, a grid.

Monte Carlo checks, all with fixed seeds. ``Ẑ / Z`` is averaged over ``S`` independent runs
and must be within ``5 SE`` of 1, ``SE = sd(Ẑ / Z) / sqrt(S)``. With the particle counts used
here ``sd(log Ẑ)`` is 0.1 to 0.3, so ``5 SE`` is a few percent; the bugs these tests exist
for (a missing ``1 / N``, weights not carried across a skipped resampling, an increment
computed from unnormalized weights, a proposal density left out of the weights) move ``Ẑ`` by
a factor ``N`` or ``e^T``, or by tens of percent. Averaging ``log Ẑ`` instead would not pass:
the tests also check that its mean sits ``var / 2`` below ``log Z`` (Jensen), which the
tolerance resolves.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import grid_filter_1d
from particle_cases import (
    growth_data,
    growth_grid_densities,
    growth_model,
    hmm_case,
    hmm_model,
    lgssm_case,
    lgssm_model,
    lgssm_optimal_proposal,
)

from numpyro_ssm.ops import hmm_filter, kalman_filter
from numpyro_ssm.ops.particle import draw_particle_noise, particle_filter

SEEDS = 400


def runs(fn, num_seeds=SEEDS, seed=0):
    """``jax.jit(vmap(fn))`` over ``num_seeds`` keys."""
    keys = jax.random.split(jax.random.key(seed), num_seeds)
    return jax.jit(jax.vmap(fn))(keys)


def assert_unbiased(log_z_hat, log_z):
    """``E[Ẑ / Z] = 1`` within 5 standard errors; returns the ratios."""
    ratio = np.exp(np.asarray(log_z_hat) - log_z)
    standard_error = ratio.std() / np.sqrt(ratio.size)
    assert abs(ratio.mean() - 1.0) < 5 * standard_error, (ratio.mean(), standard_error)
    assert 0 < standard_error < 0.05  # the check has power
    return ratio


@pytest.fixture(scope="module")
def lgssm():
    params, y = lgssm_case(0, T=20)
    kf = kalman_filter(params, y)
    return params, y, float(kf.log_marginal), np.asarray(kf.filtered_means[:, 0])


LGSSM_VARIANTS = {
    "bootstrap-systematic-adaptive": dict(resampling="systematic", ess_threshold=0.5),
    "bootstrap-multinomial": dict(resampling="multinomial", ess_threshold=1.0),
    "bootstrap-stratified": dict(resampling="stratified", ess_threshold=1.0),
    "bootstrap-residual-adaptive": dict(resampling="residual", ess_threshold=0.7),
    "guided-auxiliary": dict(resampling="stratified", guided=True),
}


@pytest.mark.parametrize("variant", list(LGSSM_VARIANTS))
def test_unbiased_on_linear_gaussian(lgssm, variant):
    params, y, log_z, filtered_means = lgssm
    options = dict(LGSSM_VARIANTS[variant])
    if options.pop("guided", False):
        proposal, lookahead = lgssm_optimal_proposal()
        options.update(proposal=proposal, auxiliary_log_weight=lookahead)

    guided = variant == "guided-auxiliary"

    def one(key):
        res = particle_filter(key, lgssm_model(), params, y, 200, history=False, **options)
        if not guided:
            return res.log_marginal, res.filtered_means[:, 0], res.log_marginal
        bootstrap = particle_filter(key, lgssm_model(), params, y, 200, history=False)
        return res.log_marginal, res.filtered_means[:, 0], bootstrap.log_marginal

    log_z_hat, means, bootstrap = runs(one)
    assert_unbiased(log_z_hat, log_z)
    # Jensen: log Ẑ is biased low by about half its variance
    var = float(np.var(log_z_hat))
    assert np.mean(log_z_hat) < log_z
    assert abs(np.mean(log_z_hat) - (log_z - var / 2)) < 5 * np.sqrt(var / SEEDS) + var / 2
    # filtered means: unbiased up to O(1 / N), which is below 5 SE here
    error = np.abs(np.mean(means, 0) - filtered_means)
    assert (error < 5 * np.std(means, 0) / np.sqrt(SEEDS) + 2e-3).all(), error.max()
    if guided:  # fully adapted: far less variance than bootstrap
        assert var < np.var(bootstrap) / 2


def test_log_variance_shrinks_as_one_over_n(lgssm):
    params, y, _, _ = lgssm

    def both(key):
        small = particle_filter(key, lgssm_model(), params, y, 50, history=False)
        large = particle_filter(key, lgssm_model(), params, y, 200, history=False)
        return small.log_marginal, large.log_marginal

    small, large = runs(both, seed=1)
    ratio = np.var(small) / np.var(large)
    # 4 in theory; each variance has a relative standard error of about sqrt(2 / 400) = 7 %
    assert 4 / 1.5 < ratio < 4 * 1.5, ratio


def test_unbiased_on_discrete_hmm():
    params, y = hmm_case(0)
    exact = hmm_filter(
        params[0], params[1], jax.scipy.stats.norm.logpdf(y[:, None], params[2], params[3])
    )

    def one(key):
        res = particle_filter(key, hmm_model(), params, y, 100, resampling="residual")
        counts = jax.vmap(lambda x, lw: jnp.zeros(3).at[x].add(jnp.exp(lw)))(
            res.particles, res.log_weights
        )
        return res.log_marginal, counts

    log_z_hat, probs = runs(one)
    assert_unbiased(log_z_hat, float(exact.log_marginal))
    error = np.abs(probs.mean(0) - np.asarray(exact.filtered_probs))
    assert (error < 5 * probs.std(0) / np.sqrt(SEEDS) + 2e-3).all(), error.max()


def test_unbiased_on_nonlinear_model_against_a_grid():
    y = growth_data(3, T=12)
    grid = np.linspace(-30.0, 30.0, 1201)
    log_z, densities = grid_filter_1d(np.asarray(y), *growth_grid_densities(), grid)
    grid_means = densities @ grid * (grid[1] - grid[0])

    def one(key):
        res = particle_filter(key, growth_model(), None, y, 400, history=False)
        return res.log_marginal, res.filtered_means

    log_z_hat, means = runs(one)
    assert_unbiased(log_z_hat, log_z)
    error = np.abs(means.mean(0) - grid_means)
    assert (error < 5 * means.std(0) / np.sqrt(SEEDS) + 1e-2).all(), error.max()


def test_missing_steps_contribute_nothing(lgssm):
    params, y, _, _ = lgssm
    mask = np.ones(y.shape[0], bool)
    mask[[3, 4, 11, 19]] = False
    y_nan = np.asarray(y).copy()
    y_nan[~mask] = np.nan
    log_z = float(kalman_filter(params, y, obs_mask=mask[:, None]).log_marginal)
    proposal, lookahead = lgssm_optimal_proposal()

    def one(key):
        masked = particle_filter(key, lgssm_model(), params, y, 200, obs_mask=jnp.asarray(mask))
        nan = particle_filter(key, lgssm_model(), params, jnp.asarray(y_nan), 200)
        guided = particle_filter(
            key,
            lgssm_model(),
            params,
            jnp.asarray(y_nan),
            200,
            proposal=proposal,
            auxiliary_log_weight=lookahead,
        )
        return masked, nan.log_marginal, guided.log_likelihood_increments

    masked, nan_log_z, guided = runs(one, num_seeds=200)
    assert (np.asarray(masked.log_likelihood_increments)[:, ~mask] == 0).all()
    assert (np.asarray(guided)[:, ~mask] == 0).all()
    assert not np.asarray(masked.resampled)[:, ~mask].any()
    np.testing.assert_array_equal(masked.log_marginal, nan_log_z)
    assert_unbiased(masked.log_marginal, log_z)
    assert_unbiased(guided.sum(-1), log_z)


def test_padding_and_vmap_over_sequences(lgssm):
    params, y, _, _ = lgssm
    short = y[:13]
    padded = jnp.concatenate([short, jnp.zeros((7, 1))])
    mask = jnp.arange(20) < 13
    key = jax.random.key(5)
    filt = jax.jit(
        functools.partial(particle_filter, model=lgssm_model(), num_particles=64),
        static_argnames=(),
    )
    alone = filt(key, params=params, observations=short)
    in_pad = filt(key, params=params, observations=padded, obs_mask=mask)
    np.testing.assert_array_equal(alone.log_marginal, in_pad.log_marginal)
    # two programs (13 and 20 steps): XLA may round an operation differently in each (1 ulp)
    np.testing.assert_allclose(alone.particles, in_pad.particles[:13], rtol=1e-13, atol=1e-15)
    batch = jax.vmap(lambda k, yy, m: filt(k, params=params, observations=yy, obs_mask=m))(
        jnp.stack([key, key]), jnp.stack([padded, y]), jnp.stack([mask, jnp.ones(20, bool)])
    )
    np.testing.assert_allclose(batch.log_marginal[0], alone.log_marginal, rtol=1e-12)
    full = filt(key, params=params, observations=y)
    np.testing.assert_allclose(batch.log_marginal[1], full.log_marginal, rtol=1e-12)


def test_correlated_noise_is_unbiased_and_continuous(lgssm):
    params, y, log_z, _ = lgssm

    def one(key):
        noise = draw_particle_noise(key, y.shape[0], 200, (1,))
        moved = jax.tree.map(
            lambda u, e: 0.99 * u + np.sqrt(1 - 0.99**2) * e,
            noise,
            draw_particle_noise(jax.random.fold_in(key, 1), y.shape[0], 200, (1,)),
        )
        fresh = draw_particle_noise(jax.random.fold_in(key, 2), y.shape[0], 200, (1,))
        run = functools.partial(
            particle_filter,
            model=lgssm_model(),
            params=params,
            observations=y,
            num_particles=200,
            history=False,
        )
        return run(noise).log_marginal, run(moved).log_marginal, run(fresh).log_marginal

    first, moved, fresh = runs(one, num_seeds=200)
    assert_unbiased(first, log_z)
    # sorted resampling keeps log Ẑ continuous in the noise: a small move barely changes it
    assert np.corrcoef(first, moved)[0, 1] > 0.8
    assert abs(np.corrcoef(first, fresh)[0, 1]) < 0.3


def test_single_step_and_float32():
    params, y = lgssm_case(1, T=1, dtype=np.float32)
    res = particle_filter(jax.random.key(0), lgssm_model(), params, y, 16)
    assert res.log_marginal.dtype == jnp.float32 and res.particles.shape == (1, 16, 1)
    assert res.final_log_weights.dtype == jnp.float32
    assert np.isfinite(res.log_marginal)


def test_score_gradient_matches_kalman(lgssm):
    params, y, _, _ = lgssm
    small = params
    exact = jax.grad(lambda p: kalman_filter(p, y[:10]).log_marginal)(small)

    def one(key):
        return jax.grad(
            lambda p: (
                particle_filter(
                    key, lgssm_model(), p, y[:10], 200, history=False, ess_threshold=1.0
                ).log_marginal
            )
        )(small)

    grads = runs(one, num_seeds=200)
    for name in ("transition_matrix", "emission_matrix", "emission_scale_tril"):
        estimate, target = np.asarray(getattr(grads, name)), np.asarray(getattr(exact, name))
        error = np.abs(estimate.mean(0) - target)
        # the score estimate is biased by O(1 / N); 5 SE plus 2 % covers it
        assert (error < 5 * estimate.std(0) / np.sqrt(200) + 0.02 * np.abs(target)).all(), name


def test_soft_resampling_value_and_pathwise_gradient(lgssm):
    params, y, log_z, _ = lgssm
    y = y[:6]
    log_z = float(kalman_filter(params, y).log_marginal)
    exact = jax.grad(lambda p: kalman_filter(p, y).log_marginal)(params).transition_matrix

    def one(key):
        def z_hat(p, mix):
            res = particle_filter(
                key,
                lgssm_model(),
                p,
                y,
                200,
                history=False,
                gradient="soft",
                soft_resampling_mix=mix,
                ess_threshold=1.0,
            )
            return res.log_marginal

        value, grad = jax.value_and_grad(z_hat)(params, 0.5)
        # mix 0: importance sampling with reparameterized particles; the gradient of Ẑ itself
        # is unbiased: E[Ẑ ∇ log Ẑ] / Z = ∇ log Z
        log_is, grad_is = jax.value_and_grad(z_hat)(params, 0.0)
        return value, grad.transition_matrix, log_is, grad_is.transition_matrix

    value, grad, log_is, grad_is = runs(one, num_seeds=400)
    assert_unbiased(value, log_z)
    assert np.isfinite(grad).all()
    weighted = np.exp(log_is - log_z)[:, None, None] * grad_is
    error = np.abs(weighted.mean(0) - exact)
    assert (error < 5 * weighted.std(0) / np.sqrt(400)).all(), error


def test_finite_float32_gradient_at_100k_steps():
    params, _ = lgssm_case(2, T=2, dtype=np.float32)
    y = jnp.asarray(np.random.default_rng(0).normal(size=(100_000, 1)), jnp.float32)
    grad = jax.jit(
        jax.grad(
            lambda p: (
                particle_filter(
                    jax.random.key(0), lgssm_model(), p, y, 8, history=False
                ).log_marginal
            )
        )
    )(params)
    for leaf in jax.tree.leaves(grad):
        assert leaf.dtype == jnp.float32 and np.isfinite(leaf).all()


def test_grid_oracle_is_exact_on_a_linear_model():
    """The grid oracle itself, where the Kalman filter gives the exact answer."""
    from scipy.stats import norm as sp_norm

    params, y = lgssm_case(0, T=10)
    m0, F, H = (
        float(np.ravel(a)[0])
        for a in (params.initial_mean, params.transition_matrix, params.emission_matrix)
    )
    s0, q, r = (
        float(np.ravel(a)[0])
        for a in (
            params.initial_scale_tril,
            params.transition_scale_tril,
            params.emission_scale_tril,
        )
    )
    y_nan = np.asarray(y)[:, 0].copy()
    y_nan[4] = np.nan
    log_z, densities = grid_filter_1d(
        y_nan,
        lambda z: sp_norm.logpdf(z, m0, s0),
        lambda z_next, z, t: sp_norm.logpdf(z_next, F * z, q),
        lambda y_t, z, t: sp_norm.logpdf(y_t, H * z, r),
        np.linspace(-15.0, 15.0, 1201),
    )
    exact = kalman_filter(params, jnp.asarray(y_nan)[:, None])
    np.testing.assert_allclose(log_z, float(exact.log_marginal), rtol=1e-10)
    grid = np.linspace(-15.0, 15.0, 1201)
    np.testing.assert_allclose(
        densities @ grid * (grid[1] - grid[0]), exact.filtered_means[:, 0], atol=1e-10
    )

"""Particle smoothers against the Kalman (RTS) smoother and HMM forward-backward.

Monte Carlo checks with fixed seeds: averages over ``S`` independent filter runs must be within
5 standard errors (plus an allowance of ``3e-3`` for the ``O(1 / N)`` bias of self-normalized
weights at ``N = 200``, measured at about 1e-3 here). A smoother that returned the filtering
distribution instead would miss by the filter-to-smoother shift, over 0.1 at most steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from particle_cases import hmm_case, hmm_model, lgssm_case, lgssm_model

from numpyro_ssm.ops import hmm_smoother, kalman_smoother
from numpyro_ssm.ops.particle import (
    ancestral_paths,
    particle_backward_sample,
    particle_filter,
    particle_smoother,
)

SEEDS, N, PATHS = 60, 200, 50


@pytest.fixture(scope="module")
def lgssm_runs():
    params, y = lgssm_case(4, T=10)
    exact = kalman_smoother(params, y)

    @jax.jit
    @jax.vmap
    def one(key):
        key_filter, key_paths = jax.random.split(key)
        res = particle_filter(key_filter, lgssm_model(), params, y, N)
        smoothed = particle_smoother(res, lgssm_model(), params)
        paths = particle_backward_sample(key_paths, res, lgssm_model(), params, PATHS)
        return res, smoothed, paths, ancestral_paths(res)

    return exact, one(jax.random.split(jax.random.key(0), SEEDS))


def within(estimates, target, slack=3e-3):
    estimates, target = np.asarray(estimates), np.asarray(target)
    error = np.abs(estimates.mean(0) - target)
    bound = 5 * estimates.std(0) / np.sqrt(estimates.shape[0]) + slack
    assert (error < bound).all(), (error.max(), bound.min())


def test_marginal_smoother_matches_rts(lgssm_runs):
    exact, (res, smoothed, _, _) = lgssm_runs
    within(smoothed.smoothed_means[..., 0], exact.smoothed_means[:, 0])
    within(smoothed.smoothed_variances[..., 0], exact.smoothed_covariances[:, 0, 0])
    # the last step's smoothed weights are the filtering weights
    np.testing.assert_allclose(smoothed.smoothed_log_weights[:, -1], res.log_weights[:, -1])
    gap = np.abs(np.asarray(exact.smoothed_means - exact.filtered_means)).max()
    assert gap > 0.1  # the check above tells smoothing from filtering


def test_backward_simulation_matches_rts_jointly(lgssm_runs):
    exact, (_, _, paths, _) = lgssm_runs
    paths = np.asarray(paths)[..., 0]  # (S, M, T)
    within(paths.mean(1), exact.smoothed_means[:, 0])
    # lag-one covariances: a joint property of the paths, not of the marginals
    centred = paths - paths.mean((0, 1))
    cross = (centred[..., :-1] * centred[..., 1:]).mean(1)  # per seed, (S, T - 1)
    within(cross, exact.smoothed_cross_covariances[:, 0, 0], slack=1e-2)


def test_ancestral_paths_follow_the_ancestors(lgssm_runs):
    _, (res, _, _, paths) = lgssm_runs
    res = jax.tree.map(lambda x: np.asarray(x)[0], res)
    paths = np.asarray(paths)[0]
    # XLA may recompute a particle inside the fusion that gathers the paths and round one
    # operation differently there (1 ulp); a wrong ancestor would pick another particle
    same = functools.partial(np.testing.assert_allclose, rtol=1e-13, atol=1e-15)
    same(paths[:, -1], res.final_particles)
    index = np.arange(N)
    for t in range(res.particles.shape[0] - 1, -1, -1):
        same(paths[:, t], res.particles[t][index])
        index = res.ancestors[t][index]


def test_backward_simulation_on_discrete_hmm():
    params, y = hmm_case(1, T=10)
    log_lik = jax.scipy.stats.norm.logpdf(y[:, None], params[2], params[3])
    exact = hmm_smoother(params[0], params[1], log_lik).smoothed_probs

    @jax.jit
    @jax.vmap
    def one(key):
        res = particle_filter(key, hmm_model(), params, y, N)
        paths = particle_backward_sample(key, res, hmm_model(), params, PATHS)
        return jax.nn.one_hot(paths, 3).mean(0)  # (T, K)

    within(one(jax.random.split(jax.random.key(1), SEEDS)), exact)


def test_smoothers_need_history():
    params, y = lgssm_case(4, T=3)
    res = particle_filter(jax.random.key(0), lgssm_model(), params, y, 4, history=False)
    for call in (
        lambda: particle_smoother(res, lgssm_model(), params),
        lambda: particle_backward_sample(jax.random.key(0), res, lgssm_model(), params, 2),
        lambda: ancestral_paths(res),
    ):
        with pytest.raises(ValueError, match="history=True"):
            call()
    assert jnp.shape(res.final_particles) == (4, 1)

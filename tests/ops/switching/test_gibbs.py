"""The Gibbs sweeps: the SLDS blocks against path enumeration, the ARHMM sweep by a Geweke test."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import slds_brute_force
from scipy.stats import chisquare

from numpyro_ssm.ops.switching import (
    ARHMMGibbsState,
    MNIWParams,
    SLDSEmission,
    SLDSGibbsState,
    TransitionPrior,
    ar_params,
    ar_prior,
    arhmm_gibbs_step,
    init_arhmm_gibbs,
    init_slds_gibbs,
    resample_discrete,
    resample_latents,
    sample_mniw,
    slds_gibbs_step,
)
from numpyro_ssm.ops.switching.gibbs import _latent_lags

# A tiny SLDS whose K^T discrete paths can be enumerated, each an exact Gaussian model.
K, D, L, DY, T = 2, 1, 2, 2, 4
A = np.array([[[0.9, -0.2]], [[-0.5, 0.3]]])
B = np.array([[0.5], [-0.5]])
Q = np.array([[[0.2]], [[0.5]]])
C = np.array([[1.0], [0.5]])
DBIAS = np.array([0.1, -0.2])
R = np.eye(DY) * 0.3
M0, P0 = np.zeros(L * D), np.eye(L * D)
PI = np.array([0.6, 0.4])
P = np.array([[0.7, 0.3], [0.4, 0.6]])
Y = np.array([[0.8, 0.2], [1.5, 0.9], [-0.4, 0.1], [-1.2, -0.5]])
EMISSION = SLDSEmission(
    jnp.asarray(C), jnp.asarray(DBIAS), jnp.linalg.cholesky(R), jnp.asarray(M0), jnp.asarray(P0)
)


def test_slds_blocks_leave_the_exact_posterior_invariant():
    _, paths, post, mean_x = slds_brute_force(PI, P, A, B, Q, C, DBIAS, R, M0, P0, Y)
    ar = ar_params(A, B, cov=Q)
    chains = 20_000
    y = jnp.broadcast_to(jnp.asarray(Y), (chains, T, DY))

    @jax.jit
    def run(key):
        start_key, *keys = jax.random.split(key, 4)
        # start at the exact posterior of z, then alternate x | z, y and z | x
        z = jnp.asarray(paths)[jax.random.choice(start_key, len(paths), (chains,), p=post)]
        for k in keys:
            latent_key, path_key = jax.random.split(k)
            x, before = resample_latents(latent_key, z, y, None, ar, EMISSION)
            lags = _latent_lags(x, before, L)
            counted = jnp.broadcast_to(jnp.arange(T) > 0, (chains, T))
            z = resample_discrete(path_key, x, lags, counted, ar, P, PI)
        return z, x

    z, x = run(jax.random.key(0))
    index = np.asarray(z) @ (K ** np.arange(T)[::-1])
    observed = np.bincount(index, minlength=len(paths))
    assert chisquare(observed, post * chains).pvalue > 1e-4
    sd = np.asarray(x).std(0)
    assert np.all(np.abs(np.asarray(x).mean(0) - mean_x) < 5 * sd / np.sqrt(chains))


# The Geweke test of the whole ARHMM sweep: (theta, z, y) from the joint prior, then alternate
# the sweep (theta, z | y) and fresh data (y | theta, z); the parameters must stay at the prior.
GK, GD, GL, GT = 2, 1, 1, 20
AR_PRIOR = MNIWParams(jnp.array([[0.5, 0.0]]), jnp.eye(2) * 2.0, jnp.asarray(6.0), jnp.eye(1))
TRANSITIONS = TransitionPrior(2.0, 3.0, jnp.ones(GK) / GK, gamma=1.5)


def _draw_data(key, state):
    """``y | z, θ`` with ``y_1 = 0`` given (the conditioned first step)."""
    noise = jax.random.normal(key, (GT, GD))
    z = state.states[0]

    def step(prev, inputs):
        z_t, eps = inputs
        y = state.ar.matrix[z_t] @ prev + state.ar.bias[z_t] + state.ar.scale_tril[z_t] @ eps
        return y, y

    _, rest = jax.lax.scan(step, jnp.zeros(GD), (z[1:], noise[1:]))
    return jnp.concatenate([jnp.zeros((1, GD)), rest])[None]


def _prior_state(key):
    ar_key, beta_key, rows_key, path_key = jax.random.split(key, 4)
    Ab, U = sample_mniw(
        ar_key, jax.tree.map(lambda a: jnp.broadcast_to(a, (GK,) + a.shape), AR_PRIOR)
    )
    beta = jax.random.dirichlet(beta_key, jnp.full(GK, TRANSITIONS.gamma / GK))
    conc = TRANSITIONS.concentration * beta + TRANSITIONS.stickiness * jnp.eye(GK)
    P_ = jax.vmap(jax.random.dirichlet)(jax.random.split(rows_key, GK), conc)
    z0 = jax.random.randint(path_key, (), 0, GK)

    def step(z, k):
        new = jax.random.categorical(k, jnp.log(P_[z]))
        return new, new

    _, rest = jax.lax.scan(step, z0, jax.random.split(jax.random.fold_in(path_key, 1), GT - 1))
    z = jnp.concatenate([z0[None], rest])[None].astype(jnp.int32)
    return ARHMMGibbsState(z, ar_params(Ab[..., :-1], Ab[..., -1], scale_tril=U), P_, beta)


@partial(jax.jit, static_argnums=1)
def _chain(key, iterations):
    start_key, data_key, run_key = jax.random.split(key, 3)
    state = _prior_state(start_key)
    y = _draw_data(data_key, state)

    def body(carry, k):
        state, y = carry
        sweep_key, data_key = jax.random.split(k)
        state = arhmm_gibbs_step(
            sweep_key, state, y, ar_prior=AR_PRIOR, transition_prior=TRANSITIONS
        )
        return (state, _draw_data(data_key, state)), None

    (state, _), _ = jax.lax.scan(body, (state, y), jax.random.split(run_key, iterations))
    return state


@pytest.mark.slow
def test_geweke_arhmm_sweep_leaves_the_prior_invariant():
    chains = 4000
    state = jax.vmap(lambda k: _chain(k, 10))(jax.random.split(jax.random.key(1), chains))
    nu, S = float(AR_PRIOR.df), float(AR_PRIOR.scale[0, 0])
    e_q = S / (nu - GD - 1)
    col_var = np.linalg.inv(np.asarray(AR_PRIOR.column_precision))
    a0 = float(AR_PRIOR.mean[0, 0])
    e_beta = 1 / GK
    s = TRANSITIONS.concentration + TRANSITIONS.stickiness
    e_diag = (TRANSITIONS.concentration / GK + TRANSITIONS.stickiness) / s
    Qs = np.asarray(state.ar.scale_tril[..., 0, 0] ** 2)
    stats = {
        "Q": (Qs, e_q),
        "A": (np.asarray(state.ar.matrix[..., 0, 0]), a0),
        "A^2": (np.asarray(state.ar.matrix[..., 0, 0]) ** 2, a0**2 + e_q * col_var[0, 0]),
        "b": (np.asarray(state.ar.bias[..., 0]), 0.0),
        "P_kk": (np.asarray(jnp.diagonal(state.transition_matrix, axis1=-2, axis2=-1)), e_diag),
        "beta_0": (np.asarray(state.global_weights[:, :1]), e_beta),
    }
    for name, (values, expected) in stats.items():
        values = values.reshape(chains, -1).mean(-1)
        z = (values.mean() - expected) / (values.std() / np.sqrt(chains))
        assert abs(z) < 4.5, (name, values.mean(), expected, z)


def test_sweeps_run_jitted_with_masks_and_recover_a_simulated_arhmm():
    rng = np.random.default_rng(3)
    true_A = np.array([[[0.9]], [[-0.6]]])
    z = np.repeat(rng.integers(2, size=(3, 20)), 15, axis=1)  # long visits
    y = np.zeros((3, 300, 1))
    for b in range(3):
        for t in range(1, 300):
            y[b, t] = true_A[z[b, t]] @ y[b, t - 1] + rng.normal() * 0.3
    mask = np.ones((3, 300), bool)
    mask[2, 250:] = False  # a padded tail
    prior = ar_prior(1, 1, noise_scale=0.5)
    transitions = TransitionPrior(1.0, 20.0, jnp.ones(2) / 2)
    state = init_arhmm_gibbs(
        jax.random.key(0),
        y,
        mask,
        num_states=2,
        num_lags=1,
        ar_prior=prior,
        transition_prior=transitions,
    )
    step = jax.jit(partial(arhmm_gibbs_step, ar_prior=prior, transition_prior=transitions))
    for i in range(40):
        state = step(jax.random.key(i), state, jnp.asarray(y), jnp.asarray(mask))
    found = np.sort(np.asarray(state.ar.matrix[:, 0, 0]))
    np.testing.assert_allclose(found, [-0.6, 0.9], atol=0.1)
    labels = np.asarray(state.states)[:, 1:250]
    truth = z[:, 1:250] == np.argmax(np.asarray(state.ar.matrix[:, 0, 0]))
    assert max((labels == truth).mean(), (labels != truth).mean()) > 0.9


def test_slds_sweep_runs_and_keeps_its_shapes():
    y = jnp.asarray(np.random.default_rng(4).normal(size=(2, T + 6, DY)))
    mask = jnp.ones(y.shape[:2] + (1,), bool).at[1, -2:].set(False)
    prior = ar_prior(D, L)
    transitions = TransitionPrior(1.0, 5.0, jnp.ones(K) / K, gamma=2.0)
    state = init_slds_gibbs(
        jax.random.key(0),
        y,
        mask,
        num_states=K,
        num_lags=L,
        emission=EMISSION,
        ar_prior=prior,
        transition_prior=transitions,
    )
    step = jax.jit(
        partial(slds_gibbs_step, emission=EMISSION, ar_prior=prior, transition_prior=transitions)
    )
    new = step(jax.random.key(1), state, y, mask)
    assert isinstance(new, SLDSGibbsState)
    assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, state)
    assert np.all(np.isfinite(np.asarray(new.latents)))
    np.testing.assert_allclose(new.global_weights.sum(), 1.0)

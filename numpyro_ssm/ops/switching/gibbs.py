r"""Blocked Gibbs sweeps of the autoregressive HMM and of the switching linear dynamical system.

**ARHMM** (the observations are the autoregression): one sweep draws

1. the discrete paths ``z | y, θ`` by FFBS (:func:`~numpyro_ssm.ops.hmm_posterior_sample`) on the
   ``(T, K)`` AR log-likelihoods;
2. the AR parameters ``(A_k, b_k, Q_k) | y, z`` from their matrix-normal inverse-Wishart
   conditionals (:mod:`~numpyro_ssm.ops.switching.mniw`);
3. the transitions ``| z``: sticky Dirichlet rows, or the weak-limit HDP's ``β`` and rows
   (:func:`~numpyro_ssm.ops.hmm.sample_hdp_transitions`).

The first ``L`` observations of each sequence are conditioned on (jax_moseq's convention);
missing steps follow :class:`~numpyro_ssm.AutoregressiveHMM`.

**SLDS** (keypoint-MoSeq's structure): a latent ``x_t ∈ R^{D}`` follows the switching AR and
``y_t = C x_t + d + v_t``. A sweep first draws the latent paths ``x | z, y, θ`` exactly, by the
Kalman sampler of :mod:`numpyro_ssm.ops.kalman` on the companion-form LGSSM
(:func:`~numpyro_ssm.ops.switching.ar_to_lds`, zero shift noise), then runs the three ARHMM
updates on ``x``. The stacked initial state ``s_1 = [x_1; ...; x_{2-L}] ~ N(m_0, P_0)`` is part
of the model, so the latents' AR counts from step 2 on.

**Whole chains.** Each sequence's chain runs over all ``T`` steps of the padded array (a padded
tail has no observations, which leaves the posterior of everything else unchanged), so the
transition counts include every step.

**Many sequences.** Every function takes a batch ``(B, T, ...)`` of sequences and vmaps over it;
the pooled statistics are sums over the batch. Under ``jit`` with the batch axis sharded over
devices (:func:`~numpyro_ssm.ops.switching.shard_sequences`), XLA runs each device's sequences
where they live and reduces the statistics across devices: no ``pmap`` by hand.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.hmm import hmm_posterior_sample, sequential_posterior_sample
from numpyro_ssm.ops.hmm.counts import (
    count_transitions,
    sample_transition_matrix,
    sticky_concentration,
)
from numpyro_ssm.ops.hmm.hdp import sample_hdp_transitions
from numpyro_ssm.ops.kalman.params import LGSSMParams
from numpyro_ssm.ops.kalman.sampling import kalman_posterior_sample
from numpyro_ssm.ops.switching.autoregression import (
    ARParams,
    ar_log_likelihoods,
    lag_matrix,
    lagged_step_mask,
)
from numpyro_ssm.ops.switching.companion import ar_to_lds, lds_to_latents
from numpyro_ssm.ops.switching.mniw import (
    MNIWParams,
    grouped_regression_stats,
    mniw_posterior,
    sample_mniw,
)

__all__ = [
    "ARHMMGibbsState",
    "SLDSEmission",
    "SLDSGibbsState",
    "TransitionPrior",
    "ar_prior",
    "arhmm_gibbs_step",
    "init_arhmm_gibbs",
    "init_slds_gibbs",
    "resample_ar",
    "resample_discrete",
    "resample_latents",
    "resample_transitions",
    "slds_gibbs_step",
]


class TransitionPrior(NamedTuple):
    """Hyperparameters of the transitions: sticky Dirichlet, or weak-limit HDP with ``gamma``.

    Attributes:
        concentration: ``α > 0``.
        stickiness: ``κ >= 0``.
        initial_probs: shape ``(K,)``, the (fixed) distribution of ``z_1``.
        gamma: ``γ > 0`` for the weak-limit HDP (``β ~ Dir(γ / K)``, rows ``Dir(α β + κ e_k)``),
            or None for sticky Dirichlet rows ``Dir(α + κ e_k)``.
    """

    concentration: float
    stickiness: float
    initial_probs: jax.Array
    gamma: float | None = None


class ARHMMGibbsState(NamedTuple):
    """The state of an ARHMM Gibbs chain.

    Attributes:
        states: int32, shape ``(B, T)``, the discrete paths.
        ar: :class:`~numpyro_ssm.ops.switching.ARParams` of the ``K`` states.
        transition_matrix: shape ``(K, K)``.
        global_weights: shape ``(K,)``, the HDP's ``β`` (unused by a sticky Dirichlet prior).
    """

    states: jax.Array
    ar: ARParams
    transition_matrix: jax.Array
    global_weights: jax.Array


class SLDSGibbsState(NamedTuple):
    """The state of an SLDS Gibbs chain: an :class:`ARHMMGibbsState` plus the latent paths.

    Attributes:
        states: int32, shape ``(B, T)``.
        latents: shape ``(B, T, D)``, ``x_{1:T}``.
        latents_before: shape ``(B, L - 1, D)``, ``x_{2-L}, ..., x_0`` (part of ``s_1``).
        ar: :class:`~numpyro_ssm.ops.switching.ARParams`.
        transition_matrix: shape ``(K, K)``.
        global_weights: shape ``(K,)``.
    """

    states: jax.Array
    latents: jax.Array
    latents_before: jax.Array
    ar: ARParams
    transition_matrix: jax.Array
    global_weights: jax.Array


class SLDSEmission(NamedTuple):
    """The fixed parts of an SLDS: emission and the initial stacked state.

    Attributes:
        matrix: shape ``(D_y, D)``, ``C``.
        bias: shape ``(D_y,)``, ``d``.
        scale_tril: shape ``(D_y, D_y)``, ``chol R``.
        initial_mean: shape ``(L D,)``, the mean of ``s_1 = [x_1; ...; x_{2-L}]``.
        initial_scale_tril: shape ``(L D, L D)``, a factor of ``Cov[s_1]``.
    """

    matrix: jax.Array
    bias: jax.Array
    scale_tril: jax.Array
    initial_mean: jax.Array
    initial_scale_tril: jax.Array


def ar_prior(dim, num_lags, *, noise_scale=1.0, column_scale=10.0, df=None, first_lag=0.0):
    """A matrix-normal inverse-Wishart prior for ``[A_k, b_k]`` and ``Q_k``, shared by the states.

    ``Q ~ IW(df, noise_scale² (df - D - 1) I)`` (so ``E[Q] = noise_scale² I``) and
    ``[A, b] | Q ~ MN(M_0, Q, column_scale² I)`` with ``M_0 = [first_lag I, 0, ..., 0 | 0]``.

    Args:
        dim: ``D``.
        num_lags: ``L``.
        noise_scale: the prior mean's noise standard deviation.
        column_scale: the prior scale of the AR coefficients and bias (in noise units).
        df: inverse-Wishart degrees of freedom, ``D + 2`` by default.
        first_lag: the prior mean of the first lag's diagonal (e.g. 0.95 for slow dynamics).

    Returns:
        :class:`~numpyro_ssm.ops.switching.MNIWParams` with ``P = L D + 1`` inputs.
    """
    df = dim + 2.0 if df is None else float(df)
    P = dim * num_lags + 1
    mean = jnp.zeros((dim, P)).at[:, :dim].set(first_lag * jnp.eye(dim))
    scale = noise_scale**2 * (df - dim - 1.0) * jnp.eye(dim)
    return MNIWParams(mean, jnp.eye(P) / column_scale**2, jnp.asarray(df), scale)


def _with_ones(lags):
    return jnp.concatenate([lags, jnp.ones(lags.shape[:-1] + (1,), lags.dtype)], axis=-1)


def resample_discrete(
    key, series, lags, counted, ar, transition_matrix, initial_probs, *, parallel=False
):
    """Draw the discrete paths ``z | x, θ`` by FFBS on the AR log-likelihoods.

    Args:
        key: a ``jax.random`` key.
        series: shape ``(B, T, D)``, the autoregressive series (observations or latents).
        lags: shape ``(B, T, L D)``, their lag vectors.
        counted: bool, shape ``(B, T)``, the steps whose AR likelihood counts.
        ar: :class:`~numpyro_ssm.ops.switching.ARParams`.
        transition_matrix: shape ``(K, K)``.
        initial_probs: shape ``(K,)``.
        parallel: associative scans.

    Returns:
        int32, shape ``(B, T)``.
    """
    log_lik = ar_log_likelihoods(ar, series, lags)
    if parallel:
        path = hmm_posterior_sample(
            key, initial_probs, transition_matrix, log_lik, obs_mask=counted, parallel=True
        )
    else:  # one uniform per step: the cheap backward pass on a CPU
        path = sequential_posterior_sample(
            key, initial_probs, transition_matrix, log_lik, obs_mask=counted
        )
    return path.astype(jnp.int32)


def resample_ar(key, series, lags, counted, states, prior: MNIWParams, num_states):
    """Draw ``(A_k, b_k, Q_k) | x, z`` from their MNIW conditionals.

    Args:
        key: a ``jax.random`` key.
        series: shape ``(B, T, D)``.
        lags: shape ``(B, T, L D)``.
        counted: bool, shape ``(B, T)``.
        states: int, shape ``(B, T)``.
        prior: :class:`~numpyro_ssm.ops.switching.MNIWParams` for ``[A, b]`` (``P = L D + 1``).
        num_states: ``K``.

    Returns:
        :class:`~numpyro_ssm.ops.switching.ARParams`.
    """
    D = series.shape[-1]
    stats = grouped_regression_stats(
        _with_ones(lags).reshape(-1, lags.shape[-1] + 1),
        series.reshape(-1, D),
        jnp.asarray(states).reshape(-1),
        num_states,
        counted.reshape(-1),
    )
    Ab, scale_tril = sample_mniw(key, mniw_posterior(prior, stats))
    return ARParams(Ab[..., :-1], Ab[..., -1], scale_tril)


def resample_transitions(key, states, global_weights, prior: TransitionPrior):
    """Draw the transitions given the paths: sticky Dirichlet rows, or HDP ``β`` and rows.

    Args:
        key: a ``jax.random`` key.
        states: int, shape ``(B, T)``; every transition of every path counts.
        global_weights: shape ``(K,)``, the current ``β`` (HDP only).
        prior: :class:`TransitionPrior`.

    Returns:
        ``(global_weights (K,), transition_matrix (K, K))``.
    """
    K = global_weights.shape[-1]
    counts = count_transitions(states, K).sum(axis=tuple(range(states.ndim - 1)))
    if prior.gamma is None:
        conc = sticky_concentration(K, prior.concentration, prior.stickiness)
        return global_weights, sample_transition_matrix(key, conc, counts)
    return sample_hdp_transitions(
        key,
        counts,
        global_weights,
        concentration=prior.concentration,
        stickiness=prior.stickiness,
        gamma=prior.gamma,
        max_total=states.size - states.size // states.shape[-1],
    )


def _discrete_ar_transitions(
    key, series, lags, counted, state, ar_prior_, transition_prior, parallel
):
    """The three ARHMM updates on a series: transitions, AR parameters, then paths."""
    trans_key, ar_key, path_key = jax.random.split(key, 3)
    K = state.transition_matrix.shape[-1]
    beta, P = resample_transitions(trans_key, state.states, state.global_weights, transition_prior)
    ar = resample_ar(ar_key, series, lags, counted, state.states, ar_prior_, K)
    z = resample_discrete(
        path_key, series, lags, counted, ar, P, transition_prior.initial_probs, parallel=parallel
    )
    return z, ar, P, beta


def arhmm_gibbs_step(
    key,
    state: ARHMMGibbsState,
    observations,
    mask=None,
    *,
    ar_prior,
    transition_prior,
    parallel=False,
) -> ARHMMGibbsState:
    """One blocked Gibbs sweep of an ARHMM (module docstring), jittable.

    Args:
        key: a ``jax.random`` key.
        state: the current :class:`ARHMMGibbsState`.
        observations: shape ``(B, T, D)``; NaN marks a missing step.
        mask: bool, shape ``(B, T)``, True where observed (a padded tail is False).
        ar_prior: :class:`~numpyro_ssm.ops.switching.MNIWParams` (:func:`ar_prior`).
        transition_prior: :class:`TransitionPrior`.
        parallel: associative scans in FFBS.

    Returns:
        The new :class:`ARHMMGibbsState`.
    """
    y = jnp.asarray(observations)
    L = state.ar.matrix.shape[-1] // y.shape[-1]
    observed = ~jnp.any(jnp.isnan(y), axis=-1)
    if mask is not None:
        observed = observed & mask
    counted = lagged_step_mask(observed, L)
    y = jnp.where(jnp.isnan(y), 0.0, y)
    lags = lag_matrix(y, L)
    z, ar, P, beta = _discrete_ar_transitions(
        key, y, lags, counted, state, ar_prior, transition_prior, parallel
    )
    return ARHMMGibbsState(z, ar, P, beta)


def _latent_lags(latents, before, num_lags):
    """Lag vectors of ``x_{1:T}`` with the latents before the series; row 0 is incomplete."""
    extended = jnp.concatenate([before, latents], axis=-2)
    return lag_matrix(extended, num_lags)[..., num_lags - 1 :, :]


def resample_latents(
    key, states, observations, mask, ar, emission: SLDSEmission, *, parallel=False
):
    """Draw the latent paths ``x | z, y, θ`` by the Kalman sampler on the companion LGSSM.

    Args:
        key: a ``jax.random`` key.
        states: int, shape ``(B, T)``.
        observations: shape ``(B, T, D_y)``; NaN marks a missing entry.
        mask: bool, broadcasting to ``(B, T, D_y)`` (``(B, T, 1)`` for whole steps), or None.
        ar: :class:`~numpyro_ssm.ops.switching.ARParams`.
        emission: :class:`SLDSEmission`.
        parallel: associative scans in the Kalman sampler.

    Returns:
        ``(latents (B, T, D), latents_before (B, L - 1, D))``.
    """
    D = ar.matrix.shape[-2]
    B = states.shape[0]

    def one(k, z, y, m):
        params: LGSSMParams = ar_to_lds(
            ar,
            z,
            emission_matrix=emission.matrix,
            emission_scale_tril=emission.scale_tril,
            emission_bias=emission.bias,
            initial_mean=emission.initial_mean,
            initial_scale_tril=emission.initial_scale_tril,
        )
        return kalman_posterior_sample(k, params, y, obs_mask=m, parallel=parallel)

    y = jnp.asarray(observations)
    m = jnp.ones(y.shape, bool) if mask is None else jnp.broadcast_to(mask, y.shape)
    stacked = jax.vmap(one)(jax.random.split(key, B), states, y, m)
    return lds_to_latents(stacked, D)


def slds_gibbs_step(
    key,
    state: SLDSGibbsState,
    observations,
    mask=None,
    *,
    emission: SLDSEmission,
    ar_prior,
    transition_prior,
    parallel=False,
) -> SLDSGibbsState:
    """One blocked Gibbs sweep of a switching linear dynamical system, jittable.

    ``x | z, y`` (Kalman sampler, exact), then the ARHMM updates on ``x``: transitions ``| z``,
    ``(A, b, Q) | x, z`` (MNIW) and ``z | x`` (FFBS).

    Args:
        key: a ``jax.random`` key.
        state: the current :class:`SLDSGibbsState`.
        observations: shape ``(B, T, D_y)``; NaN marks a missing entry.
        mask: bool, broadcasting to ``(B, T, D_y)``, True where observed.
        emission: :class:`SLDSEmission` (fixed).
        ar_prior: :class:`~numpyro_ssm.ops.switching.MNIWParams` (:func:`ar_prior`).
        transition_prior: :class:`TransitionPrior`.
        parallel: associative scans in the Kalman sampler and FFBS.

    Returns:
        The new :class:`SLDSGibbsState`.
    """
    latent_key, rest_key = jax.random.split(key)
    x, before = resample_latents(
        latent_key, state.states, observations, mask, state.ar, emission, parallel=parallel
    )
    L = state.ar.matrix.shape[-1] // x.shape[-1]
    lags = _latent_lags(x, before, L)
    counted = jnp.broadcast_to(jnp.arange(x.shape[-2]) > 0, x.shape[:-1])  # x_1 is in s_1
    z, ar, P, beta = _discrete_ar_transitions(
        rest_key, x, lags, counted, state, ar_prior, transition_prior, parallel
    )
    return SLDSGibbsState(z, x, before, ar, P, beta)


def _prior_transitions(key, num_states, prior: TransitionPrior):
    weights_key, rows_key = jax.random.split(key)
    if prior.gamma is None:
        beta = jnp.ones(num_states) / num_states
        conc = sticky_concentration(num_states, prior.concentration, prior.stickiness)
    else:
        beta = jax.random.dirichlet(weights_key, jnp.full(num_states, prior.gamma / num_states))
        conc = sticky_concentration(num_states, prior.concentration, prior.stickiness, beta)
    return beta, sample_transition_matrix(rows_key, conc)


def _prior_paths(key, shape, initial_probs, transition_matrix):
    """Paths of shape ``shape + (T,)`` drawn from the chain."""
    first_key, step_key = jax.random.split(key)
    first = jax.random.categorical(first_key, jnp.log(initial_probs), shape=shape[:-1])

    def step(z, k):
        new = jax.random.categorical(k, jnp.log(transition_matrix)[z])
        return new, new

    _, rest = jax.lax.scan(step, first, jax.random.split(step_key, shape[-1] - 1))
    return jnp.moveaxis(jnp.concatenate([first[None], rest]), 0, -1).astype(jnp.int32)


def init_arhmm_gibbs(
    key, observations, mask=None, *, num_states, num_lags, ar_prior, transition_prior
) -> ARHMMGibbsState:
    """A starting state: transitions from the prior, paths from the chain, AR given both.

    Args:
        key: a ``jax.random`` key.
        observations: shape ``(B, T, D)``.
        mask: bool, shape ``(B, T)``, or None.
        num_states: ``K``.
        num_lags: ``L``.
        ar_prior: :class:`~numpyro_ssm.ops.switching.MNIWParams`.
        transition_prior: :class:`TransitionPrior`.

    Returns:
        An :class:`ARHMMGibbsState`.
    """
    trans_key, path_key, ar_key = jax.random.split(key, 3)
    y = jnp.asarray(observations)
    beta, P = _prior_transitions(trans_key, num_states, transition_prior)
    z = _prior_paths(path_key, y.shape[:-1], transition_prior.initial_probs, P)
    observed = ~jnp.any(jnp.isnan(y), axis=-1)
    if mask is not None:
        observed = observed & mask
    counted = lagged_step_mask(observed, num_lags)
    y = jnp.where(jnp.isnan(y), 0.0, y)
    ar = resample_ar(ar_key, y, lag_matrix(y, num_lags), counted, z, ar_prior, num_states)
    return ARHMMGibbsState(z, ar, P, beta)


def init_slds_gibbs(
    key,
    observations,
    mask=None,
    *,
    num_states,
    num_lags,
    emission: SLDSEmission,
    ar_prior,
    transition_prior,
) -> SLDSGibbsState:
    """A starting state: latents by least squares ``x_t = C⁺ (y_t - d)``, then as the ARHMM.

    Args:
        key: a ``jax.random`` key.
        observations: shape ``(B, T, D_y)``; missing entries are read as zeros here.
        mask: bool, broadcasting to ``(B, T, D_y)``, or None.
        num_states: ``K``.
        num_lags: ``L``.
        emission: :class:`SLDSEmission`.
        ar_prior: :class:`~numpyro_ssm.ops.switching.MNIWParams`.
        transition_prior: :class:`TransitionPrior`.

    Returns:
        An :class:`SLDSGibbsState`.
    """
    y = jnp.asarray(observations)
    observed = ~jnp.isnan(y) if mask is None else ~jnp.isnan(y) & mask
    y = jnp.where(observed, y - emission.bias, 0.0)
    x = y @ jnp.linalg.pinv(emission.matrix).T
    D = x.shape[-1]
    before = jnp.zeros(x.shape[:-2] + (num_lags - 1, D), x.dtype)
    trans_key, path_key, ar_key = jax.random.split(key, 3)
    beta, P = _prior_transitions(trans_key, num_states, transition_prior)
    z = _prior_paths(path_key, x.shape[:-1], transition_prior.initial_probs, P)
    counted = jnp.broadcast_to(jnp.arange(x.shape[-2]) > 0, x.shape[:-1])
    lags = _latent_lags(x, before, num_lags)
    ar = resample_ar(ar_key, x, lags, counted, z, ar_prior, num_states)
    return SLDSGibbsState(z, x, before, ar, P, beta)

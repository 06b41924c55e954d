r"""Gibbs steps of switching models for ``numpyro.infer.HMCGibbs``: paths, AR, transitions.

Each builder returns a step ``step(rng_key, sites) -> updates`` (chain them with
:func:`~numpyro_ssm.infer.gibbs.compose_gibbs`); each draws its block exactly from its
conditional, with the pure-JAX updates of :mod:`numpyro_ssm.ops`:

- :func:`path_step`: a discrete path by FFBS from any state space model with
  ``sample_posterior`` (an :class:`~numpyro_ssm.AutoregressiveHMM` built from the other sites);
- :func:`latents_step`: a continuous path by the Kalman sampler (an SLDS's ``x | z, y``);
- :func:`ar_step`: AR matrices, biases and covariances from their MNIW conditional;
- :func:`transition_step`: a sticky Dirichlet transition matrix, or a weak-limit HDP's global
  weights and rows.

A model that pairs with them (keypoint-MoSeq's SLDS; NUTS on the emission scale, Gibbs on the
rest)::

    def model(y):                                    # y: (T, D_y)
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        beta = numpyro.sample("beta", dist.Dirichlet(jnp.full(K, gamma / K)))
        P = numpyro.sample("P", StickyDirichlet(alpha, kappa, weights=beta))
        Q = numpyro.sample("ar_cov", dist.InverseWishart(nu0, S0).expand([K]).to_event(1))
        Ab = numpyro.sample("ar_weights", dist.MatrixNormal(M0, cholesky(Q), col_tril).to_event(1))
        z = numpyro.sample("z", MarkovChain(pi0, P, num_steps=T))
        x = numpyro.sample("x", SwitchingAutoregression(z, Ab[..., :-1], ar_bias=Ab[..., -1],
                                                        ar_cov=Q, initial_mean=m0, initial_cov=P0))
        numpyro.sample("y", dist.Normal(x[L - 1:] @ C.T + d, sigma).to_event(2), obs=y)

with ``prior = MNIWParams(M0, inv(col_tril col_trilᵀ), nu0, S0)``.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.hmm.counts import (
    count_transitions,
    sample_transition_matrix,
    sticky_concentration,
)
from numpyro_ssm.ops.hmm.hdp import sample_hdp_transitions
from numpyro_ssm.ops.kalman.sampling import kalman_posterior_sample
from numpyro_ssm.ops.switching.autoregression import lag_matrix, lagged_step_mask
from numpyro_ssm.ops.switching.companion import lds_to_latents
from numpyro_ssm.ops.switching.gibbs import resample_ar
from numpyro_ssm.ops.switching.mniw import MNIWParams

__all__ = [
    "ar_step",
    "arhmm_regression",
    "latents_step",
    "path_step",
    "slds_regression",
    "transition_step",
]


def path_step(site: str, ssm_fn: Callable) -> Callable:
    """Draw a discrete path site by FFBS: ``ssm_fn(sites) -> (ssm, observed value)``.

    Args:
        site: the path's site name (e.g. a :class:`~numpyro_ssm.MarkovChain` site).
        ssm_fn: maps all current sites to ``(ssm, value)``: a state space model whose latent
            path is the site (an :class:`~numpyro_ssm.AutoregressiveHMM` over the observations,
            or over an SLDS's latents), and the value to condition on.

    Returns:
        A Gibbs step.
    """

    def step(rng_key, sites):
        ssm, value = ssm_fn(sites)
        path = ssm.sample_posterior(rng_key, value)
        return {site: jnp.asarray(path, dtype=jnp.result_type(sites[site]))}

    return step


def latents_step(site: str, lgssm_fn: Callable) -> Callable:
    """Draw a continuous path site by the Kalman sampler: ``lgssm_fn(sites) -> (params, y, mask)``.

    The LGSSM is in stacked form, ``s_t = [x_t; ...; x_{t-L+1}]`` (e.g. from
    :func:`~numpyro_ssm.ops.switching.ar_to_lds`); the site receives ``[x_{2-L}, ..., x_0,
    x_1, ..., x_T]`` as :class:`~numpyro_ssm.SwitchingAutoregression` defines it.

    Args:
        site: the path's site name, value of shape ``(..., T + L - 1, D)``.
        lgssm_fn: maps all current sites to ``(params, observations, obs_mask)``: an
            :class:`~numpyro_ssm.ops.LGSSMParams` (with a leading batch axis when the
            observations have one), observations ``(T, D_y)`` or ``(B, T, D_y)``, and a mask
            broadcasting to them or None.

    Returns:
        A Gibbs step.
    """

    def step(rng_key, sites):
        params, y, mask = lgssm_fn(sites)
        y = jnp.asarray(y)
        mask = jnp.ones(y.shape, bool) if mask is None else jnp.broadcast_to(mask, y.shape)
        draw = lambda k, p, y_, m: kalman_posterior_sample(k, p, y_, obs_mask=m)  # noqa: E731
        if y.ndim == 3:
            stacked = jax.vmap(draw)(jax.random.split(rng_key, y.shape[0]), params, y, mask)
        else:
            stacked = draw(rng_key, params, y, mask)
        D = sites[site].shape[-1]
        x, before = lds_to_latents(stacked, D)
        return {site: jnp.concatenate([before, x], axis=-2)}

    return step


def arhmm_regression(observations, states, num_lags, mask=None):
    """The AR regression data of an ARHMM that conditions on its first ``L`` observations.

    Args:
        observations: shape ``(..., T, D)``; NaN marks a missing step.
        states: int, shape ``(..., T)``.
        num_lags: ``L``.
        mask: bool, shape ``(..., T)``, or None.

    Returns:
        ``(series, lags, counted, states)`` for :func:`ar_step`.
    """
    y = jnp.asarray(observations)
    observed = ~jnp.any(jnp.isnan(y), -1)
    if mask is not None:
        observed = observed & mask
    y = jnp.where(jnp.isnan(y), 0.0, y)
    return y, lag_matrix(y, num_lags), lagged_step_mask(observed, num_lags), states


def slds_regression(latents, states, num_lags):
    """The AR regression data of an SLDS's latent path (a :class:`SwitchingAutoregression` value).

    Args:
        latents: shape ``(..., T + L - 1, D)``, ``[x_{2-L}, ..., x_T]``.
        states: int, shape ``(..., T)``.
        num_lags: ``L``.

    Returns:
        ``(series, lags, counted, states)`` for :func:`ar_step`: ``x_1`` (in ``s_1``) does not
        count.
    """
    x = jnp.asarray(latents)
    L = num_lags
    lags = lag_matrix(x, L)[..., L - 1 :, :]
    series = x[..., L - 1 :, :]
    counted = jnp.broadcast_to(jnp.arange(series.shape[-2]) > 0, series.shape[:-1])
    return series, lags, counted, states


def ar_step(weights_site: str, cov_site: str, *, prior: MNIWParams, data_fn: Callable) -> Callable:
    """Draw AR weights ``[A_k, b_k]`` and covariances ``Q_k`` from their MNIW conditional.

    Args:
        weights_site: site of shape ``(K, D, L D + 1)``: ``[A_k, b_k]`` (lags most recent
            first, the bias last), e.g. a ``dist.MatrixNormal`` site.
        cov_site: site of shape ``(K, D, D)``, e.g. a ``dist.InverseWishart`` site.
        prior: the prior's :class:`~numpyro_ssm.ops.switching.MNIWParams` (the one the model's
            sites use), shared by the states or with a leading ``K`` axis.
        data_fn: maps all current sites to ``(series (..., T, D), lags (..., T, L D), counted
            (..., T), states (..., T))``: :func:`arhmm_regression` or :func:`slds_regression`.

    Returns:
        A Gibbs step.
    """

    def step(rng_key, sites):
        K = sites[weights_site].shape[-3]
        series, lags, counted, states = data_fn(sites)
        flat = lambda a, n: a.reshape((-1,) + a.shape[a.ndim - n :])  # noqa: E731
        ar = resample_ar(
            rng_key,
            flat(series, 2),
            flat(lags, 2),
            flat(counted, 1),
            flat(states, 1),
            prior,
            K,
        )
        weights = jnp.concatenate([ar.matrix, ar.bias[..., None]], axis=-1)
        cov = ar.scale_tril @ jnp.swapaxes(ar.scale_tril, -1, -2)
        return {weights_site: weights, cov_site: cov}

    return step


def transition_step(
    transition_site: str,
    states_site: str,
    *,
    concentration,
    stickiness,
    weights_site: str | None = None,
    gamma=None,
) -> Callable:
    """Draw a transition matrix (and a weak-limit HDP's global weights) given the paths.

    Args:
        transition_site: site of shape ``(K, K)`` (a :class:`~numpyro_ssm.StickyDirichlet`).
        states_site: the paths' site, int ``(..., T)``; every transition counts, pooled over
            leading axes.
        concentration: ``α``.
        stickiness: ``κ``.
        weights_site: the HDP's ``β`` site (``Dirichlet(γ / K)``), or None for a sticky
            Dirichlet with unit weights.
        gamma: ``γ``, required with ``weights_site``.

    Returns:
        A Gibbs step.

    Raises:
        ValueError: for ``weights_site`` without ``gamma``.
    """
    if (weights_site is None) != (gamma is None):
        raise ValueError("transition_step: give weights_site and gamma together (the HDP).")

    def step(rng_key, sites):
        K = sites[transition_site].shape[-1]
        z = jnp.asarray(sites[states_site]).astype(jnp.int32)
        counts = count_transitions(z, K).reshape((-1, K, K)).sum(0)
        if weights_site is None:
            conc = sticky_concentration(K, concentration, stickiness)
            return {transition_site: sample_transition_matrix(rng_key, conc, counts)}
        beta, P = sample_hdp_transitions(
            rng_key,
            counts,
            sites[weights_site],
            concentration=concentration,
            stickiness=stickiness,
            gamma=gamma,
            max_total=z.size - z.size // z.shape[-1],
        )
        return {transition_site: P, weights_site: beta}

    return step

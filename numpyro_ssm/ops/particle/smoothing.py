r"""Particle smoothers over a filter's history: ancestral paths, FFBSi and FFBSm.

All three read a :class:`~numpyro_ssm.ops.particle.ParticleFilterResult` kept with
``history=True`` (particles ``z_t^i`` and normalized weights ``W_t^i``).

- :func:`ancestral_paths`: the genealogy of the final particles, ``O(N T)``. Weighted by
  ``W_T``, they approximate ``p(z_{1:T} | y_{1:T})``, but they coalesce: for ``t`` far from ``T``
  few distinct ancestors remain (path degeneracy).
- :func:`particle_backward_sample` (backward simulation, FFBSi; Godsill, Doucet & West 2004):
  draw ``z_T`` from ``W_T``, then ``z_t`` from the particles at ``t`` with weights
  ``W_t^i f(z_{t+1} | z_t^i)``, ``O(M N T)`` for ``M`` paths. The paths are draws from the
  filter's approximation of the joint smoothing distribution, without degeneracy.
- :func:`particle_smoother` (the marginal backward smoother, FFBSm; Doucet, Godsill & Andrieu
  2000): reweights every step's particles by
  ``W_{t|T}^i ∝ W_t^i Σ_j W_{t+1|T}^j f(z_{t+1}^j | z_t^i) / Σ_k W_t^k f(z_{t+1}^j | z_t^k)``,
  ``O(N^2 T)``: for small problems.

Both backward passes need ``model.transition.log_prob``; the transition of step ``t + 1``
receives ``u_{t+1}``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.particle.filtering import weighted_moments

__all__ = [
    "ParticleSmootherResult",
    "ancestral_paths",
    "particle_backward_sample",
    "particle_smoother",
]


class ParticleSmootherResult(NamedTuple):
    """What :func:`particle_smoother` returns, for ``T`` steps, ``N`` particles, state ``S``.

    Attributes:
        smoothed_log_weights: shape ``(T, N)``, normalized ``log W_{t|T}^i`` of the filter's
            particles ``z_t^i``.
        smoothed_means: shape ``(T,) + S``, ``Σ_i W_{t|T}^i z_t^i ≈ E[z_t | y_{1:T}]``.
        smoothed_variances: shape ``(T,) + S``, the weighted elementwise variances.
    """

    smoothed_log_weights: jax.Array
    smoothed_means: jax.Array
    smoothed_variances: jax.Array


def _history(result, owner):
    if result.particles is None:
        raise ValueError(
            f"{owner}: the filter result has no history; run particle_filter(..., history=True)."
        )
    return result.particles, result.log_weights


def _next_inputs(inputs):
    """``u_{t+1}`` for ``t = 1..T-1``: the inputs without their first step."""
    return jax.tree.map(lambda leaf: leaf[1:], inputs)


def ancestral_paths(result) -> jax.Array:
    """The ancestral path of every final particle, by tracing the ancestor indices back.

    Args:
        result: a :class:`~numpyro_ssm.ops.particle.ParticleFilterResult` with history.

    Returns:
        Shape ``(N, T) + S``: ``[i, t]`` is the step-``t`` ancestor of final particle ``i``;
        weight path ``i`` by ``exp(result.final_log_weights[i])``.
    """
    particles, _ = _history(result, "ancestral_paths")
    num = particles.shape[1]

    def back(index, xs):
        x_t, ancestors_t = xs
        return ancestors_t[index], x_t[index]

    first = jnp.arange(num, dtype=result.ancestors.dtype)
    _, paths = lax.scan(back, first, (particles, result.ancestors), reverse=True)
    return jnp.moveaxis(paths, 0, 1)


def _transition_log_probs(model, params, x_next, x, u_next):
    """``[j, i] = log f(x_next[j] | x[i], u_next)`` for all pairs."""
    log_f = model.transition.log_prob
    per_next = jax.vmap(log_f, (None, 0, None, None))  # over x
    return jax.vmap(per_next, (0, None, None, None))(x_next, x, u_next, params)


def particle_backward_sample(key, result, model, params, num_samples, *, inputs=None):
    """Backward simulation (FFBSi): ``num_samples`` paths from the particle smoother.

    Args:
        key: a ``jax.random`` key.
        result: a :class:`~numpyro_ssm.ops.particle.ParticleFilterResult` with history.
        model: the :class:`~numpyro_ssm.ops.particle.ParticleModel` that was filtered.
        params: its parameters.
        num_samples: ``M``, the number of paths.
        inputs: the inputs given to the filter (leading axis ``T``), or None.

    Returns:
        Shape ``(M, T) + S``.
    """
    particles, log_weights = _history(result, "particle_backward_sample")
    num_steps = particles.shape[0]
    keys = jax.random.split(key, num_steps)
    last = jax.random.categorical(keys[-1], log_weights[-1], shape=(num_samples,))

    def back(index_next, xs):
        key_t, x_t, log_w_t, x_next, u_next = xs
        chosen = x_next[index_next]  # (M,) + S
        log_f = _transition_log_probs(model, params, chosen, x_t, u_next)  # (M, N)
        index = jax.random.categorical(key_t, log_w_t + log_f, axis=-1)
        return index, index

    xs = (keys[:-1], particles[:-1], log_weights[:-1], particles[1:], _next_inputs(inputs))
    _, indices = lax.scan(back, last, xs, reverse=True)
    indices = jnp.concatenate([indices, last[None]])  # (T, M)
    paths = jax.vmap(lambda x_t, i_t: x_t[i_t])(particles, indices)  # (T, M) + S
    return jnp.moveaxis(paths, 0, 1)


def particle_smoother(result, model, params, *, inputs=None) -> ParticleSmootherResult:
    """The marginal backward smoother (FFBSm), ``O(N^2 T)``.

    Args:
        result: a :class:`~numpyro_ssm.ops.particle.ParticleFilterResult` with history.
        model: the :class:`~numpyro_ssm.ops.particle.ParticleModel` that was filtered.
        params: its parameters.
        inputs: the inputs given to the filter (leading axis ``T``), or None.

    Returns:
        A :class:`ParticleSmootherResult`.
    """
    particles, log_weights = _history(result, "particle_smoother")

    def back(log_smoothed_next, xs):
        x_t, log_w_t, x_next, u_next = xs
        log_f = _transition_log_probs(model, params, x_next, x_t, u_next)  # (N_next, N)
        log_predictive = logsumexp(log_w_t[None, :] + log_f, axis=-1)  # (N_next,)
        terms = log_smoothed_next[:, None] - log_predictive[:, None] + log_f
        log_smoothed = log_w_t + logsumexp(terms, axis=0)
        log_smoothed = log_smoothed - logsumexp(log_smoothed)
        return log_smoothed, log_smoothed

    xs = (particles[:-1], log_weights[:-1], particles[1:], _next_inputs(inputs))
    _, earlier = lax.scan(back, log_weights[-1], xs, reverse=True)
    smoothed = jnp.concatenate([earlier, log_weights[-1:]])
    means, variances = jax.vmap(weighted_moments)(particles, smoothed)
    return ParticleSmootherResult(smoothed, means, variances)

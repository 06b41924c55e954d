r"""The particle filter: bootstrap, guided and auxiliary, with adaptive resampling.

At step ``t`` the normalized weights ``W_{t-1}`` are multiplied by the auxiliary look-ahead
``ĝ(y_t | z_{t-1})`` (1 without one) and renormalized with the constant ``c_t``; when their
effective sample size falls below ``ess_threshold * N`` the particles are resampled and carry
``1/N``, else they keep their weights. Each ancestor then proposes ``z_t`` from the transition
(bootstrap) or the proposal (guided) and is weighted by

.. math::

    w_t = \frac{f(z_t \mid z_{t-1})\, g(y_t \mid z_t)}{q(z_t \mid z_{t-1}, y_t)\,
    ĝ(y_t \mid z_{t-1})},

and ``log p̂(y_t | y_{1:t-1}) = log c_t + log Σ_i carried_i w_t^i``. The product of these
increments, ``Ẑ``, is an unbiased estimate of ``p(y_{1:T})`` (Del Moral 2004; with adaptive
resampling, Whiteley, Lee & Heine 2016); ``log Ẑ`` is biased low (by Jensen's inequality),
by about half its variance. Its variance grows linearly in ``T`` and falls as ``1 / N``.

**Missing steps** (``obs_mask`` False, or a NaN in ``y_t``) move the particles by the
transition, resample nothing and weigh nothing: their increment is exactly 0.

**Gradients** of ``log Ẑ`` (``gradient=``), each biased in its own way (see
``docs/particle.md``):

- ``"score"`` (default): particles and proposal densities are held constant and the carried
  weights keep the derivative of the ancestors' weights (Ścibior, Masrani & Wood 2021). The
  derivative is then ``Σ_i W_T^i ∇ log p(z^i_{1:T}, y_{1:T})`` over the ancestral paths: the
  Fisher identity with the filter's path approximation (Poyiadjis, Doucet & Singh 2011).
  Consistent as ``N → ∞``, biased for finite ``N`` (a ratio estimator) and, because the paths
  coalesce, its variance grows with ``T``.
- ``"soft"``: soft resampling (Karkus, Hsu & Lee 2018): ancestors are drawn from
  ``α W + (1 - α) / N`` and carry the importance ratio, and particles keep their pathwise
  (reparameterized) derivatives. ``Ẑ`` stays unbiased; the gradient misses the derivative of
  the ancestor choice, so it is biased, less so as ``α`` decreases (``α = 0`` never
  resamples effectively: an unbiased gradient of ``Ẑ`` whose variance explodes with ``T``).
- ``"none"``: no correction, the cheapest value. Its derivative is the pathwise one with
  resampling held fixed (``"soft"`` with ``α = 1``): biased, and not consistent as ``N`` grows
  (the term it drops does not vanish). Use it when nothing differentiates the filter (PMMH).

The three modes give the same ``Ẑ`` for the same key, except ``"soft"`` whenever it resamples.
"""

import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from numpyro_ssm.ops.particle._steps import _Config
from numpyro_ssm.ops.particle.model import check_model, state_struct
from numpyro_ssm.ops.particle.resampling import check_resampling, effective_sample_size

__all__ = [
    "ParticleFilterResult",
    "ParticleNoise",
    "draw_particle_noise",
    "particle_filter",
    "weighted_moments",
]


class ParticleFilterResult(NamedTuple):
    """What :func:`particle_filter` returns, for ``T`` steps, ``N`` particles, state shape ``S``.

    Attributes:
        log_marginal: shape ``()``, ``log Ẑ``, the log of an unbiased estimate of
            ``p(y_{1:T})``.
        log_likelihood_increments: shape ``(T,)``, ``log p̂(y_t | y_{1:t-1})``, summing to
            ``log_marginal``; 0 at missing steps.
        filtered_means: shape ``(T,) + S``, ``Σ_i W_t^i z_t^i ≈ E[z_t | y_{1:t}]`` (integer
            states are averaged as floats).
        filtered_variances: shape ``(T,) + S``, the weighted elementwise variances.
        ess: shape ``(T,)``, the effective sample size of the filtering weights ``W_t``.
        resampled: shape ``(T,)``, bool, whether the particles were resampled before moving to
            step ``t`` (False at step 1 and at missing steps).
        final_particles: shape ``(N,) + S``, ``z_T^i``.
        final_log_weights: shape ``(N,)``, normalized ``log W_T^i``.
        particles: shape ``(T, N) + S``, ``z_t^i``; None with ``history=False``.
        log_weights: shape ``(T, N)``, normalized ``log W_t^i``; None with ``history=False``.
        ancestors: shape ``(T, N)``, int32, ``[t, i]`` = the index at step ``t - 1`` of the
            parent of particle ``i`` at step ``t`` (row 0 is ``arange(N)``); None with
            ``history=False``.
    """

    log_marginal: jax.Array
    log_likelihood_increments: jax.Array
    filtered_means: jax.Array
    filtered_variances: jax.Array
    ess: jax.Array
    resampled: jax.Array
    final_particles: jax.Array
    final_log_weights: jax.Array
    particles: jax.Array | None = None
    log_weights: jax.Array | None = None
    ancestors: jax.Array | None = None


class ParticleNoise(NamedTuple):
    """Standard normal variates that replace a filter's key (correlated pseudo-marginal MCMC).

    Attributes:
        propagation: shape ``(T, N) + S``; row ``t`` drives the particles' moves into step
            ``t`` through the kernels' ``from_noise``.
        resampling: shape ``(T, N)``; ``Φ`` of row ``t`` are the resampling uniforms of step
            ``t`` (row 0 is unused).
    """

    propagation: jax.Array
    resampling: jax.Array


def draw_particle_noise(key, num_steps, num_particles, state_shape=(), dtype=float):
    """Fresh :class:`ParticleNoise`: independent standard normals of the right shapes.

    Args:
        key: a ``jax.random`` key.
        num_steps: ``T``.
        num_particles: ``N``.
        state_shape: ``S``, the shape of one state.
        dtype: a float dtype.

    Returns:
        A :class:`ParticleNoise`.
    """
    key_propagation, key_resampling = jax.random.split(key)
    shape = (num_steps, num_particles) + tuple(state_shape)
    return ParticleNoise(
        jax.random.normal(key_propagation, shape, dtype),
        jax.random.normal(key_resampling, (num_steps, num_particles), dtype),
    )


_GRADIENTS = ("score", "soft", "none")


def _check_options(num_particles, ess_threshold, gradient, soft_resampling_mix, owner):
    try:
        num = operator.index(num_particles)
    except TypeError:
        num = None
    if num is None or isinstance(num_particles, bool) or num < 1:
        raise ValueError(
            f"{owner}: num_particles must be a positive Python int, got {num_particles!r}."
        )
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"{owner}: ess_threshold must lie in [0, 1], got {ess_threshold!r}.")
    if gradient not in _GRADIENTS:
        raise ValueError(f"{owner}: gradient must be one of {_GRADIENTS}, got {gradient!r}.")
    if not 0.0 <= float(soft_resampling_mix) <= 1.0:
        raise ValueError(
            f"{owner}: soft_resampling_mix must lie in [0, 1], got {soft_resampling_mix!r}."
        )
    return num


def _observed_steps(observations, obs_mask, owner):
    """``(y with missing entries zeroed, observed (T,))``."""
    y = jnp.asarray(observations)
    if y.ndim < 1 or y.shape[0] < 1:
        raise ValueError(
            f"{owner}: observations must have shape (T, ...) with T >= 1, got {y.shape}; vmap "
            "over leading batch axes."
        )
    num_steps = y.shape[0]
    observed = jnp.ones(num_steps, bool)
    if obs_mask is not None:
        obs_mask = jnp.asarray(obs_mask)
        if obs_mask.dtype != jnp.bool_ or obs_mask.shape != (num_steps,):
            raise ValueError(
                f"{owner}: obs_mask must be a bool array of shape (T,) = ({num_steps},), got "
                f"{obs_mask.dtype} {obs_mask.shape}."
            )
        observed = obs_mask
    if jnp.issubdtype(y.dtype, jnp.inexact):
        observed = observed & ~jnp.isnan(y).reshape(num_steps, -1).any(-1)
    mask = observed.reshape((num_steps,) + (1,) * (y.ndim - 1))
    return jnp.where(mask, y, jnp.zeros((), y.dtype)), observed


def _check_inputs(inputs, num_steps, owner):
    for leaf in jax.tree.leaves(inputs):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != num_steps:
            raise ValueError(
                f"{owner}: every leaf of inputs must have a leading time axis of length "
                f"T = {num_steps}, got a leaf of shape {jnp.shape(leaf)}."
            )


def _randomness(key, num_steps, num_particles, state, owner):
    """``(kind, first step's randomness, the other steps' stacked)``, kind ``"key" | "noise"``."""
    if isinstance(key, ParticleNoise):
        expected = (num_steps, num_particles) + state.shape
        if key.propagation.shape != expected or key.resampling.shape != expected[:2]:
            raise ValueError(
                f"{owner}: ParticleNoise must have propagation {expected} and resampling "
                f"{expected[:2]} for T={num_steps}, N={num_particles}, state shape "
                f"{state.shape}; got {key.propagation.shape} and {key.resampling.shape}."
            )
        first = (key.propagation[0], key.resampling[0])
        return "noise", first, (key.propagation[1:], key.resampling[1:])
    keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(num_steps))
    return "key", keys[0], keys[1:]


def weighted_moments(particles, log_weights):
    """The weighted mean and elementwise variance of particles.

    Args:
        particles: shape ``(N,) + S`` (integer states are averaged as floats).
        log_weights: shape ``(N,)``, normalized log-weights.

    Returns:
        ``(mean, variance)``, each of shape ``S``.
    """
    weights = jnp.exp(log_weights)
    x = particles.astype(log_weights.dtype)
    mean = jnp.tensordot(weights, x, axes=1)
    variance = jnp.tensordot(weights, (x - mean) ** 2, axes=1)
    return mean, variance


def particle_filter(
    key,
    model,
    params,
    observations,
    num_particles,
    *,
    inputs=None,
    obs_mask=None,
    proposal=None,
    auxiliary_log_weight=None,
    resampling="systematic",
    ess_threshold=0.5,
    gradient="score",
    soft_resampling_mix=0.5,
    history=True,
    particle_sharding=None,
) -> ParticleFilterResult:
    r"""Run a particle filter over one sequence (see the module docstring for the algorithm).

    Args:
        key: a ``jax.random`` key; or a :class:`ParticleNoise` holding the standard normals
            the filter would draw (every kernel used then needs ``from_noise``).
        model: a :class:`~numpyro_ssm.ops.particle.ParticleModel`.
        params: the parameter pytree passed to every model function.
        observations: shape ``(T,) + E``; NaN entries mark missing steps.
        num_particles: ``N``, a positive Python int.
        inputs: a pytree whose leaves have a leading time axis ``T`` (``u_t``), or None.
        obs_mask: bool, shape ``(T,)``, True where ``y_t`` counts; None counts every step.
        proposal: a :class:`~numpyro_ssm.ops.particle.ParticleProposal` (guided filter), or
            None to propose from the transition (bootstrap filter).
        auxiliary_log_weight: ``(z_{t-1}, y_t, u_t, params) -> log ĝ(y_t | z_{t-1})``, the
            look-ahead of the auxiliary particle filter (Pitt & Shephard 1999), or None.
        resampling: ``"systematic"``, ``"stratified"``, ``"residual"`` or ``"multinomial"``.
        ess_threshold: resample when the effective sample size falls below
            ``ess_threshold * N``: 1 resamples at every observed step, 0 never.
        gradient: ``"score"``, ``"soft"`` or ``"none"``, see the module docstring.
        soft_resampling_mix: ``α`` of ``gradient="soft"``.
        history: keep every step's particles, weights and ancestors (memory ``T N``); False
            keeps the last step's only.
        particle_sharding: a ``jax.sharding.Sharding`` for arrays whose leading axis is the
            particles (e.g. ``NamedSharding(mesh, PartitionSpec("particles"))``), or None.

    Returns:
        A :class:`ParticleFilterResult`.

    Raises:
        ValueError: for a nonpositive ``num_particles``, unknown options, shapes that disagree,
            or a proposal whose draws do not have the state's shape.
        TypeError: when ``model`` or ``proposal`` has the wrong type.
    """
    owner = "particle_filter"
    num = _check_options(num_particles, ess_threshold, gradient, soft_resampling_mix, owner)
    resampler = check_resampling(resampling, owner)
    check_model(model, proposal, owner)
    if auxiliary_log_weight is not None and not callable(auxiliary_log_weight):
        raise TypeError(f"{owner}: auxiliary_log_weight must be callable or None.")
    y, observed = _observed_steps(observations, obs_mask, owner)
    num_steps = y.shape[0]
    _check_inputs(inputs, num_steps, owner)
    first_input = jax.tree.map(lambda leaf: leaf[0], inputs)
    state = state_struct(model, first_input, params)
    float_types = [d for d in (state.dtype, y.dtype) if jnp.issubdtype(d, jnp.floating)]
    dtype = jnp.result_type(*float_types) if float_types else jnp.result_type(float)
    config = _Config(
        model,
        proposal,
        auxiliary_log_weight,
        resampler,
        num,
        float(ess_threshold),
        gradient,
        float(soft_resampling_mix),
        state,
        dtype,
        particle_sharding,
        owner,
    )
    kind, first_randomness, randomness = _randomness(key, num_steps, num, state, owner)

    _, move_randomness = config.split((kind, first_randomness))
    x, log_w = config.initial(move_randomness, y[0], first_input, params, observed[0])
    x = config.constrain(x)
    log_total = logsumexp(log_w)
    first_increment = jnp.where(observed[0], log_total - jnp.log(jnp.asarray(num, dtype)), 0.0)
    log_w = config.constrain(log_w - log_total)

    def body(carry, xs):
        step_randomness, y_t, u_t, observed_t = xs
        carry, (ancestors, increment, resampled) = config.step(
            carry, (kind, step_randomness), y_t, u_t, params, observed_t
        )
        x_t, log_w_t = carry
        ess_t = effective_sample_size(log_w_t)
        out = (increment, resampled, ess_t, *weighted_moments(x_t, log_w_t))
        if history:
            out = out + (x_t, log_w_t, ancestors)
        return carry, out

    rest_inputs = jax.tree.map(lambda leaf: leaf[1:], inputs)
    (x_last, log_w_last), outs = lax.scan(
        body, (x, log_w), (randomness, y[1:], rest_inputs, observed[1:])
    )
    first = (
        first_increment,
        jnp.zeros((), bool),
        effective_sample_size(log_w),
        *weighted_moments(x, log_w),
    )
    if history:
        first = first + (x, log_w, jnp.arange(num, dtype=jnp.int32))
    stacked = [jnp.concatenate([f[None], o]) for f, o in zip(first, outs, strict=True)]
    increments, resampled, ess, means, variances = stacked[:5]
    particles, log_weights, ancestors = stacked[5:] if history else (None, None, None)
    return ParticleFilterResult(
        log_marginal=increments.sum(),
        log_likelihood_increments=increments,
        filtered_means=means,
        filtered_variances=variances,
        ess=ess,
        resampled=resampled,
        final_particles=x_last,
        final_log_weights=log_w_last,
        particles=particles,
        log_weights=log_weights,
        ancestors=ancestors,
    )

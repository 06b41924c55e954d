r"""Resampling schemes and the effective sample size, vectorized over particles.

Every scheme draws ``n`` ancestor indices ``a_1 <= ... <= a_n`` from normalized weights
``W_1..W_N`` such that particle ``j`` gets ``o_j = #{i : a_i = j}`` offspring with
``E[o_j] = n W_j``. They differ in the variance of ``o_j`` (Douc, Cappé & Moulines 2005):

- **multinomial**: ``n`` i.i.d. draws, ``Var[o_j] = n W_j (1 - W_j)``;
- **stratified**: one uniform in each of ``[i/n, (i+1)/n)``, ``|o_j - n W_j| < 2``;
- **systematic**: one uniform shared by the ``n`` strata, ``o_j`` is ``floor(n W_j)`` or
  ``ceil(n W_j)``;
- **residual**: ``floor(n W_j)`` copies, the remaining ``R`` by multinomial draws on the
  residual weights, ``Var[o_j] = R W̄_j (1 - W̄_j)`` with ``W̄_j ∝ n W_j - floor(n W_j)``.

Residual and stratified counts have a smaller variance than multinomial ones for every
``j``; systematic counts usually do too, but no ordering against stratified holds in general.

**Uniform inputs.** Each scheme is a deterministic map from uniforms in ``[0, 1)`` to ancestors
(:data:`RESAMPLERS`), so the correlated pseudo-marginal sampler can feed it ``Φ(u)`` for
Gaussian ``u`` it moves smoothly. Stratified and systematic resampling are inverse-CDF
evaluations at ``n`` sorted points. Counting, for each particle, the points below its
cumulative weight has a closed form for both, so the ancestors come from one cumulative sum
of the weights, a scatter of ``N`` counts and one cumulative sum of the counts: ``O(N)``,
with no binary search. Multinomial resampling searches (``O(n log N)``).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = [
    "RESAMPLERS",
    "Resampler",
    "effective_sample_size",
    "multinomial_resample",
    "normalized_weights",
    "residual_resample",
    "stratified_resample",
    "systematic_resample",
]


def effective_sample_size(log_weights) -> jax.Array:
    r"""``ESS = 1 / sum_i W_i^2`` of the normalized weights, computed in log space.

    Args:
        log_weights: shape ``(..., N)``, unnormalized log-weights (``-inf`` allowed).

    Returns:
        Shape ``(...)``, in ``[1, N]``.
    """
    log_weights = jnp.asarray(log_weights)
    return jnp.exp(2 * logsumexp(log_weights, -1) - logsumexp(2 * log_weights, -1))


def normalized_weights(log_weights) -> jax.Array:
    """``W_i = exp(log_weights_i) / sum_j exp(log_weights_j)``, shape ``(..., N)``."""
    return jax.nn.softmax(jnp.asarray(log_weights), axis=-1)


def _cumulative(weights):
    """Cumulative weights normalized to end at exactly 1 (rounding cannot lose the last one)."""
    cumulative = jnp.cumsum(weights)
    cumulative = cumulative / cumulative[-1]
    return cumulative.at[-1].set(1.0)


def _ancestors_from_counts(cumulative_counts, num_samples):
    """Ancestors from ``K_j = #{samples assigned to particles <= j}`` (nondecreasing, ``K_N = n``).

    Sample ``i`` belongs to the first particle ``j`` with ``K_j > i``, that is
    ``a_i = #{j : K_j <= i}``: a scatter of ones at the ``K_j`` and a cumulative sum.
    """
    num_particles = cumulative_counts.shape[0]
    marks = jnp.zeros(num_samples + 1, jnp.int32).at[cumulative_counts].add(1)
    return jnp.minimum(jnp.cumsum(marks[:-1]), num_particles - 1).astype(jnp.int32)


def _systematic(uniforms, weights, num_samples):
    # points (i + U) / n; #{i : (i + U) / n < c} = clip(ceil(n c - U), 0, n)
    scaled = num_samples * _cumulative(weights) - uniforms[0]
    counts = jnp.clip(jnp.ceil(scaled), 0, num_samples).astype(jnp.int32)
    return _ancestors_from_counts(counts, num_samples)


def _stratified(uniforms, weights, num_samples):
    # points (i + U_i) / n; below c lie all m = floor(n c) full strata, and stratum m's point
    # when U_m < n c - m.
    scaled = num_samples * _cumulative(weights)
    whole = jnp.floor(scaled)
    stratum = jnp.clip(whole.astype(jnp.int32), 0, num_samples - 1)
    counts = whole.astype(jnp.int32) + (uniforms[stratum] < scaled - whole)
    counts = jnp.clip(counts, 0, num_samples).astype(jnp.int32)
    return _ancestors_from_counts(counts, num_samples)


def _inverse_cdf(uniforms, cumulative):
    ancestors = jnp.searchsorted(cumulative, uniforms, side="right")
    return jnp.minimum(ancestors, cumulative.shape[0] - 1).astype(jnp.int32)


def _multinomial(uniforms, weights, num_samples):
    return jnp.sort(_inverse_cdf(uniforms[:num_samples], _cumulative(weights)))


def _residual(uniforms, weights, num_samples):
    weights = weights / jnp.sum(weights)
    expected = num_samples * weights
    copies = jnp.floor(expected).astype(jnp.int32)
    num_copies = jnp.sum(copies)
    deterministic = _ancestors_from_counts(jnp.cumsum(copies), num_samples)
    leftover = expected - copies
    # with no residual mass (every n W_j an integer) the random part is never used
    leftover = jnp.where(jnp.sum(leftover) > 0, leftover, weights)
    random = _inverse_cdf(uniforms[:num_samples], _cumulative(leftover))
    position = jnp.arange(num_samples)
    random = random[jnp.clip(position - num_copies, 0, num_samples - 1)]
    return jnp.where(position < num_copies, deterministic, random)


class Resampler(NamedTuple):
    """A resampling scheme as a deterministic function of uniforms.

    Attributes:
        num_uniforms: ``(num_samples) -> int``, how many uniforms the scheme reads.
        from_uniforms: ``(uniforms (num_uniforms,), weights (N,), num_samples) -> ancestors``;
            ``weights`` are nonnegative (normalized or not), ``ancestors`` has shape
            ``(num_samples,)``, dtype int32, sorted (residual: the deterministic copies, sorted,
            then the random draws, sorted).
    """

    num_uniforms: Callable
    from_uniforms: Callable


#: scheme name -> :class:`Resampler`
RESAMPLERS = {
    "multinomial": Resampler(lambda n: n, _multinomial),
    "stratified": Resampler(lambda n: n, _stratified),
    "systematic": Resampler(lambda n: 1, _systematic),
    "residual": Resampler(lambda n: n, _residual),
}


def check_resampling(resampling, owner):
    """The :class:`Resampler` called ``resampling``.

    Args:
        resampling: a scheme name, one of :data:`RESAMPLERS`.
        owner: the calling function's name, for the message.

    Returns:
        The :class:`Resampler`.

    Raises:
        ValueError: for an unknown name.
    """
    if resampling not in RESAMPLERS:
        raise ValueError(
            f"{owner}: resampling must be one of {tuple(RESAMPLERS)}, got {resampling!r}."
        )
    return RESAMPLERS[resampling]


def _resample(scheme, key, log_weights, num_samples):
    log_weights = jnp.asarray(log_weights)
    if log_weights.ndim != 1 or log_weights.shape[0] < 1:
        raise ValueError(
            f"{scheme}_resample: log_weights must have shape (N,) with N >= 1, got "
            f"{log_weights.shape}; vmap over leading axes."
        )
    num_samples = log_weights.shape[0] if num_samples is None else num_samples
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(
            f"{scheme}_resample: num_samples must be a positive int, got {num_samples!r}."
        )
    resampler = RESAMPLERS[scheme]
    dtype = log_weights.dtype if jnp.issubdtype(log_weights.dtype, jnp.floating) else float
    uniforms = jax.random.uniform(key, (resampler.num_uniforms(num_samples),), dtype)
    return resampler.from_uniforms(uniforms, normalized_weights(log_weights), num_samples)


def multinomial_resample(key, log_weights, num_samples=None) -> jax.Array:
    """Multinomial resampling: ``num_samples`` i.i.d. draws from the normalized weights.

    Args:
        key: a ``jax.random`` key.
        log_weights: shape ``(N,)``, unnormalized log-weights.
        num_samples: ``n``, the number of ancestors; defaults to ``N``.

    Returns:
        Ancestor indices, shape ``(n,)``, int32, sorted.
    """
    return _resample("multinomial", key, log_weights, num_samples)


def stratified_resample(key, log_weights, num_samples=None) -> jax.Array:
    """Stratified resampling: one uniform in each stratum ``[i/n, (i+1)/n)``.

    Args:
        key: a ``jax.random`` key.
        log_weights: shape ``(N,)``, unnormalized log-weights.
        num_samples: ``n``, the number of ancestors; defaults to ``N``.

    Returns:
        Ancestor indices, shape ``(n,)``, int32, sorted.
    """
    return _resample("stratified", key, log_weights, num_samples)


def systematic_resample(key, log_weights, num_samples=None) -> jax.Array:
    """Systematic resampling: the points ``(i + U) / n`` for one uniform ``U``.

    Args:
        key: a ``jax.random`` key.
        log_weights: shape ``(N,)``, unnormalized log-weights.
        num_samples: ``n``, the number of ancestors; defaults to ``N``.

    Returns:
        Ancestor indices, shape ``(n,)``, int32, sorted.
    """
    return _resample("systematic", key, log_weights, num_samples)


def residual_resample(key, log_weights, num_samples=None) -> jax.Array:
    """Residual resampling: ``floor(n W_j)`` copies, then multinomial draws on the rest.

    Args:
        key: a ``jax.random`` key.
        log_weights: shape ``(N,)``, unnormalized log-weights.
        num_samples: ``n``, the number of ancestors; defaults to ``N``.

    Returns:
        Ancestor indices, shape ``(n,)``, int32 (the deterministic copies first, sorted, then
        the random ones, sorted).
    """
    return _resample("residual", key, log_weights, num_samples)

"""Per-state emissions of the discrete-state families (``DiscreteHMM``, ``DiscreteHSMM``).

Both emit ``y_t`` from the state ``z_t`` through a NumPyro distribution whose rightmost batch axis
is the ``K`` states (time-varying with batch ``(..., T | 1, K)``). :class:`StateEmissionMixin`
holds what follows from that alone: the support, the checks of the observations, the step mask,
the per-state log-likelihoods, the marginal moments given the state marginals, and the
observations drawn along a state path.
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from numpyro_ssm.distributions._validation import check_real

__all__ = ["StateEmissionMixin", "emission_shapes", "shape_of"]


def shape_of(x):
    """The shape of an array argument, a shape tuple passed to ``infer_shapes``, or None."""
    if x is None:
        return None
    return tuple(x) if isinstance(x, tuple) else jnp.shape(x)


def emission_shapes(emission_dist):
    """``(batch_shape, event_shape)`` of a distribution or of such a pair of tuples."""
    if isinstance(emission_dist, tuple):
        return tuple(emission_dist[0]), tuple(emission_dist[1])
    if not isinstance(emission_dist, Distribution):
        raise ValueError(
            "emission_dist must be a numpyro Distribution whose rightmost batch axis is the K "
            f"states, got {type(emission_dist).__name__}."
        )
    return tuple(emission_dist.batch_shape), tuple(emission_dist.event_shape)


class StateEmissionMixin:
    """Emissions ``y_t | z_t = k ~ emission_dist[..., t, k]`` of a discrete-state sequence model.

    The host class sets ``emission_dist``, ``obs_mask``, ``num_steps``, ``num_states`` (and
    ``_time_source`` for messages), and provides ``_state_marginals()``: the prior ``p(z_t =
    k)``, shape ``batch_shape + (T, K)``.
    """

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        """Emission support for each of the ``T`` steps."""
        return constraints.independent(self.emission_dist.support, 1)

    def _check_value(self, value):
        """``value`` as an array, after checking its dtype and shape against the model's."""
        owner = type(self).__name__
        value = jnp.asarray(value)
        check_real("observations", value, owner)
        event_shape = self.event_shape
        if value.ndim < len(event_shape) or value.shape[value.ndim - len(event_shape) :] != (
            event_shape
        ):
            expected = ", ".join(map(str, event_shape))
            source = getattr(self, "_time_source", None)
            origin = f" (T={self.num_steps} from {source})" if source else ""
            raise ValueError(
                f"{owner}: observations must have shape (..., {expected}) = (..., T) + "
                f"emission event_shape{origin}, got {value.shape}."
            )
        try:
            jnp.broadcast_shapes(value.shape[: value.ndim - len(event_shape)], self.batch_shape)
        except ValueError:
            raise ValueError(
                f"{owner}: observations of shape {value.shape} do not broadcast with "
                f"batch_shape {self.batch_shape} + event_shape {event_shape}."
            ) from None
        return value

    def step_mask(self, value):
        """Which steps count: ``obs_mask`` is True and the observation has no NaN entry.

        A step with any missing entry is dropped as a whole (the emission has no marginal).

        Args:
            value: observations, shape ``batch + (T,) + E``.

        Returns:
            bool array of shape ``batch + (T,)``, ``batch`` broadcast with ``batch_shape``.
        """
        value = self._check_value(value)
        emission_ndim = len(self.emission_dist.event_shape)
        step_shape = value.shape[: value.ndim - emission_ndim]
        batch = jnp.broadcast_shapes(step_shape[:-1], self.batch_shape)
        mask = jnp.ones(step_shape, dtype=bool)
        if self.obs_mask is not None:
            mask = mask & self.obs_mask
        if jnp.issubdtype(value.dtype, jnp.inexact):
            nan = jnp.isnan(value)
            if emission_ndim:
                nan = jnp.any(nan, axis=tuple(range(-emission_ndim, 0)))
            mask = mask & ~nan
        return jnp.broadcast_to(mask, batch + (self.num_steps,))

    def _log_likelihoods(self, value):
        """Return ``(log_likelihoods (..., T, K), step_mask (..., T))`` for observations ``value``.

        Missing steps (:meth:`step_mask` False) are replaced by a value in the emission's
        support before the emission is evaluated (the double-``where`` pattern), so gradients
        stay finite.
        """
        value = self._check_value(value)
        mask = self.step_mask(value)
        emission_ndim = len(self.emission_dist.event_shape)
        entry_mask = mask.reshape(mask.shape + (1,) * emission_ndim)
        safe = jnp.where(entry_mask, value, self.emission_dist.support.feasible_like(value))
        if self._validate_args:
            self._validate_sample(safe)
        per_state = jnp.expand_dims(safe, axis=-1 - emission_ndim)
        log_lik = self.emission_dist.log_prob(per_state)
        log_lik = jnp.where(mask[..., None], log_lik, 0.0)
        return log_lik, jnp.broadcast_to(mask, log_lik.shape[:-1])

    def _emission_moments(self):
        """Per-state emission means and second moments, shapes ``(..., T | 1, K) + E``."""
        emission = self.emission_dist
        try:
            mean, variance = emission.mean, emission.variance
        except NotImplementedError:
            raise NotImplementedError(
                f"{type(self).__name__}.mean/variance need the emission's moments; "
                f"{type(emission).__name__} does not provide them."
            ) from None
        shape = (
            emission.batch_shape
            if len(emission.batch_shape) >= 2
            else (1,) + tuple(emission.batch_shape)
        )
        full = shape + tuple(emission.event_shape)
        return jnp.reshape(mean, full), jnp.reshape(variance + mean**2, full)

    @property
    def mean(self):
        """Marginal means ``E[y_t] = sum_k p(z_t = k) E[y_t | z_t = k]``, ``batch + (T,) + E``."""
        probs = self._state_marginals()
        mean, _ = self._emission_moments()
        extra = (1,) * len(self.emission_dist.event_shape)
        return jnp.sum(probs.reshape(probs.shape + extra) * mean, axis=-1 - len(extra))

    @property
    def variance(self):
        """Marginal variances per entry (law of total variance), shape ``batch + (T,) + E``."""
        probs = self._state_marginals()
        mean, second = self._emission_moments()
        extra = (1,) * len(self.emission_dist.event_shape)
        weights = probs.reshape(probs.shape + extra)
        axis = -1 - len(extra)
        first = jnp.sum(weights * mean, axis=axis)
        return jnp.sum(weights * second, axis=axis) - first**2

    def _emit(self, key, states, sample_shape):
        """Observations along state paths ``states`` (``sample_shape + batch_shape + (T,)``)."""
        emission_ndim = len(self.emission_dist.event_shape)
        expanded = self.emission_dist.expand(self.batch_shape + (self.num_steps, self.num_states))
        per_state = expanded.sample(key, tuple(sample_shape))
        index = states[..., None].reshape(states.shape + (1,) * (emission_ndim + 1))
        observations = jnp.take_along_axis(per_state, index, axis=-1 - emission_ndim)
        return jnp.squeeze(observations, axis=-1 - emission_ndim)

    def sample_with_states(self, key, sample_shape=()):
        """Draw latent paths and observations from the prior.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            ``(states, observations)`` with shapes ``sample_shape + batch_shape + (T,)`` and
            ``sample_shape + batch_shape + (T,) + E``.
        """
        state_key, emission_key = jax.random.split(key)
        states = self._sample_states(state_key, sample_shape)
        return states, self._emit(emission_key, states, sample_shape)

    def sample(self, key, sample_shape=()):
        """Draw observations from the prior, shape ``sample_shape + batch_shape + event_shape``.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            Observations of shape ``sample_shape + batch_shape + (T,) + E``.
        """
        return self.sample_with_states(key, sample_shape)[1]

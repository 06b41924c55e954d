r"""``DiscreteHMM``: a hidden Markov model with its latent path marginalized exactly.

.. math::

    z_1 \sim \mathrm{Categorical}(\pi), \qquad
    z_{t+1} \mid z_t \sim \mathrm{Categorical}(A_t[z_t, :]), \qquad
    y_t \mid z_t \sim p_{\mathrm{emission}}(\cdot \mid z_t, t),

for ``t = 1..T``, with ``T - 1`` transitions. ``log_prob(y)`` is ``log p(y_{1:T})`` computed by the
forward algorithm of :mod:`numpyro_ssm.ops.hmm` (serial, or parallel-in-time with
``parallel=True``).
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from numpyro_ssm.distributions._hmm_posterior import HMMPosteriorMixin
from numpyro_ssm.distributions._markov_chain import MarkovChainMixin
from numpyro_ssm.distributions._shapes import (
    broadcast_batch_shapes,
    check_plates,
    infer_num_steps,
    time_source,
)
from numpyro_ssm.distributions._ssm import StateSpaceModel
from numpyro_ssm.distributions._validation import (
    check_bool_mask,
    check_real,
    log_probability_vector,
    validate_concrete_args,
)
from numpyro_ssm.ops import hmm as hmm_ops

__all__ = ["DiscreteHMM"]

_stochastic_matrix = constraints.independent(constraints.simplex, 1)
_logits_matrix = constraints.independent(log_probability_vector, 1)


def _shape_of(x):
    if x is None:
        return None
    return tuple(x) if isinstance(x, tuple) else jnp.shape(x)


def _emission_shapes(emission_dist):
    if isinstance(emission_dist, tuple):
        return tuple(emission_dist[0]), tuple(emission_dist[1])
    if not isinstance(emission_dist, Distribution):
        raise ValueError(
            "emission_dist must be a numpyro Distribution whose rightmost batch axis is the K "
            f"states, got {type(emission_dist).__name__}."
        )
    return tuple(emission_dist.batch_shape), tuple(emission_dist.event_shape)


def _hmm_shapes(
    initial_shape, transition_shape, emission_batch, emission_event, obs_mask_shape, num_steps
):
    """Check the argument shapes; return ``(batch_shape, event_shape, T, K, time source)``."""
    if len(initial_shape) < 1:
        raise ValueError(
            f"initial_probs/initial_logits must have shape (..., K), got {initial_shape}."
        )
    num_states = initial_shape[-1]
    if len(transition_shape) < 2 or transition_shape[-1] != transition_shape[-2]:
        raise ValueError(
            "transition_matrix/transition_logits must be square, shape (..., K, K), got "
            f"{transition_shape}."
        )
    if transition_shape[-1] != num_states:
        raise ValueError(
            f"transition_matrix/transition_logits {transition_shape} has K={transition_shape[-1]}"
            f" states but initial_probs/initial_logits {initial_shape} has K={num_states}."
        )
    if not emission_batch or emission_batch[-1] != num_states:
        hint = (
            " A time-varying emission has batch shape (..., T, K), not (K, T)."
            if num_states in emission_batch
            else " Example: dist.Poisson(rates) with rates (K,)."
        )
        raise ValueError(
            f"emission_dist must have the K={num_states} states (from initial_probs and "
            f"transition_matrix) as its rightmost batch axis, got batch_shape {emission_batch} "
            f"(event_shape {emission_event}).{hint}"
        )
    time_axes = [
        ("transition_matrix", transition_shape, -3 if len(transition_shape) >= 3 else None, -1),
        ("emission_dist batch_shape", emission_batch, -2 if len(emission_batch) >= 2 else None, 0),
    ]
    if obs_mask_shape is not None:
        if len(obs_mask_shape) < 1:
            raise ValueError(f"obs_mask must have shape (..., T), got {obs_mask_shape}.")
        time_axes.append(("obs_mask", obs_mask_shape, -1, 0))
    T = infer_num_steps(time_axes, num_steps)
    batch_shapes = {
        "initial_probs": initial_shape[:-1],
        "transition_matrix": transition_shape[:-3],
        "emission_dist": emission_batch[:-2],
    }
    if obs_mask_shape is not None:
        batch_shapes["obs_mask"] = obs_mask_shape[:-1]
    batch_shape = broadcast_batch_shapes(batch_shapes)
    source = time_source(time_axes, num_steps)
    return batch_shape, (T,) + emission_event, T, num_states, source, batch_shapes


class DiscreteHMM(HMMPosteriorMixin, MarkovChainMixin, StateSpaceModel):
    r"""Hidden Markov model over ``T`` observations with the discrete latent path summed out.

    .. math::

        z_1 \sim \mathrm{Cat}(\pi),\quad z_{t+1} \mid z_t \sim \mathrm{Cat}(A_t[z_t]),\quad
        y_t \mid z_t = k \sim \mathrm{emission}_{t, k},\qquad
        \log p(y_{1:T}) = \log \sum_{z_{1:T}} p(z_{1:T}, y_{1:T}).

    Time is the rightmost batch-like axis of every time-indexable argument, and a time axis of
    length 1 (or none) means homogeneous. A *batch* of ``B`` homogeneous transition matrices is
    therefore ``(B, 1, K, K)``: a ``(B, K, K)`` array is read as ``B`` time steps.

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``. Or give ``initial_logits``.
        transition_matrix: shape ``(K, K)`` or ``(..., T - 1 | 1, K, K)``,
            ``[t, i, j] = p(z_{t+1} = j | z_t = i)``. Or give ``transition_logits``.
        emission_dist: a NumPyro distribution whose rightmost batch axis is the ``K`` states:
            batch shape ``(K,)`` (homogeneous) or ``(..., T | 1, K)`` (time-varying), any event
            shape ``E``. Examples: ``dist.Poisson(rates)`` with ``rates (K,)``,
            ``dist.MultivariateNormal(loc (K, D), cov (K, D, D))``.
        initial_logits: shape ``(..., K)``, unnormalized log ``initial_probs``; ``-inf`` marks
            a state that cannot start the chain.
        transition_logits: shape like ``transition_matrix``, unnormalized log-probabilities
            (normalized over the last axis); ``-inf`` marks a structural zero.
        num_steps: ``T``; required only when no argument carries a time axis.
        obs_mask: bool, shape ``(..., T)``, True where a step is observed. Masked steps (and
            steps whose float observation has a NaN entry) contribute nothing to ``log_prob``.
            Other dtypes are rejected (pass ``mask.astype(bool)``), never reinterpreted.
        parallel: use the O(log T)-depth associative scan (faster on accelerators).
        validate_args: check stochastic rows and observations' support (NumPyro semantics).

    The distribution has ``batch_shape`` broadcast from all arguments and
    ``event_shape = (T,) + E``.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def model(counts):
        ...     A = numpyro.sample("A", dist.Dirichlet(jnp.ones((2, 2))).to_event(1))
        ...     rates = numpyro.sample("rates", dist.Gamma(2.0, 0.1).expand([2]).to_event(1))
        ...     hmm = DiscreteHMM(jnp.ones(2) / 2, A, dist.Poisson(rates), num_steps=len(counts))
        ...     numpyro.sample("y", hmm, obs=counts)
    """

    arg_constraints = {
        "initial_probs": constraints.simplex,
        "initial_logits": log_probability_vector,
        "transition_matrix": _stochastic_matrix,
        "transition_logits": _logits_matrix,
    }
    pytree_data_fields = (
        "initial_probs",
        "initial_logits",
        "transition_matrix",
        "transition_logits",
        "emission_dist",
        "obs_mask",
    )
    pytree_aux_fields = ("num_steps", "num_states", "parallel")

    def __init__(
        self,
        initial_probs=None,
        transition_matrix=None,
        emission_dist=None,
        *,
        initial_logits=None,
        transition_logits=None,
        num_steps=None,
        obs_mask=None,
        parallel=False,
        validate_args=None,
    ):
        if (initial_probs is None) == (initial_logits is None):
            raise ValueError("DiscreteHMM: give exactly one of initial_probs and initial_logits.")
        if (transition_matrix is None) == (transition_logits is None):
            raise ValueError(
                "DiscreteHMM: give exactly one of transition_matrix and transition_logits."
            )
        if emission_dist is None:
            raise ValueError("DiscreteHMM: emission_dist is required.")
        for name, arg in (
            ("initial_probs", initial_probs),
            ("initial_logits", initial_logits),
            ("transition_matrix", transition_matrix),
            ("transition_logits", transition_logits),
        ):
            check_real(name, arg, "DiscreteHMM")
        obs_mask = check_bool_mask(obs_mask, "DiscreteHMM")
        if initial_probs is not None:
            self.initial_probs = jnp.asarray(initial_probs)
        else:
            self.initial_logits = jnp.asarray(initial_logits)
        if transition_matrix is not None:
            self.transition_matrix = jnp.asarray(transition_matrix)
        else:
            self.transition_logits = jnp.asarray(transition_logits)
        self.emission_dist = emission_dist
        self.obs_mask = obs_mask
        batch_shape, event_shape, self.num_steps, self.num_states, source, parts = (
            self.infer_shapes(
                initial_probs=_shape_of(initial_probs),
                transition_matrix=_shape_of(transition_matrix),
                emission_dist=emission_dist,
                initial_logits=_shape_of(initial_logits),
                transition_logits=_shape_of(transition_logits),
                num_steps=num_steps,
                obs_mask=_shape_of(obs_mask),
                _with_sizes=True,
            )
        )
        check_plates(parts, "DiscreteHMM")
        self._time_source = source
        self.parallel = bool(parallel)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints; traced ones are skipped.

        See :func:`~numpyro_ssm.distributions._validation.validate_concrete_args`.
        """
        validate_concrete_args(self, strict)

    @classmethod
    def infer_shapes(
        cls,
        initial_probs=None,
        transition_matrix=None,
        emission_dist=None,
        *,
        initial_logits=None,
        transition_logits=None,
        num_steps=None,
        obs_mask=None,
        _with_sizes=False,
        **kwargs,
    ):
        """Infer ``(batch_shape, event_shape)`` from argument shapes, without arrays.

        Args:
            initial_probs: shape tuple of ``initial_probs`` (or give ``initial_logits``).
            transition_matrix: shape tuple of ``transition_matrix`` (or ``transition_logits``).
            emission_dist: a distribution, or a ``(batch_shape, event_shape)`` pair.
            initial_logits: shape tuple, instead of ``initial_probs``.
            transition_logits: shape tuple, instead of ``transition_matrix``.
            num_steps: ``T`` when no argument carries time.
            obs_mask: shape tuple of ``obs_mask``, or None.
            _with_sizes: also return ``T`` and ``K`` (internal).
            **kwargs: ignored (``parallel``, ``validate_args``).

        Returns:
            ``(batch_shape, event_shape)``.
        """
        initial_shape = initial_probs if initial_probs is not None else initial_logits
        transition_shape = transition_matrix if transition_matrix is not None else transition_logits
        if initial_shape is None or transition_shape is None or emission_dist is None:
            raise ValueError(
                "DiscreteHMM needs initial_probs|initial_logits, transition_matrix|"
                "transition_logits and emission_dist."
            )
        emission_batch, emission_event = _emission_shapes(emission_dist)
        shapes = _hmm_shapes(
            tuple(initial_shape),
            tuple(transition_shape),
            emission_batch,
            emission_event,
            None if obs_mask is None else tuple(obs_mask),
            num_steps,
        )
        return shapes if _with_sizes else shapes[:2]

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        """Emission support for each of the ``T`` steps."""
        return constraints.independent(self.emission_dist.support, 1)

    # -- likelihoods ------------------------------------------------------------------------------

    def _check_value(self, value):
        """``value`` as an array, after checking its dtype and shape against the model's."""
        value = jnp.asarray(value)
        check_real("observations", value, "DiscreteHMM")
        event_shape = self.event_shape
        if value.ndim < len(event_shape) or value.shape[value.ndim - len(event_shape) :] != (
            event_shape
        ):
            expected = ", ".join(map(str, event_shape))
            source = getattr(self, "_time_source", None)
            origin = f" (T={self.num_steps} from {source})" if source else ""
            raise ValueError(
                f"DiscreteHMM: observations must have shape (..., {expected}) = (..., T) + "
                f"emission event_shape{origin}, got {value.shape}."
            )
        try:
            jnp.broadcast_shapes(value.shape[: value.ndim - len(event_shape)], self.batch_shape)
        except ValueError:
            raise ValueError(
                f"DiscreteHMM: observations of shape {value.shape} do not broadcast with "
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

    def log_prob(self, value):
        """Log marginal likelihood ``log p(y_{1:T})``, by :func:`~numpyro_ssm.ops.hmm_log_marginal`.

        Args:
            value: observations, shape ``sample_shape + batch_shape + (T,) + E`` (leading
                axes broadcast). NaN entries in float observations mark missing steps.

        Returns:
            Shape ``sample_shape + batch_shape``.
        """
        return self._run_op(hmm_ops.hmm_log_marginal, value)

    # -- moments ----------------------------------------------------------------------------------

    def _emission_moments(self):
        """Per-state emission means and second moments, shapes ``(..., T | 1, K) + E``."""
        emission = self.emission_dist
        try:
            mean, variance = emission.mean, emission.variance
        except NotImplementedError:
            raise NotImplementedError(
                f"DiscreteHMM.mean/variance need the emission's moments; "
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

    # -- prior sampling ---------------------------------------------------------------------------

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
        emission_ndim = len(self.emission_dist.event_shape)
        expanded = self.emission_dist.expand(self.batch_shape + (self.num_steps, self.num_states))
        per_state = expanded.sample(emission_key, tuple(sample_shape))
        index = states[..., None].reshape(states.shape + (1,) * (emission_ndim + 1))
        observations = jnp.take_along_axis(per_state, index, axis=-1 - emission_ndim)
        return states, jnp.squeeze(observations, axis=-1 - emission_ndim)

    def sample(self, key, sample_shape=()):
        """Draw observations from the prior, shape ``sample_shape + batch_shape + event_shape``.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            Observations of shape ``sample_shape + batch_shape + (T,) + E``.
        """
        return self.sample_with_states(key, sample_shape)[1]

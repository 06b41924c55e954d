r"""``DiscreteHMM``: a hidden Markov model with its latent path marginalized exactly.

.. math::

    z_1 \sim \mathrm{Categorical}(\pi), \qquad
    z_{t+1} \mid z_t \sim \mathrm{Categorical}(A_t[z_t, :]), \qquad
    y_t \mid z_t \sim p_{\mathrm{emission}}(\cdot \mid z_t, t),

for ``t = 1..T``, with ``T - 1`` transitions. ``log_prob(y)`` is ``log p(y_{1:T})`` computed by the
forward algorithm of :mod:`numpyro_ssm.ops.hmm` (serial, or parallel-in-time with
``parallel=True``).
"""

import jax.numpy as jnp
from numpyro.distributions import constraints

from numpyro_ssm.distributions._emission import StateEmissionMixin, emission_shapes, shape_of
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


class DiscreteHMM(HMMPosteriorMixin, MarkovChainMixin, StateEmissionMixin, StateSpaceModel):
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
                initial_probs=shape_of(initial_probs),
                transition_matrix=shape_of(transition_matrix),
                emission_dist=emission_dist,
                initial_logits=shape_of(initial_logits),
                transition_logits=shape_of(transition_logits),
                num_steps=num_steps,
                obs_mask=shape_of(obs_mask),
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
        emission_batch, emission_event = emission_shapes(emission_dist)
        shapes = _hmm_shapes(
            tuple(initial_shape),
            tuple(transition_shape),
            emission_batch,
            emission_event,
            None if obs_mask is None else tuple(obs_mask),
            num_steps,
        )
        return shapes if _with_sizes else shapes[:2]

    # -- likelihoods ------------------------------------------------------------------------------

    def log_prob(self, value):
        """Log marginal likelihood ``log p(y_{1:T})``, by :func:`~numpyro_ssm.ops.hmm_log_marginal`.

        Args:
            value: observations, shape ``sample_shape + batch_shape + (T,) + E`` (leading
                axes broadcast). NaN entries in float observations mark missing steps.

        Returns:
            Shape ``sample_shape + batch_shape``.
        """
        return self._run_op(hmm_ops.hmm_log_marginal, value)

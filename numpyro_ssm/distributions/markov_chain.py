r"""``MarkovChain``: the prior of a discrete state path, as an explicit sample site.

.. math::

    z_1 \sim \mathrm{Cat}(\pi), \qquad z_{t+1} \mid z_t \sim \mathrm{Cat}(P_t[z_t]).

The marginalized models (:class:`~numpyro_ssm.DiscreteHMM`,
:class:`~numpyro_ssm.AutoregressiveHMM`) sum the path out; this distribution keeps it as a site,
for blocked Gibbs samplers (``numpyro.infer.HMCGibbs`` with the path as a Gibbs site, drawn by
FFBS, see :mod:`numpyro_ssm.infer.gibbs`) and for models in which other parts depend on the
path (a switching linear dynamical system's latent dynamics).
"""

import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from numpyro_ssm.distributions._markov_chain import MarkovChainMixin
from numpyro_ssm.distributions._shapes import broadcast_batch_shapes, infer_num_steps
from numpyro_ssm.distributions._validation import log_probability_vector, validate_concrete_args

__all__ = ["MarkovChain"]


class MarkovChain(MarkovChainMixin, Distribution):
    """The distribution of a path ``z_{1:T}`` of a discrete Markov chain.

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``. Or give ``initial_logits``.
        transition_matrix: shape ``(K, K)`` or ``(..., T - 1 | 1, K, K)``. Or give
            ``transition_logits``.
        initial_logits: shape ``(..., K)``, instead of ``initial_probs``.
        transition_logits: like ``transition_matrix``, unnormalized log-probabilities.
        num_steps: ``T``; needed unless the transitions carry a time axis.
        validate_args: check the parameters' constraints (NumPyro semantics).

    ``event_shape = (T,)``; values are int paths in ``[0, K)``.

    Example:
        >>> z = numpyro.sample("z", MarkovChain(jnp.ones(3) / 3, P, num_steps=T))  # (T,)
    """

    arg_constraints = {
        "initial_probs": constraints.simplex,
        "initial_logits": log_probability_vector,
        "transition_matrix": constraints.independent(constraints.simplex, 1),
        "transition_logits": constraints.independent(log_probability_vector, 1),
    }
    pytree_data_fields = (
        "initial_probs",
        "initial_logits",
        "transition_matrix",
        "transition_logits",
    )
    pytree_aux_fields = ("num_steps", "num_states")

    def __init__(
        self,
        initial_probs=None,
        transition_matrix=None,
        *,
        initial_logits=None,
        transition_logits=None,
        num_steps=None,
        validate_args=None,
    ):
        if (initial_probs is None) == (initial_logits is None):
            raise ValueError("MarkovChain: give exactly one of initial_probs and initial_logits.")
        if (transition_matrix is None) == (transition_logits is None):
            raise ValueError(
                "MarkovChain: give exactly one of transition_matrix and transition_logits."
            )
        initial = jnp.asarray(initial_probs if initial_probs is not None else initial_logits)
        trans = jnp.asarray(
            transition_matrix if transition_matrix is not None else transition_logits
        )
        K = initial.shape[-1] if initial.ndim else 0
        if initial.ndim < 1 or trans.ndim < 2 or trans.shape[-2:] != (K, K):
            raise ValueError(
                "MarkovChain: initial_probs must have shape (..., K) and transition_matrix "
                f"(..., K, K) with the same K, got {initial.shape} and {trans.shape}."
            )
        T = infer_num_steps(
            [("transition_matrix", trans.shape, -3 if trans.ndim >= 3 else None, -1)], num_steps
        )
        if initial_probs is not None:
            self.initial_probs = initial
        else:
            self.initial_logits = initial
        if transition_matrix is not None:
            self.transition_matrix = trans
        else:
            self.transition_logits = trans
        self.num_steps, self.num_states = T, K
        batch = broadcast_batch_shapes(
            {"initial_probs": initial.shape[:-1], "transition_matrix": trans.shape[:-3]}
        )
        super().__init__(batch, (T,), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """Paths with values in ``[0, K)``."""
        return constraints.independent(constraints.integer_interval(0, self.num_states - 1), 1)

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints; traced ones are skipped."""
        validate_concrete_args(self, strict)

    def sample(self, key, sample_shape=()):
        """Draw paths, shape ``sample_shape + batch_shape + (T,)``.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            int paths.
        """
        return self._sample_states(key, sample_shape)

    def log_prob(self, value):
        """``log p(z_1) + sum_t log P_t[z_t, z_{t+1}]``, shape ``sample + batch``.

        Args:
            value: int paths, shape ``(..., T)``.

        Returns:
            The log-probability of each path.
        """
        z = jnp.asarray(value)
        log_init, log_trans = self._log_params()
        if log_trans.ndim == 2:
            log_trans = log_trans[None]
        first = jnp.take_along_axis(log_init, z[..., :1], axis=-1)[..., 0]
        rows = jnp.take_along_axis(log_trans, z[..., :-1, None, None], axis=-2)[..., 0, :]
        steps = jnp.take_along_axis(rows, z[..., 1:, None], axis=-1)[..., 0]
        return first + steps.sum(-1)

    @property
    def mean(self):
        """``E[z_t]`` of the integer labels (rarely meaningful), shape ``batch + (T,)``."""
        probs = self._state_marginals()
        return jnp.sum(probs * jnp.arange(self.num_states), -1)

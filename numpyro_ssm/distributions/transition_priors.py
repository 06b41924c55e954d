r"""Sticky Dirichlet priors on transition matrices, and through them the weak-limit HDP.

.. math::

    P_k \sim \mathrm{Dir}(\alpha w + \kappa e_k), \qquad k = 1, \dots, K,

independently over the rows ``k``: ``α`` spreads mass over the columns in proportion to ``w``
(ones by default, so every entry gets ``α``), and the *stickiness* ``κ`` adds mass to the
diagonal, favouring long visits (:func:`~numpyro_ssm.ops.hmm.expected_duration` gives the
duration a choice of ``(α, κ)`` implies). The **weak-limit sticky HDP** (Fox et al. 2011) is the
same prior with ``w = β``, a second site:

.. code-block:: python

    beta = numpyro.sample("beta", dist.Dirichlet(jnp.full(K, gamma / K)))
    P = numpyro.sample("P", StickyDirichlet(alpha, kappa, weights=beta))

Both are ordinary sample sites: under NUTS each row is mapped to the unconstrained space by
NumPyro's stick-breaking transform (support ``independent(simplex, 1)``), and draws are
reparameterized (log-gamma variates with implicit gradients, normalized in log space, so tiny
concentrations such as ``α β_j`` do not underflow). As Gibbs targets their conditionals given a
path's transition counts are :meth:`StickyDirichlet.conditional` (conjugate) and, for ``β``,
:func:`~numpyro_ssm.ops.hmm.sample_global_weights`; the Gibbs steps of
:mod:`numpyro_ssm.infer.gibbs` use them.
"""

import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import gammaln, xlogy
from numpyro.distributions import constraints

from numpyro_ssm.distributions._validation import validate_concrete_args
from numpyro_ssm.ops.hmm.counts import (
    concrete_check,
    sample_transition_matrix,
    sticky_concentration,
)

__all__ = ["StickyDirichlet"]


class StickyDirichlet(dist.Distribution):
    r"""Transition matrices with independent rows ``P_k ~ Dir(α w + κ e_k)``.

    Args:
        concentration: ``α > 0``, shape ``(...)``.
        stickiness: ``κ >= 0``, shape ``(...)``: the extra concentration on the diagonal.
        num_states: ``K``; needed unless ``weights`` gives it.
        weights: shape ``(..., K)``, positive column weights ``w``; ones by default. Pass the
            global weights ``β`` of a weak-limit HDP (module docstring).
        validate_args: check the parameters' constraints (NumPyro semantics).

    ``batch_shape`` broadcasts the arguments' batch axes; ``event_shape = (K, K)``.

    Raises:
        ValueError: for a concrete ``α <= 0`` or ``κ < 0``, or without ``K``.

    Example:
        >>> P = numpyro.sample("P", StickyDirichlet(1.0, 50.0, num_states=4))  # (4, 4)
    """

    arg_constraints = {
        "concentration": constraints.positive,
        "stickiness": constraints.nonnegative,
        "weights": constraints.independent(constraints.positive, 1),
    }
    support = constraints.independent(constraints.simplex, 1)
    reparametrized_params = ["concentration", "stickiness", "weights"]
    pytree_data_fields = ("concentration", "stickiness", "weights")
    pytree_aux_fields = ("num_states",)
    weights = None

    def __init__(
        self, concentration, stickiness, num_states=None, *, weights=None, validate_args=None
    ):
        fn_name = "StickyDirichlet"
        concrete_check("concentration", concentration, lambda a: a > 0, "(α) must be > 0", fn_name)
        concrete_check("stickiness", stickiness, lambda a: a >= 0, "(κ) must be >= 0", fn_name)
        self.concentration = jnp.asarray(concentration)
        self.stickiness = jnp.asarray(stickiness)
        batch = jnp.broadcast_shapes(jnp.shape(concentration), jnp.shape(stickiness))
        if weights is not None:
            self.weights = jnp.asarray(weights)
            if self.weights.ndim < 1:
                raise ValueError(
                    f"{fn_name}: weights must have shape (..., K), got {self.weights.shape}."
                )
            if num_states is not None and int(num_states) != self.weights.shape[-1]:
                raise ValueError(
                    f"{fn_name}: num_states={num_states} but weights have K="
                    f"{self.weights.shape[-1]} (shape {self.weights.shape})."
                )
            num_states = self.weights.shape[-1]
            batch = jnp.broadcast_shapes(batch, self.weights.shape[:-1])
        elif num_states is None:
            raise ValueError(f"{fn_name}: give num_states=K (or weights of shape (..., K)).")
        self.num_states = int(num_states)
        K = self.num_states
        super().__init__(tuple(batch), (K, K), validate_args=validate_args)

    def get_args(self):
        """The given parameters (``weights`` only when given)."""
        return {k: v for k, v in super().get_args().items() if v is not None}

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints; traced ones are skipped."""
        validate_concrete_args(self, strict)

    @property
    def concentration_matrix(self):
        """The rows' Dirichlet concentrations ``α w + κ I``, shape ``batch + (K, K)``."""
        conc = sticky_concentration(
            self.num_states, self.concentration, self.stickiness, self.weights
        )
        return jnp.broadcast_to(conc, self.batch_shape + self.event_shape)

    def sample(self, key, sample_shape=()):
        """Draw transition matrices, shape ``sample_shape + batch_shape + (K, K)``.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            Row-stochastic matrices, reparameterized in the parameters.
        """
        conc = jnp.broadcast_to(self.concentration_matrix, tuple(sample_shape) + self.shape())
        return sample_transition_matrix(key, conc)

    def log_prob(self, value):
        """``sum_k log Dir(P_k | α w + κ e_k)``, shape ``sample + batch``.

        Args:
            value: row-stochastic matrices, shape ``(..., K, K)``.

        Returns:
            The log-density, with the trailing ``(K, K)`` summed out.
        """
        conc = self.concentration_matrix
        norm = gammaln(conc.sum(-1)) - gammaln(conc).sum(-1)
        return jnp.sum(norm + jnp.sum(xlogy(conc - 1.0, value), -1), -1)

    def conditional(self, counts):
        """The conjugate conditional given transition counts: rows ``Dir(α w + κ e_k + n_k)``.

        Args:
            counts: shape ``(..., K, K)``, transition counts
                (:func:`~numpyro_ssm.ops.hmm.count_transitions`).

        Returns:
            ``dist.Dirichlet(concentration_matrix + counts).to_event(1)``.
        """
        return dist.Dirichlet(self.concentration_matrix + jnp.asarray(counts)).to_event(1)

    @property
    def mean(self):
        """``E[P]``: the concentrations normalized per row, shape ``batch + (K, K)``."""
        conc = self.concentration_matrix
        return conc / conc.sum(-1, keepdims=True)

    @property
    def variance(self):
        """``Var[P_kj]``, the Dirichlet variances, shape ``batch + (K, K)``."""
        conc = self.concentration_matrix
        total = conc.sum(-1, keepdims=True)
        return conc * (total - conc) / (total**2 * (total + 1.0))

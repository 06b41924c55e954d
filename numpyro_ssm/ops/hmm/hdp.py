r"""The sticky weak-limit HDP-HMM's conjugate update: table counts and global state weights.

The prior (Fox, Sudderth, Jordan & Willsky 2011, weak-limit approximation with ``K`` states):

.. math::

    \beta \sim \mathrm{Dir}(\gamma / K, \dots, \gamma / K), \qquad
    P_i \mid \beta \sim \mathrm{Dir}(\alpha \beta + \kappa e_i).

Given the transition counts :math:`n_{ij}`, the global weights are updated through auxiliary
*table counts* (the Chinese restaurant franchise, Antoniak 1974):

1. :math:`m_{ij} \sim \mathrm{CRT}(n_{ij}, \alpha \beta_j + \kappa \delta_{ij})`, the number of
   tables that ``n`` customers occupy in a Chinese restaurant with that concentration;
2. of the :math:`m_{ii}` tables on the diagonal, those of the sticky "override" are removed:
   :math:`\bar m_{ii} \sim \mathrm{Binomial}(m_{ii}, \alpha\beta_i / (\alpha\beta_i + \kappa))`,
   :math:`\bar m_{ij} = m_{ij}` off the diagonal;
3. :math:`\beta \sim \mathrm{Dir}(\gamma / K + \sum_i \bar m_{i\cdot})`, then
   :math:`P_i \sim \mathrm{Dir}(\alpha\beta + \kappa e_i + n_i)`.

The CRT draw is the sum of independent Bernoulli draws, one per customer: customer ``r``
(``r = 0, 1, ...``) of a restaurant with concentration ``c`` opens a table with probability
``c / (c + r)``. Here every customer of every cell is one slot of a flat array of fixed length
``max_total`` (at least the total count), so the whole draw is one vectorized, jittable pass of
``O(max_total)`` work, whatever the concentrations; jax_moseq runs the same loop on the host
with numba.
"""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops.hmm.counts import (
    concrete_check,
    sample_transition_matrix,
    sticky_concentration,
)

__all__ = ["sample_global_weights", "sample_hdp_transitions", "sample_table_counts"]


def _total_bound(counts, max_total, fn_name):
    if max_total is not None:
        return int(max_total)
    if isinstance(counts, jax.core.Tracer):
        raise ValueError(
            f"{fn_name}: counts are traced, so their total is not known when the program is "
            "built; pass max_total=an upper bound on counts.sum() (for transitions pooled over B "
            "paths of T steps, B * (T - 1))."
        )
    return int(np.asarray(counts).sum())


def sample_table_counts(key, counts, concentration, *, max_total=None):
    """Draw Chinese-restaurant table counts ``m ~ CRT(counts, concentration)``, elementwise.

    ``m`` is the number of tables that ``n = counts`` customers occupy when customer ``r``
    (``r = 0, 1, ...``) opens a new table with probability ``c / (c + r)``: the first always
    does. ``E[m] = sum_r c / (c + r)`` (``c (ψ(c + n) - ψ(c))``).

    Args:
        key: a ``jax.random`` key.
        counts: int, any shape, non-negative.
        concentration: broadcasting to ``counts``'s shape, non-negative.
        max_total: a static upper bound on ``counts.sum()``; required under ``jit`` (where the
            counts are traced), read from the counts otherwise. Customers beyond the true
            total are ignored, so any bound gives the same law; the work is ``O(max_total)``.

    Returns:
        int32, the shape of ``counts``.

    Raises:
        ValueError: for negative concrete counts or concentrations, or traced counts without
            ``max_total``.
    """
    fn_name = "sample_table_counts"
    concrete_check("counts", counts, lambda a: a >= 0, "must be >= 0", fn_name)
    concrete_check("concentration", concentration, lambda a: a >= 0, "must be >= 0", fn_name)
    n = jnp.asarray(counts).astype(jnp.int32)
    bound = _total_bound(counts, max_total, fn_name)
    conc = jnp.broadcast_to(jnp.asarray(concentration), n.shape)
    if not jnp.issubdtype(conc.dtype, jnp.floating):
        conc = conc.astype(float)
    flat_n, flat_c = n.reshape(-1), conc.reshape(-1)
    cells = flat_n.shape[0]
    if bound == 0 or cells == 0:
        return jnp.zeros(n.shape, jnp.int32)
    ends = jnp.cumsum(flat_n)  # customers of cells 0..i
    slot = jnp.arange(bound)
    cell = jnp.minimum(jnp.searchsorted(ends, slot, side="right"), cells - 1)
    rank = slot - (ends[cell] - flat_n[cell])  # 0 for a cell's first customer
    c = flat_c[cell]
    rank_f = rank.astype(c.dtype)
    p_new = jnp.where(rank == 0, 1.0, c / jnp.where(rank == 0, 1.0, c + rank_f))
    in_range = slot < ends[-1]
    opens = (jax.random.uniform(key, (bound,), c.dtype) < p_new) & in_range
    tables = jax.ops.segment_sum(opens.astype(jnp.int32), cell, num_segments=cells)
    return tables.reshape(n.shape)


def _check_hyper(fn_name, concentration, stickiness, gamma):
    concrete_check("concentration", concentration, lambda a: a > 0, "(α) must be > 0", fn_name)
    concrete_check("stickiness", stickiness, lambda a: a >= 0, "(κ) must be >= 0", fn_name)
    concrete_check("gamma", gamma, lambda a: a > 0, "(γ) must be > 0", fn_name)


def sample_global_weights(
    key, counts, global_weights, *, concentration, stickiness, gamma, max_total=None
):
    """Draw the HDP's global state weights ``β`` given transition counts (module docstring).

    Args:
        key: a ``jax.random`` key.
        counts: int, shape ``(K, K)``, pooled transition counts ``n_ij``.
        global_weights: shape ``(K,)``, the current ``β`` (it sets the table-count
            concentrations ``α β_j + κ δ_ij``).
        concentration: ``α > 0``.
        stickiness: ``κ >= 0``.
        gamma: ``γ > 0``, the concentration of ``β ~ Dir(γ / K)``.
        max_total: static bound on ``counts.sum()`` (see :func:`sample_table_counts`).

    Returns:
        Shape ``(K,)``, the new ``β``, summing to one.
    """
    fn_name = "sample_global_weights"
    _check_hyper(fn_name, concentration, stickiness, gamma)
    K = jnp.shape(counts)[-1]
    beta = jnp.asarray(global_weights)
    alpha, kappa = jnp.asarray(concentration), jnp.asarray(stickiness)
    table_key, override_key, beta_key = jax.random.split(key, 3)
    conc = sticky_concentration(K, alpha, kappa, beta)
    tables = sample_table_counts(table_key, counts, conc, max_total=max_total)
    diagonal = jnp.diagonal(tables)
    alpha_beta = alpha * beta
    keep = jax.random.binomial(
        override_key, diagonal.astype(alpha_beta.dtype), alpha_beta / (alpha_beta + kappa)
    )
    informative = tables.astype(alpha_beta.dtype).at[jnp.arange(K), jnp.arange(K)].set(keep)
    posterior = jnp.asarray(gamma) / K + informative.sum(axis=0)
    log_gamma = jax.random.loggamma(beta_key, posterior)
    return jnp.exp(jax.nn.log_softmax(log_gamma))


def sample_hdp_transitions(
    key, counts, global_weights, *, concentration, stickiness, gamma, max_total=None
):
    """One conjugate update of a sticky weak-limit HDP-HMM's transitions: ``β``, then ``P``.

    ``β`` is drawn given the counts (through table counts, with the current ``β`` in their
    concentrations), then every row ``P_i ~ Dir(α β + κ e_i + n_i)`` given the new ``β``.

    Args:
        key: a ``jax.random`` key.
        counts: int, shape ``(K, K)``, pooled transition counts.
        global_weights: shape ``(K,)``, the current ``β``.
        concentration: ``α > 0``.
        stickiness: ``κ >= 0``.
        gamma: ``γ > 0``.
        max_total: static bound on ``counts.sum()`` (see :func:`sample_table_counts`).

    Returns:
        ``(global_weights (K,), transition_matrix (K, K))``.
    """
    weights_key, rows_key = jax.random.split(key)
    beta = sample_global_weights(
        weights_key,
        counts,
        global_weights,
        concentration=concentration,
        stickiness=stickiness,
        gamma=gamma,
        max_total=max_total,
    )
    K = beta.shape[-1]
    conc = sticky_concentration(K, concentration, stickiness, beta)
    return beta, sample_transition_matrix(rows_key, conc, counts)

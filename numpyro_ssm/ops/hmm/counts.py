r"""Transition counts of state paths and the conjugate Dirichlet update of transition rows.

With Dirichlet rows :math:`P_i \sim \mathrm{Dir}(c_i)` (a sticky prior has
:math:`c_{ij} = \alpha w_j + \kappa \delta_{ij}`) and a path :math:`z_{1:T}` with transition
counts :math:`n_{ij} = \#\{t : z_t = i, z_{t+1} = j\}`, the rows are conditionally independent,
:math:`P_i \mid z \sim \mathrm{Dir}(c_i + n_i)`. Rows are drawn through log-gamma variates and a
``log_softmax``, so that concentrations far below one (a weak-limit HDP's
:math:`\alpha \beta_j` with :math:`\beta_j \approx 10^{-30}`) neither underflow to a row of
zeros nor give NaN.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["count_transitions", "sample_transition_matrix", "sticky_concentration"]


def concrete_check(name, value, predicate, requirement, fn_name):
    """Raise ``ValueError`` when a concrete (not traced) ``value`` fails ``predicate``.

    Args:
        name: the argument's name.
        value: the argument; traced values are not checked.
        predicate: NumPy function of the value returning a bool array, True where valid.
        requirement: what is required, for the message (e.g. ``"must be >= 0"``).
        fn_name: the function's name, for the message.

    Raises:
        ValueError: naming the argument, its shape and the first offending value.
    """
    if value is None or isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value)
    ok = np.asarray(predicate(array))
    if not ok.all():
        bad = array[~np.broadcast_to(ok, array.shape)].ravel()[0].item()
        raise ValueError(
            f"{fn_name}: {name} {requirement}, got {bad!r} (in an array of shape {array.shape})."
        )


def count_transitions(states, num_states, *, mask=None, num_lags=0):
    """Count the transitions of state paths: ``[..., i, j] = #{t : z_t = i, z_{t+1} = j}``.

    Args:
        states: int, shape ``(..., T)``, values in ``[0, K)``.
        num_states: ``K``.
        mask: bool, shape broadcasting to ``(..., T)``, True where a step is valid. A transition
            ``t -> t+1`` counts when both steps are valid (a padded tail or a gap counts
            nothing).
        num_lags: ignore the first ``num_lags`` steps, as an autoregressive model that
            conditions on its first ``L`` observations does in jax_moseq (whose paths start at
            step ``L + 1``). With the whole chain sampled (as here) keep 0.

    Returns:
        int32, shape ``(..., K, K)``: the counts per path (sum over a batch axis for pooled
        counts).

    Raises:
        ValueError: for a concrete ``states`` with values outside ``[0, K)``, or bad shapes.
    """
    z = jnp.asarray(states)
    if not jnp.issubdtype(z.dtype, jnp.integer) or z.ndim < 1:
        raise ValueError(
            f"count_transitions: states must be an int array of shape (..., T), got dtype "
            f"{z.dtype} and shape {z.shape}."
        )
    num_states = int(num_states)
    concrete_check(
        "states",
        z,
        lambda a: (a >= 0) & (a < num_states),
        f"must lie in [0, num_states) = [0, {num_states})",
        "count_transitions",
    )
    T = z.shape[-1]
    valid = jnp.ones(z.shape, bool) if mask is None else jnp.broadcast_to(mask, z.shape)
    valid = valid & (jnp.arange(T) >= num_lags)
    weight = (valid[..., :-1] & valid[..., 1:]).astype(jnp.int32)
    one_hot = jax.nn.one_hot(z, num_states, dtype=jnp.int32)
    return jnp.einsum(
        "...ti,...tj->...ij", one_hot[..., :-1, :] * weight[..., None], one_hot[..., 1:, :]
    )


def sticky_concentration(num_states, concentration, stickiness, weights=None):
    """Dirichlet concentrations of sticky transition rows: ``c_ij = α w_j + κ δ_ij``.

    Args:
        num_states: ``K``.
        concentration: ``α``, shape ``(...)``, positive.
        stickiness: ``κ``, shape ``(...)``, non-negative: the extra mass on the diagonal.
        weights: shape ``(..., K)``, ``w_j``; ones by default (each row ``Dir(α + κ e_i)``). For
            the weak-limit HDP these are the global state weights ``β`` (summing to one).

    Returns:
        Shape ``(..., K, K)``.
    """
    alpha = jnp.asarray(concentration)[..., None, None]
    kappa = jnp.asarray(stickiness)[..., None, None]
    w = jnp.ones(num_states) if weights is None else jnp.asarray(weights)
    return alpha * w[..., None, :] + kappa * jnp.eye(num_states)


def sample_transition_matrix(key, concentration, counts=None):
    """Draw transition rows ``P_i ~ Dir(concentration_i + counts_i)``.

    Args:
        key: a ``jax.random`` key.
        concentration: shape ``(..., K, K)``, the prior's Dirichlet concentrations (e.g.
            :func:`sticky_concentration`), positive.
        counts: shape ``(..., K, K)``, transition counts (:func:`count_transitions`), or None
            for a prior draw.

    Returns:
        Shape ``(..., K, K)``, rows summing to one.
    """
    conc = jnp.asarray(concentration)
    if counts is not None:
        conc = conc + jnp.asarray(counts, conc.dtype)
    if not jnp.issubdtype(conc.dtype, jnp.floating):
        conc = conc.astype(float)
    log_gamma = jax.random.loggamma(key, conc)
    return jnp.exp(jax.nn.log_softmax(log_gamma, axis=-1))

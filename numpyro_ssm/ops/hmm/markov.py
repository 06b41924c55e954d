"""Properties of a Markov chain's transition matrix: its stationary distribution."""

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.linalg import qr_solve

__all__ = ["stationary_distribution"]


def stationary_distribution(transition_matrix=None, *, transition_logits=None) -> jax.Array:
    r"""The stationary distribution :math:`\pi` of a Markov chain, :math:`\pi A = \pi`.

    Solves :math:`\pi (I - A + \mathbf{1}\mathbf{1}^\top) = \mathbf{1}^\top`, which has the
    unique solution :math:`\pi` when the chain is irreducible (every state reaches every
    other), by a Householder QR (no LAPACK, so it is safe inside vectorized NUTS chains) and
    differentiable in :math:`A`. A common use is ``initial_probs`` of a
    :class:`~numpyro_ssm.DiscreteHMM` that starts in equilibrium.

    Args:
        transition_matrix: shape ``(..., K, K)``, rows summing to one,
            ``[i, j] = p(z_{t+1} = j | z_t = i)``. Or give ``transition_logits``.
        transition_logits: shape ``(..., K, K)``, unnormalized log-probabilities (normalized
            over the last axis).

    Returns:
        Shape ``(..., K)``: :math:`\pi`, summing to one. For a reducible chain (several
        stationary distributions) the system is singular and the result is not finite.

    Raises:
        ValueError: unless exactly one of the two arguments is given, or for a non-square
            matrix.

    Example:
        >>> stationary_distribution(jnp.array([[0.9, 0.1], [0.2, 0.8]]))  # [2/3, 1/3]
    """
    if (transition_matrix is None) == (transition_logits is None):
        raise ValueError(
            "stationary_distribution: give exactly one of transition_matrix and transition_logits."
        )
    if transition_matrix is None:
        name, matrix = "transition_logits", jax.nn.softmax(jnp.asarray(transition_logits), -1)
    else:
        name, matrix = "transition_matrix", jnp.asarray(transition_matrix)
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(
            f"stationary_distribution: {name} must have shape (..., K, K), got {matrix.shape}."
        )
    num_states = matrix.shape[-1]
    if not jnp.issubdtype(matrix.dtype, jnp.floating):
        matrix = matrix.astype(float)
    system = jnp.eye(num_states, dtype=matrix.dtype) - matrix + 1.0
    ones = jnp.ones(matrix.shape[:-1], matrix.dtype)
    # pi system = 1ᵀ  <=>  systemᵀ piᵀ = 1
    return qr_solve(jnp.swapaxes(system, -1, -2), ones)

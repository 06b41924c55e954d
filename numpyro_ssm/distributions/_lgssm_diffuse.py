"""The exact diffuse start of :class:`~numpyro_ssm.LinearGaussianSSM`: checks and op dispatch.

With ``diffuse_states`` set, every op the distribution runs is swapped for its counterpart in
:mod:`numpyro_ssm.ops.kalman.diffuse`, in one place (:func:`with_diffuse`).
"""

import functools

import jax
import numpy as np

from numpyro_ssm.ops import kalman as kalman_ops
from numpyro_ssm.ops.kalman import diffuse as diffuse_ops
from numpyro_ssm.ops.kalman.sampling import smooth_and_sample

__all__ = ["check_diffuse", "with_diffuse"]

_DIFFUSE_OPS = {
    kalman_ops.kalman_filter: diffuse_ops.diffuse_kalman_filter,
    kalman_ops.kalman_log_marginal: diffuse_ops.diffuse_kalman_log_marginal,
    kalman_ops.kalman_smoother: diffuse_ops.diffuse_kalman_smoother,
    kalman_ops.kalman_posterior_sample: diffuse_ops.diffuse_kalman_posterior_sample,
    smooth_and_sample: diffuse_ops.diffuse_smooth_and_sample,
}


def check_diffuse(diffuse_states, num_diffuse_steps, num_states):
    """``(diffuse_states as a tuple of bools or None, num_diffuse_steps)``, checked.

    Args:
        diffuse_states: None, or bool array-like of shape ``(S,)``, concrete.
        num_diffuse_steps: None or an int ``>= 0``.
        num_states: ``S``.

    Returns:
        The pair, hashable (they are pytree aux fields).

    Raises:
        TypeError: for a traced ``diffuse_states``.
        ValueError: for a wrong shape or dtype, a negative ``num_diffuse_steps``, or
            ``num_diffuse_steps`` without ``diffuse_states``.
    """
    if diffuse_states is None:
        if num_diffuse_steps is not None:
            raise ValueError(
                "LinearGaussianSSM: num_diffuse_steps is given but diffuse_states is None."
            )
        return None, None
    return diffuse_ops.check_diffuse_arguments(
        diffuse_states, num_diffuse_steps, num_states, "LinearGaussianSSM"
    )


def _default_steps(diffuse_states, value, obs_mask, transition_matrix, emission_matrix):
    """How many leading steps resolve every diffuse direction, found before the filter runs.

    With concrete observations (and mask) the count runs over the steps with an observed entry
    (in every sequence of the batch): at least the number of diffuse entries. When the matrices
    are concrete too and the model has no batch axes, the diffuse directions are followed
    exactly (:func:`_resolution_step`): a missing step can leave a direction unseen until much
    later (a seasonal effect whose month is missing waits a whole period). Otherwise the default
    is the number of diffuse entries.
    """
    q = sum(diffuse_states)
    if q == 0 or any(isinstance(x, jax.core.Tracer) for x in (value, obs_mask)):
        return q
    value = np.asarray(value)
    mask = np.ones(value.shape, bool) if obs_mask is None else np.asarray(obs_mask)
    observed = np.broadcast_to(mask, value.shape) & ~np.isnan(value)  # batch + (T, D)
    per_step = np.any(observed, axis=-1).reshape(-1, value.shape[-2])
    counts = np.cumsum(per_step, axis=-1)
    reached = counts >= q
    steps = np.where(reached.any(-1), reached.argmax(-1) + 1, per_step.shape[-1])
    steps = int(max(q, steps.max()))
    concrete = not any(isinstance(x, jax.core.Tracer) for x in (transition_matrix, emission_matrix))
    if concrete and value.ndim == 2 and np.ndim(transition_matrix) in (2, 3):
        if np.ndim(emission_matrix) in (2, 3):
            exact = _resolution_step(
                diffuse_states, observed, np.asarray(transition_matrix), np.asarray(emission_matrix)
            )
            steps = max(steps, exact)
    return steps


def _resolution_step(diffuse_states, observed, F, H):
    """The first ``n`` after which ``P_∞`` is zero (NumPy, float64), or ``T`` if never.

    The exact initial filter's ``P_∞`` recursion alone: project out each observed row of the
    emission that sees a remaining diffuse direction, then propagate by the transition.
    ``observed`` is ``(T, D)``; ``F`` is ``(S, S)`` or ``(T', S, S)``; ``H`` ``(D, S)`` or
    ``(T', D, S)``.
    """
    T = observed.shape[0]
    U = np.diag(np.asarray(diffuse_states, float))
    tol = np.sqrt(np.finfo(float).eps)
    for t in range(T):
        H_t = H if H.ndim == 2 else H[min(t, H.shape[0] - 1)]
        for d in np.flatnonzero(observed[t]):
            h = np.asarray(H_t[d], float)
            g = U.T @ h
            if g @ g > tol * (h @ h):
                U = U - np.outer(U @ g, g) / (g @ g)
        if np.abs(U).max() <= tol:
            return t + 1
        F_t = F if F.ndim == 2 else F[min(t, F.shape[0] - 1)]
        U = np.asarray(F_t, float) @ U
    return T


def with_diffuse(ssm, op, value):
    """``op``, or its diffuse counterpart with the model's diffuse arguments bound.

    Args:
        ssm: the :class:`~numpyro_ssm.LinearGaussianSSM`.
        op: a Kalman op of :mod:`numpyro_ssm.ops.kalman`, possibly a ``functools.partial``.
        value: the observations as given, ``batch + (T, D)``.

    Returns:
        A callable with the signature of ``op``.
    """
    if ssm.diffuse_states is None:
        return op
    base, keywords = (op.func, op.keywords) if isinstance(op, functools.partial) else (op, {})
    steps = ssm.num_diffuse_steps
    if steps is None:
        steps = _default_steps(
            ssm.diffuse_states, value, ssm.obs_mask, ssm.transition_matrix, ssm.emission_matrix
        )
    return functools.partial(
        _DIFFUSE_OPS[base],
        **keywords,
        diffuse_states=ssm.diffuse_states,
        num_diffuse_steps=steps,
    )

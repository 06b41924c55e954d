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


def _default_steps(diffuse_states, value, obs_mask):
    """The number of diffuse entries, counted in steps that observe something when known.

    With concrete observations (and mask) the count runs over the steps with an observed entry
    (in every sequence of the batch); otherwise it is the number of diffuse entries.
    """
    q = sum(diffuse_states)
    if q == 0 or any(isinstance(x, jax.core.Tracer) for x in (value, obs_mask)):
        return q
    value = np.asarray(value)
    mask = np.ones(value.shape, bool) if obs_mask is None else np.asarray(obs_mask)
    observed = np.any(mask & ~np.isnan(value), axis=-1)  # batch + (T,)
    observed = observed.reshape(-1, observed.shape[-1])
    counts = np.cumsum(observed, axis=-1)
    reached = counts >= q
    steps = np.where(reached.any(-1), reached.argmax(-1) + 1, observed.shape[-1])
    return int(max(q, steps.max()))


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
        steps = _default_steps(ssm.diffuse_states, value, ssm.obs_mask)
    return functools.partial(
        _DIFFUSE_OPS[base],
        **keywords,
        diffuse_states=ssm.diffuse_states,
        num_diffuse_steps=steps,
    )

"""Trace-time checks of ``DiscreteHSMM``'s arguments: shapes, duration supports, joint tables."""

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from numpyro_ssm.distributions._shapes import (
    broadcast_batch_shapes,
    infer_num_steps,
    time_source,
)

__all__ = ["duration_support", "hsmm_shapes", "joint_table"]


class _JointTable(constraints._SingletonConstraint):
    """Nonnegative ``(K, D)`` tables summing to one over both axes."""

    event_dim = 2

    def __call__(self, x):
        x = jnp.asarray(x)
        return jnp.all(x >= 0, axis=(-2, -1)) & (jnp.abs(jnp.sum(x, axis=(-2, -1)) - 1) < 1e-6)

    def feasible_like(self, prototype):
        return jnp.full_like(prototype, 1.0 / (prototype.shape[-1] * prototype.shape[-2]))


#: ``(K, D)`` tables of joint probabilities (``first_segment_probs``)
joint_table = _JointTable()


def duration_support(duration_dist, offset, max_duration):
    """Check that ``offset + X``, ``X ~ duration_dist``, lies in ``1, 2, ...`` (truncated at D)."""
    support = duration_dist.support
    if not support.is_discrete or duration_dist.event_shape != ():
        raise ValueError(
            "DiscreteHSMM: duration_dist must be a scalar discrete distribution (durations "
            f"d = duration_offset + X, X ~ duration_dist), got {type(duration_dist).__name__} "
            f"with support {support} and event_shape {duration_dist.event_shape}."
        )
    lower = 0 if isinstance(support, type(constraints.boolean)) else support.lower_bound
    if lower is None or isinstance(lower, jax.core.Tracer):
        return
    lowest, highest = int(np.min(lower)) + offset, int(np.max(lower)) + offset
    if lowest < 1:
        raise ValueError(
            f"DiscreteHSMM: durations d = duration_offset + X with X ~ "
            f"{type(duration_dist).__name__} (support {support}) start at {lowest}, outside "
            f"1..max_duration={max_duration}. Shift the distribution: duration_offset="
            f"{offset + 1 - lowest} makes d - {offset + 1 - lowest} ~ "
            f"{type(duration_dist).__name__} (for example d - 1 ~ Poisson(rate))."
        )
    if highest > max_duration:
        raise ValueError(
            f"DiscreteHSMM: durations d = duration_offset + X start at {highest} for some state, "
            f"beyond max_duration={max_duration}: no duration would be left. Raise max_duration."
        )


def hsmm_shapes(
    initial, first, transition, duration, duration_is_table, emission, obs_mask, num_steps, D
):
    """Check the argument shapes; return ``(batch_shape, event_shape, T, K, D, source, parts)``."""
    emission_batch, emission_event = emission
    if first is not None:
        if len(first) < 2:
            raise ValueError(f"first_segment_probs must have shape (..., K, D_max), got {first}.")
        num_states, initial_batch = first[-2], first[:-2]
    else:
        if len(initial) < 1:
            raise ValueError(
                f"initial_probs/initial_logits must have shape (..., K), got {initial}."
            )
        num_states, initial_batch = initial[-1], initial[:-1]
    if len(transition) < 2 or transition[-2:] != (num_states, num_states):
        raise ValueError(
            f"DiscreteHSMM: transition_matrix/transition_logits must have shape (K, K) or "
            f"(..., 1, K, K) with K={num_states} from the initial distribution, got {transition}."
        )
    if len(transition) >= 3 and transition[-3] != 1:
        raise ValueError(
            f"DiscreteHSMM: transition_matrix/transition_logits has shape {transition}; its axis "
            f"-3 is a time axis, and HSMM transitions are homogeneous. Write a batch of "
            f"{transition[-3]} matrices as {transition[:-2] + (1,) + transition[-2:]}."
        )
    if duration_is_table:
        if len(duration) < 2 or duration[-2] != num_states or duration[-1] < 1:
            raise ValueError(
                f"DiscreteHSMM: duration_probs/duration_logits must have shape (..., K, D_max) "
                f"with K={num_states} and D_max >= 1, got {duration}."
            )
        duration_batch = duration[:-2]
    else:
        if duration and duration[-1] not in (1, num_states):
            raise ValueError(
                f"DiscreteHSMM: duration_dist must have batch shape (..., K) with K={num_states} "
                f"(one duration distribution per state) or a scalar batch, got {duration}."
            )
        duration_batch = duration[:-1]
    if first is not None and first[-1] != D:
        raise ValueError(
            f"DiscreteHSMM: first_segment_probs {first} has {first[-1]} durations, but "
            f"max_duration is {D}."
        )
    if not emission_batch or emission_batch[-1] != num_states:
        raise ValueError(
            f"DiscreteHSMM: emission_dist must have the K={num_states} states as its rightmost "
            f"batch axis, got batch_shape {emission_batch} (event_shape {emission_event}). "
            "Example: dist.Poisson(rates) with rates (K,); time-varying: (..., T, K)."
        )
    time_axes = [
        ("emission_dist batch_shape", emission_batch, -2 if len(emission_batch) >= 2 else None, 0)
    ]
    if obs_mask is not None:
        if len(obs_mask) < 1:
            raise ValueError(f"obs_mask must have shape (..., T), got {obs_mask}.")
        time_axes.append(("obs_mask", obs_mask, -1, 0))
    num_steps_ = infer_num_steps(time_axes, num_steps)
    parts = {
        "initial_probs" if first is None else "first_segment_probs": initial_batch,
        "transition_matrix": transition[:-3],
        "durations": duration_batch,
        "emission_dist": emission_batch[:-2],
    }
    if obs_mask is not None:
        parts["obs_mask"] = obs_mask[:-1]
    batch_shape = broadcast_batch_shapes(parts)
    source = time_source(time_axes, num_steps)
    event_shape = (num_steps_,) + emission_event
    return batch_shape, event_shape, num_steps_, num_states, source, parts

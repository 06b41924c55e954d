"""Trace-time shape rules of :class:`~numpyro_ssm.AutoregressiveHMM`: ``T``, ``K``, ``D``, ``L``.

Every check names the argument and the shapes it got; nothing here touches array values.
"""

from numpyro.distributions import Distribution

from numpyro_ssm.distributions._shapes import (
    broadcast_batch_shapes,
    infer_num_steps,
    time_source,
)
from numpyro_ssm.ops.switching.autoregression import num_lags_of

__all__ = ["ARHMMShapes", "arhmm_shapes"]


class ARHMMShapes:
    """What the argument shapes determine (a plain record)."""

    def __init__(self, batch_shape, num_steps, num_states, dim, num_lags, source, parts):
        self.batch_shape = batch_shape
        self.event_shape = (num_steps, dim)
        self.num_steps = num_steps
        self.num_states = num_states
        self.dim = dim
        self.num_lags = num_lags
        self.source = source
        self.parts = parts


def _emission_shapes(dist):
    if dist is None:
        return None
    if isinstance(dist, tuple):
        return tuple(dist[0]), tuple(dist[1])
    if not isinstance(dist, Distribution):
        raise ValueError(
            "AutoregressiveHMM: initial_emission_dist must be a numpyro Distribution with batch "
            f"shape (..., K) and event shape (D,), got {type(dist).__name__}."
        )
    return tuple(dist.batch_shape), tuple(dist.event_shape)


def _check_tail(name, shape, tail, what):
    if shape is None:
        return
    if len(shape) < len(tail) or tuple(shape[len(shape) - len(tail) :]) != tail:
        raise ValueError(f"AutoregressiveHMM: {name} must have shape {what}, got {tuple(shape)}.")


def arhmm_shapes(
    *,
    initial_shape,
    transition_shape,
    ar_matrix_shape,
    ar_bias_shape=None,
    ar_factor_shape=None,
    ar_factor_name="ar_cov",
    initial_lags_shape=None,
    initial_emission_dist=None,
    obs_mask_shape=None,
    num_steps=None,
) -> ARHMMShapes:
    """Check the argument shapes of an autoregressive HMM and read off its sizes.

    Args:
        initial_shape: shape of ``initial_probs`` / ``initial_logits``, ``(..., K)``.
        transition_shape: shape of the transitions, ``(K, K)`` or ``(..., T - 1 | 1, K, K)``.
        ar_matrix_shape: ``(..., K, D, L D)``.
        ar_bias_shape: ``(..., K, D)`` or None.
        ar_factor_shape: ``(..., K, D, D)``, of ``ar_cov`` or ``ar_scale_tril``.
        ar_factor_name: which of the two was given, for messages.
        initial_lags_shape: ``(..., L, D)`` or None.
        initial_emission_dist: a distribution (or a ``(batch_shape, event_shape)`` pair) with
            batch ``(..., K)`` and event ``(D,)``, or None.
        obs_mask_shape: ``(..., T)`` or None.
        num_steps: ``T`` when no argument carries a time axis.

    Returns:
        An :class:`ARHMMShapes`.

    Raises:
        ValueError: for any inconsistency, naming the argument and its shape.
    """
    initial_shape = tuple(initial_shape)
    transition_shape = tuple(transition_shape)
    if len(initial_shape) < 1:
        raise ValueError(
            f"AutoregressiveHMM: initial_probs/initial_logits must have shape (..., K), got "
            f"{initial_shape}."
        )
    K = initial_shape[-1]
    if len(transition_shape) < 2 or transition_shape[-2:] != (K, K):
        raise ValueError(
            "AutoregressiveHMM: transition_matrix/transition_logits must have shape (..., K, K) "
            f"with K={K} from initial_probs {initial_shape}, got {transition_shape}."
        )
    ar_matrix_shape = tuple(ar_matrix_shape)
    L = num_lags_of(ar_matrix_shape, "AutoregressiveHMM: ar_matrix")
    D = ar_matrix_shape[-2]
    if ar_matrix_shape[-3] != K:
        raise ValueError(
            f"AutoregressiveHMM: ar_matrix must have shape (..., K, D, L*D) with K={K} from "
            f"initial_probs {initial_shape}, got {ar_matrix_shape}."
        )
    _check_tail("ar_bias", ar_bias_shape, (K, D), f"(..., K, D) = (..., {K}, {D})")
    _check_tail(
        ar_factor_name, ar_factor_shape, (K, D, D), f"(..., K, D, D) = (..., {K}, {D}, {D})"
    )
    _check_tail(
        "initial_lags", initial_lags_shape, (L, D), f"(..., L, D) = (..., {L}, {D}) (L={L} lags)"
    )
    emission = _emission_shapes(initial_emission_dist)
    if emission is not None:
        batch, event = emission
        if event != (D,) or not batch or batch[-1] != K:
            raise ValueError(
                f"AutoregressiveHMM: initial_emission_dist must have batch shape (..., K) = "
                f"(..., {K}) and event shape (D,) = ({D},), got batch {batch}, event {event}."
            )
    time_axes = [
        ("transition_matrix", transition_shape, -3 if len(transition_shape) >= 3 else None, -1)
    ]
    if obs_mask_shape is not None:
        obs_mask_shape = tuple(obs_mask_shape)
        if len(obs_mask_shape) < 1:
            raise ValueError("AutoregressiveHMM: obs_mask must have shape (..., T), got ().")
        time_axes.append(("obs_mask", obs_mask_shape, -1, 0))
    T = infer_num_steps(time_axes, num_steps)
    if L >= T:
        raise ValueError(
            f"AutoregressiveHMM: ar_matrix {ar_matrix_shape} has L={L} lags, which needs a series "
            f"longer than L steps, but T={T} ({time_source(time_axes, num_steps)})."
        )
    parts = {
        "initial_probs": initial_shape[:-1],
        "transition_matrix": transition_shape[:-3],
        "ar_matrix": ar_matrix_shape[:-3],
    }
    if ar_bias_shape is not None:
        parts["ar_bias"] = tuple(ar_bias_shape)[:-2]
    if ar_factor_shape is not None:
        parts[ar_factor_name] = tuple(ar_factor_shape)[:-3]
    if initial_lags_shape is not None:
        parts["initial_lags"] = tuple(initial_lags_shape)[:-2]
    if emission is not None:
        parts["initial_emission_dist"] = emission[0][:-1]
    if obs_mask_shape is not None:
        parts["obs_mask"] = obs_mask_shape[:-1]
    batch_shape = broadcast_batch_shapes(parts)
    return ARHMMShapes(batch_shape, T, K, D, L, time_source(time_axes, num_steps), parts)

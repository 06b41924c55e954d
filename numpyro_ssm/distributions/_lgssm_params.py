"""Shapes and plumbing of :class:`~numpyro_ssm.distributions.lgssm.LinearGaussianSSM`."""

import jax
import jax.numpy as jnp

from numpyro_ssm.distributions._shapes import broadcast_batch_shapes, infer_num_steps, time_source

# name -> (event ndim without time, time offset or None when the argument has no time axis)
_CORE = {
    "initial_mean": (1, None),
    "initial_scale_tril": (2, None),
    "transition_matrix": (2, -1),
    "transition_scale_tril": (2, -1),
    "transition_bias": (1, -1),
    "emission_matrix": (2, 0),
    "emission_scale_tril": (2, 0),
    "emission_bias": (1, 0),
}
_PAIRS = ("initial", "transition", "emission")


def _shape(x):
    if x is None:
        return None
    return tuple(x) if isinstance(x, tuple) else tuple(jnp.shape(x))


def _core_ndim(name, shape):
    """Number of trailing axes of ``shape`` owned by one sequence (event + time axis)."""
    ndim, offset = _CORE[name]
    return ndim + (offset is not None and len(shape) > ndim)


def _lgssm_shapes(shapes, num_steps, obs_mask_shape):
    """Check argument shapes (``shapes``: name -> shape, covariances as ``*_scale_tril``).

    Returns ``(batch_shape, event_shape, time source, batch shape per argument)``.
    """
    m0 = shapes["initial_mean"]
    if len(m0) < 1:
        raise ValueError(f"initial_mean must have shape (..., S), got {m0}.")
    S = m0[-1]
    F = shapes["transition_matrix"]
    if len(F) < 2 or F[-1] != F[-2]:
        raise ValueError(f"transition_matrix must be square, shape (..., S, S), got {F}.")
    if F[-1] != S:
        raise ValueError(
            f"transition_matrix {F} has state dim {F[-1]} but initial_mean {m0} has S={S}."
        )
    H = shapes["emission_matrix"]
    if len(H) < 2 or H[-1] != S:
        raise ValueError(
            f"emission_matrix must have shape (..., D, S) with S={S} columns (the state dim of "
            f"initial_mean {m0}), got {H}."
        )
    D = H[-2]
    Q = shapes["transition_scale_tril"]
    q = Q[-1] if Q is not None and len(Q) >= 2 and 1 <= Q[-1] <= S else S  # (S, q) factors
    expected = {
        "initial_scale_tril": (S, S),
        "transition_scale_tril": (S, q),
        "transition_bias": (S,),
        "emission_scale_tril": (D, D),
        "emission_bias": (D,),
    }
    for name, event in expected.items():
        shape = shapes[name]
        if shape is None:
            continue
        if shape[len(shape) - len(event) :] != event or len(shape) < len(event):
            pretty = name.replace("_scale_tril", "_cov/_scale_tril")
            if name == "transition_scale_tril":
                event = f"({S}, {S}), or ({S}, q) with 1 <= q <= {S} for a scale_tril"
            raise ValueError(
                f"{pretty} must have shape (...,) + {event} to match the state dim S={S} and "
                f"observation dim D={D}, got {shape}."
            )
    time_axes = []
    for name, (ndim, offset) in _CORE.items():
        shape = shapes[name]
        if offset is None or shape is None:
            continue
        time_axes.append((name, shape, -ndim - 1 if len(shape) > ndim else None, offset))
    if obs_mask_shape is not None:
        if len(obs_mask_shape) < 2 or obs_mask_shape[-1] not in (1, D):
            raise ValueError(
                f"obs_mask must broadcast against batch_shape + (T, D) with D={D}: shape "
                f"(..., T, D) or (..., T, 1), got {obs_mask_shape}."
            )
        time_axes.append(("obs_mask", obs_mask_shape, -2, 0))
    T = infer_num_steps(time_axes, num_steps)
    batch = {
        name: shape[: len(shape) - _core_ndim(name, shape)]
        for name, shape in shapes.items()
        if shape is not None
    }
    if obs_mask_shape is not None:
        batch["obs_mask"] = obs_mask_shape[:-2]
    return broadcast_batch_shapes(batch), (T, D), time_source(time_axes, num_steps), batch


def _flatten_batch(arr, core, batch_shape):
    """Broadcast ``arr`` to ``batch_shape + core shape`` and flatten the batch to one axis."""
    core_shape = arr.shape[arr.ndim - core :]
    arr = jnp.broadcast_to(arr, batch_shape + core_shape)
    return arr.reshape((-1,) + core_shape)


def _map_batch(fn, args, cores, batch_shape):
    """``fn(*one_sequence_args)`` over ``batch_shape``; outputs get ``batch_shape`` leading."""
    n = 1
    for s in batch_shape:
        n *= s
    if n == 1:
        # broadcast and reshaped, not indexed: an argument without batch axes stays the array
        # it was (no operation), so concrete transition and emission matrices reach the ops
        # concrete (``ops.kalman.params.sparsity_pattern`` reads their zeros)
        one = [
            None if a is None else jnp.broadcast_to(a, batch_shape + a.shape[a.ndim - c :])
            for a, c in zip(args, cores, strict=True)
        ]
        out = fn(*[None if a is None else a.reshape(a.shape[len(batch_shape) :]) for a in one])
        return jax.tree.map(lambda x: x.reshape(batch_shape + x.shape), out)
    flat = [
        None if a is None else _flatten_batch(a, c, batch_shape)
        for a, c in zip(args, cores, strict=True)
    ]
    out = jax.vmap(fn)(*flat)
    return jax.tree.map(lambda x: x.reshape(batch_shape + x.shape[1:]), out)


def _batch_keys(key, batch_shape):
    """One PRNG key per sequence, shape ``batch_shape + key shape``."""
    n = 1
    for s in batch_shape:
        n *= s
    keys = jax.random.split(key, n)
    return keys.reshape(batch_shape + keys.shape[1:])

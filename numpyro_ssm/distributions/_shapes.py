"""Trace-time shape rules shared by the distributions: the time axis by shape, batch broadcasting.

Every time-indexable argument carries its time axis as its rightmost batch-like axis. Its length
is ``T + offset`` (``offset = -1`` for transition parameters, ``0`` for emission parameters), or
1 (homogeneous), or the axis is absent. These helpers read ``T`` from the shapes, never guess it,
and raise a ``ValueError`` that names the argument and the shapes it got.
"""

from collections.abc import Sequence

__all__ = ["broadcast_batch_shapes", "check_plates", "infer_num_steps", "time_source"]


def infer_num_steps(
    time_axes: Sequence[tuple[str, tuple[int, ...], int | None, int]],
    num_steps: int | None,
) -> int:
    """Read the number of time steps ``T`` from the arguments' time axes.

    Args:
        time_axes: one ``(name, shape, axis, offset)`` per time-indexable argument. ``axis`` is
            the (negative) index of its time axis in ``shape``, or ``None`` when the argument has
            no time axis (homogeneous). A time axis of length ``T + offset`` carries ``T``; a time
            axis of length 1 is homogeneous.
        num_steps: ``T`` given by the user, or ``None``.

    Returns:
        The number of time steps ``T``.

    Raises:
        ValueError: when two arguments disagree on ``T``, or when nothing determines it.
    """
    found: list[tuple[str, int, tuple[int, ...]]] = []
    if num_steps is not None:
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
        found.append(("num_steps", int(num_steps), ()))
    for name, shape, axis, offset in time_axes:
        if axis is None or len(shape) < -axis:
            continue
        length = shape[axis]
        if length == 1:  # homogeneous: says nothing about T
            continue
        found.append((name, length - offset, shape))
    if not found:
        names = ", ".join(name for name, *_ in time_axes)
        raise ValueError(
            "Cannot tell the number of time steps: no argument carries a time axis "
            f"(checked {names}). Pass num_steps=T."
        )
    name0, t0, shape0 = found[0]
    for name, t, shape in found[1:]:
        if t != t0:
            if "obs_mask" in (name, name0):
                other, t_other, shape_other = (
                    (name0, t0, shape0) if name == "obs_mask" else (name, t, shape)
                )
                mask_shape, t_mask = (shape, t) if name == "obs_mask" else (shape0, t0)
                what = other if other == "num_steps" else f"{other} (shape {shape_other})"
                raise ValueError(
                    f"obs_mask has shape {mask_shape}: its time axis has {t_mask} steps, but "
                    f"{what} implies T={t_other}. The time axis of "
                    "obs_mask is its rightmost batch-like axis, (..., T) for an HMM and "
                    "(..., T, D) or (..., T, 1) for a Gaussian model."
                )
            raise ValueError(
                f"Time axis mismatch: {name0} (shape {shape0}) implies T={t0}, but {name} "
                f"(shape {shape}) implies T={t}."
            )
    for name, shape, axis, offset in time_axes:
        if axis is None or len(shape) < -axis:
            continue
        if shape[axis] not in (1, t0 + offset):
            what = "T-1" if offset == -1 else "T"
            raise ValueError(
                f"{name} has shape {shape}: its time axis (axis {axis}) has length "
                f"{shape[axis]}, expected 1 or {what}={t0 + offset}."
            )
    return t0


def time_source(time_axes, num_steps) -> str:
    """Which argument gave ``T``, as text for error messages (``"num_steps"`` first).

    Args:
        time_axes: as for :func:`infer_num_steps`.
        num_steps: ``T`` given by the user, or ``None``.

    Returns:
        For example ``"num_steps=10"`` or ``"obs_mask (shape (9,))"``.
    """
    if num_steps is not None:
        return f"num_steps={num_steps}"
    for name, shape, axis, _ in time_axes:
        if axis is not None and len(shape) >= -axis and shape[axis] != 1:
            return f"{name} (shape {tuple(shape)})"
    return "num_steps"


def check_plates(named_shapes: dict[str, tuple[int, ...]], owner: str) -> None:
    """Check the arguments' batch axes against the NumPyro plates the distribution is built in.

    NumPyro's plate broadcasts a site's ``batch_shape`` against its own size and fails with a
    bare "Incompatible shapes for broadcasting". When the distribution is constructed inside
    the plate, the argument at fault can be named instead.

    Args:
        named_shapes: argument name -> its batch shape.
        owner: the distribution's name, for the message.

    Raises:
        ValueError: naming the argument, its batch shape and the plate.
    """
    from numpyro.primitives import _PYRO_STACK, plate

    for frame in _PYRO_STACK:
        if not isinstance(frame, plate) or frame.dim is None:
            continue
        for name, shape in named_shapes.items():
            if len(shape) >= -frame.dim and shape[frame.dim] not in (1, frame.subsample_size):
                raise ValueError(
                    f"{owner}: {name} has batch shape {tuple(shape)}, whose axis {frame.dim} "
                    f"(size {shape[frame.dim]}) lies in plate {frame.name!r} of size "
                    f"{frame.subsample_size}; give it size 1 or {frame.subsample_size} there."
                )


def broadcast_batch_shapes(named_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Broadcast batch shapes, naming the arguments when they do not broadcast.

    Args:
        named_shapes: argument name -> its batch shape.

    Returns:
        The broadcast batch shape.

    Raises:
        ValueError: naming every argument and its batch shape when they do not broadcast.
    """
    result: list[int] = []
    for shape in named_shapes.values():
        shape = tuple(shape)
        n = max(len(result), len(shape))
        a = [1] * (n - len(result)) + result
        b = [1] * (n - len(shape)) + list(shape)
        out = []
        for x, y in zip(a, b, strict=True):
            if x != y and 1 not in (x, y):
                listing = ", ".join(f"{k}: {tuple(v)}" for k, v in named_shapes.items())
                raise ValueError(f"Batch shapes do not broadcast: {listing}.")
            out.append(max(x, y) if 1 in (x, y) else x)
        result = out
    return tuple(result)

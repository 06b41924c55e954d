"""Ragged batches: pad sequences of different lengths to one array and a mask, and back."""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["pad_sequences", "unpad"]


def pad_sequences(sequences: Sequence, *, pad_value=0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Stack sequences of different lengths into one padded array and an observation mask.

    Args:
        sequences: ``B`` arrays of shapes ``(T_b,) + event_shape``, with one ``event_shape``.
        pad_value: value written in the padding. It is masked out of every likelihood, but it
            should lie in the emission's support (the default 0 suits counts and reals).

    Returns:
        ``(padded, obs_mask)``: ``padded`` has shape ``(B, max_b T_b) + event_shape``, and
        ``obs_mask`` has shape ``(B, max_b T_b)``, True where a step is observed. Pass
        ``obs_mask`` to a distribution inside a ``plate`` over the ``B`` sequences.

    Raises:
        ValueError: when ``sequences`` is empty or the event shapes differ.

    Example:
        >>> y, mask = pad_sequences([jnp.array([1, 2, 3]), jnp.array([4])])
        >>> y.tolist(), mask.tolist()
        ([[1, 2, 3], [4, 0, 0]], [[True, True, True], [True, False, False]])
    """
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("pad_sequences needs at least one sequence, got an empty list.")
    event_shapes = {a.shape[1:] for a in arrays}
    if any(a.ndim == 0 for a in arrays) or len(event_shapes) != 1:
        shapes = [a.shape for a in arrays]
        raise ValueError(
            "pad_sequences needs arrays of shape (T_b,) + event_shape with one event_shape, "
            f"got shapes {shapes}."
        )
    (event_shape,) = event_shapes
    max_len = max(a.shape[0] for a in arrays)
    dtype = np.result_type(*arrays)
    padded = np.full((len(arrays), max_len) + event_shape, pad_value, dtype=dtype)
    mask = np.zeros((len(arrays), max_len), dtype=bool)
    for b, a in enumerate(arrays):
        padded[b, : a.shape[0]] = a
        mask[b, : a.shape[0]] = True
    return jnp.asarray(padded), jnp.asarray(mask)


def unpad(padded, obs_mask) -> list[jnp.ndarray]:
    """Invert :func:`pad_sequences`: cut each row of ``padded`` back to its observed length.

    Args:
        padded: shape ``(B, T) + event_shape``.
        obs_mask: shape ``(B, T)``, True on a prefix of each row (as made by ``pad_sequences``).

    Returns:
        A list of ``B`` arrays of shapes ``(T_b,) + event_shape``.

    Raises:
        ValueError: when the shapes do not match.
    """
    padded = np.asarray(padded)
    obs_mask = np.asarray(obs_mask, dtype=bool)
    if obs_mask.ndim != 2 or padded.shape[:2] != obs_mask.shape:
        raise ValueError(
            f"unpad needs padded (B, T, ...) and obs_mask (B, T), got {padded.shape} and "
            f"{obs_mask.shape}."
        )
    lengths = obs_mask.sum(axis=1)
    return [jnp.asarray(padded[b, : int(n)]) for b, n in enumerate(lengths)]

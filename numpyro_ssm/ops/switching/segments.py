"""Long recordings as overlapping segments, each frame counted once, and back.

A batch of equal-length segments parallelizes well (one FFBS or Kalman pass per segment, all
at once), but an L-lag model needs the ``L`` frames before a segment as its lags. Each segment
therefore starts with ``context`` frames copied from the end of the previous one. jax_moseq's
``batch`` marks those overlap frames valid in both segments, so an emission (an SLDS's ``y_t``)
or, with ``overlap > L``, an AR term is counted twice. Here every real frame is *owned* by
exactly one segment: the context frames are present (as lags) but owned by the segment before.

With ``context = L`` and the conditioned-start convention of
:class:`~numpyro_ssm.AutoregressiveHMM` (whose first ``L`` steps never count), the steps that
count in the segments are exactly the owned ones that count in the whole recording; the first
segment of a recording gets ``context`` missing frames in front, so a recording's own first
``L`` frames stay conditioned on. :func:`merge_segments` puts per-frame results (posterior
state probabilities, sampled paths) back into recordings, each frame from its owner.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["Segments", "merge_segments", "split_into_segments"]


class Segments(NamedTuple):
    """Segments of ``context + segment_length`` frames cut from recordings.

    Attributes:
        values: shape ``(N, context + segment_length) + E``; frames that do not exist (before
            a recording's start, after its end) hold ``fill_value``.
        obs_mask: bool, shape ``(N, context + segment_length)``: the frame exists (and is
            observed, if the recording's own mask says so).
        owned: bool, same shape: this segment owns the frame. Every observed frame of every
            recording is owned by exactly one segment; context frames never are.
        recording: int, shape ``(N,)``: which recording the segment comes from.
        start: int, shape ``(N,)``: the recording frame at position 0 of the segment (negative
            for a first segment, whose context lies before the recording).
        lengths: int, shape ``(R,)``: the recordings' lengths, for :func:`merge_segments`.
    """

    values: jnp.ndarray
    obs_mask: jnp.ndarray
    owned: jnp.ndarray
    recording: np.ndarray
    start: np.ndarray
    lengths: np.ndarray


def split_into_segments(
    recordings: Sequence, segment_length: int, *, context: int = 0, masks=None, fill_value=0.0
) -> Segments:
    """Cut recordings into segments of ``segment_length`` owned frames plus ``context`` before.

    Args:
        recordings: ``R`` arrays of shapes ``(T_r,) + E`` (one ``E``).
        segment_length: the owned frames per segment, ``S >= 1``.
        context: the frames before each segment's owned ones (``L`` for an L-lag model).
        masks: ``R`` bool arrays ``(T_r,)``, True where observed, or None.
        fill_value: the value of frames that do not exist.

    Returns:
        :class:`Segments` with ``N = sum_r ceil(T_r / S)`` segments.

    Raises:
        ValueError: for ``segment_length < 1``, ``context < 0`` or mismatched shapes.
    """
    if int(segment_length) < 1 or int(context) < 0:
        raise ValueError(
            f"split_into_segments: segment_length must be >= 1 and context >= 0, got "
            f"segment_length={segment_length}, context={context}."
        )
    arrays = [np.asarray(r) for r in recordings]
    if not arrays or len({a.shape[1:] for a in arrays}) != 1 or any(a.ndim == 0 for a in arrays):
        raise ValueError(
            "split_into_segments: recordings must be a non-empty list of arrays (T_r,) + E with "
            f"one E, got shapes {[a.shape for a in arrays]}."
        )
    if masks is not None and [np.shape(m) for m in masks] != [a.shape[:1] for a in arrays]:
        raise ValueError(
            f"split_into_segments: masks must have shapes {[a.shape[:1] for a in arrays]} "
            f"(one (T_r,) per recording), got {[np.shape(m) for m in masks]}."
        )
    S, C = int(segment_length), int(context)
    width = C + S
    values, obs, owned, which, starts = [], [], [], [], []
    for r, a in enumerate(arrays):
        exists = np.ones(len(a), bool) if masks is None else np.asarray(masks[r], bool)
        for first in range(0, len(a), S):
            frames = np.arange(first - C, first + S)
            inside = (frames >= 0) & (frames < len(a))
            seg = np.full((width,) + a.shape[1:], fill_value, dtype=np.result_type(a, fill_value))
            seg[inside] = a[frames[inside]]
            seen = np.zeros(width, bool)
            seen[inside] = exists[frames[inside]]
            values.append(seg)
            obs.append(seen)
            owned.append(seen & (np.arange(width) >= C))
            which.append(r)
            starts.append(first - C)
    return Segments(
        jnp.asarray(np.stack(values)),
        jnp.asarray(np.stack(obs)),
        jnp.asarray(np.stack(owned)),
        np.asarray(which),
        np.asarray(starts),
        np.asarray([len(a) for a in arrays]),
    )


def merge_segments(per_frame, segments: Segments, *, fill_value=np.nan) -> list:
    """Reassemble per-frame results of the segments into one array per recording.

    Args:
        per_frame: shape ``(N, context + segment_length) + F``: any per-frame result of the
            segments (data, smoothed probabilities, a sampled path).
        segments: the :class:`Segments` they came from.
        fill_value: the value of frames no segment owns (unobserved frames).

    Returns:
        ``R`` NumPy arrays of shapes ``(T_r,) + F``; frame ``t`` of recording ``r`` comes from
        the segment that owns it.

    Raises:
        ValueError: when ``per_frame`` does not have the segments' leading shape.
    """
    out = np.asarray(per_frame)
    owned = np.asarray(segments.owned)
    if out.shape[:2] != owned.shape:
        raise ValueError(
            f"merge_segments: per_frame must have shape {owned.shape} + F (the segments' "
            f"(N, context + segment_length)), got {out.shape}."
        )
    dtype = np.result_type(out.dtype, np.asarray(fill_value).dtype)
    merged = [np.full((T,) + out.shape[2:], fill_value, dtype) for T in segments.lengths]
    frames = segments.start[:, None] + np.arange(owned.shape[1])
    for n, r in enumerate(segments.recording):
        merged[r][frames[n, owned[n]]] = out[n, owned[n]]
    return merged

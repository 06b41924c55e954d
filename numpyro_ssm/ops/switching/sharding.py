"""Sharding a batch of sequences over devices: the leading axis split by ``jax.sharding``.

Everything in :mod:`numpyro_ssm.ops.switching.gibbs` (and every distribution's ``log_prob``) is
written for a batch ``(B, T, ...)`` of sequences. Place that batch on a one-axis device mesh
and ``jit`` does the rest: the per-sequence work (FFBS, Kalman sampling, log-likelihoods) runs on
the device that holds the sequence, and the sums over sequences (transition counts, regression
statistics) become cross-device reductions, with the same numbers as on one device. jax_moseq
mixes ``pmap``, ``vmap`` and ``lax.map`` by hand for this.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["sequence_mesh", "shard_sequences"]


def sequence_mesh(devices=None, axis_name="sequences") -> Mesh:
    """A one-axis mesh over ``devices`` (all of them by default).

    Args:
        devices: a list of devices, or None for ``jax.devices()``.
        axis_name: the mesh axis's name.

    Returns:
        A :class:`jax.sharding.Mesh`.
    """
    return Mesh(np.array(jax.devices() if devices is None else list(devices)), (axis_name,))


def shard_sequences(tree, mesh: Mesh | None = None):
    """Put every array of ``tree`` on ``mesh``, its leading (sequence) axis split over devices.

    Args:
        tree: arrays (or a pytree of arrays) whose leading axis is the batch of ``B`` sequences.
        mesh: a one-axis mesh (:func:`sequence_mesh` by default).

    Returns:
        The same pytree, sharded.

    Raises:
        ValueError: when ``B`` is not a multiple of the number of devices (pad the batch with
            fully masked sequences, e.g. by :func:`~numpyro_ssm.pad_sequences`).
    """
    mesh = sequence_mesh() if mesh is None else mesh
    size = mesh.devices.size
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    def put(x):
        shape = np.shape(x)
        if not shape or shape[0] % size:
            raise ValueError(
                f"shard_sequences: the leading (sequence) axis must be a multiple of the "
                f"{size} devices, got an array of shape {shape}; pad the batch with fully "
                "masked sequences."
            )
        return jax.device_put(x, sharding)

    return jax.tree.map(put, tree)

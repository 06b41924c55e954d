"""Max-product elements (Viterbi) and compositions of index maps (backtracking, FFBS)."""

import math

import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._hmm_common import _safe_max
from numpyro_ssm.ops.scan import prefix_scan

_MAXPLUS_BROADCAST_LIMIT = 2**22


def _maxplus_matmul(a, b):
    """``out[..., i, k] = max_j a[..., i, j] + b[..., j, k]``.

    Small products broadcast over ``j``; large ones loop over ``j`` to keep O(I K) memory.
    """
    out_shape = jnp.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1,) + b.shape[-1:])
    if math.prod(out_shape) * a.shape[-1] <= _MAXPLUS_BROADCAST_LIMIT:
        return jnp.max(a[..., :, :, None] + b[..., None, :, :], axis=-2)
    a_cols = jnp.moveaxis(a, -1, 0)
    b_rows = jnp.moveaxis(b, -2, 0)
    init = jnp.full(out_shape, -jnp.inf, jnp.result_type(a, b))

    def body(acc, ab):
        a_j, b_j = ab
        return jnp.maximum(acc, a_j[..., :, None] + b_j[..., None, :]), None

    out, _ = lax.scan(body, init, (a_cols, b_rows))
    return out


def _max_combine(earlier, later):
    """Max-plus product of two row-shifted elements ``(M, offset)`` (rows of ``M`` peak at 0)."""
    m1, o1 = earlier
    m2, o2 = later
    shift = _safe_max(o2)
    product = _maxplus_matmul(m1, (o2 - shift)[..., :, None] + m2)
    row_max = _safe_max(product)
    return product - row_max, o1 + shift + row_max[..., 0]


def _max_element(log_trans_t, log_lik_t):
    log_m = log_trans_t + log_lik_t[..., None, :]
    row_max = _safe_max(log_m)
    return log_m - row_max, row_max[..., 0]


def _compose(earlier, later):
    """Composition of index maps stored as arrays: ``(earlier ∘ later)[k] = earlier[later[k]]``."""
    return jnp.take_along_axis(earlier, later, axis=-1)


def _backward_compose(first_state, maps, parallel):
    """States ``z_t = maps[t](z_{t+1})`` from ``z_T = first_state``, as a reverse scan.

    Args:
        first_state: int scalar, the last state ``z_T``.
        maps: int array ``(T - 1, K)``, ``maps[t][k]`` is ``z_t`` given ``z_{t+1} = k``.
        parallel: associative scan over compositions.

    Returns:
        int array ``(T,)``, the states.
    """
    suffix = prefix_scan(
        _compose, lambda g: g, first_state[None], maps, parallel=parallel, reverse=True
    )
    return suffix[:, 0]

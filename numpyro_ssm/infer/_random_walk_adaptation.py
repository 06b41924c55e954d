r"""Warm-up adaptation of a random-walk proposal ``θ' = θ + s L ε``, robust to noisy likelihoods.

Stan's windows (NumPyro's ``build_adaptation_schedule``: a fast window, doubling slow windows,
a fast window) and two adapted quantities:

- the covariance ``L Lᵀ``: the Welford estimate of the chain's draws over each slow window,
  regularized towards ``1e-3 I`` as Stan does (adaptive Metropolis, Haario, Saksman &
  Tamminen 2001); identity until the first slow window ends;
- the scale ``s``: Robbins-Monro on ``log s`` with gain ``k^{-0.6}`` towards the target
  acceptance rate (Andrieu & Thoms 2008), ``k`` counting the steps since the covariance last
  changed. After each covariance update ``s`` restarts at ``2.38 / sqrt(d)``, the optimal scale
  for a Gaussian target of that covariance (Roberts, Gelman & Gilks 1997).

Why not HMC's dual averaging: with a noisy likelihood estimate a chain can stick for many steps
after a lucky overestimate, whatever its scale; dual averaging then drives the scale towards
zero (seen: 1e-7) and the covariance estimated from the stuck stretch collapses with it. The
restarts bound the damage of a stuck stretch to one window, and ``log s`` is kept within
``[-10, 3]`` of ``log(2.38 / sqrt(d))``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc_util import build_adaptation_schedule, welford_covariance

__all__ = ["RandomWalkAdaptState", "random_walk_adapter"]


class RandomWalkAdaptState(NamedTuple):
    """Adaptation state of a random-walk proposal over ``d`` flat parameters.

    Attributes:
        scale: ``s``.
        covariance: ``L Lᵀ``, shape ``(d, d)`` (dense) or ``(d,)`` (diagonal).
        factor: ``L``, lower-triangular ``(d, d)`` or the standard deviations ``(d,)``.
        welford: NumPyro's Welford state of the current slow window.
        window: the index of the current window.
        window_step: steps since the scale last restarted.
    """

    scale: jax.Array
    covariance: jax.Array
    factor: jax.Array
    welford: tuple
    window: jax.Array
    window_step: jax.Array


def random_walk_adapter(
    num_warmup, dimension, *, dense, target_accept_prob, adapt_scale, adapt_covariance
):
    """``(init_fn, update_fn)`` of the adaptation described in the module docstring.

    Args:
        num_warmup: the number of warm-up steps.
        dimension: ``d``.
        dense: adapt a full covariance (else a diagonal).
        target_accept_prob: the acceptance rate the scale aims at.
        adapt_scale: adapt ``s``.
        adapt_covariance: adapt ``L Lᵀ``.

    Returns:
        ``init_fn(scale=None, dtype=float) -> RandomWalkAdaptState`` and
        ``update_fn(t, accept_prob, z_flat, state) -> RandomWalkAdaptState``.
    """
    base = np.log(2.38 / np.sqrt(max(dimension, 1)))
    windows = build_adaptation_schedule(num_warmup) if num_warmup > 0 else []
    ends = jnp.asarray([w.end for w in windows] or [-1])
    num_windows = len(windows)
    welford_init, welford_update, welford_final = welford_covariance(diagonal=not dense)

    def factor_of(covariance):
        return jnp.linalg.cholesky(covariance) if dense else jnp.sqrt(covariance)

    def init_fn(scale=None, dtype=None):
        dtype = jnp.result_type(float) if dtype is None else dtype
        covariance = jnp.eye(dimension, dtype=dtype) if dense else jnp.ones(dimension, dtype)
        scale = jnp.asarray(np.exp(base) if scale is None else scale, dtype)
        return RandomWalkAdaptState(
            scale,
            covariance,
            factor_of(covariance),
            welford_init(dimension),
            jnp.array(0),
            jnp.array(0),
        )

    def update_fn(t, accept_prob, z_flat, state):
        scale, covariance, factor, welford, window, window_step = state
        if adapt_scale:
            gain = (window_step + 1.0) ** -0.6
            log_scale = jnp.log(scale) + gain * (accept_prob - target_accept_prob)
            scale = jnp.exp(jnp.clip(log_scale, base - 10.0, base + 3.0))
        middle = (window > 0) & (window < num_windows - 1)
        if adapt_covariance:
            welford = jax.lax.cond(
                middle, lambda w: welford_update(z_flat, w), lambda w: w, welford
            )
        at_end = t == ends[jnp.minimum(window, ends.shape[0] - 1)]
        window_step = window_step + 1
        if adapt_covariance:

            def new_covariance(args):
                welford, _, _, _ = args
                covariance = welford_final(welford, regularize=True)[0]
                covariance = covariance.astype(z_flat.dtype)
                restart = jnp.asarray(np.exp(base), scale.dtype)
                return welford_init(dimension), covariance, factor_of(covariance), restart

            welford, covariance, factor, scale = jax.lax.cond(
                at_end & middle,
                new_covariance,
                lambda args: args,
                (welford, covariance, factor, scale),
            )
            window_step = jnp.where(at_end & middle, 0, window_step)
        window = jnp.where(at_end, window + 1, window)
        return RandomWalkAdaptState(scale, covariance, factor, welford, window, window_step)

    return init_fn, update_fn

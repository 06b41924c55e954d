r"""Square-root Rauch–Tung–Striebel smoothing (serial or parallel-in-time).

Given the filtered ``N(m_t, U_t U_tᵀ)``, the backward conditional is
``p(z_t | z_{t+1}, y_{1:t}) = N(E_t z_{t+1} + g_t, L_t L_tᵀ)``, read off one conditioning step
(:func:`~numpyro_ssm.ops.kalman._steps._condition` of ``[[F_t U_t, chol Q_t], [U_t, 0]]``).
These affine Gaussian maps compose associatively (Särkkä & García-Fernández 2021):
``(E_1, g_1, L_1) ∘ (E_2, g_2, L_2) = (E_1 E_2, E_1 g_2 + g_1, tria([E_1 L_2, L_1]))``. A
suffix scan seeded with the last filtered Gaussian (``E = 0``) yields every smoothed marginal:
sequentially this is the RTS recursion, with ``lax.associative_scan`` it has ``O(log T)``
depth.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.kalman._steps import _condition, _covariance, _Filtered, _gain, _mv
from numpyro_ssm.ops.kalman.filtering import GaussianPosterior, _filter, _filtered_posterior
from numpyro_ssm.ops.kalman.params import (
    _TRANSITION,
    LGSSMParams,
    _inputs,
    _map_time,
    _Model,
    _split_time,
    accepts_legacy_arguments,
)
from numpyro_ssm.ops.linalg import tria
from numpyro_ssm.ops.scan import prefix_scan

__all__ = ["kalman_smoother"]


class _SmootherElement(NamedTuple):
    E: jax.Array  # (S, S), or (S, 1) zeros in a compact suffix
    g: jax.Array  # (S,)
    L: jax.Array  # (S, S)


def _smoother_element(F, chol_Q, b, m, chol_P):
    """Backward conditional ``p(z_t | z_{t+1}, y_{1:t})`` from the filtered ``N(m, chol_P)``."""
    chol_pred, cross, chol_cond = _condition(chol_P, F, chol_Q)
    gain = _gain(chol_pred, cross)
    return _SmootherElement(gain, m - gain @ (F @ m + b), chol_cond)


def _smoother_combine(e1: _SmootherElement, e2: _SmootherElement) -> _SmootherElement:
    """Compose backward maps: ``e1`` (earlier time) after ``e2`` (later time)."""
    return _SmootherElement(
        e1.E @ e2.E, _mv(e1.E, e2.g) + e1.g, tria(jnp.concatenate([e1.E @ e2.L, e1.L], axis=-1))
    )


def _backward_elements(model, filtered):
    T = filtered.means.shape[0]
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    return _map_time(
        _smoother_element,
        t_static,
        {**t_varying, "m": filtered.means[:-1], "chol_P": filtered.chols[:-1]},
    )


@accepts_legacy_arguments(0)
@functools.partial(jax.jit, static_argnames=("parallel",))
def kalman_smoother(
    params: LGSSMParams,
    observations: jax.Array,
    *,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> GaussianPosterior:
    """Square-root Rauch–Tung–Striebel smoother (after the filter): every field set.

    Args:
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        parallel: associative scans (``O(log T)`` depth) for the filter and the smoother.

    Returns:
        A :class:`~numpyro_ssm.ops.GaussianPosterior` with filtered, predicted and smoothed
        moments, lag-one smoothed cross-covariances and the log marginal.

    Raises:
        ValueError: on inconsistent shapes, naming the argument and the shapes.
    """
    model, y, observed = _inputs(params, observations, obs_mask, "kalman_smoother")
    f = _filter(model, y, observed, parallel)
    return _smoothed_posterior(model, f, parallel)


def _smoothed_factors(model: _Model, f: _Filtered, parallel):
    """The backward elements and the smoothed marginals in square-root form.

    Returns:
        ``(back, out)``: the backward conditionals of :func:`_backward_elements` and their
        suffix combinations, whose ``g`` ``(T, S)`` are the smoothed means and ``L``
        ``(T, S, S)`` lower-triangular factors of the smoothed covariances.
    """
    S = f.means.shape[1]
    back = _backward_elements(model, f)
    last = _SmootherElement(jnp.zeros((S, 1), f.means.dtype), f.means[-1], f.chols[-1])
    out = prefix_scan(_smoother_combine, lambda e: e, last, back, parallel=parallel, reverse=True)
    return back, out


def _smoothed_posterior(model: _Model, f: _Filtered, parallel) -> GaussianPosterior:
    """Every field of the posterior from the filter's output ``f`` of one sequence."""
    back, out = _smoothed_factors(model, f, parallel)
    smoothed_covs = _covariance(out.L)
    return _filtered_posterior(f)._replace(
        smoothed_means=out.g,
        smoothed_covariances=smoothed_covs,
        smoothed_cross_covariances=back.E @ smoothed_covs[1:],
    )

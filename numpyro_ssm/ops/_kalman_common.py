"""Shared pieces of the Kalman algorithms: parameter checks, the time axis, masked emissions.

See :mod:`numpyro_ssm.ops.kalman` for the model and the conventions.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.linalg import (
    _sum_small,
    chol_logdet,
    matmul_small,
    matmul_stack,
    solve_lower,
    tria,
)

# ---------------------------------------------------------------------------------------------
# Parameters: validation and the time axis
# ---------------------------------------------------------------------------------------------

# name -> (number of event dims, offset of the time axis length relative to T)
_TRANSITION = {"F": (2, -1), "chol_Q": (2, -1), "b": (1, -1)}
_EMISSION = {"H": (2, 0), "chol_R": (2, 0), "d": (1, 0)}
_PUBLIC = {
    "F": "transition_matrix",
    "chol_Q": "transition_scale_tril",
    "b": "transition_bias",
    "H": "emission_matrix",
    "chol_R": "emission_scale_tril",
    "d": "emission_bias",
}


class _Model(NamedTuple):
    static: dict  # name -> array without time axis
    varying: dict  # name -> array with a leading time axis (T-1 or T)
    m0: jax.Array
    chol_P0: jax.Array


def _prepare(
    initial_mean,
    initial_scale_tril,
    transition_matrix,
    transition_scale_tril,
    emission_matrix,
    emission_scale_tril,
    transition_bias,
    emission_bias,
    num_steps,
):
    """Check shapes, fill default biases, and sort parameters into static and time-varying."""
    m0 = jnp.asarray(initial_mean)
    if m0.ndim != 1:
        raise ValueError(
            f"initial_mean must have shape (S,), got {m0.shape}. The ops take one sequence; "
            "use jax.vmap (or LinearGaussianSSM) for batches."
        )
    S = m0.shape[0]
    chol_P0 = jnp.asarray(initial_scale_tril)
    if chol_P0.shape != (S, S):
        raise ValueError(f"initial_scale_tril must have shape {(S, S)}, got {chol_P0.shape}.")
    H = jnp.asarray(emission_matrix)
    if H.ndim < 2:
        raise ValueError(f"emission_matrix must have shape (D, S) or (T, D, S), got {H.shape}.")
    D = H.shape[-2]
    dtype = m0.dtype
    arrays = {
        "F": jnp.asarray(transition_matrix),
        "chol_Q": jnp.asarray(transition_scale_tril),
        "b": jnp.zeros((S,), dtype) if transition_bias is None else jnp.asarray(transition_bias),
        "H": H,
        "chol_R": jnp.asarray(emission_scale_tril),
        "d": jnp.zeros((D,), dtype) if emission_bias is None else jnp.asarray(emission_bias),
    }
    events = {"F": (S, S), "chol_Q": (S, S), "b": (S,), "H": (D, S), "chol_R": (D, D), "d": (D,)}
    T = num_steps
    static, varying = {}, {}
    for name, arr in arrays.items():
        ndim, offset = {**_TRANSITION, **_EMISSION}[name]
        if arr.shape[arr.ndim - ndim :] != events[name] or arr.ndim > ndim + 1:
            time = "T-1" if offset else "T"
            raise ValueError(
                f"{_PUBLIC[name]} must have shape {events[name]} or ({time},) + "
                f"{events[name]} (state dim S={S}, observation dim D={D}), got {arr.shape}."
            )
        if arr.ndim == ndim or arr.shape[0] == 1:
            static[name] = arr.reshape(events[name])
        elif arr.shape[0] != T + offset:
            time = "T-1" if offset else "T"
            raise ValueError(
                f"{_PUBLIC[name]} has shape {arr.shape}: its time axis has length "
                f"{arr.shape[0]}, expected 1 or {time}={T + offset}."
            )
        else:
            varying[name] = arr
    return _Model(static, varying, m0, chol_P0)


def _observations(observations, obs_mask, model):
    y = jnp.asarray(observations)
    D = model.varying.get("H", model.static.get("H")).shape[-2]
    if y.ndim != 2 or y.shape[1] != D:
        raise ValueError(f"observations must have shape (T, D) with D={D}, got {y.shape}.")
    observed = ~jnp.isnan(y)
    if obs_mask is not None:
        obs_mask = jnp.asarray(obs_mask, dtype=bool)
        try:
            observed = observed & jnp.broadcast_to(obs_mask, y.shape)
        except ValueError:
            raise ValueError(
                f"obs_mask of shape {obs_mask.shape} does not broadcast to observations of "
                f"shape {y.shape}."
            ) from None
    return y, observed


def _inputs(args, observations, obs_mask):
    """``(model, y, observed)`` from the ops' eight parameter arguments (in signature order)."""
    y = jnp.asarray(observations)
    model = _prepare(*args, y.shape[0] if y.ndim else 0)
    y, observed = _observations(y, obs_mask, model)
    return model, y, observed


def _split_time(model, names, start, length):
    """Static parameters, and time-varying ones sliced to ``[start, start + length)``."""
    static = {k: model.static[k] for k in names if k in model.static}
    varying = {k: model.varying[k][start : start + length] for k in names if k in model.varying}
    return static, varying


def _per_step(model, names, start, length):
    """Every parameter in ``names`` with a time axis of ``length`` (static ones broadcast)."""
    static, varying = _split_time(model, names, start, length)
    return {**{k: jnp.broadcast_to(v, (length,) + v.shape) for k, v in static.items()}, **varying}


def _map_time(fn, static, varying):
    """``fn`` over the leading time axis of ``varying``, with ``static`` held fixed."""
    return jax.vmap(lambda v: fn(**static, **v))(varying)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _mT(a):
    return jnp.swapaxes(a, -1, -2)


def _mv(a, x):
    return (a @ x[..., None])[..., 0]


def _masked_emission(H, chol_R, d, y, observed):
    """Emission with missing entries replaced by exact "no information" rows.

    Returns ``(H_m, chol_R_m, y_m)``: ``H_m`` ``(D, S)`` and ``y_m = y - d`` ``(D,)`` with the
    missing rows zeroed, and ``chol_R_m`` ``(D, 2D)`` whose product ``chol_R_m chol_R_mᵀ`` is
    ``R`` on the observed block and the identity on the missing one. With one entry (``D = 1``)
    ``chol_R_m`` is ``(1, 1)``, ``chol_R`` or one: a narrower stack to triangularize, which
    keeps the scalar filter's loop small enough for XLA to compile it whole
    (``benchmarks/xla_loops.py``).
    """
    m = observed.astype(H.dtype)
    H_m = H * m[:, None]
    if H.shape[0] == 1:  # one entry: its factor itself becomes the "no information" one
        chol_R_m = jnp.where(observed[:, None], chol_R, 1.0)
    else:
        chol_R_m = jnp.concatenate([chol_R * m[:, None], jnp.diag(1.0 - m)], axis=1)
    y_m = jnp.where(observed, y, 0.0) - d * m
    return H_m, chol_R_m, y_m


_LOG_2PI = math.log(2 * math.pi)


def _innovation_log_lik(chol_S, w, observed):
    """``log N(v; 0, S)`` over the observed entries, from ``S``'s factor and ``w = chol_S⁻¹ v``."""
    n_obs = _sum_small(observed.astype(w.dtype), -1)
    return -0.5 * (n_obs * _LOG_2PI + chol_logdet(chol_S) + _sum_small(w * w, -1))


def _log_likelihood(m_pred, chol_P_pred, H, chol_R, d, y, observed):
    """``log p(y_t | y_{1:t-1})`` over the observed entries of ``y_t``."""
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    chol_S = tria(jnp.concatenate([matmul_small(H_m, chol_P_pred), chol_R_m], axis=1))
    return _innovation_log_lik(
        chol_S, solve_lower(chol_S, y_m - matmul_small(H_m, m_pred)), observed
    )


def _condition(chol_P, H, chol_R):
    """One triangularization of ``[[H U, chol_R], [U, 0]]`` (``P = U Uᵀ``) for an update.

    Returns:
        ``(chol_S, cross, chol_f)``: the innovation factor (``S = H P Hᵀ + chol_R chol_Rᵀ``),
        ``cross = P Hᵀ chol_S⁻ᵀ`` (so the gain is ``cross chol_S⁻¹``) and the filtered factor.
    """
    D = H.shape[0]
    top = jnp.concatenate([matmul_small(H, chol_P), chol_R], axis=1)
    bottom = jnp.concatenate(
        [chol_P, jnp.zeros((chol_P.shape[0], chol_R.shape[1]), chol_P.dtype)], axis=1
    )
    psi = tria(jnp.concatenate([top, bottom], axis=0))
    return psi[:D, :D], psi[D:, :D], psi[D:, D:]


def _update(m, chol_P, H, chol_R, d, y, observed):
    """Condition the predicted ``N(m, chol_P)`` on ``y``: filtered moments and the log-lik."""
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    chol_S, cross, chol_f = _condition(chol_P, H_m, chol_R_m)
    w = solve_lower(chol_S, y_m - matmul_small(H_m, m))
    return m + matmul_small(cross, w), chol_f, _innovation_log_lik(chol_S, w, observed)


def _predict(F, chol_Q, b, m, chol_P):
    """``N(F m + b, F P Fᵀ + Q)`` in square-root form."""
    return matmul_small(F, m) + b, tria(jnp.concatenate([matmul_small(F, chol_P), chol_Q], axis=1))


class _Filtered(NamedTuple):
    means: jax.Array  # (T, S)
    chols: jax.Array  # (T, S, S)
    predicted_means: jax.Array
    predicted_chols: jax.Array
    log_likelihoods: jax.Array  # (T,)


def _covariance(chol):
    return matmul_stack(chol, _mT(chol))

"""The exact initial Kalman filter of :mod:`numpyro_ssm.ops.kalman.diffuse` and its hand-off.

Square-root throughout: the mean, a lower-triangular factor of ``P_*`` and a square factor of
``P_∞`` travel through the first diffuse steps; the proper predicted state after them starts the
ordinary filter (:mod:`~numpyro_ssm.ops.kalman.filtering`) over the remaining steps.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._fusion import matmul_small
from numpyro_ssm.ops.kalman._steps import (
    _LOG_2PI,
    _Filtered,
    _masked_emission,
    _mT,
    _row_times,
    _sparse_matmul,
)
from numpyro_ssm.ops.kalman.filtering import _filter, _log_marginal
from numpyro_ssm.ops.kalman.params import _EMISSION, _TRANSITION, _Model, _split_time
from numpyro_ssm.ops.linalg import chol_logdet, solve_lower, tria


class _Phase(NamedTuple):
    """The diffuse steps: per-step outputs (leading axis ``n``) and the hand-off state."""

    predicted_means: jax.Array  # (n, S)
    predicted_chols: jax.Array  # (n, S, S), factors of P_*
    filtered_means: jax.Array
    filtered_chols: jax.Array
    log_liks: jax.Array  # (n,)
    next_mean: jax.Array  # (S,): predicted mean of step n + 1
    next_chol: jax.Array  # (S, S)
    leftover: jax.Array  # (): the largest entry of U_∞ at step n + 1 (0 when resolved)


def _tolerance(dtype):
    return math.sqrt(float(jnp.finfo(dtype).eps))


def _diffuse_update(a, U_star, U_inf, H, chol_R, d, y, observed, triangular=True, columns=None):
    """Condition on ``y_t``, one whitened entry at a time; returns the moments and the log-lik.

    ``triangular=False`` leaves the factor of ``P_*`` wide (one more column per observed entry,
    the Joseph form's stack untriangularized), for :func:`_diffuse_value_phase`. ``columns``:
    where a one-row ``H`` can be nonzero (``Pattern.emission``), or None.
    """
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    L = chol_R_m if chol_R_m.shape[1] == chol_R_m.shape[0] else tria(chol_R_m)
    Hw, yw = solve_lower(L, H_m), solve_lower(L, y_m)  # whitened: noise covariance I
    logdet, quad = chol_logdet(L), jnp.zeros((), a.dtype)
    for i in range(Hw.shape[0]):
        h = Hw[i]
        if columns is None:
            v = yw[i] - jnp.dot(h, a)
            g_inf, g_star = _mT(U_inf) @ h, _mT(U_star) @ h
        else:  # one row, zero outside columns
            v = yw[i] - _row_times(h, a, columns)
            g_inf, g_star = _row_times(h, U_inf, columns), _row_times(h, U_star, columns)
        f_inf, f_star = jnp.dot(g_inf, g_inf), jnp.dot(g_star, g_star) + 1.0
        diffuse = f_inf > _tolerance(a.dtype) * jnp.dot(h, h)
        f_inf_safe = jnp.where(diffuse, f_inf, 1.0)
        gain = jnp.where(diffuse, U_inf @ g_inf / f_inf_safe, U_star @ g_star / f_star)
        a = a + gain * v
        U_inf = jnp.where(diffuse, U_inf - gain[:, None] * g_inf[None, :], U_inf)
        # Joseph form: (I - K hᵀ) P_* (I - K hᵀ)ᵀ + K Kᵀ for either gain
        U_star = jnp.concatenate([U_star - gain[:, None] * g_star[None, :], gain[:, None]], 1)
        U_star = tria(U_star) if triangular else U_star
        logdet = logdet + jnp.log(jnp.where(diffuse, f_inf_safe, f_star))
        quad = quad + jnp.where(diffuse, 0.0, v * v / f_star)
    n_obs = jnp.sum(observed.astype(a.dtype))
    return a, U_star, U_inf, -0.5 * (n_obs * _LOG_2PI + logdet + quad)


def _diffuse_predict(F, chol_Q, b, a, U_star, U_inf, triangular=True, rows=None):
    """``(F a + b, factor of F P_* Fᵀ + Q, F U_∞)``; ``rows``: ``Pattern.transition`` or None."""
    if rows is None:
        Fa, FU_star, FU_inf = matmul_small(F, a), matmul_small(F, U_star), matmul_small(F, U_inf)
    else:  # one product by slices (``_steps._sparse_matmul``) for the three
        stacked = _sparse_matmul(F, jnp.concatenate([a[:, None], U_star, U_inf], 1), rows)
        Fa, FU_star, FU_inf = jnp.split(stacked, [1, 1 + U_star.shape[1]], axis=1)
        Fa = Fa[:, 0]
    U_star = jnp.concatenate([FU_star, chol_Q], axis=1)
    return Fa + b, tria(U_star) if triangular else U_star, FU_inf


def _diffuse_phase(model: _Model, y, observed, diffuse, n) -> _Phase:
    """The exact initial filter over the first ``n`` steps (``1 <= n <= T``)."""
    T = y.shape[0]
    mask = jnp.asarray(diffuse, model.m0.dtype)
    U_star = model.chol_P0 * (1.0 - mask)[:, None]
    U_inf = jnp.diag(mask)
    n_scan = min(n, T - 1)
    t_static, t_varying = _split_time(model, _TRANSITION, 0, n_scan)
    e_static, e_varying = _split_time(model, _EMISSION, 0, n)

    def step(carry, inputs):
        a, U_s, U_i = carry
        emission = {**e_static, **{k: inputs[k] for k in e_varying}}
        a_f, U_s_f, U_i_f, log_lik = _diffuse_update(
            a, U_s, U_i, **emission, y=inputs["y"], observed=inputs["observed"]
        )
        transition = {**t_static, **{k: inputs[k] for k in t_varying}}
        carry = _diffuse_predict(**transition, a=a_f, U_star=U_s_f, U_inf=U_i_f)
        return carry, (a, U_s, a_f, U_s_f, log_lik)

    inputs = {
        **t_varying,
        **{k: v[:n_scan] for k, v in e_varying.items()},
        "y": y[:n_scan],
        "observed": observed[:n_scan],
    }
    (a, U_s, U_i), out = lax.scan(step, (model.m0, U_star, U_inf), inputs)
    if n > n_scan:  # every step is diffuse: the last one has no transition after it
        last = {**e_static, **{k: v[n - 1] for k, v in e_varying.items()}}
        a_f, U_s_f, _, log_lik = _diffuse_update(
            a, U_s, U_i, **last, y=y[n - 1], observed=observed[n - 1]
        )
        last_out = (a, U_s, a_f, U_s_f, log_lik)
        out = tuple(jnp.concatenate([o, x[None]]) for o, x in zip(out, last_out, strict=True))
        U_i = jnp.zeros_like(U_i)  # nothing is handed off
    return _Phase(*out, a, U_s, jnp.max(jnp.abs(U_i)))


# Diffuse steps between two triangularizations of ``P_*``'s factor in the value's phase.
_DIFFUSE_DEFER = 4


def _diffuse_value_phase(model: _Model, y, observed, diffuse, n, pattern=None) -> _Phase:
    """:func:`_diffuse_phase` for the log-likelihood alone (``n < T``), with fewer QRs.

    The Joseph-form update and the prediction take a factor of ``P_*`` of any width, so the
    stacks of ``_DIFFUSE_DEFER`` steps share one triangularization (as ``_steps._deferred_steps``
    does after the diffuse steps): exact, the factors differ by orthogonal transformations on
    the right, and ``f_*`` and the gains depend only on ``P_*``. Groups of that many steps run
    in a scan, the remaining steps after it; the hand-off factor is triangular. The returned
    phase has only ``log_liks`` and the hand-off fields filled (the per-step moments are empty).
    ``pattern``: the zeros of ``F`` and ``H`` (``params.Pattern``), or None.
    """
    k = _DIFFUSE_DEFER
    rows, columns = (None, None) if pattern is None else pattern
    mask = jnp.asarray(diffuse, model.m0.dtype)
    carry = (model.m0, model.chol_P0 * (1.0 - mask)[:, None], jnp.diag(mask))
    t_static, t_varying = _split_time(model, _TRANSITION, 0, n)
    e_static, e_varying = _split_time(model, _EMISSION, 0, n)
    inputs = {**t_varying, **e_varying, "y": y[:n], "observed": observed[:n]}

    def steps(carry, inputs, count):
        a, U_s, U_i = carry
        log_liks = []
        for i in range(count):
            at = {key: v[i] for key, v in inputs.items()}
            emission = {**e_static, **{key: at[key] for key in (*e_varying, "y", "observed")}}
            a, U_s, U_i, log_lik = _diffuse_update(
                a, U_s, U_i, **emission, triangular=False, columns=columns
            )
            transition = {**t_static, **{key: at[key] for key in t_varying}}
            a, U_s, U_i = _diffuse_predict(
                **transition, a=a, U_star=U_s, U_inf=U_i, triangular=False, rows=rows
            )
            log_liks.append(log_lik)
        return (a, tria(U_s), U_i), jnp.stack(log_liks)

    groups = n // k
    grouped = {key: v[: groups * k].reshape((groups, k) + v.shape[1:]) for key, v in inputs.items()}
    carry, log_liks = lax.scan(lambda c, x: steps(c, x, k), carry, grouped)
    log_liks = log_liks.reshape(-1)
    if n > groups * k:
        carry, tail = steps(
            carry, {key: v[groups * k :] for key, v in inputs.items()}, n - groups * k
        )
        log_liks = jnp.concatenate([log_liks, tail])
    a, U_s, U_i = carry
    empty = jnp.zeros((0,), a.dtype)
    return _Phase(empty, empty, empty, empty, log_liks, a, U_s, jnp.max(jnp.abs(U_i)))


def _rest(model: _Model, phase: _Phase, n) -> _Model:
    """The proper model of steps ``n + 1, ..., T``, started from the hand-off state."""
    varying = {k: v[n:] for k, v in model.varying.items()}
    return _Model(model.static, varying, phase.next_mean, phase.next_chol)


def _poison(phase: _Phase, x):
    """``x``, or NaN where the diffuse steps left a diffuse direction (module docstring)."""
    unresolved = phase.leftover > _tolerance(phase.next_mean.dtype)
    return jnp.where(unresolved, jnp.nan, x)


def _diffuse_filter(model: _Model, y, observed, diffuse, n, parallel) -> _Filtered:
    T = y.shape[0]
    phase = _diffuse_phase(model, y, observed, diffuse, n)
    own = _Filtered(
        phase.filtered_means,
        phase.filtered_chols,
        phase.predicted_means,
        phase.predicted_chols,
        phase.log_liks,
    )
    if n == T:
        return own
    rest = _filter(_rest(model, phase, n), y[n:], observed[n:], parallel)
    out = _Filtered(*(jnp.concatenate([a, b]) for a, b in zip(own, rest, strict=True)))
    return out._replace(log_likelihoods=_poison(phase, out.log_likelihoods))


def _diffuse_log_marginal(model: _Model, y, observed, diffuse, n, parallel, pattern=None):
    T = y.shape[0]
    if n == T:
        return jnp.sum(_diffuse_phase(model, y, observed, diffuse, n).log_liks)
    phase = _diffuse_value_phase(model, y, observed, diffuse, n, pattern)
    total = jnp.sum(phase.log_liks)
    rest = _log_marginal(_rest(model, phase, n), y[n:], observed[n:], parallel, pattern)
    return _poison(phase, total + rest)

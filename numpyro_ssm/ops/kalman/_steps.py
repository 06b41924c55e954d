"""The steps every Kalman algorithm is built from: masked emissions, conditioning, prediction.

Square-root throughout: a covariance travels as a lower-triangular factor, and every update
stacks factors and triangularizes them (:func:`numpyro_ssm.ops.linalg.tria`). The model and the
conventions are in :mod:`numpyro_ssm.ops.kalman.params`.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops._fusion import matmul_small, matmul_stack, sum_small
from numpyro_ssm.ops.linalg import (
    _STEP_UNROLL_MAX_ROWS,
    chol_logdet,
    solve_lower,
    solve_lower_transpose,
    tria,
)

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
    (``benchmarks/probes/xla_loops.py``).
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
    n_obs = sum_small(observed.astype(w.dtype), -1)
    return -0.5 * (n_obs * _LOG_2PI + chol_logdet(chol_S) + sum_small(w * w, -1))


def _log_likelihood(m_pred, chol_P_pred, H, chol_R, d, y, observed):
    """``log p(y_t | y_{1:t-1})`` over the observed entries of ``y_t``."""
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    chol_S = tria(jnp.concatenate([matmul_small(H_m, chol_P_pred), chol_R_m], axis=1))
    return _innovation_log_lik(
        chol_S, solve_lower(chol_S, y_m - matmul_small(H_m, m_pred)), observed
    )


def _condition(chol_P, H, chol_R):
    """One triangularization of ``[[H U, chol_R], [U, 0]]`` (``P = U Uᵀ``): a conditioning step.

    It conditions ``x ~ N(., P)`` on ``H x + noise`` with noise covariance ``chol_R chol_Rᵀ``.
    The same step serves the filter's update (``P`` predicted, ``H, R`` the emission), the
    parallel filter's elements (``P = Q``) and the smoother's backward conditionals (``H = F``,
    ``R = Q``).

    Returns:
        ``(chol_S, cross, chol_C)``: the innovation factor (``S = H P Hᵀ + chol_R chol_Rᵀ``),
        ``cross = P Hᵀ chol_S⁻ᵀ`` (so the gain is ``cross chol_S⁻¹``, see :func:`_gain`) and
        the factor of the conditional covariance.
    """
    return _condition_factored(chol_P, matmul_small(H, chol_P), chol_R)


def _condition_factored(chol_P, HU, chol_R):
    """:func:`_condition` from ``H U`` (``P = U Uᵀ``) in place of ``H``."""
    D = HU.shape[0]
    top = jnp.concatenate([HU, chol_R], axis=1)
    bottom = jnp.concatenate(
        [chol_P, jnp.zeros((chol_P.shape[0], chol_R.shape[1]), chol_P.dtype)], axis=1
    )
    psi = tria(jnp.concatenate([top, bottom], axis=0))
    return psi[:D, :D], psi[D:, :D], psi[D:, D:]


def _gain(chol_S, cross):
    """The gain ``cross chol_S⁻¹`` of a conditioning step (:func:`_condition`)."""
    return solve_lower_transpose(chol_S, cross.T).T


def _update(m, chol_P, H, chol_R, d, y, observed):
    """Condition the predicted ``N(m, chol_P)`` on ``y``: filtered moments and the log-lik."""
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    chol_S, cross, chol_f = _condition(chol_P, H_m, chol_R_m)
    w = solve_lower(chol_S, y_m - matmul_small(H_m, m))
    return m + matmul_small(cross, w), chol_f, _innovation_log_lik(chol_S, w, observed)


def _update_to_predict(m, chol_P, H, chol_R, d, y, observed, columns=None):
    """:func:`_update` for a step whose filtered factor only feeds :func:`_predict`.

    With one observation entry (``D = 1``) no triangularization is needed (Potter's square-root
    update). With ``f = h U`` (``P = U Uᵀ``) and ``s² = |f|² + r²``, the filtered covariance is
    ``U (I - f fᵀ / s²) Uᵀ = U (I - α f fᵀ)² Uᵀ`` for ``α = 1 / (s (s + r))``, so
    ``U - α (U f) fᵀ`` is a square root of it: exact, ``O(S²)``, but not triangular. The
    prediction's triangularization accepts any factor, so a filter that keeps only predicted
    moments (the log-marginal passes) saves one triangularization a step. ``D > 1``:
    :func:`_update` itself. ``columns``: where ``h`` can be nonzero
    (:func:`~numpyro_ssm.ops.kalman.params.emission_pattern`), or None for a dense ``h``.

    Returns:
        ``(m_f, factor_f, log_lik)`` as :func:`_update`, ``factor_f`` square but (for
        ``D = 1``) not triangular.
    """
    if H.shape[0] != 1:
        return _update(m, chol_P, H, chol_R, d, y, observed)
    H_m, chol_R_m, y_m = _masked_emission(H, chol_R, d, y, observed)
    if columns is None:
        f, h_m = matmul_small(H_m, chol_P)[0], jnp.sum(H_m[0] * m)  # f: (w,)
    else:
        f, h_m = _row_times(H_m[0], chol_P, columns), _row_times(H_m[0], m, columns)
    return _potter(m, chol_P, f, chol_R_m, y_m[0] - h_m, observed)


def _potter(m, chol_P, f, chol_R_m, innovation, observed):
    """Potter's update (:func:`_update_to_predict`) from ``f = h U`` and the innovation."""
    r = jnp.abs(chol_R_m[0, 0])
    s = jnp.sqrt(jnp.sum(f * f) + r * r)
    safe_s = jnp.where(s > 0, s, 1.0)
    w = innovation / safe_s  # the innovation over its scale
    gain_dir = matmul_small(chol_P, f)  # U f = P hᵀ
    alpha = jnp.where(s > 0, 1.0 / (safe_s * (safe_s + r)), 0.0)
    factor_f = chol_P - (alpha * gain_dir)[:, None] * f[None, :]
    log_lik = _innovation_log_lik(s[None, None], w[None], observed)
    return m + gain_dir * (w / safe_s), factor_f, log_lik


def _update_factored(m, chol_P, HU, chol_R, y_hat, y, observed, to_predict=False):
    """:func:`_update` (``to_predict``: :func:`_update_to_predict`) from ``H U`` and ``ŷ``.

    For emissions linearized at the predicted belief itself, where the rule gives ``H U``
    (``P = U Uᵀ``) and the predicted observation ``ŷ = H m + d`` directly, without ``H``.
    """
    HU_m, chol_R_m, v = _masked_emission(HU, chol_R, y_hat, y, observed)  # v = y - ŷ, masked
    if to_predict and HU.shape[0] == 1:
        return _potter(m, chol_P, HU_m[0], chol_R_m, v[0], observed)
    chol_S, cross, chol_f = _condition_factored(chol_P, HU_m, chol_R_m)
    w = solve_lower(chol_S, v)
    return m + matmul_small(cross, w), chol_f, _innovation_log_lik(chol_S, w, observed)


def _predict(F, chol_Q, b, m, chol_P):
    """``N(F m + b, F P Fᵀ + Q)`` in square-root form."""
    return matmul_small(F, m) + b, tria(jnp.concatenate([matmul_small(F, chol_P), chol_Q], axis=1))


def _predict_wide(F, chol_Q, b, m, U, rows=None):
    """:func:`_predict` without its triangularization: the factor ``[F U, chol_Q]``.

    ``U`` may be any factor of ``P`` (``(S, w)``, ``P = U Uᵀ``); the result is ``(S, w + q)``
    for ``chol_Q`` of ``q`` columns. ``rows``: ``F``'s nonzero columns of each row
    (:func:`~numpyro_ssm.ops.kalman.params.transition_pattern`), or None for a dense ``F``.
    """
    if rows is not None:
        FU = _sparse_matmul(F, U, rows)
        return _sparse_matmul(F, m[:, None], rows)[:, 0] + b, jnp.concatenate([FU, chol_Q], 1)
    return matmul_small(F, m) + b, jnp.concatenate([F @ U, chol_Q], axis=1)


def _sparse_matmul(F, U, pattern):
    """``F @ U`` for a transition matrix whose rows mostly copy one entry (``pattern``).

    The rows come in runs: a run of rows ``i, i + 1, ...`` with one nonzero entry each, in
    columns ``j, j + 1, ...`` (a shift, such as a seasonal's or an autoregression's) is the slice
    ``U[j : j + n]`` scaled by those entries; a run of rows with more entries is one small
    product ``F[i : i + n] @ U``; a zero row is zeros. Slices and scalings are elementwise, which
    XLA fuses with their neighbours. Exact: the skipped products are ``0 · U[j]``.
    """
    pieces, i, S = [], 0, len(pattern)
    while i < S:
        j = i + 1
        if len(pattern[i]) == 1:
            c = pattern[i][0]
            while j < S and pattern[j] == (c + j - i,):
                j += 1
            n = j - i
            scale = jnp.diagonal(F[i:j, c : c + n])
            pieces.append(scale.reshape((n,) + (1,) * (U.ndim - 1)) * U[c : c + n])
        elif not pattern[i]:
            while j < S and not pattern[j]:
                j += 1
            pieces.append(jnp.zeros((j - i,) + U.shape[1:], U.dtype))
        else:
            while j < S and len(pattern[j]) > 1:
                j += 1
            pieces.append(F[i:j] @ U)
        i = j
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)


def _row_times(h, X, columns):
    """``h @ X`` for a row ``h`` ``(S,)`` that is zero outside ``columns``; ``X`` ``(S, ...)``.

    A sum of scaled rows of ``X``: elementwise, so XLA fuses it with its consumers. Exact.
    """
    if not columns:
        return jnp.zeros(X.shape[1:], X.dtype)
    terms = [h[j] * X[j] for j in columns]
    return sum(terms[1:], terms[0])


# Steps between two triangularizations in :func:`_deferred_steps`; with a shift-pattern ``F``
# (:func:`_sparse_matmul`) the wider factors cost little more to multiply, and twice as many
# steps share one (docs/performance.md, structural time series).
_DEFER = 4
_DEFER_SHIFT = 8


def defer_every(pattern=None):
    """Steps between two triangularizations: ``_DEFER_SHIFT`` with a transition pattern."""
    return _DEFER if pattern is None or pattern.transition is None else _DEFER_SHIFT


def _deferred_steps(m, U, steps, keep=False, pattern=None):
    """Update and predict for each step in turn, triangularizing only every few steps.

    For the log-marginal passes with one observation entry: Potter's update
    (:func:`_update_to_predict`) accepts a factor of ``P`` of any width, and
    :func:`_predict_wide` widens it by ``chol_Q``'s columns, so ``defer_every(pattern)`` steps
    of products share one triangularization of a wider stack. On the CPU the
    triangularization's call, not its arithmetic, is most of a step's cost at small state
    dimensions (docs/performance.md).
    Exact: the factors differ from the step-by-step ones by orthogonal transformations on the
    right.

    Args:
        m: ``(S,)``, the predicted mean of the first step.
        U: ``(S, S)``, a factor of its covariance.
        steps: one dict per step (a multiple of ``defer_every(pattern)`` of them) with ``F,
            chol_Q, b, H, chol_R, d, y, observed``.
        keep: also return each step's predicted mean and factor, for the gradient.
        pattern: the zeros of a time-invariant ``F`` and ``H``
            (:class:`~numpyro_ssm.ops.kalman.params.Pattern`), or None.

    Returns:
        ``(m, U, U_last), out``: the predicted moments after the last step (``U``
        triangular), the factor the last step started from (wide), and ``out`` the
        ``(len(steps),)`` log-likelihoods, or with ``keep`` the triple ``(means, factors,
        log_liks)`` of the steps' predicted moments. The factors are not triangular and have
        ``deferred_width(S, q)`` columns (zero-padded), for ``chol_Q`` of ``q`` columns.
    """
    every = defer_every(pattern)
    width = deferred_width(*steps[0]["chol_Q"].shape, every)
    rows, columns = (None, None) if pattern is None else pattern
    log_liks, means, factors = [], [], []
    for i, step in enumerate(steps):
        last = U
        if keep:
            means.append(m)
            factors.append(jnp.pad(U, ((0, 0), (0, width - U.shape[1]))))
        emission = {k: step[k] for k in ("H", "chol_R", "d", "y", "observed")}
        m_f, U_f, log_lik = _update_to_predict(m, U, **emission, columns=columns)
        m, U = _predict_wide(step["F"], step["chol_Q"], step["b"], m_f, U_f, rows)
        if (i + 1) % every == 0:
            U = tria(U)
        log_liks.append(log_lik)
    if keep:
        return (m, U, last), (jnp.stack(means), jnp.stack(factors), jnp.stack(log_liks))
    return (m, U, last), jnp.stack(log_liks)


def defers_gradient_pass(S, q):
    """Whether the gradient's one-entry pass defers its triangularizations too.

    Only where a step's triangularization is a LAPACK call (``S`` above
    ``linalg._STEP_UNROLL_MAX_ROWS``) and the noise factor is thin (``q < S`` columns): below,
    the unrolled reflections cost less than the wider factors; with a full-rank noise the
    kept factors four times as wide cost what the saved calls do, and compile for longer
    (docs/performance.md, structural time series).
    """
    return S > _STEP_UNROLL_MAX_ROWS and q < S


def deferred_width(S, q, every=_DEFER):
    """The widest predicted factor :func:`_deferred_steps` meets: ``S + (every - 1) q`` columns."""
    return S + (every - 1) * q


class _Filtered(NamedTuple):
    """Filtered and predicted moments; factors lower-triangular, ``(T, S, S)``.

    The gradient's passes (``_predicted_moments`` of :mod:`~numpyro_ssm.ops.kalman.filtering`)
    leave ``means`` and ``chols`` None; with one observation entry where
    :func:`defers_gradient_pass`, their ``predicted_chols`` are wide factors,
    ``(T, S, deferred_width(S, q))``, not triangular.
    """

    means: jax.Array  # (T, S)
    chols: jax.Array  # (T, S, S)
    predicted_means: jax.Array
    predicted_chols: jax.Array
    log_likelihoods: jax.Array  # (T,)


def _covariance(chol):
    return matmul_stack(chol, _mT(chol))

r"""The log-marginal of a time-invariant model: the full filter until its covariance settles.

For fixed ``F, Q, H, R`` and no missing entries the predicted covariance ``P_t`` follows a
deterministic (Riccati) recursion that does not look at the data, and it converges to a fixed
point. Once it has, the gain is fixed too and the filter is a linear recursion in the mean
alone:

    m_{t+1} = (F - G H) m_t + G (y_t - d) + b,    G = F K,

with ``log p(y_t | y_{1:t-1}) = log N(y_t - d - H m_t; 0, S)`` for the fixed innovation
covariance ``S``. statsmodels' Cython filter does the same (its ``tolerance``), which is most of
why it is fast.

The serial filter takes this path for series of at least ``_MIN_STEPS`` steps
(:func:`settles`).

**Phase 1** runs the square-root step (``_update_to_predict`` and ``_predict`` of
:mod:`numpyro_ssm.ops.kalman._steps`) in chunks of ``_CHUNK`` steps inside a
``lax.while_loop`` (with one observation entry, one triangularization every ``_DEFER`` steps:
``_steps._deferred_steps``). It stops after the first chunk whose last step changed ``P`` by at most
``_SETTLE_ULPS`` units in the last place of its largest entry, and that lies past the last step
with a missing entry (a missing entry changes the covariance recursion). A step that leaves
``P`` unchanged is a fixed point of the Riccati map, so the test is on one step, never on a
period of several. Series that never settle run phase 1 to the end, which is the plain filter
plus one check per chunk.

**Phase 2** is the mean recursion over the rest: one matrix-vector product and an add per
step in a ``lax.scan``, then the innovations and their log-densities vectorized over time.
Its inputs are rolled so that it starts at the settling step: the scan has the static length
``T`` and the entries past the end are masked out of the sum.

:func:`steady_log_marginal` is the value of
:func:`numpyro_ssm.ops.kalman.filtering._serial_log_marginal`; :func:`steady_predicted` gives its
derivative the predicted moments of every step (phase 1 writes its steps into buffers, phase 2
adds the means and repeats the settled factor; with one observation entry the factors are
wide, zero-padded to ``_steps.deferred_width``), and the backward recursion of
:mod:`numpyro_ssm.ops.kalman._gradient` runs over all of them as before.
"""

import math

import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._fusion import matmul_small, matmul_stack
from numpyro_ssm.ops.kalman._steps import (
    _LOG_2PI,
    _condition,
    _deferred_steps,
    _Filtered,
    _mT,
    _predict,
    _update_to_predict,
    deferred_width,
    defers_gradient_pass,
)
from numpyro_ssm.ops.kalman.params import _Model
from numpyro_ssm.ops.linalg import chol_logdet, solve_lower

__all__ = ["settles", "steady_log_marginal", "steady_predicted"]

# Shorter series run the plain filter. Both phases are loops, and on the CPU a program with
# several loops costs some tens of microseconds more to run and compiles for longer; from about
# T = 1000 the settled form is faster whatever the settling step (docs/performance.md).
_MIN_STEPS = 512

# Steps of the full filter between two convergence checks; a multiple of ``_steps._DEFER`` and
# ``_steps._DEFER_SHIFT``, so that a chunk ends with a triangular factor.
_CHUNK = 16
# ``P`` has settled when one step changes no entry by more than this many units in the last
# place of its largest entry.
_SETTLE_ULPS = 64


def settles(model: _Model, y) -> bool:
    """Whether this module handles the series: time-invariant parameters, ``_MIN_STEPS`` steps."""
    return not model.varying and y.shape[0] >= _MIN_STEPS


def _settle(model: _Model, y, observed, keep_moments=False, pattern=None):
    """Phase 1, up to the end of the first settled chunk (``pattern``: for the value).

    Returns:
        ``(steps_done, m, chol_P, log_lik_sum)`` with the predicted moments of step
        ``steps_done``; with ``keep_moments`` also the predicted means, factors and log-liks of
        every step before it, in buffers of ``T`` rounded up to whole chunks.
    """
    F, chol_Q, b = (model.static[k] for k in ("F", "chol_Q", "b"))
    H, chol_R, d = (model.static[k] for k in ("H", "chol_R", "d"))

    def step(carry, inputs):
        # the carry keeps the step's input factor too, for the convergence check
        m, chol_P, _ = carry
        m_f, chol_f, ll = _update_to_predict(
            m, chol_P, H, chol_R, d, inputs["y"], inputs["observed"]
        )
        out = (m, chol_P, ll) if keep_moments else ll
        return (*_predict(F, chol_Q, b, m_f, chol_f), chol_P), out

    # one observation entry: triangularize every _DEFER steps (module docstring); the buffers
    # then hold wide factors
    defer = H.shape[0] == 1 and (not keep_moments or defers_gradient_pass(*chol_Q.shape))
    params = {"F": F, "chol_Q": chol_Q, "b": b, "H": H, "chol_R": chol_R, "d": d}

    T, D = y.shape
    n_chunks = math.ceil(T / _CHUNK)
    pad = n_chunks * _CHUNK - T
    # Padding steps observe nothing: each adds exactly 0 to the log-likelihood.
    y = jnp.pad(y, ((0, pad), (0, 0)))
    observed = jnp.pad(observed, ((0, pad), (0, 0)))
    steps = jnp.arange(T)
    last_missing = jnp.max(jnp.where(jnp.any(~observed[:T], axis=1), steps, -1))
    tol = _SETTLE_ULPS * jnp.finfo(y.dtype).eps

    def body(state):
        c, m, chol_P, total, _, buffers = state
        start = c * _CHUNK
        inputs = {
            "y": lax.dynamic_slice_in_dim(y, start, _CHUNK),
            "observed": lax.dynamic_slice_in_dim(observed, start, _CHUNK),
        }
        if defer:
            steps = [{**params, **{k: v[i] for k, v in inputs.items()}} for i in range(_CHUNK)]
            (m, chol_P, chol_before), out = _deferred_steps(
                m, chol_P, steps, keep_moments, None if keep_moments else pattern
            )
        else:
            (m, chol_P, chol_before), out = lax.scan(step, (m, chol_P, chol_P), inputs)
        P = matmul_small(chol_P, _mT(chol_P))
        P_before = matmul_small(chol_before, _mT(chol_before))
        change = jnp.max(jnp.abs(P - P_before))
        settled = (change <= tol * jnp.max(jnp.abs(P))) & (start + _CHUNK > last_missing)
        log_liks = out
        if keep_moments:
            buffers = tuple(
                lax.dynamic_update_slice_in_dim(buf, o, start, axis=0)
                for buf, o in zip(buffers, out, strict=True)
            )
            log_liks = out[2]
        return c + 1, m, chol_P, total + jnp.sum(log_liks), settled, buffers

    def cond(state):
        c, *_, settled, _ = state
        return (c < n_chunks) & ~settled

    zero = jnp.zeros((), y.dtype)
    buffers = ()
    if keep_moments:
        n = n_chunks * _CHUNK
        S = model.m0.shape[0]
        factor = (S, deferred_width(*chol_Q.shape)) if defer else (S, S)
        buffers = tuple(jnp.zeros((n,) + shape, y.dtype) for shape in ((S,), factor, ()))
    init = (jnp.int32(0), model.m0, model.chol_P0, zero, jnp.bool_(False), buffers)
    c, m, chol_P, total, _, buffers = lax.while_loop(cond, body, init)
    return (c * _CHUNK, m, chol_P, total) + ((buffers,) if keep_moments else ())


def _mean_recursion(model: _Model, y, done, m, chol_P):
    """Phase 2 from step ``done`` with predicted ``N(m, chol_P)``, in rolled order.

    Returns:
        ``(means, log_liks)``, ``(T, S)`` and ``(T,)``: entry ``i`` belongs to step
        ``done + i`` while that is ``< T``; the log-liks of the others are 0.
    """
    F, b = model.static["F"], model.static["b"]
    H, chol_R, d = (model.static[k] for k in ("H", "chol_R", "d"))
    T, D = y.shape
    chol_S, cross, _ = _condition(chol_P, H, chol_R)
    whiten = solve_lower(chol_S, jnp.eye(D, dtype=y.dtype))  # chol_S⁻¹
    gain = matmul_small(matmul_small(F, cross), whiten)  # G = F P Hᵀ S⁻¹
    transition = F - matmul_small(gain, H)
    rest = jnp.roll(y, -done, axis=0) - d  # rest[i] = y[done + i] - d while done + i < T
    drive = matmul_stack(rest, _mT(gain)) + b

    def mean_step(m, u):
        return matmul_small(transition, m) + u, m

    _, means = lax.scan(mean_step, m, drive)
    w = matmul_stack(rest - matmul_stack(means, _mT(H)), _mT(whiten))
    log_liks = -0.5 * (D * _LOG_2PI + chol_logdet(chol_S) + jnp.sum(w * w, axis=-1))
    return means, jnp.where(jnp.arange(T) < T - done, log_liks, 0.0)


def steady_log_marginal(model: _Model, y, observed, pattern=None):
    """``log p(y_{1:T})`` for a model without time-varying parameters (see the module doc).

    ``pattern``: :func:`~numpyro_ssm.ops.kalman.params.sparsity_pattern`, or None.
    """
    done, m, chol_P, total = _settle(model, y, observed, pattern=pattern)
    return total + jnp.sum(_mean_recursion(model, y, done, m, chol_P)[1])


def steady_predicted(model: _Model, y, observed) -> _Filtered:
    """The predicted moments and log-liks of every step, for a time-invariant model.

    What :func:`numpyro_ssm.ops.kalman.filtering._predicted_moments` returns (one observation
    entry: wide factors), with the settled steps' factors all equal to the settled one.
    """
    T = y.shape[0]
    done, m, chol_P, _, (buf_m, buf_chol, buf_ll) = _settle(model, y, observed, True)
    means, log_liks = _mean_recursion(model, y, done, m, chol_P)
    after = jnp.arange(T) >= done
    settled = jnp.pad(chol_P, ((0, 0), (0, buf_chol.shape[-1] - chol_P.shape[-1])))
    return _Filtered(
        None,
        None,
        jnp.where(after[:, None], jnp.roll(means, done, axis=0), buf_m[:T]),
        jnp.where(after[:, None, None], settled, buf_chol[:T]),
        jnp.where(after, jnp.roll(log_liks, done), buf_ll[:T]),
    )

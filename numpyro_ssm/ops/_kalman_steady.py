r"""The log-marginal of a time-invariant model: the full filter until its covariance settles.

For fixed ``F, Q, H, R`` and no missing entries the predicted covariance ``P_t`` follows a
deterministic (Riccati) recursion that does not look at the data, and it converges to a fixed
point. Once it has, the gain is fixed too and the filter is a linear recursion in the mean
alone:

    m_{t+1} = (F - G H) m_t + G (y_t - d) + b,    G = F K,

with ``log p(y_t | y_{1:t-1}) = log N(y_t - d - H m_t; 0, S)`` for the fixed innovation
covariance ``S``. statsmodels' Cython filter does the same (its ``tolerance``), which is most of
why it is fast.

**Phase 1** runs the square-root step of :mod:`numpyro_ssm.ops._kalman_serial` in chunks of
``_CHUNK`` steps inside a ``lax.while_loop``, and stops after the first chunk whose last step
changed ``P`` by at most ``_SETTLE_ULPS`` units in the last place of its largest entry, and
that lies past the last step with a missing entry (a missing entry changes the covariance
recursion). A step that leaves ``P`` unchanged is a fixed point of the Riccati map, so the
test is on one step, never on a period of several. Series that never settle run phase 1 to
the end, which is the plain filter plus one check per chunk.

**Phase 2** is the mean recursion over the rest: one matrix-vector product and an add per
step in a ``lax.scan``, then the innovations and their log-densities vectorized over time.
Its inputs are rolled so that it starts at the settling step: the scan has the static length
``T`` and the entries past the end are masked out of the sum.

Only the value uses this: its derivative is the one-pass gradient of the full filter
(:func:`numpyro_ssm.ops._kalman_serial.serial_log_marginal`), which agrees with it to rounding.
"""

import math

import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._kalman_common import _LOG_2PI, _condition, _Model, _mT, _predict, _update
from numpyro_ssm.ops.linalg import chol_logdet, matmul_small, solve_lower

__all__ = ["steady_log_marginal"]

# Steps of the full filter between two convergence checks.
_CHUNK = 16
# ``P`` has settled when one step changes no entry by more than this many units in the last
# place of its largest entry.
_SETTLE_ULPS = 64


def _settle(model: _Model, y, observed):
    """Phase 1: ``(steps_done, m, chol_P, log_lik_sum)`` at the first settled chunk's end."""
    F, chol_Q, b = (model.static[k] for k in ("F", "chol_Q", "b"))
    H, chol_R, d = (model.static[k] for k in ("H", "chol_R", "d"))

    def step(carry, inputs):
        m, chol_P = carry
        m_f, chol_f, ll = _update(m, chol_P, H, chol_R, d, inputs["y"], inputs["observed"])
        return _predict(F, chol_Q, b, m_f, chol_f), ll

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
        c, m, chol_P, total, _ = state
        start = c * _CHUNK
        inputs = {
            "y": lax.dynamic_slice_in_dim(y, start, _CHUNK),
            "observed": lax.dynamic_slice_in_dim(observed, start, _CHUNK),
        }
        head = {k: v[:-1] for k, v in inputs.items()}
        (m, chol_before), lls = lax.scan(step, (m, chol_P), head)
        (m, chol_P), ll = step((m, chol_before), {k: v[-1] for k, v in inputs.items()})
        P, P_before = chol_P @ _mT(chol_P), chol_before @ _mT(chol_before)
        change = jnp.max(jnp.abs(P - P_before))
        settled = (change <= tol * jnp.max(jnp.abs(P))) & (start + _CHUNK > last_missing)
        return c + 1, m, chol_P, total + jnp.sum(lls) + ll, settled

    def cond(state):
        c, *_, settled = state
        return (c < n_chunks) & ~settled

    zero = jnp.zeros((), y.dtype)
    init = (jnp.int32(0), model.m0, model.chol_P0, zero, jnp.bool_(False))
    c, m, chol_P, total, _ = lax.while_loop(cond, body, init)
    return c * _CHUNK, m, chol_P, total


def steady_log_marginal(model: _Model, y, observed):
    """``log p(y_{1:T})`` for a model without time-varying parameters (see the module doc)."""
    F, b = model.static["F"], model.static["b"]
    H, chol_R, d = (model.static[k] for k in ("H", "chol_R", "d"))
    T, D = y.shape
    done, m, chol_P, total = _settle(model, y, observed)

    chol_S, cross, _ = _condition(chol_P, H, chol_R)
    whiten = solve_lower(chol_S, jnp.eye(D, dtype=y.dtype))  # chol_S⁻¹
    gain = F @ cross @ whiten  # G = F P Hᵀ S⁻¹
    transition = F - gain @ H
    rest = jnp.roll(y, -done, axis=0) - d  # rest[i] = y[done + i] - d while done + i < T
    drive = rest @ _mT(gain) + b

    def mean_step(m, u):
        return matmul_small(transition, m) + u, m

    _, means = lax.scan(mean_step, m, drive)
    w = (rest - means @ _mT(H)) @ _mT(whiten)
    log_liks = -0.5 * (D * _LOG_2PI + chol_logdet(chol_S) + jnp.sum(w * w, axis=-1))
    return total + jnp.sum(jnp.where(jnp.arange(T) < T - done, log_liks, 0.0))

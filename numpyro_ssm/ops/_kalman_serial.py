r"""The sequential square-root Kalman filter, and its log-marginal with a one-pass gradient.

**Forward.** One ``lax.scan`` carries the predicted ``N(m_t, U_t U_tᵀ)``. Step ``t`` conditions
on ``y_t`` with one triangularization of ``[[H U, chol R], [U, 0]]`` (innovation factor, gain
and filtered factor at once), adds ``log p(y_t | y_{1:t-1})``, and predicts with one more,
``tria([F U_f, chol Q])``. Stacks of up to 4 rows are triangularized as fused arithmetic,
taller ones by one LAPACK QR each (see :func:`numpyro_ssm.ops.linalg.tria`).

**Gradient.** :func:`serial_log_marginal` carries a custom JVP: one backward recursion
over the filtered moments (:mod:`numpyro_ssm.ops._kalman_gradient`).
"""

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops._kalman_common import (
    _EMISSION,
    _TRANSITION,
    _Filtered,
    _Model,
    _per_step,
    _predict,
    _split_time,
    _update,
)
from numpyro_ssm.ops._kalman_gradient import log_marginal_jvp
from numpyro_ssm.ops._kalman_steady import settles, steady_log_marginal, steady_predicted

__all__ = ["serial_filter", "serial_log_marginal"]


def _forward(model: _Model, y, observed, keep_moments):
    """One sequential pass: the per-step log-liks, and (``keep_moments``) the predicted moments.

    Returns:
        ``log_liks (T,)``, or ``(predicted_means (T, S), predicted_chols (T, S, S),
        log_liks (T,))`` with ``keep_moments``.
    """
    T = y.shape[0]
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    e_static, e_varying = _split_time(model, _EMISSION, 0, T)

    def step(carry, inputs):
        m, chol_P = carry
        emission = {**e_static, **{k: inputs[k] for k in e_varying}}
        m_f, chol_f, log_lik = _update(
            m, chol_P, **emission, y=inputs["y"], observed=inputs["observed"]
        )
        transition = {**t_static, **{k: inputs[k] for k in t_varying}}
        carry = _predict(**transition, m=m_f, chol_P=chol_f)
        return carry, ((m, chol_P, log_lik) if keep_moments else log_lik)

    inputs = {
        **t_varying,
        **{k: v[: T - 1] for k, v in e_varying.items()},
        "y": y[: T - 1],
        "observed": observed[: T - 1],
    }
    (m, chol_P), out = lax.scan(step, (model.m0, model.chol_P0), inputs)
    last = {**e_static, **{k: v[T - 1] for k, v in e_varying.items()}}
    _, _, log_lik = _update(m, chol_P, **last, y=y[T - 1], observed=observed[T - 1])
    if not keep_moments:
        return jnp.concatenate([out, log_lik[None]])
    return tuple(
        jnp.concatenate([stacked, final[None]])
        for stacked, final in zip(out, (m, chol_P, log_lik), strict=True)
    )


def serial_filter(model: _Model, y, observed) -> _Filtered:
    """Filtered and predicted moments and per-step log-likelihoods, sequentially.

    The scan emits only the predicted moments and the log-liks; the filtered moments are
    recomputed after it, vectorized. Emitting them from the loop body too measured 5-10x slower
    on the CPU than this second, fused pass.
    """
    m_p, chol_p, log_liks = _forward(model, y, observed, keep_moments=True)
    em = _per_step(model, _EMISSION, 0, y.shape[0])
    m_f, chol_f, _ = jax.vmap(_update)(m_p, chol_p, em["H"], em["chol_R"], em["d"], y, observed)
    return _Filtered(m_f, chol_f, m_p, chol_p, log_liks)


def _predicted_moments(model: _Model, y, observed) -> _Filtered:
    """The pass the gradient needs: predicted moments and log-liks, no filtered moments.

    The gradient (:mod:`numpyro_ssm.ops._kalman_gradient`) derives what it needs of the filtered
    moments from the predicted ones, so the vectorized re-triangularization of
    :func:`serial_filter` is skipped.
    """
    m_p, chol_p, log_liks = _forward(model, y, observed, keep_moments=True)
    return _Filtered(None, None, m_p, chol_p, log_liks)


def _predicted_only(model: _Model, y, observed) -> _Filtered:
    """:func:`_predicted_moments`, or its settled form for a long time-invariant series.

    The settled form stops updating the covariance once it has settled
    (:mod:`numpyro_ssm.ops._kalman_steady`).
    """
    if settles(model, y):
        return _settled_predicted(model, y, observed)
    return _predicted_moments(model, y, observed)


@jax.custom_jvp
def _settled_predicted(model: _Model, y, observed) -> _Filtered:
    """:func:`steady_predicted`, whose derivative is that of the full filter.

    Only second derivatives of the log-marginal differentiate this pass. Its settled form runs
    in a ``lax.while_loop``, which reverse mode cannot differentiate; the full filter's scan
    can, and agrees with it to rounding.
    """
    return steady_predicted(model, y, observed)


@_settled_predicted.defjvp
def _settled_predicted_jvp(primals, tangents):
    return jax.jvp(_predicted_moments, primals, tangents)


@jax.custom_jvp
def serial_log_marginal(model: _Model, y, observed):
    """``log p(y_{1:T})`` by the sequential filter; its derivative is one backward recursion.

    On a long series of a time-invariant model the filter stops updating the covariance once
    it has settled (:mod:`numpyro_ssm.ops._kalman_steady`), for the value and the derivative.
    """
    if settles(model, y):
        return steady_log_marginal(model, y, observed)
    return jnp.sum(_forward(model, y, observed, keep_moments=False))


serial_log_marginal.defjvp(log_marginal_jvp(_predicted_only, parallel=False))

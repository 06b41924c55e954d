r"""The parameters of a linear-Gaussian state space model: one container for every Kalman op.

The model, for ``t = 1, ..., T`` with state dimension ``S`` and observation dimension ``D``:

.. math::

    z_1 &\sim \mathcal N(m_0, P_0), \\
    z_{t+1} &= F_t z_t + b_t + w_t, \quad w_t \sim \mathcal N(0, Q_t), \quad t = 1, ..., T-1, \\
    y_t &= H_t z_t + d_t + v_t, \quad v_t \sim \mathcal N(0, R_t).

:class:`LGSSMParams` holds ``m_0, F_t, b_t, H_t, d_t`` and the lower-triangular square roots of
``P_0, Q_t, R_t``. :func:`lgssm_params` builds one from covariances or square roots, as the
:class:`~numpyro_ssm.LinearGaussianSSM` constructor does.

**Time axis.** A time-varying parameter carries a leading time axis: ``T - 1`` for the
transition parameters (``F_t, Q_t, b_t`` act between steps ``t`` and ``t + 1``), ``T`` for the
emission ones. A leading axis of length 1, or none, means homogeneous. The ops take one
sequence: use ``jax.vmap`` (or :class:`~numpyro_ssm.LinearGaussianSSM`) for batches.

Inside the ops the parameters go by their math names, next to the equations: ``m0, chol_P0``,
``F, chol_Q, b`` (transition) and ``H, chol_R, d`` (emission).
"""

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.ops.linalg import cholesky

__all__ = ["LGSSMParams", "lgssm_params"]


class LGSSMParams(NamedTuple):
    """Parameters of one linear-Gaussian state space model, covariances as square roots.

    Attributes:
        initial_mean: shape ``(S,)``, ``m_0 = E[z_1]``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular ``U_0`` with
            ``Cov[z_1] = U_0 U_0ᵀ``. Zeros on the diagonal (exactly known states) are allowed.
        transition_matrix: shape ``(S, S)`` or ``(T-1, S, S)``, ``F_t`` in
            ``z_{t+1} = F_t z_t + b_t + w_t``.
        transition_scale_tril: shape ``(S, q)`` or ``(T-1, S, q)`` with ``1 <= q <= S``: a
            factor ``L_t`` of ``Q_t = Cov[w_t] = L_t L_tᵀ``, lower-triangular when square.
            ``Q_t`` may be rank-deficient: zeros on the diagonal (a noiseless level, a fixed
            seasonal), or fewer columns than states, one per independent noise (statsmodels'
            selection matrix times the noises' factor): a dummy seasonal of period 12 drives
            one of its 11 states, so ``(11, 1)``. The thin form gives every step narrower
            stacks to triangularize.
        emission_matrix: shape ``(D, S)`` or ``(T, D, S)``, ``H_t`` in
            ``y_t = H_t z_t + d_t + v_t``.
        emission_scale_tril: shape ``(D, D)`` or ``(T, D, D)``, lower-triangular factor of
            ``R_t = Cov[v_t]``, positive definite.
        transition_bias: shape ``(S,)`` or ``(T-1, S)``, ``b_t`` (controls: ``b_t = B u_t``);
            None means zeros.
        emission_bias: shape ``(D,)`` or ``(T, D)``, ``d_t``; None means zeros.
    """

    initial_mean: jax.Array
    initial_scale_tril: jax.Array
    transition_matrix: jax.Array
    transition_scale_tril: jax.Array
    emission_matrix: jax.Array
    emission_scale_tril: jax.Array
    transition_bias: jax.Array | None = None
    emission_bias: jax.Array | None = None


def _factor(name, cov, scale_tril):
    if (cov is None) == (scale_tril is None):
        given = "both" if cov is not None else "neither"
        raise ValueError(
            f"lgssm_params: give exactly one of {name}_cov and {name}_scale_tril (got {given})."
        )
    return cholesky(jnp.asarray(cov)) if scale_tril is None else jnp.asarray(scale_tril)


def lgssm_params(
    initial_mean,
    transition_matrix,
    emission_matrix,
    *,
    initial_cov=None,
    initial_scale_tril=None,
    transition_cov=None,
    transition_scale_tril=None,
    emission_cov=None,
    emission_scale_tril=None,
    transition_bias=None,
    emission_bias=None,
) -> LGSSMParams:
    """Build :class:`LGSSMParams` from covariances or their square roots.

    Each covariance is given once, as ``*_cov`` (factored by a Cholesky decomposition, so it
    must be positive definite) or as ``*_scale_tril`` (any lower-triangular factor, singular
    ones included). Shapes as in :class:`LGSSMParams`.

    Args:
        initial_mean: ``m_0``.
        transition_matrix: ``F_t``.
        emission_matrix: ``H_t``.
        initial_cov: ``P_0``, or give ``initial_scale_tril``.
        initial_scale_tril: a lower-triangular factor of ``P_0``.
        transition_cov: ``Q_t``, or give ``transition_scale_tril``.
        transition_scale_tril: a factor of ``Q_t``, lower-triangular or ``(S, q)`` (see
            :class:`LGSSMParams`).
        emission_cov: ``R_t``, or give ``emission_scale_tril``.
        emission_scale_tril: a lower-triangular factor of ``R_t``.
        transition_bias: ``b_t``, or None for zeros.
        emission_bias: ``d_t``, or None for zeros.

    Returns:
        The :class:`LGSSMParams`.

    Raises:
        ValueError: unless exactly one of each ``*_cov`` / ``*_scale_tril`` pair is given.
    """
    return LGSSMParams(
        initial_mean=jnp.asarray(initial_mean),
        initial_scale_tril=_factor("initial", initial_cov, initial_scale_tril),
        transition_matrix=jnp.asarray(transition_matrix),
        transition_scale_tril=_factor("transition", transition_cov, transition_scale_tril),
        emission_matrix=jnp.asarray(emission_matrix),
        emission_scale_tril=_factor("emission", emission_cov, emission_scale_tril),
        transition_bias=None if transition_bias is None else jnp.asarray(transition_bias),
        emission_bias=None if emission_bias is None else jnp.asarray(emission_bias),
    )


# ---------------------------------------------------------------------------------------------
# Inside the ops: validation and the time axis
# ---------------------------------------------------------------------------------------------

# math name -> (number of event dims, offset of the time axis length relative to T)
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
    """The parameters as the algorithms use them, sorted by whether they vary over time."""

    static: dict  # math name -> array without time axis
    varying: dict  # math name -> array with a leading time axis (T-1 or T)
    m0: jax.Array
    chol_P0: jax.Array


def _check_params(params, fn_name):
    if not isinstance(params, LGSSMParams):
        raise TypeError(
            f"{fn_name}: params must be an LGSSMParams (see numpyro_ssm.ops.lgssm_params), got "
            f"{type(params).__name__}."
        )
    for name, value in params._asdict().items():
        if value is not None and jnp.iscomplexobj(value):
            raise TypeError(
                f"{fn_name}: {name} is complex ({jnp.result_type(value)}); the "
                "Kalman ops take real parameters."
            )


def _prepare(params: LGSSMParams, num_steps, fn_name="kalman ops") -> _Model:
    """Check shapes, fill default biases, and sort parameters into static and time-varying."""
    _check_params(params, fn_name)
    m0 = jnp.asarray(params.initial_mean)
    if m0.ndim != 1:
        raise ValueError(
            f"{fn_name}: initial_mean must have shape (S,), got {m0.shape}. The ops take one "
            "sequence; use jax.vmap (or LinearGaussianSSM) for batches."
        )
    S = m0.shape[0]
    chol_P0 = jnp.asarray(params.initial_scale_tril)
    if chol_P0.shape != (S, S):
        raise ValueError(
            f"{fn_name}: initial_scale_tril must have shape {(S, S)}, got {chol_P0.shape}."
        )
    H = jnp.asarray(params.emission_matrix)
    if H.ndim < 2:
        raise ValueError(
            f"{fn_name}: emission_matrix must have shape (D, S) or (T, D, S), got {H.shape}."
        )
    D = H.shape[-2]
    dtype = m0.dtype
    b, d = params.transition_bias, params.emission_bias
    arrays = {
        "F": jnp.asarray(params.transition_matrix),
        "chol_Q": jnp.asarray(params.transition_scale_tril),
        "b": jnp.zeros((S,), dtype) if b is None else jnp.asarray(b),
        "H": H,
        "chol_R": jnp.asarray(params.emission_scale_tril),
        "d": jnp.zeros((D,), dtype) if d is None else jnp.asarray(d),
    }
    q = arrays["chol_Q"].shape[-1] if arrays["chol_Q"].ndim >= 2 else -1
    q = q if 1 <= q <= S else S  # a factor of 1 to S columns; anything else is reported as (S, S)
    events = {"F": (S, S), "chol_Q": (S, q), "b": (S,), "H": (D, S), "chol_R": (D, D), "d": (D,)}
    T = num_steps
    static, varying = {}, {}
    for name, arr in arrays.items():
        ndim, offset = {**_TRANSITION, **_EMISSION}[name]
        time = "T-1" if offset else "T"
        if arr.shape[arr.ndim - ndim :] != events[name] or arr.ndim > ndim + 1:
            event = f"({S}, q) with 1 <= q <= {S}" if name == "chol_Q" else events[name]
            raise ValueError(
                f"{fn_name}: {_PUBLIC[name]} must have shape {event} or ({time},) + "
                f"{event} (state dim S={S}, observation dim D={D}), got {arr.shape}."
            )
        if arr.ndim == ndim or arr.shape[0] == 1:
            static[name] = arr.reshape(events[name])
        elif arr.shape[0] != T + offset:
            raise ValueError(
                f"{fn_name}: {_PUBLIC[name]} has shape {arr.shape}: its time axis has length "
                f"{arr.shape[0]}, expected 1 or {time}={T + offset}."
            )
        else:
            varying[name] = arr
    return _Model(static, varying, m0, chol_P0)


def _observation_dim(model: _Model) -> int:
    return model.varying.get("H", model.static.get("H")).shape[-2]


def _observations(observations, obs_mask, model, fn_name):
    y = jnp.asarray(observations)
    D = _observation_dim(model)
    if jnp.iscomplexobj(y):
        raise TypeError(f"{fn_name}: observations are complex ({y.dtype}); they must be real.")
    if y.ndim != 2 or y.shape[1] != D:
        raise ValueError(
            f"{fn_name}: observations must have shape (T, D) with D={D}, got {y.shape}."
        )
    observed = ~jnp.isnan(y)
    if obs_mask is not None:
        obs_mask = jnp.asarray(obs_mask)
        if obs_mask.dtype != bool:
            raise ValueError(
                f"{fn_name}: obs_mask must be a bool array (True where observed), got dtype "
                f"{obs_mask.dtype}; convert with obs_mask.astype(bool) if 1 means observed."
            )
        try:
            observed = observed & jnp.broadcast_to(obs_mask, y.shape)
        except ValueError:
            raise ValueError(
                f"{fn_name}: obs_mask of shape {obs_mask.shape} does not broadcast to "
                f"observations of shape {y.shape} (use (T, D), or (T, 1) for whole steps)."
            ) from None
    return y, observed


def _inputs(params, observations, obs_mask, fn_name):
    """``(model, y, observed)`` for one sequence, checked."""
    y = jnp.asarray(observations)
    model = _prepare(params, y.shape[0] if y.ndim else 0, fn_name)
    y, observed = _observations(y, obs_mask, model, fn_name)
    return model, y, observed


def transition_pattern(F):
    """The nonzero columns of each row of a concrete transition matrix that mostly shifts.

    The value's sequential pass multiplies by ``F`` through this pattern
    (``_steps._sparse_matmul``): rows with one nonzero entry become slices of the factor, the
    others small products; exact, and cheaper on the CPU than a dense product when most rows copy
    one entry (the trends and seasonals of a structural model, an autoregression's companion
    form). Read from ``F``'s values, so only where ``F`` is concrete: a traced ``F`` (a
    parameter that is sampled or differentiated) gets None, the dense product.

    Args:
        F: the transition matrix as passed to an op: ``(S, S)``; anything else gives None.

    Returns:
        A tuple of ``S`` tuples of column indices, or None when ``F`` is traced, not 2-D, or
        fewer than half its rows have exactly one nonzero entry.
    """
    if F is None or isinstance(F, jax.core.Tracer) or np.ndim(F) != 2:
        return None
    nonzero = np.asarray(F) != 0
    if 2 * np.count_nonzero(nonzero.sum(axis=1) == 1) < nonzero.shape[0]:
        return None
    return tuple(tuple(np.flatnonzero(row).tolist()) for row in nonzero)


def emission_pattern(H):
    """The nonzero columns of a concrete one-row emission matrix, where at most half are.

    The value's one-entry passes then form ``h U`` and ``h m`` as sums of those rows of the
    factor and entries of the mean (``_steps._row_times``), elementwise work that XLA fuses
    with the update, instead of a reduction over every state (a structural model observes the
    level and one seasonal entry of its thirteen states, say). Exact; read from ``H``'s values,
    so a traced ``H`` gets None.

    Args:
        H: the emission matrix as passed to an op: ``(1, S)``; anything else gives None.

    Returns:
        A tuple of column indices, or None.
    """
    if H is None or isinstance(H, jax.core.Tracer) or np.ndim(H) != 2 or np.shape(H)[0] != 1:
        return None
    columns = np.flatnonzero(np.asarray(H)[0])
    if 2 * columns.size > np.shape(H)[1]:
        return None
    return tuple(columns.tolist())


class Pattern(NamedTuple):
    """The zeros of a concrete ``F`` and ``H``, read on the host for the value's passes.

    A static argument of the compiled ops: hashable, part of the program's key.

    Attributes:
        transition: :func:`transition_pattern` of ``F``, or None.
        emission: :func:`emission_pattern` of ``H``, or None.
    """

    transition: tuple | None
    emission: tuple | None


def sparsity_pattern(params):
    """The :class:`Pattern` of ``params``' matrices, or None where neither can be read."""
    transition = transition_pattern(getattr(params, "transition_matrix", None))
    emission = emission_pattern(getattr(params, "emission_matrix", None))
    if transition is None and emission is None:
        return None
    return Pattern(transition, emission)


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
# The argument list of earlier releases
# ---------------------------------------------------------------------------------------------

_LEGACY_ORDER = (
    "initial_mean",
    "initial_scale_tril",
    "transition_matrix",
    "transition_scale_tril",
    "emission_matrix",
    "emission_scale_tril",
)


def accepts_legacy_arguments(num_leading: int):
    """Decorator: also accept the eight separate parameter arguments of earlier releases.

    ``fn(*lead, params, ...)`` is the current form. The old form,
    ``fn(*lead, initial_mean, initial_scale_tril, transition_matrix, transition_scale_tril,
    emission_matrix, emission_scale_tril, ..., transition_bias=..., emission_bias=...)``, still
    works for one release and warns with a ``DeprecationWarning``.

    Args:
        num_leading: positional arguments before ``params`` (1 for a sampler's ``key``).

    Returns:
        The decorator.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            rest = args[num_leading:]
            legacy_kwargs = {"transition_bias", "emission_bias"} & set(kwargs)
            if (
                rest
                and not isinstance(rest[0], LGSSMParams)
                and (len(rest) >= len(_LEGACY_ORDER) or legacy_kwargs)
            ):
                warnings.warn(
                    f"{fn.__name__}: passing the model's arrays as separate arguments is "
                    "deprecated; pass one LGSSMParams (numpyro_ssm.ops.lgssm_params) instead.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                given = dict(zip(_LEGACY_ORDER, rest, strict=False))
                params = LGSSMParams(
                    **given,
                    transition_bias=kwargs.pop("transition_bias", None),
                    emission_bias=kwargs.pop("emission_bias", None),
                )
                args = args[:num_leading] + (params,) + rest[len(_LEGACY_ORDER) :]
            return fn(*args, **kwargs)

        return wrapper

    return decorate

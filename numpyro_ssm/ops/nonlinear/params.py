r"""The parameters of a nonlinear state space model: two containers, one per kind of emission.

The model, for ``t = 1, ..., T`` with state dimension ``S`` and observation dimension ``D``:

.. math::

    z_1 &\sim \mathcal N(m_0, P_0), \\
    z_{t+1} &= f(z_t, u_{t+1}, \theta) + w_t, \quad w_t \sim \mathcal N(0, Q_t),
        \quad t = 1, ..., T-1, \\
    y_t &\sim p(y_t \mid z_t, u_t, \theta),

with either **Gaussian emissions** (:class:`NonlinearGaussianParams`),
``y_t = h(z_t, u_t, θ) + v_t``, ``v_t ~ N(0, R_t)``, or **generalized emissions**
(:class:`GeneralizedGaussianParams`): ``y_t`` follows any distribution of a parameter
``η_t = h(z_t, u_t, θ)`` whose conditional mean ``E[y_t | z_t]`` and covariance
``Cov[y_t | z_t]`` are known (conditional-moments Gaussian filtering).

**Functions.** ``transition_fn(z, u, params)`` and ``emission_fn(z, u, params)`` are plain JAX
functions of one state ``z`` (shape ``(S,)``), the step's input ``u`` (one time slice of the
pytree ``inputs``, or None) and the pytree ``params``. They are static (pytree metadata: a
different function is a different program); what NUTS samples goes in ``params`` (pytree
data).

**Inputs and time.** ``inputs`` is a pytree whose leaves have a leading time axis of length
``T``: step ``t`` sees ``u_t``. The emission at step ``t`` and the transition *into* step ``t``
see ``u_t`` (as in dynamax): ``u_1`` enters only the first emission. ``transition_scale_tril``
has a leading time axis of length ``T - 1`` (``Q_t`` acts between steps ``t`` and ``t + 1``)
or 1 or none; ``emission_scale_tril`` one of length ``T`` or 1 or none. The ops take one
sequence: use ``jax.vmap`` (or the distributions) for batches.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GeneralizedGaussianParams", "NonlinearGaussianParams"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class NonlinearGaussianParams:
    """A nonlinear state space model with additive Gaussian noise, covariances as square roots.

    Attributes:
        initial_mean: shape ``(S,)``, ``m_0 = E[z_1]``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular ``U_0`` with ``P_0 = U_0 U_0ᵀ``.
        transition_fn: ``f(z, u, params) -> (S,)``, the mean of ``z_{t+1}`` given ``z_t = z``
            (static).
        transition_scale_tril: shape ``(S, S)`` or ``(T-1, S, S)``, lower-triangular factor of
            ``Q_t``.
        emission_fn: ``h(z, u, params) -> (D,)``, the mean of ``y_t`` given ``z_t = z``
            (static).
        emission_scale_tril: shape ``(D, D)`` or ``(T, D, D)``, lower-triangular factor of
            ``R_t``, positive definite.
        params: any pytree, passed as the third argument of both functions (pytree data: what
            is differentiated or sampled).
    """

    initial_mean: jax.Array
    initial_scale_tril: jax.Array
    transition_fn: Callable = dataclasses.field(metadata=dict(static=True))
    transition_scale_tril: jax.Array
    emission_fn: Callable = dataclasses.field(metadata=dict(static=True))
    emission_scale_tril: jax.Array
    params: Any = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneralizedGaussianParams:
    """A nonlinear state space model with Gaussian dynamics and any emission distribution.

    The emission distribution is described by pure functions of its parameter
    ``η = emission_fn(z, u, params)``, so that the ops stay free of any distribution library
    (:class:`~numpyro_ssm.GeneralizedGaussianSSM` builds them from a NumPyro distribution).

    Attributes:
        initial_mean: shape ``(S,)``, ``m_0``.
        initial_scale_tril: shape ``(S, S)``, lower-triangular factor of ``P_0``.
        transition_fn: ``f(z, u, params) -> (S,)`` (static).
        transition_scale_tril: shape ``(S, S)`` or ``(T-1, S, S)``, factor of ``Q_t``.
        emission_fn: ``h(z, u, params) -> η``, any pytree of arrays (static).
        emission_moments_fn: ``η -> (mean (D,), scale_tril (D, D))``: ``E[y | η]`` and a
            lower-triangular factor of ``Cov[y | η]`` (static).
        emission_log_prob_fn: ``(y (D,), observed (D,) bool, η) -> ()``: ``log p(y | η)`` over
            the observed entries, 0 when none is; entries that are not observed may hold any
            finite value (static).
        emission_sample_fn: ``(key, η) -> y (D,)``, a draw from ``p(y | η)``; needed only to
            simulate (static).
        params: any pytree, the third argument of ``transition_fn`` and ``emission_fn``.
    """

    initial_mean: jax.Array
    initial_scale_tril: jax.Array
    transition_fn: Callable = dataclasses.field(metadata=dict(static=True))
    transition_scale_tril: jax.Array
    emission_fn: Callable = dataclasses.field(metadata=dict(static=True))
    emission_moments_fn: Callable = dataclasses.field(metadata=dict(static=True))
    emission_log_prob_fn: Callable = dataclasses.field(metadata=dict(static=True))
    emission_sample_fn: Callable | None = dataclasses.field(
        default=None, metadata=dict(static=True)
    )
    params: Any = None


# ---------------------------------------------------------------------------------------------
# Inside the ops: validation before any scan, and the time axis
# ---------------------------------------------------------------------------------------------


class _Model(NamedTuple):
    """One checked sequence model: what the filter's steps read."""

    params: Any  # the container, NonlinearGaussianParams or GeneralizedGaussianParams
    chol_Q: jax.Array  # (S, S), or (T-1, S, S) when time-varying
    chol_R: jax.Array | None  # (D, D) or (T, D, D); None for generalized emissions
    inputs: Any  # pytree, leaves (T, ...), or None
    num_steps: int
    state_dim: int
    obs_dim: int

    @property
    def generalized(self):
        return isinstance(self.params, GeneralizedGaussianParams)

    @property
    def dtype(self):
        return self.params.initial_mean.dtype


def _input_at(inputs, t):
    """The time slice ``u_t`` of ``inputs`` (None stays None)."""
    return None if inputs is None else jax.tree.map(lambda x: x[t], inputs)


def _time_varying(arr, event_ndim, length, name, fn_name, time):
    """``arr`` as ``(event)`` (homogeneous) or ``(length, event)``; ValueError otherwise."""
    arr = jnp.asarray(arr)
    if arr.ndim == event_ndim or (arr.ndim == event_ndim + 1 and arr.shape[0] == 1):
        return arr.reshape(arr.shape[arr.ndim - event_ndim :])
    if arr.ndim == event_ndim + 1 and arr.shape[0] == length:
        return arr
    raise ValueError(
        f"{fn_name}: {name} must have shape {arr.shape[arr.ndim - event_ndim :]} or "
        f"({time}={length},) + that, got {arr.shape}."
    )


def _check_square(arr, size, name, fn_name):
    if arr.ndim < 2 or arr.shape[-2:] != (size, size):
        raise ValueError(
            f"{fn_name}: {name} must have shape ({size}, {size}) or (time, {size}, {size}), "
            f"got {jnp.shape(arr)}."
        )


def _eval_output(fn, args, name, fn_name):
    """``jax.eval_shape(fn, *args)``, with a clear error when calling it fails."""
    if not callable(fn):
        raise TypeError(f"{fn_name}: {name} must be a function, got {type(fn).__name__}.")
    try:
        return jax.eval_shape(fn, *args)
    except Exception as err:  # noqa: BLE001 - re-raised with the function named
        raise TypeError(
            f"{fn_name}: calling {name}(z, u, params) on a state of shape {args[0].shape} "
            f"failed: {type(err).__name__}: {err}"
        ) from err


def _check_vector_output(out, size, name, what, fn_name):
    shape = getattr(out, "shape", None)
    if shape != (size,):
        raise ValueError(
            f"{fn_name}: {name} must return {what} of shape ({size},), got "
            f"{shape if shape is not None else type(out).__name__}."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{fn_name}: {name} must return a float array, got dtype {out.dtype}.")


def _prepare(params, num_steps, inputs, fn_name) -> _Model:
    """Check every shape, the inputs' time axes and the functions' outputs, before any scan."""
    if not isinstance(params, NonlinearGaussianParams | GeneralizedGaussianParams):
        raise TypeError(
            f"{fn_name}: params must be a NonlinearGaussianParams or GeneralizedGaussianParams, "
            f"got {type(params).__name__}."
        )
    T = int(num_steps)
    m0 = jnp.asarray(params.initial_mean)
    if m0.ndim != 1:
        raise ValueError(
            f"{fn_name}: initial_mean must have shape (S,), got {m0.shape}. The ops take one "
            "sequence; use jax.vmap (or the distributions) for batches."
        )
    S = m0.shape[0]
    if jnp.shape(params.initial_scale_tril) != (S, S):
        raise ValueError(
            f"{fn_name}: initial_scale_tril must have shape {(S, S)}, got "
            f"{jnp.shape(params.initial_scale_tril)}."
        )
    chol_Q = jnp.asarray(params.transition_scale_tril)
    _check_square(chol_Q, S, "transition_scale_tril", fn_name)
    chol_Q = _time_varying(chol_Q, 2, T - 1, "transition_scale_tril", fn_name, "T-1")
    for path, leaf in jax.tree_util.tree_leaves_with_path(inputs):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != T:
            raise ValueError(
                f"{fn_name}: every leaf of inputs needs a leading time axis of length T={T}; "
                f"inputs{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}."
            )
    z = jax.ShapeDtypeStruct((S,), m0.dtype)
    u = _input_at(inputs, 0)
    out = _eval_output(params.transition_fn, (z, u, params.params), "transition_fn", fn_name)
    _check_vector_output(out, S, "transition_fn", "the next state's mean", fn_name)
    eta = _eval_output(params.emission_fn, (z, u, params.params), "emission_fn", fn_name)
    if isinstance(params, NonlinearGaussianParams):
        chol_R = jnp.asarray(params.emission_scale_tril)
        if chol_R.ndim < 2:
            raise ValueError(
                f"{fn_name}: emission_scale_tril must have shape (D, D) or (T, D, D), got "
                f"{chol_R.shape}."
            )
        D = chol_R.shape[-1]
        _check_square(chol_R, D, "emission_scale_tril", fn_name)
        chol_R = _time_varying(chol_R, 2, T, "emission_scale_tril", fn_name, "T")
        _check_vector_output(eta, D, "emission_fn", "the observation's mean", fn_name)
    else:
        chol_R = None
        D = _check_moments(params, eta, fn_name)
    return _Model(params, chol_Q, chol_R, inputs, T, S, D)


def _check_moments(params, eta, fn_name):
    """The observation dim ``D`` from ``emission_moments_fn``, after checking its outputs."""
    for name in ("emission_moments_fn", "emission_log_prob_fn"):
        if not callable(getattr(params, name)):
            raise TypeError(f"{fn_name}: {name} must be a function.")
    try:
        mean, chol = jax.eval_shape(params.emission_moments_fn, eta)
    except Exception as err:  # noqa: BLE001 - re-raised with the function named
        raise ValueError(
            f"{fn_name}: emission_moments_fn(eta) must return (mean (D,), scale_tril (D, D)), "
            f"the conditional moments of y; calling it failed: {type(err).__name__}: {err}"
        ) from err
    D = mean.shape[0] if len(mean.shape) == 1 else None
    if D is None or chol.shape != (D, D):
        raise ValueError(
            f"{fn_name}: emission_moments_fn(eta) must return (mean (D,), scale_tril (D, D)), "
            f"got shapes {mean.shape} and {chol.shape}."
        )
    return D


def _observations(observations, obs_mask, model: _Model, fn_name):
    """``(y, observed)``, both ``(T, D)``; NaN marks a missing entry."""
    y = jnp.asarray(observations)
    T, D = model.num_steps, model.obs_dim
    if jnp.iscomplexobj(y):
        raise TypeError(f"{fn_name}: observations are complex ({y.dtype}); they must be real.")
    if y.shape != (T, D):
        raise ValueError(
            f"{fn_name}: observations must have shape (T, D) = ({T}, {D}), got {y.shape}."
        )
    observed = ~jnp.isnan(y) if jnp.issubdtype(y.dtype, jnp.floating) else jnp.ones(y.shape, bool)
    if obs_mask is not None:
        obs_mask = jnp.asarray(obs_mask)
        if obs_mask.dtype != bool:
            raise ValueError(
                f"{fn_name}: obs_mask must be a bool array (True where observed), got dtype "
                f"{obs_mask.dtype}."
            )
        try:
            observed = observed & jnp.broadcast_to(obs_mask, y.shape)
        except ValueError:
            raise ValueError(
                f"{fn_name}: obs_mask of shape {obs_mask.shape} does not broadcast to "
                f"observations of shape {y.shape} (use (T, D), or (T, 1) for whole steps)."
            ) from None
    y = jnp.where(observed, y, jnp.zeros((), y.dtype)).astype(model.dtype)
    return y, observed


def _inputs(params, observations, obs_mask, inputs, fn_name):
    """``(model, y, observed)`` for one sequence, checked."""
    T = jnp.shape(observations)[0] if jnp.ndim(observations) else 0
    model = _prepare(params, T, inputs, fn_name)
    y, observed = _observations(observations, obs_mask, model, fn_name)
    return model, y, observed


def _emission_noise_at(model: _Model, t):
    """``chol_R`` of step ``t`` (None for generalized emissions)."""
    if model.chol_R is None or model.chol_R.ndim == 2:
        return model.chol_R
    return model.chol_R[t]

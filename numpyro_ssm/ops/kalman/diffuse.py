r"""Exact diffuse initialization (Koopman 1997; Durbin & Koopman 2012, ch. 5), square-root form.

Some entries of the first state have a *diffuse* (flat, infinitely wide) prior: the level of a
trend, the seasonal effects. Write ``P_0 = P_* + κ P_∞`` with ``P_∞ = diag(diffuse_states)``
and ``P_*`` the initial covariance with the diffuse rows and columns removed; the *diffuse
log-likelihood* is the limit

.. math::

    \log L_d = \lim_{κ \to ∞} \left[\log p_κ(y_{1:T}) + \tfrac{q}{2} \log κ\right],

with ``q`` the number of diffuse entries. It does not depend on the diffuse entries of
``initial_mean`` (nor on their rows of the initial covariance, which are ignored).

**Convention** (that of Durbin & Koopman §7.2.2, statsmodels and KFAS): each observed entry keeps
its ``-½ log 2π``; the ``-½ log κ`` of each diffuse step is dropped. An entry whose diffuse
innovation variance ``F_∞ = h P_∞ hᵀ`` is positive adds ``-½ (log 2π + log F_∞)`` (its residual
carries no information); every other entry adds the usual ``-½ (log 2π + log F_* + v² / F_*)``.

**Filter and log-likelihood** (:func:`diffuse_kalman_filter`,
:func:`diffuse_kalman_log_marginal`). The exact initial Kalman filter runs over the first
``num_diffuse_steps`` steps, one observed entry at a time (the observations whitened by the
factor of ``R_t``: the univariate treatment of Koopman & Durbin 2000). It carries the mean, a
lower-triangular factor of ``P_*`` (updated in Joseph form, ``tria([(I - K hᵀ) U_*, K])``) and
a square factor ``U_∞`` of ``P_∞`` (updated by the projection ``U_∞ (I - g gᵀ / gᵀg)``,
``g = U_∞ᵀ h``, which removes one diffuse direction exactly). An entry counts as diffuse when
``F_∞ > sqrt(eps) |h|²``. After the diffuse steps ``P_∞`` must be zero (to ``sqrt(eps)``); the
predicted state is then proper and the ordinary filter of
:mod:`~numpyro_ssm.ops.kalman.filtering` runs over the remaining steps from it, serially or in
parallel. If ``P_∞`` is not zero by then (more missing or uninformative steps than
``num_diffuse_steps`` allows), the log-likelihood is NaN. The default number of diffuse steps is
the number of diffuse entries: enough when each of the first steps has an observed entry that
sees a remaining diffuse direction. The derivative goes through the short diffuse scan by
autodiff and through the rest by the one-pass rule of :func:`kalman_log_marginal`.

**Smoother and posterior draws** (:func:`diffuse_kalman_smoother`,
:func:`diffuse_kalman_posterior_sample`) use the equivalent augmented form (de Jong 1991): write
the diffuse entries of ``z_1`` as ``δ + ξ`` with ``δ`` flat and ``ξ ~ N(0, 1)`` (a flat prior
absorbs the proper part, which keeps the smoother's predicted covariances nonsingular when a
component has no noise). With ``δ`` fixed the model is proper, its filtered and smoothed means
are affine in ``δ`` and its covariances do not depend on it. One forward-mode pass of the proper
filter and smoother gives the means and their Jacobians in ``δ``; the whitened innovations
``w_t`` and their Jacobians ``W_t`` give ``δ | y ~ N(δ̂, (Σ W_tᵀ W_t)⁻¹)`` by one QR of
``[W | w]``. Then ``E[z_t | y] = ẑ_t(δ̂)``, ``Cov[z_t | y] = P_t + G_t Cov(δ | y) G_tᵀ``
(``G_t = ∂ẑ_t / ∂δ``), and a posterior path is a draw of ``δ`` followed by backward sampling
from the filter shifted to it (exact, since the filtered means are affine in ``δ``). The same
QR gives the diffuse log-likelihood a second way, which the tests compare with the filter's.
The smoothed distribution is proper when the data identify every diffuse direction.

Filtered covariances during the diffuse steps are those of the finite part ``P_*`` (as in
statsmodels): the diffuse directions have infinite variance there.
"""

import functools

import jax
import numpy as np

from numpyro_ssm.ops.kalman._diffuse_augmented import (
    _augmented,
    _diffuse_sample,
    _diffuse_smoothed,
)
from numpyro_ssm.ops.kalman._diffuse_filter import _diffuse_filter, _diffuse_log_marginal
from numpyro_ssm.ops.kalman.filtering import (
    GaussianPosterior,
    _filter,
    _filtered_posterior,
    _log_marginal,
)
from numpyro_ssm.ops.kalman.params import LGSSMParams, _inputs, sparsity_pattern
from numpyro_ssm.ops.kalman.sampling import _sample_shape_map

__all__ = [
    "diffuse_kalman_filter",
    "diffuse_kalman_log_marginal",
    "diffuse_kalman_posterior_sample",
    "diffuse_kalman_smoother",
]


def check_diffuse_arguments(diffuse_states, num_diffuse_steps, num_states, fn_name):
    """``(diffuse_states as a tuple of bools, num_diffuse_steps)``, checked and hashable.

    Args:
        diffuse_states: bool array-like of shape ``(S,)``, concrete.
        num_diffuse_steps: None or an int ``>= 0``.
        num_states: ``S``.
        fn_name: the caller, for the messages.

    Returns:
        The pair (``num_diffuse_steps`` stays None when it is None).

    Raises:
        TypeError: for a traced ``diffuse_states``.
        ValueError: for a wrong shape or dtype, or a negative ``num_diffuse_steps``.
    """
    if isinstance(diffuse_states, jax.core.Tracer):
        raise TypeError(
            f"{fn_name}: diffuse_states must be concrete (a bool NumPy array or tuple): it fixes "
            "the structure of the filter, so it cannot be a traced array."
        )
    mask = np.asarray(diffuse_states)
    if mask.dtype != bool or mask.shape != (num_states,):
        raise ValueError(
            f"{fn_name}: diffuse_states must be a bool array of shape (S,) = ({num_states},), "
            f"True for the entries of z_1 with a diffuse prior; got dtype {mask.dtype} and "
            f"shape {mask.shape}."
        )
    if num_diffuse_steps is not None and (
        int(num_diffuse_steps) != num_diffuse_steps or num_diffuse_steps < 0
    ):
        raise ValueError(
            f"{fn_name}: num_diffuse_steps must be an int >= 0, got {num_diffuse_steps!r}."
        )
    steps = None if num_diffuse_steps is None else int(num_diffuse_steps)
    return tuple(bool(m) for m in mask), steps


def _diffuse_op(fn):
    """Make ``diffuse_states`` hashable for ``jax.jit`` and fill ``num_diffuse_steps``."""

    @functools.wraps(fn)
    def wrapper(*args, diffuse_states, num_diffuse_steps=None, **kwargs):
        params = next(a for a in args if isinstance(a, LGSSMParams))
        S = np.shape(params.initial_mean)[-1]
        mask, n = check_diffuse_arguments(diffuse_states, num_diffuse_steps, S, fn.__name__)
        return fn(
            *args, diffuse_states=mask, num_diffuse_steps=sum(mask) if n is None else n, **kwargs
        )

    return wrapper


def _prepare(params, observations, obs_mask, diffuse_states, num_diffuse_steps, fn_name):
    model, y, observed = _inputs(params, observations, obs_mask, fn_name)
    n = min(num_diffuse_steps, y.shape[0])
    if n == 0 and any(diffuse_states):
        n = 1  # nothing resolves a diffuse entry before the first step
    return model, y, observed, n


_STATIC = ("diffuse_states", "num_diffuse_steps", "parallel")


@_diffuse_op
@functools.partial(jax.jit, static_argnames=_STATIC)
def diffuse_kalman_filter(
    params: LGSSMParams,
    observations: jax.Array,
    *,
    diffuse_states,
    num_diffuse_steps=None,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> GaussianPosterior:
    """:func:`~numpyro_ssm.ops.kalman_filter` with a diffuse prior on some entries of ``z_1``.

    Args:
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`; the diffuse entries of
            ``initial_mean`` and their rows of ``initial_scale_tril`` are ignored.
        observations: shape ``(T, D)``, ``y_{1:T}``; NaN marks a missing entry.
        diffuse_states: bool, shape ``(S,)``, concrete (NumPy or a tuple): True for the
            entries of ``z_1`` with a diffuse prior.
        num_diffuse_steps: how many leading steps the exact initial filter runs; None for the
            number of diffuse entries (see the module docstring).
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        parallel: run the steps after the diffuse ones by associative scans.

    Returns:
        A :class:`~numpyro_ssm.ops.GaussianPosterior` (smoothed fields None) whose
        ``log_likelihood_increments`` follow the diffuse convention of the module docstring;
        during the diffuse steps the covariances are those of the finite part ``P_*``.

    Raises:
        ValueError: for a ``diffuse_states`` that is not a bool array of shape ``(S,)``, and
            the shape errors of :func:`~numpyro_ssm.ops.kalman_filter`.
    """
    model, y, observed, n = _prepare(
        params, observations, obs_mask, diffuse_states, num_diffuse_steps, "diffuse_kalman_filter"
    )
    if n == 0:
        return _filtered_posterior(_filter(model, y, observed, parallel))
    return _filtered_posterior(_diffuse_filter(model, y, observed, diffuse_states, n, parallel))


@_diffuse_op
def diffuse_kalman_log_marginal(
    params: LGSSMParams,
    observations: jax.Array,
    *,
    diffuse_states,
    num_diffuse_steps=None,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> jax.Array:
    """The diffuse log-likelihood ``log L_d`` alone; arguments as :func:`diffuse_kalman_filter`.

    Differentiable in every parameter: autodiff through the (short) diffuse steps, whose
    factors of ``P_*`` are triangularized every four steps (exact: the factors differ by
    orthogonal transformations), then the one-pass derivative of
    :func:`~numpyro_ssm.ops.kalman_log_marginal` over the rest. As there, the value applies a
    concrete transition matrix whose rows mostly copy one entry, and a concrete one-row
    emission matrix with at most half its entries nonzero, by slices (in the diffuse steps
    too).

    Args:
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        diffuse_states: bool, shape ``(S,)``, concrete.
        num_diffuse_steps: leading steps of the exact initial filter (None: the number of
            diffuse entries).
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        parallel: associative scans after the diffuse steps.

    Returns:
        Shape ``()``; NaN when a diffuse direction is still unresolved after
        ``num_diffuse_steps`` steps.
    """
    pattern = sparsity_pattern(params)
    return _diffuse_kalman_log_marginal(
        params, observations, diffuse_states, num_diffuse_steps, obs_mask, parallel, pattern
    )


@functools.partial(jax.jit, static_argnums=(2, 3, 5, 6))
def _diffuse_kalman_log_marginal(params, observations, diffuse, steps, obs_mask, parallel, pattern):
    model, y, observed, n = _prepare(
        params, observations, obs_mask, diffuse, steps, "diffuse_log_marginal"
    )
    if n == 0:
        return _log_marginal(model, y, observed, parallel, pattern)
    return _diffuse_log_marginal(model, y, observed, diffuse, n, parallel, pattern)


@_diffuse_op
@functools.partial(jax.jit, static_argnames=(*_STATIC, "smooth", "sample_shape"))
def diffuse_smooth_and_sample(
    key: jax.Array | None,
    params: LGSSMParams,
    observations: jax.Array,
    *,
    diffuse_states,
    num_diffuse_steps=None,
    obs_mask: jax.Array | None = None,
    smooth: bool = True,
    sample_shape: tuple[int, ...] | None = None,
    parallel: bool = False,
):
    """The diffuse smoother and posterior paths of one sequence from one augmented pass.

    The building block of :func:`diffuse_kalman_smoother`,
    :func:`diffuse_kalman_posterior_sample` and the distributions' ``latents``.

    Args:
        key: a JAX PRNG key, or None when ``sample_shape`` is None.
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        diffuse_states: bool, shape ``(S,)``, concrete.
        num_diffuse_steps: leading steps of the exact initial filter (for the filter's fields).
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        smooth: add the smoothed fields (else the filter's only).
        sample_shape: leading shape of the path draws, or None for no draws.
        parallel: associative scans for the proper filter and smoother.

    Returns:
        ``(posterior, paths)``: a :class:`~numpyro_ssm.ops.GaussianPosterior` and
        ``sample_shape + (T, S)`` draws (None without ``sample_shape``).
    """
    model, y, observed, n = _prepare(
        params, observations, obs_mask, diffuse_states, num_diffuse_steps, "diffuse_smoother"
    )
    aug = _augmented(model, y, observed, diffuse_states, parallel, smooth)
    if smooth:
        post = _diffuse_smoothed(model, y, observed, diffuse_states, n, parallel, aug)
    else:
        post = _filtered_posterior(_diffuse_filter(model, y, observed, diffuse_states, n, parallel))
    paths = None
    if sample_shape is not None:

        def draw(k):
            return _diffuse_sample(k, model, y, observed, diffuse_states, parallel, aug)

        paths = _sample_shape_map(draw, key, sample_shape)
    return post, paths


def diffuse_kalman_smoother(
    params: LGSSMParams,
    observations: jax.Array,
    *,
    diffuse_states,
    num_diffuse_steps=None,
    obs_mask: jax.Array | None = None,
    parallel: bool = False,
) -> GaussianPosterior:
    """:func:`~numpyro_ssm.ops.kalman_smoother` with a diffuse prior on some entries of ``z_1``.

    The smoothed moments are those of the augmented form (module docstring): proper when the
    data identify every diffuse direction.

    Args:
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        diffuse_states: bool, shape ``(S,)``, concrete.
        num_diffuse_steps: leading steps of the exact initial filter (for the filter's fields).
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        parallel: associative scans for the proper filter and smoother.

    Returns:
        A :class:`~numpyro_ssm.ops.GaussianPosterior` with every field set.
    """
    return diffuse_smooth_and_sample(
        None,
        params,
        observations,
        diffuse_states=diffuse_states,
        num_diffuse_steps=num_diffuse_steps,
        obs_mask=obs_mask,
        parallel=parallel,
    )[0]


def diffuse_kalman_posterior_sample(
    key: jax.Array,
    params: LGSSMParams,
    observations: jax.Array,
    *,
    diffuse_states,
    num_diffuse_steps=None,
    obs_mask: jax.Array | None = None,
    sample_shape: tuple[int, ...] = (),
    parallel: bool = False,
) -> jax.Array:
    """Draw state paths from ``p(z_{1:T} | y_{1:T})`` under a diffuse prior on some of ``z_1``.

    Args:
        key: a JAX PRNG key.
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        diffuse_states: bool, shape ``(S,)``, concrete.
        num_diffuse_steps: unused by the draws (kept for a uniform signature).
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        sample_shape: leading shape of the draws.
        parallel: associative scans for the filter and the backward pass.

    Returns:
        Shape ``sample_shape + (T, S)``.
    """
    return diffuse_smooth_and_sample(
        key,
        params,
        observations,
        diffuse_states=diffuse_states,
        num_diffuse_steps=num_diffuse_steps,
        obs_mask=obs_mask,
        smooth=False,
        sample_shape=tuple(sample_shape),
        parallel=parallel,
    )[1]

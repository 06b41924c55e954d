r"""Sampling: posterior state paths (forward-filter backward-sample) and draws from the prior."""

import functools

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.kalman._steps import _Filtered, _mv
from numpyro_ssm.ops.kalman.filtering import _filter, _filtered_posterior
from numpyro_ssm.ops.kalman.params import (
    _EMISSION,
    _TRANSITION,
    LGSSMParams,
    _inputs,
    _map_time,
    _Model,
    _prepare,
    _split_time,
    accepts_legacy_arguments,
)
from numpyro_ssm.ops.kalman.smoothing import _backward_elements, _smoothed_posterior
from numpyro_ssm.ops.scan import prefix_scan

__all__ = ["kalman_posterior_sample", "lgssm_sample"]


def _affine_combine(e1, e2):
    """Compose ``x -> A x + c`` maps; ``combine(earlier, later)`` applies ``earlier`` last.

    Used backward (``z_t = E z_{t+1} + h``) where ``earlier`` is the earlier time step.
    """
    (A1, c1), (A2, c2) = e1, e2
    return A1 @ A2, _mv(A1, c2) + c1


def _sample_shape_map(fn, key, sample_shape):
    """``fn(key)`` for ``prod(sample_shape)`` split keys, stacked to ``sample_shape + ...``."""
    sample_shape = tuple(sample_shape)
    n = 1
    for s in sample_shape:
        n *= s
    out = jax.vmap(fn)(jax.random.split(key, n))
    return jax.tree.map(lambda a: a.reshape(sample_shape + a.shape[1:]), out)


@accepts_legacy_arguments(1)
@functools.partial(jax.jit, static_argnames=("sample_shape", "parallel"))
def kalman_posterior_sample(
    key: jax.Array,
    params: LGSSMParams,
    observations: jax.Array,
    *,
    obs_mask: jax.Array | None = None,
    sample_shape: tuple[int, ...] = (),
    parallel: bool = False,
) -> jax.Array:
    """Draw state paths from ``p(z_{1:T} | y_{1:T})`` (forward filter, backward sample).

    Args:
        key: a JAX PRNG key.
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        sample_shape: leading shape of the draws.
        parallel: associative scans for the filter and the backward pass.

    Returns:
        Shape ``sample_shape + (T, S)``: joint posterior draws of the state path.
    """
    model, y, observed = _inputs(params, observations, obs_mask, "kalman_posterior_sample")
    f = _filter(model, y, observed, parallel)
    return _sample_shape_map(lambda k: _backward_sample(k, model, f, parallel), key, sample_shape)


def _backward_sample(key, model: _Model, f: _Filtered, parallel):
    """One path ``(T, S)`` from ``p(z | y)`` given the filter's output ``f`` of one sequence.

    The backward maps of the smoother with noise drawn up front, ``z_t = E_t z_{t+1} + g_t +
    L_t ε_t``, compose as affine maps ``(E, h)``: one suffix scan per draw.
    """
    T, S = f.means.shape
    back = _backward_elements(model, f)
    eps = jax.random.normal(key, (T, S), f.means.dtype)
    last = (jnp.zeros((S, 1), f.means.dtype), f.means[-1] + f.chols[-1] @ eps[-1])
    return prefix_scan(
        _affine_combine,
        lambda v: (v[0].E, v[0].g + v[0].L @ v[1]),
        last,
        (back, eps[:-1]),
        parallel=parallel,
        reverse=True,
    )[1]


@accepts_legacy_arguments(1)
@functools.partial(jax.jit, static_argnames=("num_steps", "sample_shape", "parallel"))
def lgssm_sample(
    key: jax.Array,
    params: LGSSMParams,
    *,
    num_steps: int,
    sample_shape: tuple[int, ...] = (),
    parallel: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Reparameterized draws of states and observations from the model (the prior).

    The forward affine recursion ``z_{t+1} = F_t z_t + b_t + chol Q_t ε_t`` is a prefix scan
    (sequential or associative), differentiable in every parameter.

    Args:
        key: a JAX PRNG key.
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        num_steps: ``T``.
        sample_shape: leading shape of the draws.
        parallel: associative scan for the state recursion.

    Returns:
        ``(states, observations)`` of shapes ``sample_shape + (T, S)`` and
        ``sample_shape + (T, D)``.
    """
    T = int(num_steps)
    model = _prepare(params, T, "lgssm_sample")
    S = model.m0.shape[0]
    t_static, t_varying = _split_time(model, _TRANSITION, 0, T - 1)
    e_static, e_varying = _split_time(model, _EMISSION, 0, T)
    D = model.varying.get("H", model.static.get("H")).shape[-2]
    dtype = model.m0.dtype

    def draw(k):
        k_state, k_obs = jax.random.split(k)
        eps = jax.random.normal(k_state, (T, S), dtype)
        first = (jnp.zeros((S, 1), dtype), model.m0 + model.chol_P0 @ eps[0])

        def element(v):
            p = {**t_static, **v}
            # a thin (S, q) noise factor takes the first q of the step's S normals
            return p["F"], p["b"] + p["chol_Q"] @ p["eps"][: p["chol_Q"].shape[-1]]

        states = prefix_scan(
            lambda e1, e2: _affine_combine(e2, e1),
            element,
            first,
            {**t_varying, "eps": eps[1:]},
            parallel=parallel,
        )[1]
        noise = jax.random.normal(k_obs, (T, D), dtype)
        obs = _map_time(
            lambda H, chol_R, d, z, e: H @ z + d + chol_R @ e,
            e_static,
            {**e_varying, "z": states, "e": noise},
        )
        return states, obs

    return _sample_shape_map(draw, key, sample_shape)


@functools.partial(jax.jit, static_argnames=("smooth", "sample_shape", "parallel"))
def smooth_and_sample(
    key: jax.Array | None,
    params: LGSSMParams,
    observations: jax.Array,
    *,
    obs_mask: jax.Array | None = None,
    smooth: bool = True,
    sample_shape: tuple[int, ...] | None = None,
    parallel: bool = False,
):
    """The smoother and posterior paths of one sequence from one filter pass.

    A building block for callers that want several posterior summaries at once (the
    distributions' ``latents``): :func:`~numpyro_ssm.ops.kalman_smoother` and
    :func:`kalman_posterior_sample` would each run the filter.

    Args:
        key: a JAX PRNG key, or None when ``sample_shape`` is None.
        params: the model, an :class:`~numpyro_ssm.ops.LGSSMParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        smooth: add the smoothed fields to the posterior (else the filter's fields only).
        sample_shape: leading shape of the path draws, or None for no draws.
        parallel: associative scans.

    Returns:
        ``(posterior, paths)``: a :class:`~numpyro_ssm.ops.GaussianPosterior` and
        ``sample_shape + (T, S)`` draws (None without ``sample_shape``).
    """
    model, y, observed = _inputs(params, observations, obs_mask, "smooth_and_sample")
    f = _filter(model, y, observed, parallel)
    posterior = _smoothed_posterior(model, f, parallel) if smooth else _filtered_posterior(f)
    paths = None
    if sample_shape is not None:
        draw = lambda k: _backward_sample(k, model, f, parallel)  # noqa: E731
        paths = _sample_shape_map(draw, key, sample_shape)
    return posterior, paths

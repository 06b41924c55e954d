r"""Sampling: approximate posterior paths (FFBS on the linearized model) and draws from the model.

:func:`nonlinear_posterior_sample` draws from the *linearized* model's posterior: the Kalman
forward-filter backward-sample of :mod:`numpyro_ssm.ops.kalman.sampling` run on the model the
chosen smoother linearized (one pass, or the last iterated pass). The draws are exact for a
linear-Gaussian model and otherwise approximate: they share the smoother's Gaussian marginals
and its linearized dependence between steps, not the true posterior's skew or multimodality
(use a particle method where that matters).

:func:`nonlinear_sample` simulates the true nonlinear model: a sequential scan of
``z_{t+1} = f(z_t, u_{t+1}) + w_t``, then every emission at once.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from numpyro_ssm.ops.kalman.sampling import _backward_sample, _sample_shape_map
from numpyro_ssm.ops.nonlinear.filtering import _check_iterations
from numpyro_ssm.ops.nonlinear.params import GeneralizedGaussianParams, _inputs, _prepare
from numpyro_ssm.ops.nonlinear.rules import get_rule
from numpyro_ssm.ops.nonlinear.smoothing import _STATIC, _check_smoother_args, _last_pass

__all__ = ["nonlinear_posterior_sample", "nonlinear_sample"]


@functools.partial(jax.jit, static_argnames=(*_STATIC, "sample_shape"))
def nonlinear_posterior_sample(
    key: jax.Array,
    params,
    observations: jax.Array,
    *,
    method="ekf",
    inputs=None,
    obs_mask: jax.Array | None = None,
    update_iterations: int = 1,
    smoother_iterations: int = 0,
    initial_trajectory=None,
    sample_shape: tuple[int, ...] = (),
    parallel: bool = False,
) -> jax.Array:
    """Approximate draws of the state path given ``y`` (module docstring).

    Args:
        key: a JAX PRNG key.
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams` or
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams`.
        observations: shape ``(T, D)``; NaN marks a missing entry.
        method: the linearization rule.
        inputs: pytree with leading time axis ``T``, or None.
        obs_mask: bool, broadcastable to ``(T, D)``; True where observed.
        update_iterations: emission linearizations per filter step.
        smoother_iterations: the smoother whose linearization is sampled (see
            :func:`~numpyro_ssm.ops.nonlinear.nonlinear_smoother`).
        initial_trajectory: see :func:`~numpyro_ssm.ops.nonlinear.nonlinear_smoother`.
        sample_shape: leading shape of the draws.
        parallel: associative scans for the smoothing passes and the backward sampling.

    Returns:
        Shape ``sample_shape + (T, S)``.
    """
    rule = get_rule(method)
    iterations = _check_iterations(update_iterations, "nonlinear_posterior_sample")
    passes = _check_smoother_args(
        smoother_iterations, initial_trajectory, "nonlinear_posterior_sample"
    )
    model, y, observed = _inputs(
        params, observations, obs_mask, inputs, "nonlinear_posterior_sample"
    )
    args = (iterations, passes, initial_trajectory, parallel)
    kmodel, f = _last_pass(model, rule, y, observed, args)
    return _sample_shape_map(lambda k: _backward_sample(k, kmodel, f, parallel), key, sample_shape)


@functools.partial(jax.jit, static_argnames=("num_steps", "sample_shape"))
def nonlinear_sample(
    key: jax.Array,
    params,
    *,
    num_steps: int,
    inputs=None,
    sample_shape: tuple[int, ...] = (),
) -> tuple[jax.Array, jax.Array]:
    """Draws of states and observations from the nonlinear model itself.

    Args:
        key: a JAX PRNG key.
        params: a :class:`~numpyro_ssm.ops.nonlinear.NonlinearGaussianParams`, or a
            :class:`~numpyro_ssm.ops.nonlinear.GeneralizedGaussianParams` with an
            ``emission_sample_fn``.
        num_steps: ``T``.
        inputs: pytree with leading time axis ``T``, or None.
        sample_shape: leading shape of the draws.

    Returns:
        ``(states, observations)`` of shapes ``sample_shape + (T, S)`` and
        ``sample_shape + (T, D)``. Gaussian draws are reparameterized (differentiable in
        every parameter).

    Raises:
        ValueError: for generalized emissions without ``emission_sample_fn``.
    """
    model = _prepare(params, num_steps, inputs, "nonlinear_sample")
    p = model.params
    generalized = isinstance(p, GeneralizedGaussianParams)
    if generalized and not callable(p.emission_sample_fn):
        raise ValueError(
            "nonlinear_sample: these GeneralizedGaussianParams have no emission_sample_fn; "
            "give one, (key, eta) -> y (D,), to simulate observations."
        )
    T, S, D, dtype = model.num_steps, model.state_dim, model.obs_dim, model.dtype
    chol_Q = (
        jnp.broadcast_to(model.chol_Q, (T - 1, S, S)) if model.chol_Q.ndim == 2 else model.chol_Q
    )
    u_next = None if model.inputs is None else jax.tree.map(lambda x: x[1:], model.inputs)
    u_axis = None if model.inputs is None else 0

    def draw(k):
        k_init, k_state, k_obs = jax.random.split(k, 3)
        z1 = p.initial_mean + p.initial_scale_tril @ jax.random.normal(k_init, (S,), dtype)

        def step(z, xs):
            u, chol, eps = xs
            z_next = p.transition_fn(z, u, p.params) + chol @ eps
            return z_next, z_next

        eps = jax.random.normal(k_state, (T - 1, S), dtype)
        _, rest = lax.scan(step, z1, (u_next, chol_Q, eps))
        states = jnp.concatenate([z1[None], rest])
        if generalized:
            keys = jax.random.split(k_obs, T)

            def emit(key_t, z, u):
                return p.emission_sample_fn(key_t, p.emission_fn(z, u, p.params))

            obs = jax.vmap(emit, (0, 0, u_axis))(keys, states, model.inputs)
        else:
            chol_R = model.chol_R
            chol_R = jnp.broadcast_to(chol_R, (T, D, D)) if chol_R.ndim == 2 else chol_R
            noise = jax.random.normal(k_obs, (T, D), dtype)

            def emit(z, u, chol, e):
                return p.emission_fn(z, u, p.params) + chol @ e

            obs = jax.vmap(emit, (0, u_axis, 0, 0))(states, model.inputs, chol_R, noise)
        return states, obs

    return _sample_shape_map(draw, key, sample_shape)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "smooth", "sample_shape"))
def smooth_and_sample(
    key: jax.Array | None,
    params,
    observations: jax.Array,
    *,
    method="ekf",
    inputs=None,
    obs_mask: jax.Array | None = None,
    update_iterations: int = 1,
    smoother_iterations: int = 0,
    initial_trajectory=None,
    smooth: bool = True,
    sample_shape: tuple[int, ...] | None = None,
    parallel: bool = False,
):
    """The smoother and approximate posterior paths from one run of the passes.

    A building block for the distributions' ``latents``; arguments as
    :func:`nonlinear_posterior_sample`.

    Returns:
        ``(posterior, paths)``: a :class:`~numpyro_ssm.ops.GaussianPosterior` (filter fields
        only unless ``smooth``) and ``sample_shape + (T, S)`` draws (None without
        ``sample_shape``).
    """
    from numpyro_ssm.ops.kalman.filtering import _filtered_posterior
    from numpyro_ssm.ops.kalman.smoothing import _smoothed_posterior

    rule = get_rule(method)
    iterations = _check_iterations(update_iterations, "smooth_and_sample")
    passes = _check_smoother_args(smoother_iterations, initial_trajectory, "smooth_and_sample")
    model, y, observed = _inputs(params, observations, obs_mask, inputs, "smooth_and_sample")
    kmodel, f = _last_pass(
        model, rule, y, observed, (iterations, passes, initial_trajectory, parallel)
    )
    posterior = _smoothed_posterior(kmodel, f, parallel) if smooth else _filtered_posterior(f)
    paths = None
    if sample_shape is not None:
        draw = lambda k: _backward_sample(k, kmodel, f, parallel)  # noqa: E731
        paths = _sample_shape_map(draw, key, sample_shape)
    return posterior, paths

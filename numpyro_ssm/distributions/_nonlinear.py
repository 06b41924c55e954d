"""What the two nonlinear families share: shapes, per-sequence plumbing and the posterior helpers.

:class:`~numpyro_ssm.NonlinearGaussianSSM` and :class:`~numpyro_ssm.GeneralizedGaussianSSM`
differ only in their emission; everything else (the time axis, the batch, the options of the
approximation, the protocol of :mod:`numpyro_ssm.infer`) lives in :class:`NonlinearSSMBase`.
Each method runs an op of :mod:`numpyro_ssm.ops.nonlinear` on every sequence of the batch; the
functions, ``params`` and ``inputs`` are shared by the whole batch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.distributions._gaussian_latents import GaussianLatentsMixin
from numpyro_ssm.distributions._lgssm_params import _batch_keys, _map_batch
from numpyro_ssm.distributions._shapes import (
    broadcast_batch_shapes,
    check_plates,
    infer_num_steps,
    time_source,
)
from numpyro_ssm.distributions._ssm import StateSpaceModel
from numpyro_ssm.distributions._validation import validate_concrete_args
from numpyro_ssm.ops import nonlinear as nl
from numpyro_ssm.ops.linalg import cholesky
from numpyro_ssm.ops.nonlinear.params import _prepare
from numpyro_ssm.ops.nonlinear.sampling import smooth_and_sample

__all__ = ["NonlinearSSMBase"]

# array argument -> (event ndim without time, time offset or None when it has no time axis)
_ARRAYS = {
    "initial_mean": (1, None),
    "initial_scale_tril": (2, None),
    "transition_scale_tril": (2, -1),
    "emission_scale_tril": (2, 0),
}


def _shape(x):
    return None if x is None else tuple(jnp.shape(x))


def _core_ndim(name, shape):
    ndim, offset = _ARRAYS[name]
    return ndim + (offset is not None and len(shape) > ndim)


def _factor(owner, prefix, cov, scale_tril):
    if (cov is None) == (scale_tril is None):
        given = "both" if cov is not None else "neither"
        raise ValueError(
            f"{owner}: give exactly one of {prefix}_cov and {prefix}_scale_tril (got {given})."
        )
    if scale_tril is None:
        return jnp.asarray(cov), cholesky(jnp.asarray(cov))
    return None, jnp.asarray(scale_tril)


def _shapes(owner, shapes, num_steps, obs_mask, inputs, obs_dim):
    """``(batch_shape, (T, D), time source, batch shape per argument)`` from argument shapes."""
    S = shapes["initial_mean"][-1] if shapes["initial_mean"] else None
    if S is None:
        raise ValueError(f"{owner}: initial_mean must have shape (..., S), got ().")
    expected = {"initial_scale_tril": S, "transition_scale_tril": S, "emission_scale_tril": obs_dim}
    for name, n in expected.items():
        shape = shapes.get(name)
        if shape is not None and (len(shape) < 2 or shape[-2:] != (n, n)):
            pretty = name.replace("_scale_tril", "_cov/_scale_tril")
            raise ValueError(
                f"{owner}: {pretty} must have shape (...,) + {(n, n)} (state dim S={S} from "
                f"initial_mean, observation dim D={obs_dim}), got {shape}."
            )
    time_axes = []
    for name, shape in shapes.items():
        ndim, offset = _ARRAYS[name]
        if offset is not None and shape is not None:
            time_axes.append((name, shape, -ndim - 1 if len(shape) > ndim else None, offset))
    if obs_mask is not None:
        if len(obs_mask) < 2 or obs_mask[-1] not in (1, obs_dim):
            raise ValueError(
                f"{owner}: obs_mask must broadcast against batch_shape + (T, D) with D={obs_dim}:"
                f" shape (..., T, D) or (..., T, 1), got {obs_mask}."
            )
        time_axes.append(("obs_mask", obs_mask, -2, 0))
    for path, leaf in jax.tree_util.tree_leaves_with_path(inputs):
        leaf_shape = tuple(jnp.shape(leaf))
        if not leaf_shape:
            raise ValueError(
                f"{owner}: every leaf of inputs needs a leading time axis; "
                f"inputs{jax.tree_util.keystr(path)} is a scalar."
            )
        time_axes.append((f"inputs{jax.tree_util.keystr(path)}", leaf_shape, -len(leaf_shape), 0))
    T = infer_num_steps(time_axes, num_steps)
    parts = {
        name: shape[: len(shape) - _core_ndim(name, shape)]
        for name, shape in shapes.items()
        if shape is not None
    }
    if obs_mask is not None:
        parts["obs_mask"] = obs_mask[:-2]
    return broadcast_batch_shapes(parts), (T, obs_dim), time_source(time_axes, num_steps), parts


class NonlinearSSMBase(GaussianLatentsMixin, StateSpaceModel):
    """Shared plumbing of the nonlinear families (see the module docstring).

    A subclass sets ``_array_names`` (the array arguments it stores), implements
    ``_container(arrays)`` (the ops' parameter container of one sequence) and
    ``_ops_mask(y, mask)`` (the per-entry mask handed to the ops), and calls
    :meth:`_setup` from its constructor.
    """

    _array_names = ("initial_mean", "initial_scale_tril", "transition_scale_tril")

    def _setup(self, owner, arrays, shapes, num_steps, obs_mask, options, validate_args):
        obs_dim = self._obs_dim
        batch_shape, event_shape, source, parts = _shapes(
            owner,
            shapes,
            num_steps,
            None if obs_mask is None else obs_mask.shape,
            self.inputs,
            obs_dim,
        )
        check_plates(parts, owner)
        self._time_source = source
        for name, value in arrays.items():
            setattr(self, name, value)
        self.obs_mask = obs_mask
        self.num_steps = event_shape[0]
        method, update_iterations, smoother_iterations, parallel = options
        self.method = method if isinstance(method, str) else nl.get_rule(method)
        self.update_iterations = int(update_iterations)
        self.smoother_iterations = int(smoother_iterations)
        self.parallel = bool(parallel)
        rule = nl.get_rule(method)
        if not isinstance(rule, nl.Taylor):
            rule.unit_points(self.initial_mean.shape[-1])  # ValueError for negative weights
        for name, value, low in (
            ("update_iterations", update_iterations, 1),
            ("smoother_iterations", smoother_iterations, 0),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}.")
        # every function's output shape, before any scan (the ops check it again at trace time)
        _prepare(self._container(self._first_sequence()), self.num_steps, self.inputs, owner)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    # -- plumbing -------------------------------------------------------------------------------

    def _first_sequence(self):
        out = {}
        for name in self._array_names:
            a = getattr(self, name)
            out[name] = a.reshape((-1,) + a.shape[a.ndim - _core_ndim(name, a.shape) :])[0]
        return out

    def _arrays(self):
        arrays = [getattr(self, name) for name in self._array_names]
        cores = [_core_ndim(n, a.shape) for n, a in zip(self._array_names, arrays, strict=True)]
        return arrays, cores

    def _current_batch_shape(self):
        # From the arrays themselves, so that jax.vmap over the distribution stays consistent.
        arrays, cores = self._arrays()
        shapes = [a.shape[: a.ndim - c] for a, c in zip(arrays, cores, strict=True)]
        if self.obs_mask is not None:
            shapes.append(self.obs_mask.shape[:-2])
        return jnp.broadcast_shapes(*shapes)

    def _options(self, smoother=True):
        out = dict(method=self.method, update_iterations=self.update_iterations)
        if smoother:
            out.update(smoother_iterations=self.smoother_iterations, parallel=self.parallel)
        return out

    def _observations(self, value, what="observations"):
        value = jnp.asarray(value)
        owner = type(self).__name__
        if jnp.iscomplexobj(value):
            raise TypeError(f"{owner}: {what} are complex ({value.dtype}); they must be real.")
        T, D = self.event_shape
        if value.ndim < 2 or value.shape[-2:] != (T, D):
            source = getattr(self, "_time_source", None)
            origin = f" (T={T} from {source})" if source else ""
            raise ValueError(
                f"{owner}: {what} must have shape (..., T, D) = (..., {T}, {D}){origin}, got "
                f"{value.shape}."
            )
        own = self._current_batch_shape()
        try:
            batch_shape = jnp.broadcast_shapes(value.shape[:-2], own)
        except ValueError:
            raise ValueError(
                f"{owner}: {what} of shape {value.shape} do not broadcast with batch_shape "
                f"{own} + event_shape {(T, D)}."
            ) from None
        mask = jnp.ones((T, D), bool) if self.obs_mask is None else self.obs_mask
        mask = jnp.broadcast_to(mask, batch_shape + (T, D))
        y = jnp.broadcast_to(value, batch_shape + (T, D))
        return y, self._ops_mask(y, mask), batch_shape

    def _run(self, op, value, *lead, lead_cores=()):
        """``op(*lead, params, y, obs_mask=..., inputs=...)`` on every sequence of the batch."""
        y, mask, batch_shape = self._observations(value)
        arrays, cores = self._arrays()
        n, names, inputs = len(lead), self._array_names, self.inputs

        def one(*args):
            *arrs, y, mask = args[n:]
            params = self._container(dict(zip(names, arrs, strict=True)))
            return op(*args[:n], params, y, obs_mask=mask, inputs=inputs)

        return _map_batch(one, [*lead, *arrays, y, mask], [*lead_cores, *cores, 2, 2], batch_shape)

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints, and the Jacobians at ``initial_mean``.

        ``transition_fn`` and ``emission_fn`` must have finite Jacobians at the (first)
        initial mean; traced parameters are skipped
        (:func:`~numpyro_ssm.distributions._validation.validate_concrete_args`).
        """
        validate_concrete_args(self, strict)
        first = self._first_sequence()
        leaves = [*first.values(), *jax.tree.leaves(self.params), *jax.tree.leaves(self.inputs)]
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return
        u = None if self.inputs is None else jax.tree.map(lambda x: x[0], self.inputs)
        z = first["initial_mean"]
        for name in ("transition_fn", "emission_fn"):
            fn = getattr(self, name)
            jac = jax.jacfwd(lambda z, fn=fn: jax.tree.leaves(fn(z, u, self.params)))(z)
            if not all(np.all(np.isfinite(np.asarray(j))) for j in jac):
                raise ValueError(
                    f"{type(self).__name__}: {name} has a non-finite Jacobian at initial_mean "
                    f"{np.asarray(z).tolist()}; the filters linearize it there."
                )

    # -- the distribution and the SSM protocol --------------------------------------------------

    def step_mask(self, value):
        """Which steps count: those with an observed entry (``obs_mask``, not NaN).

        Args:
            value: observations, shape ``batch + (T, D)``.

        Returns:
            bool array of shape ``batch + (T,)``.
        """
        _, mask, _ = self._observations(value)
        return jnp.any(mask, axis=-1)

    def log_prob(self, value):
        """The approximate ``log p(y_{1:T})`` of the chosen filter (see the class docstring).

        Args:
            value: observations, shape ``sample_shape + batch_shape + (T, D)``.

        Returns:
            Shape ``sample_shape + batch_shape``.
        """
        op = functools.partial(nl.nonlinear_log_marginal, **self._options())
        return self._run(op, value)

    def filter(self, value):
        """Filtered and predicted moments of the pass whose log-likelihood ``log_prob`` sums.

        With ``smoother_iterations=0`` the one-pass filter; otherwise the Kalman filter of the
        last iterated linearization.

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.

        Returns:
            A :class:`~numpyro_ssm.ops.GaussianPosterior` with ``batch_shape`` leading
            (smoothed fields ``None``).
        """
        op = functools.partial(smooth_and_sample, None, smooth=False, **self._options())
        return self._run(lambda p, y, **kw: op(p, y, **kw)[0], value)

    def smooth(self, value):
        """Smoothed moments, see :func:`~numpyro_ssm.ops.nonlinear.nonlinear_smoother`.

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.

        Returns:
            A :class:`~numpyro_ssm.ops.GaussianPosterior` with ``batch_shape`` leading.
        """
        return self._run(functools.partial(nl.nonlinear_smoother, **self._options()), value)

    def sample_posterior(self, key, value, sample_shape=()):
        """Approximate draws of the state path: FFBS on the linearized model.

        See :func:`~numpyro_ssm.ops.nonlinear.nonlinear_posterior_sample` for what the draws
        are (Gaussian, from the smoother's linearization) and are not.

        Args:
            key: a JAX PRNG key.
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.
            sample_shape: leading shape of the draws.

        Returns:
            Shape ``sample_shape + batch_shape + (T, S)``.
        """
        sample_shape = tuple(sample_shape)
        batch_shape = self._observations(value)[2]
        keys = _batch_keys(key, batch_shape)
        op = functools.partial(
            nl.nonlinear_posterior_sample, sample_shape=sample_shape, **self._options()
        )
        out = self._run(op, value, keys, lead_cores=(keys.ndim - len(batch_shape),))
        nb, ns = len(batch_shape), len(sample_shape)
        return jnp.moveaxis(out, tuple(range(nb, nb + ns)), tuple(range(ns)))

    def posterior_mode(self, value):
        """The MAP state path, by the iterated extended smoother (Gauss–Newton).

        See :func:`~numpyro_ssm.ops.nonlinear.nonlinear_posterior_mode`: at most 100 passes,
        serial or parallel as the distribution; where they have not converged the last pass
        is returned.

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.

        Returns:
            Shape ``batch_shape + (T, S)``.
        """
        op = functools.partial(nl.nonlinear_posterior_mode, parallel=self.parallel)
        return self._run(lambda p, y, **kw: op(p, y, **kw).path, value)

    def _latents_op(self, methods, sample_shape):
        """The op of :meth:`latents`: one filter pass, smoothed if the smooth is asked."""
        return functools.partial(
            smooth_and_sample,
            smooth="smooth" in methods,
            sample_shape=sample_shape,
            **self._options(),
        )

    def _mode_latent(self, value, post):
        """The MAP path, by its own Gauss-Newton passes."""
        return self.posterior_mode(value)

    def sample_with_states(self, key, sample_shape=()):
        """Joint draws of the states and observations from the model itself.

        Args:
            key: a JAX PRNG key.
            sample_shape: leading shape of the draws.

        Returns:
            ``(states, observations)`` of shapes ``sample_shape + batch_shape + (T, S)`` and
            ``sample_shape + batch_shape + (T, D)``.
        """
        sample_shape = tuple(sample_shape)
        batch_shape = self._current_batch_shape()
        arrays, cores = self._arrays()
        keys = _batch_keys(key, batch_shape)
        names, T, inputs = self._array_names, self.num_steps, self.inputs

        def one(*args):
            *arrs, k = args
            params = self._container(dict(zip(names, arrs, strict=True)))
            return nl.nonlinear_sample(
                k, params, num_steps=T, inputs=inputs, sample_shape=sample_shape
            )

        out = _map_batch(one, [*arrays, keys], [*cores, keys.ndim - len(batch_shape)], batch_shape)
        nb, ns = len(batch_shape), len(sample_shape)
        return jax.tree.map(
            lambda x: jnp.moveaxis(x, tuple(range(nb, nb + ns)), tuple(range(ns))), out
        )

    # -- prior moments and forecasts ------------------------------------------------------------

    def _predictive_moments(self):
        """Rule-propagated moments of ``y_t`` under the model alone: ``(means, variances)``."""
        arrays, cores = self._arrays()
        names, T, inputs, method = self._array_names, self.num_steps, self.inputs, self.method

        def one(*arrs):
            params = self._container(dict(zip(names, arrs, strict=True)))
            *_, mean, cov = nl.nonlinear_predictive_moments(
                params, num_steps=T, method=method, inputs=inputs
            )
            return mean, jnp.diagonal(cov, axis1=-2, axis2=-1)

        return _map_batch(one, arrays, cores, self._current_batch_shape())

    @property
    def mean(self):
        """Approximate ``E[y_t]``, shape ``batch_shape + (T, D)``: the rule's moment propagation."""
        return self._predictive_moments()[0]

    @property
    def variance(self):
        """Approximate ``Var[y_t]`` per entry, shape ``batch_shape + (T, D)`` (as :attr:`mean`)."""
        return self._predictive_moments()[1]

    def _forecast_start(self, value, u_next, chol_Q):
        """``z_{T+1} | y_{1:T}``: the last filtered state predicted one step, per sequence."""
        post = self.filter(value)
        m = post.filtered_means[..., -1, :]
        chol = cholesky(post.filtered_covariances[..., -1, :, :])
        arrays, cores = self._arrays()
        names, method = self._array_names, self.method
        batch_shape = m.shape[:-1]

        def one(m, chol, chol_Q, *arrs):
            params = self._container(dict(zip(names, arrs, strict=True)))
            return nl.nonlinear_predict(
                params, m, chol, method=method, input=u_next, transition_scale_tril=chol_Q
            )

        return _map_batch(one, [m, chol, chol_Q, *arrays], [1, 2, 2, *cores], batch_shape)

    def _future(self, name, future, num_steps, event_ndim):
        """A time-varying argument's future values (time axis ``num_steps``), or its own."""
        cov_name = name.replace("_scale_tril", "_cov")
        if cov_name in future:
            return cholesky(jnp.asarray(future.pop(cov_name)))
        if name in future:
            return jnp.asarray(future.pop(name))
        arr = getattr(self, name)
        if arr.ndim > event_ndim and arr.shape[-event_ndim - 1] != 1:
            raise ValueError(
                f"forecast: {name} is time-varying (shape {arr.shape}); pass its future values, "
                f"forecast(y, {num_steps}, {name}=...) with a time axis of length {num_steps}."
            )
        return arr

    def _forecast_arrays(self, value, num_steps, future):
        """The initial state and transition arguments of the forecast distribution."""
        h = int(num_steps)
        if self.inputs is not None and "inputs" not in future:
            raise ValueError(
                "forecast: this model has inputs; pass their future values, "
                f"forecast(y, {h}, inputs=...) with leaves of leading axis {h}."
            )
        inputs = future.pop("inputs", None)
        chol_Q = self._future("transition_scale_tril", future, h, 2)
        first_Q = chol_Q[..., 0, :, :] if chol_Q.ndim > 2 and chol_Q.shape[-3] > 1 else chol_Q
        if first_Q.ndim > 2 and first_Q.shape[-3] == 1:
            first_Q = first_Q[..., 0, :, :]
        rest_Q = chol_Q[..., 1:, :, :] if chol_Q.ndim > 2 and chol_Q.shape[-3] > 1 else chol_Q
        u_next = None if inputs is None else jax.tree.map(lambda x: x[0], inputs)
        m, chol = self._forecast_start(value, u_next, first_Q)
        return dict(initial_mean=m, initial_scale_tril=chol, transition_scale_tril=rest_Q), inputs

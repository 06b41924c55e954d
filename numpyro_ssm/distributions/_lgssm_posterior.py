"""The fixed-parameter posterior helpers of :class:`~numpyro_ssm.LinearGaussianSSM`.

Given one set of parameters and the observations, they return what the latent states look like:
filtered and smoothed moments, posterior draws and forecasts. They are the methods of
:class:`LGSSMPosteriorMixin`, which ``LinearGaussianSSM`` inherits; each one runs an op of
:mod:`numpyro_ssm.ops.kalman` on every sequence of the batch.
"""

import functools

import jax.numpy as jnp

from numpyro_ssm.distributions._gaussian_latents import GaussianLatentsMixin
from numpyro_ssm.distributions._lgssm_params import _CORE, _batch_keys
from numpyro_ssm.ops import kalman as kalman_ops
from numpyro_ssm.ops.kalman.sampling import smooth_and_sample

__all__ = ["LGSSMPosteriorMixin"]


class LGSSMPosteriorMixin(GaussianLatentsMixin):
    """Filter, smoother, posterior draws and forecasts for :class:`LinearGaussianSSM`.

    The host class provides ``_run``, ``_observations``, ``parallel`` and the parameters named
    in ``_CORE``.
    """

    def filter(self, value) -> kalman_ops.GaussianPosterior:
        """Filtered and predicted moments, see :func:`~numpyro_ssm.ops.kalman_filter`.

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.

        Returns:
            A :class:`~numpyro_ssm.ops.GaussianPosterior` whose fields have ``batch_shape``
            leading (smoothed fields ``None``).
        """
        return self._run(kalman_ops.kalman_filter, value)

    def smooth(self, value) -> kalman_ops.GaussianPosterior:
        """Smoothed moments, see :func:`~numpyro_ssm.ops.kalman_smoother`.

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.

        Returns:
            A :class:`~numpyro_ssm.ops.GaussianPosterior` whose fields have ``batch_shape``
            leading.
        """
        return self._run(kalman_ops.kalman_smoother, value)

    def sample_posterior(self, key, value, sample_shape=()):
        """Draw state paths from ``p(z_{1:T} | y_{1:T})`` (forward-filter backward-sample).

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
        op = functools.partial(kalman_ops.kalman_posterior_sample, sample_shape=sample_shape)
        out = self._run(op, value, keys, lead_cores=(keys.ndim - len(batch_shape),))
        nb, ns = len(batch_shape), len(sample_shape)
        return jnp.moveaxis(out, tuple(range(nb, nb + ns)), tuple(range(ns)))

    def posterior_mode(self, value):
        """The most probable state path: the smoothed means (a Gaussian's mode is its mean).

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.

        Returns:
            Shape ``batch_shape + (T, S)``.
        """
        return self.smooth(value).smoothed_means

    # -- the protocol of numpyro_ssm.infer ------------------------------------------------------

    def _latents_op(self, methods, sample_shape):
        """The op of :meth:`latents`: one filter pass, smoothed if the smooth or mode is asked."""
        smooth = "smooth" in methods or "mode" in methods
        return functools.partial(smooth_and_sample, smooth=smooth, sample_shape=sample_shape)

    def _mode_latent(self, value, post):
        """The most probable path of a linear-Gaussian model: its smoothed means."""
        return post.smoothed_means

    def forecast(self, value, num_steps, **future):
        """Distribution of the next ``num_steps`` observations given ``value``.

        The forecast starts from the last filtered state: its initial state is
        ``z_{T+1} | y_{1:T}``. Homogeneous parameters are reused. If a parameter is time-varying,
        pass its future values as a keyword argument (same name as in the constructor, with a
        time axis of length ``num_steps`` for transition *and* emission parameters: the first
        transition entry moves the last observed state into the first forecast step).

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.
            num_steps: number of future steps ``h``.
            **future: future ``transition_matrix``, ``transition_cov`` |
                ``transition_scale_tril``, ``transition_bias`` (time axis ``h``), and
                ``emission_matrix``, ``emission_cov`` | ``emission_scale_tril``,
                ``emission_bias`` (time axis ``h``), or homogeneous.

        Returns:
            A :class:`LinearGaussianSSM` with ``event_shape (h, D)`` and this model's
            ``validate_args``.

        Raises:
            ValueError: when a parameter is time-varying and no future value is given.
        """
        allowed = {
            "transition_matrix",
            "transition_cov",
            "transition_scale_tril",
            "transition_bias",
            "emission_matrix",
            "emission_cov",
            "emission_scale_tril",
            "emission_bias",
        }
        unknown = set(future) - allowed
        if unknown:
            raise ValueError(f"forecast: unknown future parameters {sorted(unknown)}.")
        h = int(num_steps)
        params = {}  # name -> array with an explicit time axis (length h or 1)
        for name in _CORE:
            prefix = name.split("_")[0]
            if prefix == "initial":
                continue
            ndim = _CORE[name][0]
            cov_name = f"{prefix}_cov"
            if name.endswith("scale_tril") and cov_name in future:
                name, arr = cov_name, jnp.asarray(future[cov_name])
            elif name in future:
                arr = jnp.asarray(future[name])
            else:
                arr = getattr(self, name)
                if arr.ndim > ndim and arr.shape[-ndim - 1] != 1:
                    raise ValueError(
                        f"forecast: {name} is time-varying (shape {arr.shape}); pass its future "
                        f"values, forecast(y, {h}, {name}=...) with a time axis of length {h}."
                    )
            if arr.ndim == ndim:
                arr = jnp.expand_dims(arr, -ndim - 1)
            if arr.shape[-ndim - 1] not in (1, h):
                raise ValueError(
                    f"forecast: future {name} has shape {arr.shape}; its time axis must have "
                    f"length 1 or num_steps={h}."
                )
            params[name] = arr
        post = self.filter(value)
        m, P = post.filtered_means[..., -1, :], post.filtered_covariances[..., -1, :, :]

        def first(x, ndim):  # the transition out of the last observed step
            return x[(..., 0) + (slice(None),) * ndim]

        def rest(x, ndim):  # the transitions between forecast steps
            return x[(..., slice(1, None)) + (slice(None),) * ndim] if x.shape[-ndim - 1] > 1 else x

        F, b = params.pop("transition_matrix"), params.pop("transition_bias")
        if "transition_cov" in params:
            Q = params["transition_cov"]
        else:
            Q = params["transition_scale_tril"] @ jnp.swapaxes(
                params["transition_scale_tril"], -1, -2
            )
        F0, Q0, b0 = first(F, 2), first(Q, 2), first(b, 1)
        m_next = jnp.einsum("...ij,...j->...i", F0, m) + b0
        P_next = F0 @ P @ jnp.swapaxes(F0, -1, -2) + Q0
        P_next = 0.5 * (P_next + jnp.swapaxes(P_next, -1, -2))
        for name in ("transition_cov", "transition_scale_tril"):
            if name in params:
                params[name] = rest(params[name], 2)
        return type(self)(
            m_next,
            rest(F, 2),
            params.pop("emission_matrix"),
            initial_cov=P_next,
            transition_bias=rest(b, 1),
            num_steps=h,
            parallel=self.parallel,
            validate_args=self._validate_args,
            **params,
        )

"""The particle methods of :class:`~numpyro_ssm.distributions.ParticleSSM`, all keyed.

Filtering, likelihood estimates, backward-simulated paths and smoothed moments, and the
protocol methods :mod:`numpyro_ssm.infer` calls (:meth:`~ParticlePosteriorMixin.latents` with a
key). Every method runs one sequence at a time under ``vmap`` over the batch.
"""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.distributions._ssm import SSMLatents, check_latent_methods
from numpyro_ssm.ops import particle as particle_ops

__all__ = ["ParticlePosteriorMixin"]

_OWNER = "ParticleSSM"


class ParticlePosteriorMixin:
    """Keyed particle methods of a particle-filtered state space model.

    The host class provides ``_observations``, ``_functions``, the filter options
    (``num_particles``, ``resampling``, ``ess_threshold``), ``params``, ``inputs``,
    ``state_shape`` and ``auxiliary_log_weight_fn``.
    """

    # -- particle filtering ---------------------------------------------------------------------

    def _run(self, fn, key, value):
        """``fn(key, y, steps, inputs)`` on every sequence of the batch.

        ``key`` is a ``jax.random`` key, split over the sequences, or a
        :class:`~numpyro_ssm.ops.particle.ParticleNoise` whose leaves have the batch axes in
        front. ``fn`` gets one sequence and returns a pytree; the results get the batch axes.
        """
        y, steps, entries, batch_shape = self._observations(value)
        size = int(np.prod(batch_shape))
        flat = lambda x: x.reshape((size,) + x.shape[len(batch_shape) :])  # noqa: E731
        if isinstance(key, particle_ops.ParticleNoise):
            keys = jax.tree.map(flat, key)
        else:
            keys = jax.random.split(key, size)
        inputs = self.inputs

        def one(key, y, steps, entries):
            return fn(key, y, steps, (inputs, entries))

        if not batch_shape:  # no vmap: it would turn the resampling cond into a select
            return one(key, y, steps, entries)
        out = jax.vmap(one)(keys, flat(y), flat(steps), flat(entries))
        return jax.tree.map(lambda x: x.reshape(batch_shape + x.shape[1:]), out)

    def _filter_options(self, options):
        merged = dict(
            num_particles=self.num_particles,
            resampling=self.resampling,
            ess_threshold=self.ess_threshold,
            gradient="none",
        )
        merged.update(options)
        return merged

    def _filter_one(self, options):
        """``(key, y, steps, inputs) -> ParticleFilterResult`` for one sequence."""
        functions = self._functions()
        model, proposal, params = functions.model(), functions.proposal(), self.params
        auxiliary = self._auxiliary()

        def one(key, y, steps, inputs):
            return particle_ops.particle_filter(
                key,
                model,
                params,
                y,
                inputs=inputs,
                obs_mask=steps,
                proposal=proposal,
                auxiliary_log_weight=auxiliary,
                **options,
            )

        return one, model, params

    def filter(self, key, value, **options) -> particle_ops.ParticleFilterResult:
        """Run the particle filter on every sequence of ``value``.

        Args:
            key: a ``jax.random`` key (split over the batch).
            value: observations, shape ``batch + (T,) + E``.
            **options: keyword arguments of :func:`numpyro_ssm.ops.particle.particle_filter`
                (``num_particles``, ``resampling``, ``ess_threshold``, ``gradient``,
                ``history``, ``particle_sharding``); defaults from the distribution, with
                ``gradient="none"`` and ``history=True``.

        Returns:
            A :class:`~numpyro_ssm.ops.particle.ParticleFilterResult` with the batch axes in
            front of every field.
        """
        one, _, _ = self._filter_one(self._filter_options(options))
        return self._run(one, key, value)

    def _auxiliary(self):
        fn = self.auxiliary_log_weight_fn
        if fn is None:
            return None
        return lambda z, y, u, params: fn(z, y, u[0], params)

    def log_likelihood_estimate(self, key, value, **options):
        """``log Ẑ``: the log of an unbiased estimate of ``p(y_{1:T})``, per sequence.

        Args:
            key: a ``jax.random`` key.
            value: observations, shape ``batch + (T,) + E``.
            **options: as in :meth:`filter`.

        Returns:
            Shape ``batch``.
        """
        return self.filter(key, value, history=False, **options).log_marginal

    def log_likelihood_increments(self, value):
        """Not available without a key: use :meth:`latents` with ``key=``."""
        raise NotImplementedError(
            f"{_OWNER} estimates log-likelihood increments with a particle filter, which needs "
            "a key: use infer.to_inference_data(..., key=...) or infer.posterior_latents(..., "
            "key=...) (infer.pointwise_log_likelihood passes none), or "
            "ParticleSSM.filter(key, y).log_likelihood_increments."
        )

    # -- smoothing and the protocol --------------------------------------------------------------

    def sample_posterior(self, key, value, sample_shape=(), **options):
        """Paths drawn by backward simulation (FFBSi) from one particle filter run per sequence.

        Args:
            key: a ``jax.random`` key.
            value: observations, shape ``batch + (T,) + E``.
            sample_shape: leading shape of the paths.
            **options: as in :meth:`filter`.

        Returns:
            Shape ``sample_shape + batch + (T,) + S``.
        """
        sample_shape = tuple(sample_shape)
        count = int(np.prod(sample_shape))
        paths, _ = self._paths(key, value, count, options)
        paths = jnp.moveaxis(paths, -2 - len(self.state_shape), 0)
        return paths.reshape(sample_shape + paths.shape[1:])

    def _paths(self, key, value, count, options):
        """``(paths batch + (M, T) + S, log-likelihood increments batch + (T,))``."""
        run_filter, model, params = self._filter_one(
            self._filter_options({**options, "history": True})
        )

        def one(key, y, steps, inputs):
            key_filter, key_paths = jax.random.split(key)
            res = run_filter(key_filter, y, steps, inputs)
            paths = particle_ops.particle_backward_sample(
                key_paths, res, model, params, count, inputs=inputs
            )
            return paths, res.log_likelihood_increments

        return self._run(one, key, value)

    def smooth(self, key, value, num_paths=100, **options):
        """Smoothed moments from ``num_paths`` backward-simulated paths per sequence.

        ``O(num_paths N T)``; :func:`numpyro_ssm.ops.particle.particle_smoother` (FFBSm,
        ``O(N^2 T)``) reweights the particles instead, for small problems.

        Args:
            key: a ``jax.random`` key.
            value: observations, shape ``batch + (T,) + E``.
            num_paths: paths per sequence.
            **options: as in :meth:`filter`.

        Returns:
            ``(means, variances)``, each of shape ``batch + (T,) + S`` (integer states are
            averaged as floats).
        """
        paths, _ = self._paths(key, value, num_paths, options)
        return _path_moments(paths, len(self.state_shape))

    def latent_dims(self, method):
        """Dims of :meth:`latents`' outputs: ``("time",)`` and one dim per state axis."""
        state = ("state",) + tuple(f"state_{i + 2}" for i in range(len(self.state_shape) - 1))
        dims = ("time",) + state[: len(self.state_shape)]
        if method == "smooth":
            return {"means": dims, "variances": dims}
        return {"": dims}

    def latents(self, value, methods=(), key=None, num_paths=32) -> SSMLatents:
        """Per-step log-likelihood estimates and posterior summaries, from one filter run.

        ``"sample"``: ``{"": path}``, one backward-simulated path; ``"smooth"``: the means and
        variances of ``num_paths`` backward-simulated paths. The increments are the filter's
        ``log p̂(y_t | y_{1:t-1})`` (their sum is ``log Ẑ``).

        Args:
            value: observations, shape ``batch + (T,) + E``.
            methods: a tuple of ``"smooth"``, ``"sample"``.
            key: a ``jax.random`` key; required (the filter is random).
            num_paths: backward paths per sequence for ``"smooth"``.

        Returns:
            An :class:`~numpyro_ssm.distributions.SSMLatents`.

        Raises:
            ValueError: without a key.
        """
        if key is None:
            raise ValueError(
                f"{_OWNER}.latents: the particle filter needs a key; pass key=jax.random.key(...)"
                " to infer.to_inference_data or infer.posterior_latents."
            )
        methods = check_latent_methods(self, methods, key)
        if not methods:
            increments = self.filter(key, value, history=False).log_likelihood_increments
            return SSMLatents(increments, {})
        count = num_paths if "smooth" in methods else 1
        paths, increments = self._paths(key, value, count, {})
        out = {}
        path_axis = -2 - len(self.state_shape)
        if "sample" in methods:
            out["sample"] = {"": jnp.take(paths, 0, axis=path_axis)}
        if "smooth" in methods:
            means, variances = _path_moments(paths, len(self.state_shape))
            out["smooth"] = {"means": means, "variances": variances}
        return SSMLatents(increments, out)

    def forecast(self, value, num_steps, **future):
        """Not available: a particle forecast needs a key, and the protocol passes none."""
        raise NotImplementedError(
            f"{_OWNER}.forecast: forecasts from a particle filter are random and the protocol "
            "passes no key; simulate forward from ParticleSSM.filter(key, y).final_particles "
            "with transition_fn and emission_fn."
        )


def _path_moments(paths, state_ndim):
    """Means and variances over the path axis (just before ``(T,) + S``)."""
    axis = paths.ndim - 2 - state_ndim
    paths = (
        paths.astype(jnp.result_type(float))
        if not jnp.issubdtype(paths.dtype, jnp.floating)
        else paths
    )
    return jnp.mean(paths, axis=axis), jnp.var(paths, axis=axis)

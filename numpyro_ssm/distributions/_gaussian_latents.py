"""The protocol's :meth:`latents` for the Gaussian-state families (linear and nonlinear).

Both answer ``"smooth"`` with the smoothed state means and covariances and ``"sample"`` with one
state path drawn by forward-filter backward-sample, from one run of their filter and smoother
(``smooth_and_sample`` of :mod:`numpyro_ssm.ops.kalman` or :mod:`numpyro_ssm.ops.nonlinear`);
they differ in what ``"mode"`` is.
"""

from numpyro_ssm.distributions._lgssm_params import _batch_keys
from numpyro_ssm.distributions._ssm import SSMLatents, check_latent_methods

__all__ = ["GaussianLatentsMixin"]


class GaussianLatentsMixin:
    """:meth:`latent_dims` and :meth:`latents` of a family with a Gaussian latent state.

    The host class provides ``_run(op, value, *lead, lead_cores=...)`` (the op mapped over the
    batch), ``_observations(value)`` (whose third item is the batch shape),
    ``_latents_op(methods, sample_shape)`` (a ``smooth_and_sample`` op returning ``(posterior,
    path)``) and ``_mode_latent(value, posterior)``.
    """

    def latent_dims(self, method):
        """Dims of :meth:`latents`' outputs: state means, covariances or paths over time.

        Args:
            method: ``"smooth"``, ``"sample"`` or ``"mode"``.

        Returns:
            dict short name -> dims after the batch axes.
        """
        if method == "smooth":
            return {"means": ("time", "state"), "covariances": ("time", "state", "state_2")}
        return {"": ("time", "state")}

    def latents(self, value, methods=(), key=None) -> SSMLatents:
        """Per-step log-likelihood increments and posterior summaries, from one run of passes.

        ``"smooth"``: ``{"means": (..., T, S), "covariances": (..., T, S, S)}``; ``"sample"``:
        ``{"": path (..., T, S)}``, one forward-filter backward-sample draw; ``"mode"``: ``{"":
        path (..., T, S)}``, the most probable path (the smoothed means of a linear-Gaussian
        model).

        Args:
            value: observations, shape ``batch_shape + (T, D)``; NaN entries are missing.
            methods: a tuple of ``"smooth"``, ``"sample"``, ``"mode"``.
            key: a JAX PRNG key, required for ``"sample"``.

        Returns:
            An :class:`~numpyro_ssm.distributions.SSMLatents`.
        """
        methods = check_latent_methods(self, methods, key)
        sample = "sample" in methods
        op = self._latents_op(methods, () if sample else None)
        if sample:
            batch_shape = self._observations(value)[2]
            keys = _batch_keys(key, batch_shape)
            lead, lead_cores = (keys,), (keys.ndim - len(batch_shape),)
        else:
            lead, lead_cores = (None,), (0,)
        post, path = self._run(op, value, *lead, lead_cores=lead_cores)
        out = {}
        if "smooth" in methods:
            out["smooth"] = {"means": post.smoothed_means, "covariances": post.smoothed_covariances}
        if sample:
            out["sample"] = {"": path}
        if "mode" in methods:
            out["mode"] = {"": self._mode_latent(value, post)}
        return SSMLatents(post.log_likelihood_increments, out)

"""What the discrete-state families' posterior helpers share (``DiscreteHMM``, ``DiscreteHSMM``).

Both hand the masked per-state log-likelihoods of the observations to an op of
:mod:`numpyro_ssm.ops.hmm` or :mod:`numpyro_ssm.ops.hsmm`, and both answer the protocol's
:meth:`latents` with the state marginals (``"smooth"``), a path drawn by forward-filter
backward-sample (``"sample"``) and the MAP path (``"mode"``).
"""

from numpyro_ssm.distributions._ssm import SSMLatents, check_latent_methods

__all__ = ["DiscretePosteriorMixin"]


class DiscretePosteriorMixin:
    """``_run_op``, :meth:`latent_dims` and :meth:`latents` of a discrete-state family.

    The host class provides ``_log_likelihoods(value)`` (the per-state log-likelihoods and the
    step mask), ``_op_kwargs()`` (its parameters as the ops' keyword arguments), ``parallel``,
    ``posterior_mode`` and the class attributes ``_filter_op`` and ``_smoother_op`` (ops whose
    results have ``log_likelihood_increments``, ``filtered_probs`` and, for the smoother,
    ``smoothed_probs``); it may override :meth:`_latent_path`.
    """

    def _run_op(self, op, value, *lead, **kwargs):
        """``op(*lead, log_likelihoods=..., obs_mask=..., ...)`` on the observations ``value``."""
        log_lik, mask = self._log_likelihoods(value)
        return op(
            *lead,
            log_likelihoods=log_lik,
            obs_mask=mask,
            parallel=self.parallel,
            **kwargs,
            **self._op_kwargs(),
        )

    def _latent_path(self, key, value, post):
        """One posterior path ``(..., T)`` for :meth:`latents`; ``post`` is its filter pass."""
        return self.sample_posterior(key, value)

    def latent_dims(self, method):
        """Dims of :meth:`latents`' outputs: ``("time", "state")`` probabilities or ``("time",)``.

        Args:
            method: ``"smooth"``, ``"sample"`` or ``"mode"``.

        Returns:
            dict short name -> dims after the batch axes.
        """
        if method == "smooth":
            return {"probs": ("time", "state")}
        return {"": ("time",)}

    def latents(self, value, methods=(), key=None) -> SSMLatents:
        """Per-step log-likelihood increments and posterior summaries.

        ``"smooth"``: ``{"probs": p(z_t = k | y) (..., T, K)}`` from the smoother, whose pass
        also gives the increments (the filter's otherwise); ``"sample"``: ``{"": path}``, one
        forward-filter backward-sample draw ``(..., T)``; ``"mode"``: ``{"": path}``, the most
        probable path ``(..., T)``.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.
            methods: a tuple of ``"smooth"``, ``"sample"``, ``"mode"``.
            key: a ``jax.random`` key, required for ``"sample"``.

        Returns:
            An :class:`~numpyro_ssm.distributions.SSMLatents`.
        """
        methods = check_latent_methods(self, methods, key)
        op = self._smoother_op if "smooth" in methods else self._filter_op
        post = self._run_op(op, value)
        out = {}
        if "smooth" in methods:
            out["smooth"] = {"probs": post.smoothed_probs}
        if "sample" in methods:
            out["sample"] = {"": self._latent_path(key, value, post)}
        if "mode" in methods:
            out["mode"] = {"": self.posterior_mode(value)}
        return SSMLatents(post.log_likelihood_increments, out)

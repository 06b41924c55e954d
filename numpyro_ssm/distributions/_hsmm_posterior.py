"""The fixed-parameter posterior helpers of :class:`~numpyro_ssm.DiscreteHSMM`.

Given one set of parameters and the observations they return what the segmentation looks like:
filtered and smoothed state marginals, segment starts and expected durations, the MAP
segmentation, posterior draws and forecasts. They are the methods of
:class:`HSMMPosteriorMixin`, which ``DiscreteHSMM`` inherits; each one hands the masked
log-likelihoods to an op of :mod:`numpyro_ssm.ops.hsmm`.
"""

import jax.numpy as jnp

from numpyro_ssm.distributions._discrete_posterior import DiscretePosteriorMixin
from numpyro_ssm.ops import hsmm as hsmm_ops

__all__ = ["HSMMPosteriorMixin"]


class HSMMPosteriorMixin(DiscretePosteriorMixin):
    """Filter, smoother, MAP segmentation, posterior draws and forecasts for ``DiscreteHSMM``.

    The host class provides ``_log_likelihoods``, ``_op_kwargs``, ``_log_params``,
    ``emission_dist``, ``censoring`` and ``parallel``.
    """

    _filter_op = staticmethod(hsmm_ops.hsmm_filter)
    _smoother_op = staticmethod(hsmm_ops.hsmm_smoother)

    def filter(self, value) -> hsmm_ops.HSMMPosterior:
        """Filtered state probabilities and increments, see :func:`~numpyro_ssm.ops.hsmm_filter`.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            An :class:`~numpyro_ssm.ops.HSMMPosterior` without the smoothing fields.
        """
        return self._run_op(hsmm_ops.hsmm_filter, value)

    def smooth(self, value) -> hsmm_ops.HSMMPosterior:
        """Smoothed marginals, segment starts, expected switches and durations.

        See :func:`~numpyro_ssm.ops.hsmm_smoother`.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            An :class:`~numpyro_ssm.ops.HSMMPosterior`.
        """
        return self._run_op(hsmm_ops.hsmm_smoother, value)

    def posterior_durations(self, value):
        """Posterior dwell-time distributions: ``p(d | a segment of state k, y_{1:T})``.

        The smoother's expected number of segments of state ``k`` with duration ``d``
        (``expected_durations``, every segment counted, the right-censored last one with its
        posterior total duration), normalized over ``d``: the distribution of the duration of a
        segment of state ``k`` drawn at random from the posterior segmentations, weighted by
        their number of such segments. A state with no expected segment (its probability
        underflows) keeps its prior row ``duration_probs[k]``.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            Shape ``batch_shape + (K, D_max)``, rows summing to one.
        """
        counts = self.smooth(value).expected_durations
        total = jnp.sum(counts, axis=-1, keepdims=True)
        seen = total > 0
        normalized = counts / jnp.where(seen, total, 1.0)
        return jnp.where(seen, normalized, jnp.broadcast_to(self.duration_probs, counts.shape))

    def posterior_mode(self, value):
        """The MAP segmentation as its state path, shape ``batch_shape + (T,)``.

        See :func:`~numpyro_ssm.ops.hsmm_posterior_mode`.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            int array of shape ``batch_shape + (T,)``.
        """
        return self._run_op(hsmm_ops.hsmm_posterior_mode, value)

    def sample_posterior(self, key, value, sample_shape=()):
        """Draw segmentations from ``p(segments | y_{1:T})`` (forward-filter backward-sample).

        Args:
            key: a ``jax.random`` key.
            value: observations, shape ``batch_shape + (T,) + E``.
            sample_shape: leading shape of independent draws.

        Returns:
            int array of shape ``sample_shape + batch_shape + (T,)``: state paths.
        """
        return self._run_op(hsmm_ops.hsmm_posterior_sample, value, key, sample_shape=sample_shape)

    # -- the protocol of numpyro_ssm.infer ------------------------------------------------------

    def forecast(self, value, num_steps, *, emission_dist=None):
        """The distribution of the next ``num_steps`` observations given ``y_{1:T}``.

        The returned model starts from ``p(z_{T+1}, d | y_{1:T})``: the segment in progress at
        ``T`` goes on for its remaining time (its posterior given that it has lasted so far,
        which is where a semi-Markov forecast differs from a Markov one), or a new segment
        starts. Its last segment is right-censored.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.
            num_steps: number of future steps ``H``.
            emission_dist: future emissions (batch ``(K,)`` or ``(..., H | 1, K)``). Defaults to
                this model's (homogeneous) emission distribution.

        Returns:
            A ``DiscreteHSMM`` with ``event_shape (H,) + E``, ``first_segment_probs`` set, and
            this model's ``validate_args``.

        Raises:
            ValueError: when the emission is time-varying and no future one is given.
        """
        emission_batch = self.emission_dist.batch_shape
        if emission_dist is None:
            if len(emission_batch) >= 2 and emission_batch[-2] != 1:
                raise ValueError(
                    f"forecast: emission_dist is time-varying (batch_shape {emission_batch}); "
                    "pass the future emission_dist with batch (..., H | 1, K)."
                )
            emission_dist = self.emission_dist
        final = self.filter(value).final_residual_probs
        _, log_trans, log_dur = self._log_params()
        ends = final[..., 0]
        inflow = (ends[..., None, :] @ jnp.exp(log_trans))[..., 0, :]
        shifted = jnp.concatenate([final[..., 1:], jnp.zeros_like(final[..., :1])], axis=-1)
        first = shifted + inflow[..., None] * jnp.exp(log_dur)
        return type(self)(
            first_segment_probs=first,
            transition_logits=log_trans[..., None, :, :],
            emission_dist=emission_dist,
            duration_logits=log_dur,
            num_steps=num_steps,
            parallel=self.parallel,
            validate_args=self._validate_args,
        )

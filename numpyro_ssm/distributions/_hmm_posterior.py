"""The fixed-parameter posterior helpers of :class:`~numpyro_ssm.DiscreteHMM`.

Given one set of parameters and the observations, they return what the latent path looks like:
filtered and smoothed marginals, the Viterbi path, posterior draws and forecasts. They are the
methods of :class:`HMMPosteriorMixin`, which ``DiscreteHMM`` inherits; each one hands the
masked log-likelihoods to an op of :mod:`numpyro_ssm.ops.hmm`.
"""

import jax
import jax.numpy as jnp

from numpyro_ssm.distributions._discrete_posterior import DiscretePosteriorMixin
from numpyro_ssm.ops import hmm as hmm_ops
from numpyro_ssm.ops.hmm import safe_log
from numpyro_ssm.ops.hmm.paths import backward_sample

__all__ = ["HMMPosteriorMixin"]


class HMMPosteriorMixin(DiscretePosteriorMixin):
    """Filter, smoother, Viterbi, posterior draws and forecasts for :class:`DiscreteHMM`.

    The host class provides ``_log_likelihoods``, ``_op_kwargs``, ``_log_params``,
    ``emission_dist`` and ``parallel``.
    """

    _filter_op = staticmethod(hmm_ops.hmm_filter)
    _smoother_op = staticmethod(hmm_ops.hmm_smoother)

    def filter(self, value) -> hmm_ops.HMMPosterior:
        """Filtered and predicted state probabilities, see :func:`~numpyro_ssm.ops.hmm_filter`.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            An :class:`~numpyro_ssm.ops.HMMPosterior` without smoothed fields.
        """
        return self._run_op(hmm_ops.hmm_filter, value)

    def smooth(self, value) -> hmm_ops.HMMPosterior:
        """Smoothed marginals and expected transitions, see :func:`~numpyro_ssm.ops.hmm_smoother`.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            An :class:`~numpyro_ssm.ops.HMMPosterior`.
        """
        return self._run_op(hmm_ops.hmm_smoother, value)

    def posterior_mode(self, value):
        """Most probable state path (Viterbi), shape ``batch_shape + (T,)``.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.

        Returns:
            int array of shape ``batch_shape + (T,)``.
        """
        return self._run_op(hmm_ops.hmm_posterior_mode, value)

    def sample_posterior(self, key, value, sample_shape=()):
        """Draw state paths from ``p(z_{1:T} | y_{1:T})`` (forward-filter backward-sample).

        Args:
            key: a ``jax.random`` key.
            value: observations, shape ``batch_shape + (T,) + E``.
            sample_shape: leading shape of independent draws.

        Returns:
            int array of shape ``sample_shape + batch_shape + (T,)``.
        """
        return self._run_op(hmm_ops.hmm_posterior_sample, value, key, sample_shape=sample_shape)

    # -- the protocol of numpyro_ssm.infer ------------------------------------------------------

    def _latent_path(self, key, value, post):
        """One FFBS draw ``(..., T)`` that reuses the filter (or smoother) pass ``post``."""
        log_trans = self._log_params()[1]
        if log_trans.ndim == 2:
            log_trans = log_trans[None]
        return backward_sample(key, log_trans, post.filtered_probs, parallel=self.parallel)

    def forecast(
        self,
        value,
        num_steps,
        *,
        transition_matrix=None,
        transition_logits=None,
        emission_dist=None,
    ):
        """The distribution of the next ``num_steps`` observations given ``y_{1:T}``.

        The returned model starts from ``p(z_{T+1} | y_{1:T})`` (the last filtered distribution
        pushed through one transition).

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.
            num_steps: number of future steps ``H``.
            transition_matrix: future transitions, shape ``(K, K)`` or ``(..., H | 1, K, K)``;
                entry ``[h]`` moves ``z_{T+h} -> z_{T+h+1}``. Defaults to this model's
                (homogeneous) transition matrix.
            transition_logits: the future transitions as unnormalized log-probabilities,
                instead of ``transition_matrix``.
            emission_dist: future emissions (batch ``(K,)`` or ``(..., H | 1, K)``). Defaults to
                this model's (homogeneous) emission distribution.

        Returns:
            A :class:`DiscreteHMM` with ``event_shape (H,) + E`` and this model's
            ``validate_args``.

        Raises:
            ValueError: when a time-varying parameter has no future value given, or both
                ``transition_matrix`` and ``transition_logits`` are.
        """
        emission_batch = self.emission_dist.batch_shape
        if emission_dist is None:
            if len(emission_batch) >= 2 and emission_batch[-2] != 1:
                raise ValueError(
                    f"forecast: emission_dist is time-varying (batch_shape {emission_batch}); "
                    "pass the future emission_dist with batch (..., H | 1, K)."
                )
            emission_dist = self.emission_dist
        initial, future_log_trans = self._forecast_chain(
            value, transition_matrix, transition_logits
        )
        return type(self)(
            initial,
            transition_logits=future_log_trans,
            emission_dist=emission_dist,
            num_steps=num_steps,
            parallel=self.parallel,
            validate_args=self._validate_args,
        )

    def _forecast_chain(self, value, transition_matrix=None, transition_logits=None):
        """The chain of a forecast: ``p(z_{T+1} | y_{1:T})`` and the future log-transitions.

        Args:
            value: observations, shape ``batch_shape + (T,) + E``.
            transition_matrix: future transitions ``(K, K)`` or ``(..., H | 1, K, K)``, or None
                for this model's (homogeneous) ones.
            transition_logits: the same as unnormalized log-probabilities.

        Returns:
            ``(initial_probs (..., K), log_transitions)``: the first future state's
            distribution and the normalized log-transitions between the future steps.

        Raises:
            ValueError: when both transition arguments are given, or the model's transitions
                are time-varying and no future ones are.
        """
        if transition_matrix is not None and transition_logits is not None:
            raise ValueError(
                "forecast: give at most one of transition_matrix and transition_logits."
            )
        current_log_trans = self._log_params()[1]
        trans_shape = current_log_trans.shape
        if transition_logits is not None:
            future_log_trans = jax.nn.log_softmax(jnp.asarray(transition_logits), axis=-1)
        elif transition_matrix is None:
            if len(trans_shape) >= 3 and trans_shape[-3] != 1:
                raise ValueError(
                    f"forecast: transition_matrix is time-varying (shape {trans_shape}); pass "
                    "the future transition_matrix=(..., H | 1, K, K)."
                )
            future_log_trans = current_log_trans
        else:
            future_log_trans = safe_log(jnp.asarray(transition_matrix))
        filtered = self.filter(value).filtered_probs[..., -1, :]
        first_trans = (
            future_log_trans if future_log_trans.ndim == 2 else future_log_trans[..., 0, :, :]
        )
        initial = (filtered[..., None, :] @ jnp.exp(first_trans))[..., 0, :]
        if future_log_trans.ndim >= 3 and future_log_trans.shape[-3] > 1:
            future_log_trans = future_log_trans[..., 1:, :, :]
        return initial, future_log_trans

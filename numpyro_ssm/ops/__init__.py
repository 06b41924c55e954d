"""Pure-JAX algorithms for state space models (no NumPyro import)."""

from numpyro_ssm.ops.hmm import (
    HMMPosterior,
    hmm_filter,
    hmm_posterior_mode,
    hmm_posterior_sample,
    hmm_smoother,
)
from numpyro_ssm.ops.kalman import GaussianPosterior, kalman_filter, kalman_log_marginal
from numpyro_ssm.ops.kalman_smoothing import kalman_posterior_sample, kalman_smoother, lgssm_sample
from numpyro_ssm.ops.scan import prefix_scan

__all__ = [
    "GaussianPosterior",
    "HMMPosterior",
    "hmm_filter",
    "hmm_posterior_mode",
    "hmm_posterior_sample",
    "hmm_smoother",
    "kalman_filter",
    "kalman_log_marginal",
    "kalman_posterior_sample",
    "kalman_smoother",
    "lgssm_sample",
    "prefix_scan",
]

"""Pure-JAX algorithms for state space models (no NumPyro import)."""

from numpyro_ssm.ops.hmm import (
    HMMPosterior,
    hmm_filter,
    hmm_posterior_mode,
    hmm_posterior_sample,
    hmm_smoother,
)
from numpyro_ssm.ops.scan import prefix_scan

__all__ = [
    "HMMPosterior",
    "hmm_filter",
    "hmm_posterior_mode",
    "hmm_posterior_sample",
    "hmm_smoother",
    "prefix_scan",
]

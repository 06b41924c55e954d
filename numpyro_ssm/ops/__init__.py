"""Pure-JAX algorithms for state space models (no NumPyro import), one subpackage per family.

- :mod:`numpyro_ssm.ops.hmm`: discrete hidden Markov models.
- :mod:`numpyro_ssm.ops.kalman`: linear-Gaussian state space models.
- :mod:`numpyro_ssm.ops.hsmm`: explicit-duration hidden semi-Markov models.
- :mod:`numpyro_ssm.ops.nonlinear`: nonlinear and non-Gaussian models (Gaussian filters).
- :mod:`numpyro_ssm.ops.switching`: autoregressive and switching linear dynamical systems
  (blocked Gibbs).
- :mod:`numpyro_ssm.ops.particle`: particle filters and smoothers.
- :mod:`numpyro_ssm.ops.scan` (the one scan driver, sequential or associative) and
  :mod:`numpyro_ssm.ops.linalg` (square-root linear algebra) are shared.
"""

from numpyro_ssm.ops.hmm import (
    HMMPosterior,
    hmm_filter,
    hmm_log_marginal,
    hmm_posterior_mode,
    hmm_posterior_sample,
    hmm_smoother,
    stationary_distribution,
)
from numpyro_ssm.ops.hsmm import (
    HSMMPosterior,
    hsmm_filter,
    hsmm_log_marginal,
    hsmm_posterior_mode,
    hsmm_posterior_sample,
    hsmm_smoother,
)
from numpyro_ssm.ops.kalman import (
    GaussianPosterior,
    LGSSMParams,
    diffuse_kalman_filter,
    diffuse_kalman_log_marginal,
    diffuse_kalman_posterior_sample,
    diffuse_kalman_smoother,
    kalman_filter,
    kalman_log_marginal,
    kalman_posterior_sample,
    kalman_smoother,
    lgssm_params,
    lgssm_sample,
)
from numpyro_ssm.ops.nonlinear import (
    GeneralizedGaussianParams,
    NonlinearGaussianParams,
    nonlinear_filter,
    nonlinear_log_marginal,
    nonlinear_posterior_mode,
    nonlinear_posterior_sample,
    nonlinear_smoother,
)
from numpyro_ssm.ops.particle import particle_filter
from numpyro_ssm.ops.scan import prefix_scan

__all__ = [
    "GaussianPosterior",
    "GeneralizedGaussianParams",
    "HMMPosterior",
    "HSMMPosterior",
    "LGSSMParams",
    "diffuse_kalman_filter",
    "diffuse_kalman_log_marginal",
    "diffuse_kalman_posterior_sample",
    "diffuse_kalman_smoother",
    "NonlinearGaussianParams",
    "hmm_filter",
    "hmm_log_marginal",
    "hmm_posterior_mode",
    "hmm_posterior_sample",
    "hmm_smoother",
    "hsmm_filter",
    "hsmm_log_marginal",
    "hsmm_posterior_mode",
    "hsmm_posterior_sample",
    "hsmm_smoother",
    "kalman_filter",
    "kalman_log_marginal",
    "kalman_posterior_sample",
    "kalman_smoother",
    "lgssm_params",
    "lgssm_sample",
    "particle_filter",
    "nonlinear_filter",
    "nonlinear_log_marginal",
    "nonlinear_posterior_mode",
    "nonlinear_posterior_sample",
    "nonlinear_smoother",
    "prefix_scan",
    "stationary_distribution",
]

"""Switching models: autoregressive emissions, AR-to-LDS conversion, conjugate updates, Gibbs.

Modules, one idea each:

- :mod:`~numpyro_ssm.ops.switching.autoregression`: :class:`ARParams`, lags and the ``(T, K)``
  log-likelihoods of K switched vector autoregressions.
- :mod:`~numpyro_ssm.ops.switching.moments`: exact means and variances of an autoregressive
  HMM's observations.
"""

from numpyro_ssm.ops.switching.autoregression import (
    ARParams,
    ar_log_likelihoods,
    ar_params,
    ar_params_from_moseq,
    get_lags,
    lag_matrix,
)
from numpyro_ssm.ops.switching.moments import arhmm_moments, companion_matrices

__all__ = [
    "ARParams",
    "ar_log_likelihoods",
    "ar_params",
    "ar_params_from_moseq",
    "arhmm_moments",
    "companion_matrices",
    "get_lags",
    "lag_matrix",
]

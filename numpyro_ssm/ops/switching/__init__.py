"""Switching models: autoregressive emissions, AR-to-LDS conversion, conjugate updates, Gibbs.

Modules, one idea each:

- :mod:`~numpyro_ssm.ops.switching.autoregression`: :class:`ARParams`, lags and the ``(T, K)``
  log-likelihoods of K switched vector autoregressions.
- :mod:`~numpyro_ssm.ops.switching.moments`: exact means and variances of an autoregressive
  HMM's observations.
- :mod:`~numpyro_ssm.ops.switching.companion`: the exact companion-form LGSSM of a switching
  autoregression (zero noise on the shift block).
- :mod:`~numpyro_ssm.ops.switching.mniw`: the matrix-normal inverse-Wishart update of the AR
  parameters.
- :mod:`~numpyro_ssm.ops.switching.gibbs`: blocked Gibbs sweeps of the ARHMM and of the SLDS.
- :mod:`~numpyro_ssm.ops.switching.segments`: long recordings as overlapping segments, each
  frame counted once, and back.
- :mod:`~numpyro_ssm.ops.switching.sharding`: a batch of sequences split over devices.
"""

from numpyro_ssm.ops.switching.autoregression import (
    ARParams,
    ar_log_likelihoods,
    ar_params,
    ar_params_from_moseq,
    get_lags,
    lag_matrix,
    lagged_step_mask,
)
from numpyro_ssm.ops.switching.companion import ar_to_lds, companion_matrices, lds_to_latents
from numpyro_ssm.ops.switching.gibbs import (
    ARHMMGibbsState,
    SLDSEmission,
    SLDSGibbsState,
    TransitionPrior,
    ar_prior,
    arhmm_gibbs_step,
    init_arhmm_gibbs,
    init_slds_gibbs,
    resample_ar,
    resample_discrete,
    resample_latents,
    resample_transitions,
    slds_gibbs_step,
)
from numpyro_ssm.ops.switching.mniw import (
    MNIWParams,
    RegressionStats,
    grouped_regression_stats,
    mniw_posterior,
    regression_stats,
    sample_mniw,
)
from numpyro_ssm.ops.switching.moments import arhmm_moments
from numpyro_ssm.ops.switching.segments import Segments, merge_segments, split_into_segments
from numpyro_ssm.ops.switching.sharding import sequence_mesh, shard_sequences

__all__ = [
    "ARHMMGibbsState",
    "ARParams",
    "MNIWParams",
    "RegressionStats",
    "SLDSEmission",
    "SLDSGibbsState",
    "Segments",
    "TransitionPrior",
    "ar_log_likelihoods",
    "ar_params",
    "ar_params_from_moseq",
    "ar_prior",
    "ar_to_lds",
    "arhmm_gibbs_step",
    "arhmm_moments",
    "companion_matrices",
    "get_lags",
    "grouped_regression_stats",
    "init_arhmm_gibbs",
    "init_slds_gibbs",
    "lag_matrix",
    "lagged_step_mask",
    "lds_to_latents",
    "merge_segments",
    "mniw_posterior",
    "regression_stats",
    "resample_ar",
    "resample_discrete",
    "resample_latents",
    "resample_transitions",
    "sample_mniw",
    "sequence_mesh",
    "shard_sequences",
    "slds_gibbs_step",
    "split_into_segments",
]

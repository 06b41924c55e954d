"""Simulation-based calibration (SBC): is the whole posterior right, not just the likelihood?

:func:`run_sbc` draws parameters from the prior, simulates data with the model's own
``sample``, fits each data set by NUTS and ranks every prior draw among its posterior draws
(Talts, Betancourt, Simpson, Vehtari & Gelman 2018, *Validating Bayesian inference algorithms
with simulation-based calibration*). The ranks are uniform when the fit is calibrated;
:func:`sbc_summary` tests that (chi-square and the simultaneous ECDF test of Säilynoja, Bürkner &
Vehtari 2022) and :func:`plot_sbc_ranks` shows it. See ``docs/calibration.md``.
"""

from numpyro_ssm.infer.sbc._plot import plot_sbc_ranks, sbc_summary, scalar_ranks
from numpyro_ssm.infer.sbc._run import SBCResult, run_sbc
from numpyro_ssm.infer.sbc._uniformity import (
    RankUniformity,
    chi2_rank_test,
    ecdf_envelope,
    ecdf_rank_test,
    rank_uniformity,
)

__all__ = [
    "RankUniformity",
    "SBCResult",
    "chi2_rank_test",
    "ecdf_envelope",
    "ecdf_rank_test",
    "plot_sbc_ranks",
    "rank_uniformity",
    "run_sbc",
    "sbc_summary",
    "scalar_ranks",
]

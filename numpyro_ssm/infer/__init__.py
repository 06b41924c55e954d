"""Bayesian-workflow glue: latent paths, per-step log-likelihoods, ArviZ, BlackJAX, LFO-CV, SBC.

Every function here talks to the state space models through the protocol of
:class:`numpyro_ssm.distributions.StateSpaceModel` and names no model class, so a new model
family works with all of them unchanged. ArviZ/xarray (the ``arviz`` extra) and BlackJAX (the
``blackjax`` extra) are imported only inside the functions that need them, so
``import numpyro_ssm`` never requires them.
"""

from numpyro_ssm.infer.arviz import to_inference_data
from numpyro_ssm.infer.blackjax import BlackJAXResult, run_blackjax
from numpyro_ssm.infer.forecasting import ForecastResult, forecast
from numpyro_ssm.infer.gibbs import ffbs_gibbs_fn
from numpyro_ssm.infer.latents import posterior_latents
from numpyro_ssm.infer.lfo import LFOResult, exact_lfo, past_model, psis_lfo
from numpyro_ssm.infer.loglik import pointwise_log_likelihood
from numpyro_ssm.infer.sbc import (
    RankUniformity,
    SBCResult,
    ecdf_envelope,
    plot_sbc_ranks,
    rank_uniformity,
    run_sbc,
    sbc_summary,
)

__all__ = [
    "BlackJAXResult",
    "ForecastResult",
    "LFOResult",
    "RankUniformity",
    "SBCResult",
    "ecdf_envelope",
    "exact_lfo",
    "ffbs_gibbs_fn",
    "forecast",
    "past_model",
    "pointwise_log_likelihood",
    "posterior_latents",
    "plot_sbc_ranks",
    "psis_lfo",
    "rank_uniformity",
    "run_blackjax",
    "run_sbc",
    "sbc_summary",
    "to_inference_data",
]

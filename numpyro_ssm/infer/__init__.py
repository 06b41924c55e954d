"""Bayesian-workflow glue: latent paths, per-step log-likelihoods, ArviZ, BlackJAX, LFO-CV.

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

__all__ = [
    "BlackJAXResult",
    "ForecastResult",
    "LFOResult",
    "exact_lfo",
    "ffbs_gibbs_fn",
    "forecast",
    "past_model",
    "pointwise_log_likelihood",
    "posterior_latents",
    "psis_lfo",
    "run_blackjax",
    "to_inference_data",
]

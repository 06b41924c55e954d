"""Gibbs steps for ``numpyro.infer.HMCGibbs`` and plain-JAX Gibbs sweeps, one module per step."""

from numpyro_ssm.infer.gibbs.compose import compose_gibbs
from numpyro_ssm.infer.gibbs.ffbs import ffbs_gibbs_fn
from numpyro_ssm.infer.gibbs.switching import (
    ar_step,
    arhmm_regression,
    latents_step,
    path_step,
    slds_regression,
    transition_step,
)

__all__ = [
    "ar_step",
    "arhmm_regression",
    "compose_gibbs",
    "ffbs_gibbs_fn",
    "latents_step",
    "path_step",
    "slds_regression",
    "transition_step",
]

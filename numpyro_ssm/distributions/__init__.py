"""NumPyro distributions over whole sequences, thin adapters over :mod:`numpyro_ssm.ops`.

Every one of them implements the protocol of :class:`StateSpaceModel`, which is all that
:mod:`numpyro_ssm.infer` asks of a model.
"""

from numpyro_ssm.distributions._ssm import (
    LATENT_METHODS,
    SSMLatents,
    StateSpaceModel,
    is_state_space_model,
)
from numpyro_ssm.distributions.arhmm import AutoregressiveHMM
from numpyro_ssm.distributions.generalized import GeneralizedGaussianSSM
from numpyro_ssm.distributions.hmm import DiscreteHMM
from numpyro_ssm.distributions.hsmm import DiscreteHSMM
from numpyro_ssm.distributions.lgssm import LinearGaussianSSM
from numpyro_ssm.distributions.markov_chain import MarkovChain
from numpyro_ssm.distributions.mean_switching import mean_switching_autoregression
from numpyro_ssm.distributions.nonlinear import NonlinearGaussianSSM
from numpyro_ssm.distributions.particle import ParticleSSM
from numpyro_ssm.distributions.switching_ar import SwitchingAutoregression
from numpyro_ssm.distributions.transition_priors import StickyDirichlet

__all__ = [
    "LATENT_METHODS",
    "AutoregressiveHMM",
    "DiscreteHMM",
    "DiscreteHSMM",
    "LinearGaussianSSM",
    "GeneralizedGaussianSSM",
    "MarkovChain",
    "NonlinearGaussianSSM",
    "ParticleSSM",
    "SSMLatents",
    "StateSpaceModel",
    "StickyDirichlet",
    "SwitchingAutoregression",
    "is_state_space_model",
    "mean_switching_autoregression",
]

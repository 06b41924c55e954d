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
from numpyro_ssm.distributions.generalized import GeneralizedGaussianSSM
from numpyro_ssm.distributions.hmm import DiscreteHMM
from numpyro_ssm.distributions.lgssm import LinearGaussianSSM
from numpyro_ssm.distributions.nonlinear import NonlinearGaussianSSM

__all__ = [
    "LATENT_METHODS",
    "DiscreteHMM",
    "GeneralizedGaussianSSM",
    "LinearGaussianSSM",
    "NonlinearGaussianSSM",
    "SSMLatents",
    "StateSpaceModel",
    "is_state_space_model",
]

"""numpyro_ssm: state space models as first-class NumPyro distributions."""

from numpyro_ssm import infer, ops
from numpyro_ssm._padding import pad_sequences, unpad
from numpyro_ssm.distributions import (
    AutoregressiveHMM,
    DiscreteHMM,
    DiscreteHSMM,
    GeneralizedGaussianSSM,
    LinearGaussianSSM,
    MarkovChain,
    NonlinearGaussianSSM,
    ParticleSSM,
    StickyDirichlet,
    SwitchingAutoregression,
)

__all__ = [
    "AutoregressiveHMM",
    "DiscreteHMM",
    "DiscreteHSMM",
    "GeneralizedGaussianSSM",
    "LinearGaussianSSM",
    "MarkovChain",
    "NonlinearGaussianSSM",
    "ParticleSSM",
    "StickyDirichlet",
    "SwitchingAutoregression",
    "infer",
    "ops",
    "pad_sequences",
    "unpad",
]
__version__ = "0.1.0.dev0"

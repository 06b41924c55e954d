"""numpyro_ssm: state space models as first-class NumPyro distributions."""

from numpyro_ssm import infer, ops
from numpyro_ssm._padding import pad_sequences, unpad
from numpyro_ssm.distributions import (
    DiscreteHMM,
    GeneralizedGaussianSSM,
    LinearGaussianSSM,
    NonlinearGaussianSSM,
)

__all__ = [
    "DiscreteHMM",
    "GeneralizedGaussianSSM",
    "LinearGaussianSSM",
    "NonlinearGaussianSSM",
    "infer",
    "ops",
    "pad_sequences",
    "unpad",
]
__version__ = "0.1.0.dev0"

"""NumPyro distributions over whole sequences, thin adapters over :mod:`numpyro_ssm.ops`."""

from numpyro_ssm.distributions.hmm import DiscreteHMM
from numpyro_ssm.distributions.lgssm import LinearGaussianSSM

__all__ = ["DiscreteHMM", "LinearGaussianSSM"]

"""NumPyro distributions over whole sequences, thin adapters over :mod:`numpyro_ssm.ops`."""

from numpyro_ssm.distributions.hmm import DiscreteHMM

__all__ = ["DiscreteHMM"]

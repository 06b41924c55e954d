"""Gibbs steps for ``numpyro.infer.HMCGibbs`` and plain-JAX Gibbs sweeps, one module per step."""

from numpyro_ssm.infer.gibbs.ffbs import ffbs_gibbs_fn

__all__ = ["ffbs_gibbs_fn"]

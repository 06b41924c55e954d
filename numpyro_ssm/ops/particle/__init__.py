r"""Particle filters and smoothers for state space models no Gaussian filter can handle (pure JAX).

The model is given as functions of one particle (:mod:`~numpyro_ssm.ops.particle.model`:
:class:`ParticleModel`, :class:`Kernel`, :class:`ParticleProposal`); the filters ``vmap`` them
over ``N`` particles and ``lax.scan`` over ``T`` steps, with a fixed particle count, so that
everything jits, ``vmap``\ s over sequences and shards over devices along the particle axis.

Modules, one idea each:

- :mod:`~numpyro_ssm.ops.particle.resampling`: multinomial, stratified, systematic and
  residual resampling as maps of uniforms, and the effective sample size.
- :mod:`~numpyro_ssm.ops.particle.filtering`: :func:`particle_filter` (bootstrap, guided,
  auxiliary; adaptive resampling; the unbiased likelihood estimate; score or soft-resampling
  gradients; :class:`ParticleNoise` for correlated pseudo-marginal moves).
- :mod:`~numpyro_ssm.ops.particle.smoothing`: ancestral paths, backward simulation (FFBSi)
  and the marginal backward smoother (FFBSm), ``O(N^2 T)``, for small problems.
"""

from numpyro_ssm.ops.particle.filtering import (
    ParticleFilterResult,
    ParticleNoise,
    draw_particle_noise,
    particle_filter,
    weighted_moments,
)
from numpyro_ssm.ops.particle.model import Kernel, ParticleModel, ParticleProposal
from numpyro_ssm.ops.particle.resampling import (
    RESAMPLERS,
    Resampler,
    effective_sample_size,
    multinomial_resample,
    normalized_weights,
    residual_resample,
    stratified_resample,
    systematic_resample,
)
from numpyro_ssm.ops.particle.smoothing import (
    ParticleSmootherResult,
    ancestral_paths,
    particle_backward_sample,
    particle_smoother,
)

__all__ = [
    "RESAMPLERS",
    "Kernel",
    "ParticleFilterResult",
    "ParticleModel",
    "ParticleNoise",
    "ParticleProposal",
    "ParticleSmootherResult",
    "Resampler",
    "ancestral_paths",
    "draw_particle_noise",
    "effective_sample_size",
    "multinomial_resample",
    "normalized_weights",
    "particle_backward_sample",
    "particle_filter",
    "particle_smoother",
    "residual_resample",
    "stratified_resample",
    "systematic_resample",
    "weighted_moments",
]

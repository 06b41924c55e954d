"""Bad input to the particle filter: a clear error naming the argument, raised at trace time."""

import jax
import jax.numpy as jnp
import pytest
from particle_cases import lgssm_case, lgssm_model, lgssm_optimal_proposal

from numpyro_ssm.ops.particle import Kernel, ParticleNoise, ParticleProposal, particle_filter

PARAMS, Y = lgssm_case(0, T=5)


def trace(**overrides):
    """Trace the filter (no computation) with some arguments replaced."""
    kwargs = dict(key=jax.random.key(0), model=lgssm_model(), params=PARAMS, observations=Y)
    kwargs["num_particles"] = 8
    kwargs.update(overrides)
    return jax.eval_shape(lambda: particle_filter(**kwargs))


@pytest.mark.parametrize("num_particles", [0, -3, 2.5, True, "10"])
def test_num_particles(num_particles):
    with pytest.raises(ValueError, match="num_particles must be a positive Python int"):
        trace(num_particles=num_particles)


def test_proposal_of_the_wrong_shape():
    proposal, _ = lgssm_optimal_proposal()
    wide = proposal.transition._replace(from_noise=lambda eps, z, y, u, p: jnp.concatenate([z, z]))
    with pytest.raises(ValueError, match=r"proposal.transition draws states of shape \(2,\)"):
        trace(proposal=ParticleProposal(wide, proposal.initial))
    integer = proposal.initial._replace(from_noise=lambda eps, y, u, p: jnp.zeros(1, int))
    with pytest.raises(ValueError, match="proposal.initial draws states of dtype int"):
        trace(proposal=ParticleProposal(proposal.transition, integer))


def test_emission_that_is_not_a_scalar():
    model = lgssm_model()._replace(emission_log_prob=lambda y, z, u, p: jnp.zeros(3))
    with pytest.raises(ValueError, match=r"emission_log_prob must return one scalar.*\(3,\)"):
        trace(model=model)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(resampling="stratifed"), ValueError, "resampling must be one of"),
        (dict(ess_threshold=1.5), ValueError, "ess_threshold"),
        (dict(gradient="reinforce"), ValueError, "gradient must be one of"),
        (dict(obs_mask=jnp.ones(4, bool)), ValueError, r"obs_mask must be a bool array of shape"),
        (dict(obs_mask=jnp.ones(5)), ValueError, "obs_mask must be a bool"),
        (dict(inputs=jnp.zeros((4, 2))), ValueError, r"leaf of shape \(4, 2\)"),
        (dict(observations=jnp.zeros(())), ValueError, "observations must have shape"),
        (dict(model=(1, 2, 3)), TypeError, "model must be a ParticleModel"),
        (dict(proposal=Kernel(None, None)), TypeError, "proposal must be a ParticleProposal"),
        (
            dict(key=ParticleNoise(jnp.zeros((5, 8, 2)), jnp.zeros((5, 8)))),
            ValueError,
            r"ParticleNoise must have propagation \(5, 8, 1\)",
        ),
    ],
)
def test_bad_options(overrides, error, match):
    with pytest.raises(error, match=match):
        trace(**overrides)


def test_noise_needs_from_noise():
    model = lgssm_model()
    model = model._replace(transition=model.transition._replace(from_noise=None))
    noise = ParticleNoise(jnp.zeros((5, 8, 1)), jnp.zeros((5, 8)))
    with pytest.raises(ValueError, match="correlated noise needs transition.from_noise"):
        trace(model=model, key=noise)

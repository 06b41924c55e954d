"""NumPyro distributions as the per-particle functions of :mod:`numpyro_ssm.ops.particle`.

The user states a model with ``transition_fn(z, u, params)`` and ``emission_fn(z, u, params)``
returning NumPyro distributions; this module turns them into :class:`~numpyro_ssm.ops.particle.
Kernel` s (sampler, log-density, and ``from_noise`` where the distribution has a
reparameterization by standard normal noise), checks what they return at trace time, and
builds the :class:`~numpyro_ssm.ops.particle.ParticleModel` the filters take.

A distribution's whole sample (batch and event axes) is one state or one observation: its
log-density is summed over its batch axes, as if ``.to_event()`` had been called.
"""

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import ndtr
from numpyro.distributions import Distribution, constraints

from numpyro_ssm.ops.particle import Kernel, ParticleModel, ParticleProposal

__all__ = ["StepFunctions", "from_noise", "probe_distribution"]


def _categorical_from_noise(probs, eps):
    cumulative = jnp.cumsum(probs, axis=-1)
    uniforms = ndtr(eps)[..., None] * cumulative[..., -1:]
    return jnp.minimum(jnp.sum(uniforms >= cumulative, axis=-1), probs.shape[-1] - 1)


def from_noise(d, eps):
    """A draw of ``d`` as a deterministic map of standard normal ``eps`` of its sample shape.

    Location-scale families use ``loc + scale * eps`` (Normal, MultivariateNormal and their
    ``Independent``, ``expand`` and ``TransformedDistribution`` wrappers), categorical
    distributions the inverse CDF at ``Φ(eps)``, and every other distribution its ``icdf`` at
    ``Φ(eps)`` where NumPyro implements one.

    Args:
        d: a NumPyro distribution.
        eps: standard normal noise of shape ``d.batch_shape + d.event_shape``.

    Returns:
        A draw of shape ``d.batch_shape + d.event_shape``.

    Raises:
        NotImplementedError: when ``d`` has no such map.
    """
    if isinstance(d, dist.Normal):
        return d.loc + d.scale * eps
    if isinstance(d, dist.MultivariateNormal):
        return d.loc + jnp.einsum("...ij,...j->...i", d.scale_tril, eps)
    if isinstance(d, dist.Independent | dist.ExpandedDistribution):
        return from_noise(d.base_dist, eps)
    if isinstance(d, dist.TransformedDistribution):
        x = from_noise(d.base_dist, eps)
        for transform in d.transforms:
            x = transform(x)
        return x
    if isinstance(d, dist.CategoricalProbs | dist.CategoricalLogits):
        return _categorical_from_noise(d.probs, eps)
    return d.icdf(ndtr(eps))


def _depends_on_arrays(constraint):
    """Whether a constraint holds arrays (an interval's bounds, say), directly or nested."""
    for value in vars(constraint).values():
        if isinstance(value, constraints.Constraint):
            if _depends_on_arrays(value):
                return True
        elif any(isinstance(leaf, jax.Array | jax.core.Tracer) for leaf in jax.tree.leaves(value)):
            return True
    return False


def _sum_batch(log_prob):
    return jnp.sum(log_prob)


def probe_distribution(fn, args, name, owner, expected_shape=None):
    """Call ``fn(*args)`` abstractly and check that it returns a distribution of the right shape.

    Args:
        fn: a function returning a NumPyro distribution.
        args: its arguments (arrays, ``jax.ShapeDtypeStruct`` s or pytrees of them).
        name: the argument ``fn`` came from, for the messages.
        owner: the distribution's name, for the messages.
        expected_shape: the sample shape the distribution must have, or None.

    Returns:
        ``(sample_shape, event_shape, support, has_noise_map)`` of the returned distribution;
        ``support`` is None when it depends on the parameters.

    Raises:
        TypeError: when ``fn`` does not return a NumPyro distribution.
        ValueError: when its sample shape is not ``expected_shape``.
    """
    info = {}

    def run(*args):
        d = fn(*args)
        if not isinstance(d, Distribution):
            raise TypeError(
                f"{owner}: {name} must return a numpyro Distribution, got {type(d).__name__}."
            )
        shape = tuple(d.batch_shape) + tuple(d.event_shape)
        if expected_shape is not None and shape != tuple(expected_shape):
            raise ValueError(
                f"{owner}: {name} returns a distribution of batch_shape {d.batch_shape} and "
                f"event_shape {d.event_shape}, so its draws have shape {shape}; the state "
                f"(from initial_dist) has shape {tuple(expected_shape)}."
            )
        info.update(shape=shape, event_shape=tuple(d.event_shape))
        info["support"] = None if _depends_on_arrays(d.support) else d.support
        try:
            jax.eval_shape(lambda: from_noise(d, jnp.zeros(shape)))
            info["noise"] = True
        except (NotImplementedError, AttributeError, TypeError):
            info["noise"] = False
        return ()

    jax.eval_shape(run, *args)
    return info["shape"], info["event_shape"], info["support"], info["noise"]


def _kernel(make_dist, has_noise):
    """A :class:`Kernel` from ``make_dist(*cond) -> Distribution``."""

    def sample(key, *cond):
        return make_dist(*cond).sample(key)

    def log_prob(z, *cond):
        return _sum_batch(make_dist(*cond).log_prob(z))

    def noise_map(eps, *cond):
        return from_noise(make_dist(*cond), eps)

    return Kernel(sample, log_prob, noise_map if has_noise else None)


class StepFunctions:
    """The ops-level model and proposal of a :class:`~numpyro_ssm.distributions.ParticleSSM`.

    The ops' inputs are ``(user inputs, entry mask)``: the mask of observed entries of ``y_t``
    rides along with ``u_t`` so that a factorized emission drops missing entries one by one.

    Args:
        initial_dist: the distribution of ``z_1``.
        transition_fn: ``(z, u, params) -> `` distribution of ``z_t`` given ``z_{t-1} = z``.
        emission_fn: ``(z, u, params) -> `` distribution of ``y_t`` given ``z_t = z``.
        proposal_fn: ``(z, y, u, params) -> `` proposal of ``z_t``, or None.
        initial_proposal_fn: ``(y, u, params) -> `` proposal of ``z_1``, or None.
        noise: dict kernel name -> whether it has a ``from_noise`` map.
        factorized: whether the emission's entries are independent (event shape ``()``).
    """

    def __init__(
        self,
        initial_dist,
        transition_fn,
        emission_fn,
        proposal_fn,
        initial_proposal_fn,
        noise,
        factorized,
    ):
        self.initial_dist = initial_dist
        self.transition_fn = transition_fn
        self.emission_fn = emission_fn
        self.proposal_fn = proposal_fn
        self.initial_proposal_fn = initial_proposal_fn
        self.noise = noise
        self.factorized = factorized

    def model(self) -> ParticleModel:
        """The :class:`~numpyro_ssm.ops.particle.ParticleModel`."""
        initial_dist, transition_fn, emission_fn = (
            self.initial_dist,
            self.transition_fn,
            self.emission_fn,
        )

        def emission_log_prob(y, z, u, params):
            user_inputs, entry_mask = u
            log_prob = emission_fn(z, user_inputs, params).log_prob(y)
            if self.factorized:
                log_prob = jnp.where(entry_mask, log_prob, 0.0)
            return _sum_batch(log_prob)

        return ParticleModel(
            initial=_kernel(lambda u, params: initial_dist, self.noise["initial_dist"]),
            transition=_kernel(
                lambda z, u, params: transition_fn(z, u[0], params), self.noise["transition_fn"]
            ),
            emission_log_prob=emission_log_prob,
        )

    def proposal(self) -> ParticleProposal | None:
        """The :class:`~numpyro_ssm.ops.particle.ParticleProposal`, or None (bootstrap)."""
        if self.proposal_fn is None and self.initial_proposal_fn is None:
            return None
        proposal_fn, initial_proposal_fn = self.proposal_fn, self.initial_proposal_fn
        if proposal_fn is None:
            transition = self.model().transition
            transition = Kernel(
                lambda key, z, y, u, p: transition.sample(key, z, u, p),
                lambda z_next, z, y, u, p: transition.log_prob(z_next, z, u, p),
                None
                if transition.from_noise is None
                else lambda eps, z, y, u, p: transition.from_noise(eps, z, u, p),
            )
        else:
            transition = _kernel(
                lambda z, y, u, params: proposal_fn(z, y, u[0], params), self.noise["proposal_fn"]
            )
        initial = None
        if initial_proposal_fn is not None:
            initial = _kernel(
                lambda y, u, params: initial_proposal_fn(y, u[0], params),
                self.noise["initial_proposal_fn"],
            )
        return ParticleProposal(transition, initial)

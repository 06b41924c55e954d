r"""A state space model as functions of one particle: what the particle filters take.

The model, with ``T`` steps, inputs ``u_t`` and parameters ``θ`` (any pytree):

.. math::

    z_1 \sim \mu(\cdot \mid u_1, θ), \qquad
    z_t \mid z_{t-1} \sim f(\cdot \mid z_{t-1}, u_t, θ), \qquad
    y_t \mid z_t \sim g(\cdot \mid z_t, u_t, θ).

The input ``u_t`` of step ``t`` enters both the transition into ``z_t`` and the emission of
``y_t`` (as in dynamax); ``u_1`` enters the initial distribution and the first emission.

Every function here acts on **one** particle ``z`` (an array of the state shape ``S``, float
or int); the filters ``vmap`` them over particles. A :class:`Kernel` is one conditional
distribution, given by a sampler and a log-density, and optionally by ``from_noise``: the same
sampler as a deterministic map of standard normal noise of the state's shape (``loc + scale *
eps`` for a Gaussian, an inverse CDF of ``Φ(eps)`` otherwise). With ``from_noise`` the filters
draw all particles' noise in one call instead of one key per particle, and the correlated
pseudo-marginal sampler can move that noise smoothly.

The NumPyro adapter (:class:`numpyro_ssm.distributions.ParticleSSM`) builds these functions
from ``transition_fn(z, u, params)`` and ``emission_fn(z, u, params)`` that return NumPyro
distributions.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Kernel", "ParticleModel", "ParticleProposal"]


class Kernel(NamedTuple):
    """One conditional distribution of a particle, given ``*cond`` (see each use for ``cond``).

    Attributes:
        sample: ``(key, *cond) -> z``, one draw of the state shape ``S``.
        log_prob: ``(z, *cond) -> ()``, its log-density at ``z``.
        from_noise: ``(eps, *cond) -> z`` with ``eps ~ N(0, I)`` of shape ``S`` (float), a
            draw with the law of ``sample``; or None when the distribution has no such map.
    """

    sample: Callable
    log_prob: Callable
    from_noise: Callable | None = None


class ParticleModel(NamedTuple):
    """A state space model for the particle filters (see the module docstring).

    Attributes:
        initial: the :class:`Kernel` of ``z_1``, ``cond = (u_1, params)``.
        transition: the :class:`Kernel` of ``z_t | z_{t-1}``, ``cond = (z_{t-1}, u_t, params)``.
        emission_log_prob: ``(y_t, z_t, u_t, params) -> ()``, ``log g(y_t | z_t)``.
    """

    initial: Kernel
    transition: Kernel
    emission_log_prob: Callable


class ParticleProposal(NamedTuple):
    """A proposal for the guided filter, ``q(z_t | z_{t-1}, y_t)`` instead of the transition.

    Attributes:
        transition: the :class:`Kernel` of ``q(z_t | z_{t-1}, y_t)``,
            ``cond = (z_{t-1}, y_t, u_t, params)``.
        initial: the :class:`Kernel` of ``q(z_1 | y_1)``, ``cond = (y_1, u_1, params)``; None
            proposes ``z_1`` from the model's initial distribution.
    """

    transition: Kernel
    initial: Kernel | None = None


def _check_kernel(kernel, name, owner):
    if not isinstance(kernel, Kernel):
        raise TypeError(
            f"{owner}: {name} must be a Kernel(sample, log_prob, from_noise=None), got "
            f"{type(kernel).__name__}."
        )


def check_model(model, proposal, owner):
    """Check the types of ``model`` and ``proposal``.

    Args:
        model: a :class:`ParticleModel`.
        proposal: a :class:`ParticleProposal` or None.
        owner: the calling function's name, for the messages.

    Raises:
        TypeError: when either has the wrong type or a field is not a :class:`Kernel`.
    """
    if not isinstance(model, ParticleModel):
        raise TypeError(f"{owner}: model must be a ParticleModel, got {type(model).__name__}.")
    _check_kernel(model.initial, "model.initial", owner)
    _check_kernel(model.transition, "model.transition", owner)
    if not callable(model.emission_log_prob):
        raise TypeError(f"{owner}: model.emission_log_prob must be callable.")
    if proposal is not None:
        if not isinstance(proposal, ParticleProposal):
            raise TypeError(
                f"{owner}: proposal must be a ParticleProposal or None, got "
                f"{type(proposal).__name__}."
            )
        _check_kernel(proposal.transition, "proposal.transition", owner)
        if proposal.initial is not None:
            _check_kernel(proposal.initial, "proposal.initial", owner)


def state_struct(model, first_input, params) -> Any:
    """The shape and dtype of one state, from the initial distribution (no computation).

    Args:
        model: the :class:`ParticleModel`.
        first_input: ``u_1`` (a pytree slice of the inputs, or None).
        params: the parameters.

    Returns:
        A ``jax.ShapeDtypeStruct``.
    """
    return jax.eval_shape(model.initial.sample, jax.random.key(0), first_input, params)


def check_draw_shape(draw, expected, name, owner):
    """Raise when a proposed state does not have the state's shape and dtype kind.

    Args:
        draw: a proposed state (array or ShapeDtypeStruct).
        expected: the state's ``ShapeDtypeStruct``.
        name: the argument that proposed it, for the message.
        owner: the calling function's name, for the message.

    Raises:
        ValueError: for a shape mismatch, or a float state where an integer one is expected
            (and the converse).
    """
    shape = jnp.shape(draw)
    if shape != expected.shape:
        raise ValueError(
            f"{owner}: {name} draws states of shape {shape}, but the state (from the initial "
            f"distribution) has shape {expected.shape}."
        )
    kind = jnp.issubdtype(draw.dtype, jnp.inexact)
    if kind != jnp.issubdtype(expected.dtype, jnp.inexact):
        raise ValueError(
            f"{owner}: {name} draws states of dtype {draw.dtype}, but the state (from the "
            f"initial distribution) has dtype {expected.dtype}."
        )

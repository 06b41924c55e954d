r"""The protocol every sequence distribution speaks: :mod:`numpyro_ssm.infer` names no model.

A state space model family joins the workflow tools (latent paths, per-step log-likelihoods,
ArviZ, BlackJAX, LFO-CV, forecasts, sharded runs) by subclassing :class:`StateSpaceModel` and
implementing its methods; nothing under ``infer/`` changes. ``infer`` recognizes a site by
duck typing (:func:`is_state_space_model`), so subclassing is the convenient route, not a
requirement.

What ``infer`` asks of a model, for observations ``value`` of shape ``batch_shape + (T,) + E``:

- :meth:`~StateSpaceModel.step_mask`: which time steps count in the likelihood, ``batch + (T,)``
  bool. Computed by the family in one place, used by its own ``log_prob`` and by ``infer``.
- :meth:`~StateSpaceModel.log_likelihood_increments`: ``log p(y_t | y_{1:t-1})``, ``batch +
  (T,)``, zero where the step does not count; they sum to ``log_prob(value)``.
- :meth:`~StateSpaceModel.latents`: the increments and any of the posterior summaries
  ``"smooth"``, ``"sample"``, ``"mode"`` (the ones in :attr:`~StateSpaceModel.latent_methods`)
  from as few passes over the data as the family can manage.
- :meth:`~StateSpaceModel.latent_dims`: the names and dims of those summaries, without
  computing them.
- :meth:`~StateSpaceModel.forecast`: the distribution of the next ``num_steps`` observations.

The helpers users call directly (``filter``, ``smooth``, ``sample_posterior``,
``posterior_mode``) are part of the protocol too, with family-specific return types.

**Latent names.** ``latents`` returns, per method, a dict *short name -> array* whose arrays have
``batch_shape`` leading and then the dims :meth:`~StateSpaceModel.latent_dims` gives (which
start with ``"time"``). The empty short name ``""`` is "the path itself". ``infer`` names the
ArviZ variable of site ``y`` as ``y_<prefix>[_<short name>]`` with the prefixes
``smoothed``, ``posterior_sample`` and ``posterior_mode``: a discrete HMM's ``{"probs": ...}``
from ``"smooth"`` becomes ``y_smoothed_probs``, its ``{"": path}`` from ``"sample"`` becomes
``y_posterior_sample``, a Gaussian model's ``{"means", "covariances"}`` become
``y_smoothed_means`` and ``y_smoothed_covariances``. A family with several latent processes (a
switching model) uses several short names (``{"discrete": z, "continuous": x}``).
"""

from typing import NamedTuple

import jax
from numpyro.distributions import Distribution

__all__ = ["LATENT_METHODS", "SSMLatents", "StateSpaceModel", "is_state_space_model"]

LATENT_METHODS = ("smooth", "sample", "mode")

_PROTOCOL = ("step_mask", "log_likelihood_increments", "latents", "latent_dims", "forecast")


class SSMLatents(NamedTuple):
    """What :meth:`StateSpaceModel.latents` returns.

    Attributes:
        log_likelihood_increments: shape ``batch + (T,)``, ``log p(y_t | y_{1:t-1})``, zero
            where :meth:`StateSpaceModel.step_mask` is False.
        latents: method (``"smooth"``, ``"sample"``, ``"mode"``) -> dict short name -> array of
            shape ``batch + dims`` (see the module docstring).
    """

    log_likelihood_increments: jax.Array
    latents: dict


def is_state_space_model(fn) -> bool:
    """Whether ``fn`` is a NumPyro distribution that implements the SSM protocol.

    Args:
        fn: any object, usually the distribution of a sample site.

    Returns:
        True for instances of :class:`StateSpaceModel` and for any distribution with the
        protocol's methods.
    """
    return isinstance(fn, Distribution) and all(callable(getattr(fn, m, None)) for m in _PROTOCOL)


class StateSpaceModel(Distribution):
    """Base class of the sequence distributions: the protocol :mod:`numpyro_ssm.infer` uses.

    A subclass sets NumPyro's usual class attributes (``arg_constraints``, ``support``,
    ``pytree_data_fields``, ...) and implements the methods below. ``event_shape`` is
    ``(T,) + E``.
    """

    #: the posterior summaries :meth:`latents` can compute, a subset of ``LATENT_METHODS``
    latent_methods: tuple = LATENT_METHODS

    def step_mask(self, value) -> jax.Array:
        """Which time steps of ``value`` count in the likelihood.

        Args:
            value: observations, shape ``batch + (T,) + E``.

        Returns:
            bool array of shape ``batch_shape + (T,)`` (``batch`` broadcast with the
            distribution's batch shape).
        """
        raise NotImplementedError

    def log_likelihood_increments(self, value) -> jax.Array:
        """``log p(y_t | y_{1:t-1})`` for every step, zero where a step does not count.

        Args:
            value: observations, shape ``batch + (T,) + E``.

        Returns:
            Shape ``batch_shape + (T,)``; the sum over time is ``log_prob(value)``.
        """
        return self.filter(value).log_likelihood_increments

    def latent_dims(self, method: str) -> dict:
        """The dims of :meth:`latents`' outputs for ``method``, after the batch axes.

        Args:
            method: one of :attr:`latent_methods`.

        Returns:
            dict short name -> tuple of dim names, the first being ``"time"``.
        """
        raise NotImplementedError

    def latents(self, value, methods=(), key=None) -> SSMLatents:
        """The per-step log-likelihood increments and the posterior summaries ``methods``.

        A family computes them from as few passes as it can (a smoother's pass also gives the
        increments; posterior draws reuse the filter).

        Args:
            value: observations, shape ``batch + (T,) + E``.
            methods: a tuple of methods from :attr:`latent_methods`.
            key: a ``jax.random`` key, required when ``"sample"`` is in ``methods``.

        Returns:
            An :class:`SSMLatents`.
        """
        raise NotImplementedError

    def filter(self, value):
        """Filtered posterior quantities; the result has ``log_likelihood_increments``."""
        raise NotImplementedError

    def smooth(self, value):
        """Smoothed posterior quantities given all of ``value``."""
        raise NotImplementedError

    def sample_posterior(self, key, value, sample_shape=()):
        """Joint draws of the latent path given ``value``."""
        raise NotImplementedError

    def posterior_mode(self, value):
        """The most probable latent path given ``value``."""
        raise NotImplementedError

    def forecast(self, value, num_steps, **future):
        """The distribution of the next ``num_steps`` observations given ``value``.

        Args:
            value: observations, shape ``batch + (T,) + E``.
            num_steps: the number of future steps ``H``.
            **future: the future values of time-varying parameters, family-specific.

        Returns:
            A distribution with ``event_shape (H,) + E`` and ``mean`` and ``variance``.
        """
        raise NotImplementedError


def check_latent_methods(ssm, methods, key):
    """Validate ``methods`` for :meth:`StateSpaceModel.latents`; return them as a tuple.

    Args:
        ssm: the distribution.
        methods: an iterable of method names.
        key: the key given to ``latents``.

    Returns:
        The methods, as a tuple.

    Raises:
        ValueError: for an unknown or unsupported method, or ``"sample"`` without a key.
    """
    methods = tuple(methods)
    for method in methods:
        if method not in ssm.latent_methods:
            raise ValueError(
                f"{type(ssm).__name__}.latents: method must be one of {ssm.latent_methods}, "
                f"got {method!r}."
            )
    if "sample" in methods and key is None:
        raise ValueError(
            f"{type(ssm).__name__}.latents: 'sample' draws random paths; pass "
            "key=jax.random.key(...)."
        )
    return methods

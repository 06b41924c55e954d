"""Hiding the future: a model whose SSM sites see only their first ``num_observed`` steps.

Used by :mod:`numpyro_ssm.infer.lfo`: each chosen SSM site's likelihood is replaced by the sum of
its filter's first ``num_observed`` log-likelihood increments, with the data arrays untouched.
"""

import copy

import jax.numpy as jnp
from numpyro.distributions import Distribution
from numpyro.primitives import Messenger

from numpyro_ssm.distributions._ssm import is_state_space_model

__all__ = ["past_model"]


class _PastLikelihood(Distribution):
    """An SSM whose ``log_prob`` counts only the first ``num_observed`` steps.

    ``log_prob(y) = sum_{u < num_observed} log p(y_u | y_{:u})``, from the SSM's increments. Only
    ``log_prob`` is meant to be used (the site is observed).
    """

    def __init__(self, ssm, num_observed):
        self.ssm = ssm
        self.num_observed = num_observed
        super().__init__(ssm.batch_shape, ssm.event_shape, validate_args=False)

    @property
    def support(self):
        """The wrapped SSM's support."""
        return self.ssm.support

    def sample(self, key, sample_shape=()):
        """Draws of the wrapped SSM (the full series)."""
        return self.ssm.sample(key, sample_shape)

    def log_prob(self, value):
        """Log-likelihood of ``value[..., :num_observed, ...]``, shape ``batch_shape``."""
        increments = self.ssm.log_likelihood_increments(value)
        past = jnp.arange(increments.shape[-1]) < self.num_observed
        return jnp.sum(jnp.where(past, increments, 0.0), axis=-1)


def _replace_ssm(fn, num_observed):
    """``fn`` with the SSM inside its ``expand``/``to_event``/``mask`` wrappers truncated."""
    if is_state_space_model(fn):
        return _PastLikelihood(fn, num_observed)
    base = getattr(fn, "base_dist", None)
    if base is None:
        raise ValueError(f"{type(fn).__name__} wraps no state space model.")
    outer = copy.copy(fn)
    outer.base_dist = _replace_ssm(base, num_observed)
    return outer


class _ObservePast(Messenger):
    """Effect handler: the SSM sites ``sites`` see only their first ``num_observed`` steps."""

    def __init__(self, fn, sites, num_observed):
        self.sites = frozenset(sites)
        self.num_observed = num_observed
        super().__init__(fn)

    def process_message(self, msg):
        """Truncate the likelihood of a chosen observed SSM site."""
        if msg["type"] == "sample" and msg["is_observed"] and msg["name"] in self.sites:
            msg["fn"] = _replace_ssm(msg["fn"], self.num_observed)


def past_model(model, site, *model_args, **model_kwargs):
    r"""The model conditioned on the first ``num_observed`` steps of its SSM site(s) only.

    Args:
        model: a NumPyro model with observed SSM site(s).
        site: a site name or a list of names: the SSM sites to truncate.
        *model_args: positional arguments of ``model``.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        A model ``past(num_observed)`` of one argument (an int, or an int array under ``jit``):
        ``model(*model_args, **model_kwargs)`` whose SSM sites contribute
        :math:`\log p(y_{:t} \mid \theta)` with ``t = num_observed`` instead of
        :math:`\log p(y_{1:T} \mid \theta)`. Its latent sites are the model's.
    """
    sites = [site] if isinstance(site, str) else list(site)

    def past(num_observed):
        with _ObservePast(None, sites, num_observed):
            model(*model_args, **model_kwargs)

    return past

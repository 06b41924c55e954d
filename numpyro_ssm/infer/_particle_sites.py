"""Particle-filter sites of a NumPyro model, and a handler that gives them an estimated log_prob.

A *particle site* is an observed sample site whose distribution (inside ``expand``,
``to_event`` and ``mask`` wrappers) has a ``log_likelihood_estimate(key, value, **options)``
method, like :class:`numpyro_ssm.distributions.ParticleSSM`; ``infer`` names no class.

:class:`particle_estimates` runs the model with each particle site's distribution replaced by
one whose ``log_prob`` is the particle filter's ``log Ẑ`` for the randomness it is given (a key,
or :class:`~numpyro_ssm.ops.particle.ParticleNoise`), so that NumPyro's own
``log_density`` / ``potential_energy`` add it to the prior terms, the Jacobians, the masks
and the scales of every other site.
"""

import copy

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.distributions import Distribution
from numpyro.primitives import Messenger

__all__ = [
    "check_latent_sites",
    "log_likelihood_estimates",
    "particle_estimates",
    "unwrap_particle_site",
]


def unwrap_particle_site(fn):
    """The particle-filtered distribution inside a site's wrappers, or None.

    Args:
        fn: the distribution of a sample site.

    Returns:
        The innermost distribution with a ``log_likelihood_estimate`` method, or None.
    """
    while fn is not None:
        if callable(getattr(fn, "log_likelihood_estimate", None)):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


def _replace_innermost(fn, target, replacement):
    if fn is target:
        return replacement
    wrapper = copy.copy(fn)
    wrapper.base_dist = _replace_innermost(fn.base_dist, target, replacement)
    return wrapper


class _Estimated(Distribution):
    """Stands in for a particle site: ``log_prob`` is the filter's ``log Ẑ``, recorded."""

    def __init__(self, ssm, randomness, options, record, name):
        self.ssm, self.randomness, self.options = ssm, randomness, options
        self.record, self.name = record, name
        super().__init__(ssm.batch_shape, ssm.event_shape)

    @property
    def support(self):
        return self.ssm.support

    def sample(self, key, sample_shape=()):
        return self.ssm.sample(key, sample_shape)

    def log_prob(self, value):
        estimate = self.ssm.log_likelihood_estimate(self.randomness, value, **self.options)
        self.record[self.name] = estimate
        return estimate


class particle_estimates(Messenger):
    """Replace every particle site's ``log_prob`` by a particle estimate of it.

    Args:
        fn: the model.
        randomness: a ``jax.random`` key (folded with each site's position in the model), or a
            dict site name -> :class:`~numpyro_ssm.ops.particle.ParticleNoise` with the site's
            batch axes in front.
        options: keyword arguments for the sites' ``log_likelihood_estimate``
            (``num_particles``, ``particle_sharding``, ...).

    Attributes:
        estimates: dict site name -> ``log Ẑ`` (shape: the site's batch), filled while the
            model runs.
        sites: the particle sites met, in model order.
    """

    def __init__(self, fn=None, randomness=None, options=None):
        self.randomness = randomness
        self.options = dict(options or {})
        self.estimates = {}
        self.sites = []
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        ssm = unwrap_particle_site(msg["fn"])
        if ssm is None:
            return
        name = msg["name"]
        if not msg["is_observed"]:
            raise ValueError(
                f"PMMH: the particle-filtered site {name!r} must be observed (obs=...); its "
                "latent path is integrated out by the particle filter."
            )
        if isinstance(self.randomness, dict):
            randomness = self.randomness[name]
        else:
            randomness = jax.random.fold_in(self.randomness, len(self.sites))
        self.sites.append(name)
        stand_in = _Estimated(ssm, randomness, self.options, self.estimates, name)
        msg["fn"] = _replace_innermost(msg["fn"], ssm, stand_in)


def check_latent_sites(model, params, model_args, model_kwargs):
    """Trace once; every latent site must be continuous. Return the particle sites' messages.

    Args:
        model: the NumPyro model.
        params: dict site -> value substituted (missing sites are drawn from the prior).
        model_args: the model's positional arguments.
        model_kwargs: the model's keyword arguments.

    Returns:
        dict site name -> trace message of every observed particle site.

    Raises:
        ValueError: for a discrete latent site, or when there is no particle site.
    """
    seeded = handlers.seed(handlers.substitute(model, data=params), rng_seed=0)
    trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
    sites = {}
    for name, msg in trace.items():
        if msg["type"] != "sample":
            continue
        if not msg["is_observed"] and getattr(msg["fn"], "is_discrete", False):
            raise ValueError(
                f"PMMH: latent site {name!r} is discrete; PMMH moves continuous parameters "
                "only (marginalize discrete latents inside the particle filter's state)."
            )
        if msg["is_observed"] and unwrap_particle_site(msg["fn"]) is not None:
            sites[name] = msg
    if not sites:
        raise ValueError(
            "PMMH: the model has no observed particle-filtered site (a ParticleSSM with obs=...)."
        )
    return sites


def log_likelihood_estimates(
    model, params, *model_args, key, num_particles=None, num_repeats=64, **model_kwargs
):
    """``log Ẑ`` at fixed parameters for ``num_repeats`` independent filter runs.

    Their standard deviation guides the choice of ``N`` for :class:`PMMH`: about 1 to 1.7 at
    a central posterior value (Doucet, Pitt, Deligiannidis & Kohn 2015), and it scales as
    ``1 / sqrt(N)``.

    Args:
        model: the NumPyro model.
        params: dict site -> constrained value of every latent site (e.g. posterior medians).
        *model_args: the model's positional arguments.
        key: a ``jax.random`` key.
        num_particles: ``N``; None uses each site's own.
        num_repeats: the number of independent runs.
        **model_kwargs: the model's keyword arguments.

    Returns:
        Shape ``(num_repeats,)``: ``log Ẑ`` summed over the model's particle sites.
    """
    options = {} if num_particles is None else {"num_particles": int(num_particles)}

    def one(k):
        handler = particle_estimates(model, k, options)
        seeded = handlers.seed(handlers.substitute(handler, data=params), rng_seed=0)
        trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
        for name in handler.sites:
            msg = trace[name]
            msg["fn"].log_prob(msg["value"])
        return sum(jnp.sum(e) for e in handler.estimates.values())

    return jax.jit(jax.vmap(one))(jax.random.split(key, num_repeats))

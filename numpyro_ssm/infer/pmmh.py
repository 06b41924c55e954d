r"""Particle-marginal Metropolis-Hastings (PMMH) as a NumPyro ``MCMCKernel``.

For a model whose observed sites include particle-filtered state space models
(:class:`~numpyro_ssm.distributions.ParticleSSM`), PMMH (Andrieu, Doucet & Holenstein 2010)
runs random-walk Metropolis on the unconstrained parameters θ with the exact likelihood
replaced by the particle filter's unbiased estimate ``Ẑ(θ, U)``, ``U`` the filter's random
numbers. The chain on ``(θ, U)`` targets ``p(θ) Ẑ(θ, U) m(U)``, whose θ-marginal is the exact
posterior ``p(θ | y)``, however few particles are used (few particles only make the chain
stickier).

**The current estimate is cached**: the state holds ``log Ẑ`` of the current θ together with
the randomness that produced it, and an estimate is computed only for proposals. Recomputing
the current one with fresh randomness at every step (a common mistake) targets a different,
wrong distribution.

**Proposal and adaptation.** ``θ' = θ + s L ε`` with ``ε ~ N(0, I)`` in NumPyro's
unconstrained space. During warm-up, in Stan's windows, ``L Lᵀ`` is the regularized sample
covariance of the previous slow window (adaptive Metropolis, Haario, Saksman & Tamminen 2001)
and ``s`` follows Robbins-Monro towards ``target_accept_prob`` (Andrieu & Thoms 2008),
restarting at ``2.38 / sqrt(d)`` after each covariance update; both are frozen for sampling
(:mod:`numpyro_ssm.infer._random_walk_adaptation` says why not HMC's dual averaging: it
collapses the scale while a noisy chain sticks). The default target, 0.15, sits between
the 0.234 that is optimal for exact-likelihood random-walk Metropolis (Roberts, Gelman & Gilks
1997) and the 0.07 that is optimal for PMMH when ``N`` is also tuned (Sherlock, Thiery, Roberts
& Rosenthal 2015). Choose ``N`` so that the standard deviation of ``log Ẑ`` near the posterior
mode is about 1 to 1.7 (Doucet, Pitt, Deligiannidis & Kohn 2015); :func:`log_likelihood_estimates`
measures it.

**Correlated pseudo-marginal moves** (``correlation=ρ``, Deligiannidis, Doucet & Pitt 2018):
``U`` is the filter's standard normal variates (:class:`~numpyro_ssm.ops.particle.ParticleNoise`,
kept in the state) and each proposal moves them by ``U' = ρ U + sqrt(1 - ρ²) ξ`` jointly with θ
and accepts or rejects both. Successive estimates are then strongly correlated, so ``N`` can be
much smaller for the same mixing. Every kernel of the model needs a map of standard normal
noise (Normal, MultivariateNormal and their transforms, categorical and ``icdf`` families); the
particles are sorted on their first coordinate before resampling, exact in one dimension (the
paper uses a Hilbert sort in more); use ``ess_threshold=1`` in the sites, since an adaptive
resampling decision flips discontinuously in ``U``.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import init_to_uniform, initialize_model, potential_energy
from numpyro.util import is_prng_key

from numpyro_ssm.infer._particle_sites import (
    check_latent_sites,
    log_likelihood_estimates,
    particle_estimates,
    unwrap_particle_site,
)
from numpyro_ssm.infer._random_walk_adaptation import random_walk_adapter
from numpyro_ssm.ops.particle import draw_particle_noise

__all__ = ["PMMH", "PMMHState", "log_likelihood_estimates"]


class PMMHState(NamedTuple):
    """The state of a :class:`PMMH` chain.

    Attributes:
        i: the iteration (warm-up included).
        z: dict site -> unconstrained value of the current θ.
        potential_energy: ``-log p(θ) - log|J| - log Ẑ(θ, U)`` at the current θ (cached).
        log_likelihood: ``log Ẑ(θ, U)`` at the current θ, summed over particle sites (cached).
        randomness: ``U`` of the current estimate: a key, or dict site ->
            :class:`~numpyro_ssm.ops.particle.ParticleNoise` with ``correlation``.
        accept_prob: the last proposal's acceptance probability.
        mean_accept_prob: its running mean (reset after warm-up).
        adapt_state: a ``RandomWalkAdaptState``: the scale ``s``, the covariance ``L Lᵀ`` and
            its factor ``L``.
        rng_key: the chain's key.
    """

    i: jax.Array
    z: dict
    potential_energy: jax.Array
    log_likelihood: jax.Array
    randomness: Any
    accept_prob: jax.Array
    mean_accept_prob: jax.Array
    adapt_state: Any
    rng_key: jax.Array


def _unflatten_batch(batch, x):
    return x.reshape(batch + x.shape[1:])


class PMMH(MCMCKernel):
    """Particle-marginal Metropolis-Hastings: random-walk proposals, particle likelihoods.

    See the module docstring for the algorithm, the adaptation and the correlated moves.
    ``MCMC(PMMH(model, num_particles=...), ...)`` then works as with any NumPyro kernel
    (chains, ``get_samples``, ``print_summary``, :func:`numpyro_ssm.infer.to_inference_data`;
    extra fields ``accept_prob``, ``log_likelihood``, ``potential_energy``).

    Args:
        model: a NumPyro model with at least one observed particle-filtered site and only
            continuous latent sites.
        num_particles: ``N`` of every particle site; None uses each site's own.
        step_size: the initial random-walk scale; None uses ``2.38 / sqrt(d)``.
        adapt_step_size: adapt the scale during warm-up.
        adapt_covariance: adapt the proposal covariance during warm-up.
        dense_covariance: a full covariance (True) or a diagonal one.
        target_accept_prob: the acceptance rate the scale adaptation aims at.
        correlation: ``ρ`` in ``[0, 1)`` for correlated pseudo-marginal moves, or None for a
            fresh filter at every proposal.
        particle_sharding: a ``jax.sharding.Sharding`` for the particle axis, or None.
        init_strategy: a NumPyro init strategy.

    Raises:
        ValueError: for a nonpositive ``num_particles`` or a ``correlation`` outside ``[0, 1)``.
    """

    sample_field = "z"

    def __init__(
        self,
        model,
        *,
        num_particles=None,
        step_size=None,
        adapt_step_size=True,
        adapt_covariance=True,
        dense_covariance=True,
        target_accept_prob=0.15,
        correlation=None,
        particle_sharding=None,
        init_strategy=init_to_uniform,
    ):
        if num_particles is not None and (
            isinstance(num_particles, bool)
            or not isinstance(num_particles, int | np.integer)
            or num_particles < 1
        ):
            raise ValueError(
                f"PMMH: num_particles must be a positive int or None, got {num_particles!r}."
            )
        if correlation is not None and not 0.0 <= float(correlation) < 1.0:
            raise ValueError(f"PMMH: correlation must lie in [0, 1), got {correlation!r}.")
        if not 0.0 < float(target_accept_prob) < 1.0:
            raise ValueError(
                f"PMMH: target_accept_prob must lie in (0, 1), got {target_accept_prob!r}."
            )
        self._model = model
        self._options = {}
        if num_particles is not None:
            self._options["num_particles"] = int(num_particles)
        if particle_sharding is not None:
            self._options["particle_sharding"] = particle_sharding
        self._step_size = step_size
        self._adapt_step_size = adapt_step_size
        self._adapt_covariance = adapt_covariance
        self._dense = dense_covariance
        self._target = float(target_accept_prob)
        self._correlation = None if correlation is None else float(correlation)
        self._init_strategy = init_strategy
        self._postprocess_fn = None
        self._sample_fn = None
        self._noise_shapes = None

    # -- the likelihood estimate ----------------------------------------------------------------

    def _log_joint(self, z, randomness, model_args, model_kwargs):
        """``(log p(θ) + log|J| + log Ẑ, log Ẑ summed over sites)`` for unconstrained ``z``."""
        handler = particle_estimates(self._model, randomness, self._options)
        log_joint = -potential_energy(handler, model_args, model_kwargs, z)
        log_lik = sum(jnp.sum(e) for e in handler.estimates.values())
        return log_joint, log_lik

    def _fresh_randomness(self, key, previous=None):
        """A new key, or noise moved by ``U' = ρ U + sqrt(1 - ρ²) ξ`` (fresh when None)."""
        if self._correlation is None:
            return key
        noise = {}
        for i, (name, (batch, steps, particles, state, dtype)) in enumerate(
            self._noise_shapes.items()
        ):
            keys = jax.random.split(jax.random.fold_in(key, i), int(np.prod(batch)))
            draw = functools.partial(
                draw_particle_noise,
                num_steps=steps,
                num_particles=particles,
                state_shape=state,
                dtype=dtype,
            )
            fresh = jax.tree.map(functools.partial(_unflatten_batch, batch), jax.vmap(draw)(keys))
            noise[name] = (
                fresh if previous is None else jax.tree.map(self._move, previous[name], fresh)
            )
        return noise

    def _move(self, previous, fresh):
        rho = self._correlation
        return rho * previous + np.sqrt(1 - rho**2) * fresh

    def _record_noise_shapes(self, params, model_args, model_kwargs):
        sites = check_latent_sites(self._model, params, model_args, model_kwargs)
        shapes = {}
        for name, msg in sites.items():
            ssm = unwrap_particle_site(msg["fn"])
            value_shape = jnp.shape(msg["value"])
            batch = value_shape[: len(value_shape) - len(ssm.event_shape)]
            num = self._options.get("num_particles", ssm.num_particles)
            shapes[name] = (
                tuple(batch),
                ssm.num_steps,
                num,
                ssm.state_shape,
                jnp.result_type(float),
            )
        self._noise_shapes = shapes

    # -- MCMCKernel -----------------------------------------------------------------------------

    @property
    def model(self):
        """The NumPyro model."""
        return self._model

    @property
    def default_fields(self):
        """The state fields MCMC collects by default: ``("z",)``."""
        return ("z",)

    def get_diagnostics_str(self, state):
        """The progress bar's text: the random-walk scale and the mean acceptance rate."""
        return f"scale {state.adapt_state.scale:.2e}, acc. prob={state.mean_accept_prob:.2f}"

    def postprocess_fn(self, args, kwargs):
        """Map unconstrained draws to constrained values (and deterministic sites)."""
        if self._postprocess_fn is None:
            return lambda z: z
        return self._postprocess_fn(*args, **kwargs)

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None):
        """Find initial parameters, estimate their likelihood, set up the adaptation.

        Args:
            rng_key: a ``jax.random`` key, or a batch of them (vectorized chains).
            num_warmup: the number of warm-up steps (adaptation stops after them).
            init_params: unconstrained initial values (dict site -> array), or None to use
                ``init_strategy``.
            model_args: the model's positional arguments.
            model_kwargs: the model's keyword arguments.

        Returns:
            A :class:`PMMHState` (batched like ``rng_key``).
        """
        model_kwargs = {} if model_kwargs is None else model_kwargs
        vectorized = not is_prng_key(rng_key)
        if vectorized:
            rng_key, key_init = jnp.swapaxes(jax.vmap(jax.random.split)(rng_key), 0, 1)
        else:
            rng_key, key_init = jax.random.split(rng_key)
        check_latent_sites(self._model, {}, model_args, model_kwargs)  # before NumPyro's init
        fixed = particle_estimates(self._model, jax.random.key(0), self._options)
        info = initialize_model(
            key_init,
            fixed,
            init_strategy=self._init_strategy,
            dynamic_args=True,
            model_args=model_args,
            model_kwargs=model_kwargs,
            validate_grad=False,
        )
        self._postprocess_fn = info.postprocess_fn
        z_init = info.param_info.z if init_params is None else init_params
        first = jax.tree.map(lambda x: x[0], z_init) if vectorized else z_init
        constrained = info.postprocess_fn(*model_args, **model_kwargs)(first)
        self._record_noise_shapes(constrained, model_args, model_kwargs)
        init_one = functools.partial(
            self._init_one,
            num_warmup=num_warmup,
            model_args=model_args,
            model_kwargs=model_kwargs,
        )
        sample = self._sample_one
        if vectorized:
            state = jax.vmap(init_one)(z_init, rng_key)
            self._sample_fn = jax.vmap(sample, in_axes=(0, None, None))
        else:
            state = init_one(z_init, rng_key)
            self._sample_fn = sample
        return state

    def _adapter(self, num_warmup, dimension):
        return random_walk_adapter(
            num_warmup,
            dimension,
            dense=self._dense,
            target_accept_prob=self._target,
            adapt_scale=self._adapt_step_size,
            adapt_covariance=self._adapt_covariance,
        )

    def _init_one(self, z, rng_key, *, num_warmup, model_args, model_kwargs):
        self._num_warmup = num_warmup
        z_flat, _ = ravel_pytree(z)
        rng_key, key_randomness = jax.random.split(rng_key)
        adapt_init, _ = self._adapter(num_warmup, z_flat.shape[0])
        adapt_state = adapt_init(self._step_size, z_flat.dtype)
        randomness = self._fresh_randomness(key_randomness)
        log_joint, log_lik = self._log_joint(z, randomness, model_args, model_kwargs)
        zero = jnp.zeros((), z_flat.dtype)
        return PMMHState(
            jnp.array(0), z, -log_joint, log_lik, randomness, zero, zero, adapt_state, rng_key
        )

    def _proposal_step(self, state, z_flat):
        adapt = state.adapt_state
        if adapt.factor.ndim == 2:
            return lambda eps: z_flat + adapt.scale * adapt.factor @ eps
        return lambda eps: z_flat + adapt.scale * adapt.factor * eps

    def _sample_one(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        rng_key, key_move, key_randomness, key_accept = jax.random.split(state.rng_key, 4)
        z_flat, unravel = ravel_pytree(state.z)
        proposed_flat = self._proposal_step(state, z_flat)(
            jax.random.normal(key_move, z_flat.shape, z_flat.dtype)
        )
        randomness = self._fresh_randomness(key_randomness, state.randomness)
        proposed = unravel(proposed_flat)
        log_joint, log_lik = self._log_joint(proposed, randomness, model_args, model_kwargs)
        log_ratio = log_joint + state.potential_energy
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accept = jnp.log(jax.random.uniform(key_accept)) < log_ratio
        pick = lambda new, old: jax.tree.map(  # noqa: E731
            lambda a, b: jnp.where(accept, a, b), new, old
        )
        z = pick(proposed, state.z)
        itr = state.i + 1
        adapt_state = state.adapt_state
        num_warmup = self._num_warmup
        if num_warmup > 0:
            _, adapt_update = self._adapter(num_warmup, z_flat.shape[0])
            adapt_state = lax.cond(
                state.i < num_warmup,
                lambda s: adapt_update(state.i, accept_prob, ravel_pytree(z)[0], s),
                lambda s: s,
                adapt_state,
            )
        count = jnp.where(state.i < num_warmup, itr, itr - num_warmup)
        mean_accept = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / count
        return PMMHState(
            itr,
            z,
            jnp.where(accept, -log_joint, state.potential_energy),
            jnp.where(accept, log_lik, state.log_likelihood),
            pick(randomness, state.randomness),
            accept_prob,
            mean_accept,
            adapt_state,
            rng_key,
        )

    def sample(self, state, model_args, model_kwargs):
        """One PMMH step: propose θ (and move ``U``), estimate, accept or reject.

        Args:
            state: a :class:`PMMHState`.
            model_args: the model's positional arguments.
            model_kwargs: the model's keyword arguments.

        Returns:
            The next :class:`PMMHState`.
        """
        return self._sample_fn(state, model_args, model_kwargs)

    def refresh(self, state, model_args, model_kwargs):
        """Recompute the cached estimate at the current θ with the *same* randomness ``U``.

        Keeping ``U`` (it is part of the chain's state) keeps the chain exact when the values a
        Gibbs sampler conditions on change.

        Args:
            state: a :class:`PMMHState`.
            model_args: the model's positional arguments.
            model_kwargs: the model's keyword arguments.

        Returns:
            The state with ``potential_energy`` and ``log_likelihood`` recomputed.
        """
        model_kwargs = {} if model_kwargs is None else model_kwargs
        log_joint, log_lik = self._log_joint(state.z, state.randomness, model_args, model_kwargs)
        return state._replace(potential_energy=-log_joint, log_likelihood=log_lik)

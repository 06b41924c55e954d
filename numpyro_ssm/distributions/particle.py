r"""``ParticleSSM``: a state space model stated by its step distributions, for particle methods.

.. math::

    z_1 \sim \mu, \qquad z_t \mid z_{t-1} \sim f(\cdot \mid z_{t-1}, u_t, θ), \qquad
    y_t \mid z_t \sim g(\cdot \mid z_t, u_t, θ),

with ``f`` given as ``transition_fn(z, u, params)`` and ``g`` as ``emission_fn(z, u, params)``,
plain JAX functions that return NumPyro distributions (any family: Student-t noise, Poisson
counts, a logistic population model, categorical regimes).

**Why the likelihood is a kernel, not a** ``log_prob``. ``p(y_{1:T} | θ)`` has no closed form
here. A particle filter estimates it without bias, but only given random numbers, and a
NumPyro ``Distribution.log_prob(value)`` takes none: a fixed key would make ``log_prob`` a
deterministic, discontinuous function of θ whose exponential is a biased estimate, and NUTS
would explore that wrong, rough surface. Particle-marginal Metropolis-Hastings (Andrieu,
Doucet & Holenstein 2010) instead treats the random numbers as part of the chain's state and
targets the exact posterior: :class:`numpyro_ssm.infer.PMMH` is that kernel. So
:meth:`ParticleSSM.log_prob` raises and points there, and every method that needs the
likelihood takes a ``key`` first.

**Protocol** (:class:`~numpyro_ssm.distributions.StateSpaceModel`): ``infer`` reaches the
particle estimates through :meth:`ParticleSSM.latents`, which takes the key that
:func:`~numpyro_ssm.infer.to_inference_data` and :func:`~numpyro_ssm.infer.posterior_latents`
pass on (``key=...``): per-step log-likelihood increments (the filter's estimates
``log p̂(y_t | y_{1:t-1})``), ``"sample"`` (one backward-simulated path) and ``"smooth"``
(moments of backward-simulated paths). :func:`~numpyro_ssm.infer.pointwise_log_likelihood`
and :func:`~numpyro_ssm.infer.forecast` pass no key, so they raise with a pointer to the
alternatives.
"""

import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.distributions import Distribution, constraints

from numpyro_ssm.distributions._particle_functions import StepFunctions, probe_distribution
from numpyro_ssm.distributions._particle_posterior import ParticlePosteriorMixin
from numpyro_ssm.distributions._ssm import StateSpaceModel
from numpyro_ssm.distributions._validation import check_bool_mask
from numpyro_ssm.ops import particle as particle_ops

__all__ = ["ParticleSSM"]

_OWNER = "ParticleSSM"
_NO_LOG_PROB = (
    "ParticleSSM has no exact log_prob: its likelihood is estimated by a particle filter, "
    "which needs random numbers that Distribution.log_prob does not take. Sample its "
    "parameters with numpyro_ssm.infer.PMMH (MCMC(PMMH(model, num_particles=...))), or call "
    "ParticleSSM.log_likelihood_estimate(key, value) / .filter(key, value) directly."
)


def _positive_int(value, name):
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise ValueError(f"{_OWNER}: {name} must be a positive Python int, got {value!r}.")
    return number


def _struct(x):
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))


class ParticleSSM(ParticlePosteriorMixin, StateSpaceModel):
    r"""A state space model over ``T`` observations whose likelihood particle filters estimate.

    .. math::

        z_1 \sim \texttt{initial\_dist},\quad
        z_t \sim \texttt{transition\_fn}(z_{t-1}, u_t, θ),\quad
        y_t \sim \texttt{emission\_fn}(z_t, u_t, θ).

    The state is one draw of ``initial_dist`` (its batch and event axes together, shape
    ``S``); ``transition_fn`` must return distributions with draws of that shape. An emission
    distribution's draws have the observation shape ``E``, and ``event_shape = (T,) + E``.

    Use it as an observed site and sample the parameters with
    :class:`numpyro_ssm.infer.PMMH`; its ``log_prob`` raises (see the module docstring).

    Args:
        initial_dist: NumPyro distribution of ``z_1``.
        transition_fn: ``(z, u, params) -> `` distribution of ``z_t`` given ``z_{t-1} = z``.
            Write it at module level (not as a closure inside the model), so that it is the
            same function on every trace.
        emission_fn: ``(z, u, params) -> `` distribution of ``y_t`` given ``z_t = z``.
        params: a pytree of arrays passed to every function (the sampled parameters).
        num_steps: ``T``; required when neither ``inputs`` nor ``obs_mask`` carries time.
        inputs: a pytree whose leaves have a leading time axis ``T`` (``u_t``); None passes
            ``u = None``.
        obs_mask: bool, ``(..., T)`` (whole steps) or, for an emission whose entries are
            independent (event shape ``()``), ``(..., T) + E``; True where observed. Its
            leading axes are the batch shape (ragged sequences padded with a mask). NaN
            observations are missing too: entry by entry for such an emission, whole steps
            otherwise.
        proposal_fn: ``(z, y, u, params) -> `` proposal distribution of ``z_t`` given
            ``z_{t-1} = z`` and ``y_t = y`` (the guided filter); None proposes from the
            transition (bootstrap).
        initial_proposal_fn: ``(y, u, params) -> `` proposal of ``z_1`` given ``y_1``, or None.
        auxiliary_log_weight_fn: ``(z, y, u, params) -> log ĝ(y_t | z_{t-1} = z)``, the
            auxiliary filter's look-ahead, or None.
        num_particles: ``N`` used by :meth:`latents` and as the default of the other methods;
            :class:`~numpyro_ssm.infer.PMMH` sets its own.
        resampling: ``"systematic"``, ``"stratified"``, ``"residual"`` or ``"multinomial"``.
        ess_threshold: resample when the effective sample size falls below
            ``ess_threshold * N``.
        validate_args: NumPyro's flag (the observations' support is checked on ``sample``
            sites).

    Example:
        >>> def transition_fn(z, u, params):
        ...     mu, phi, sigma = params
        ...     return dist.Normal(mu + phi * (z - mu), sigma)
        >>> def emission_fn(z, u, params):
        ...     return dist.Normal(0.0, jnp.exp(z / 2))
        >>> def model(returns):
        ...     mu = numpyro.sample("mu", dist.Normal(0, 1))
        ...     phi = numpyro.sample("phi", dist.Uniform(-1, 1))
        ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1))
        ...     initial = dist.Normal(mu, sigma / jnp.sqrt(1 - phi**2))
        ...     ssm = ParticleSSM(initial, transition_fn, emission_fn, (mu, phi, sigma),
        ...                       num_steps=len(returns))
        ...     numpyro.sample("returns", ssm, obs=returns)
        >>> mcmc = MCMC(PMMH(model, num_particles=500), num_warmup=1000, num_samples=1000)
    """

    arg_constraints = {}
    pytree_data_fields = ("initial_dist", "params", "inputs", "obs_mask")
    pytree_aux_fields = (
        "transition_fn",
        "emission_fn",
        "proposal_fn",
        "initial_proposal_fn",
        "auxiliary_log_weight_fn",
        "num_steps",
        "num_particles",
        "resampling",
        "ess_threshold",
        "state_shape",
        "state_dtype",
        "_emission",
        "_noise",
    )
    latent_methods = ("smooth", "sample")

    def __init__(
        self,
        initial_dist,
        transition_fn,
        emission_fn,
        params=None,
        *,
        num_steps=None,
        inputs=None,
        obs_mask=None,
        proposal_fn=None,
        initial_proposal_fn=None,
        auxiliary_log_weight_fn=None,
        num_particles=1000,
        resampling="systematic",
        ess_threshold=0.5,
        validate_args=None,
    ):
        if not isinstance(initial_dist, Distribution):
            raise TypeError(
                f"{_OWNER}: initial_dist must be a numpyro Distribution, got "
                f"{type(initial_dist).__name__}."
            )
        for name, fn in (
            ("transition_fn", transition_fn),
            ("emission_fn", emission_fn),
            ("proposal_fn", proposal_fn),
            ("initial_proposal_fn", initial_proposal_fn),
            ("auxiliary_log_weight_fn", auxiliary_log_weight_fn),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{_OWNER}: {name} must be callable, got {type(fn).__name__}.")
        if transition_fn is None or emission_fn is None:
            raise TypeError(f"{_OWNER}: transition_fn and emission_fn are required.")
        self.num_particles = _positive_int(num_particles, "num_particles")
        particle_ops.filtering._check_options(
            self.num_particles, ess_threshold, "none", 0.5, _OWNER
        )
        particle_ops.resampling.check_resampling(resampling, _OWNER)
        self.initial_dist, self.params, self.inputs = initial_dist, params, inputs
        self.transition_fn, self.emission_fn = transition_fn, emission_fn
        self.proposal_fn, self.initial_proposal_fn = proposal_fn, initial_proposal_fn
        self.auxiliary_log_weight_fn = auxiliary_log_weight_fn
        self.resampling, self.ess_threshold = resampling, float(ess_threshold)
        self.num_steps = self._infer_num_steps(num_steps, inputs, obs_mask)
        self._probe()
        self.obs_mask = self._check_mask(check_bool_mask(obs_mask, _OWNER))
        event_shape = (self.num_steps,) + self._emission[0]
        super().__init__(self._own_batch_shape(), event_shape, validate_args=validate_args)

    # -- construction ---------------------------------------------------------------------------

    @staticmethod
    def _infer_num_steps(num_steps, inputs, obs_mask):
        sources = {}
        if num_steps is not None:
            sources["num_steps"] = _positive_int(num_steps, "num_steps")
        leaves = jax.tree.leaves(inputs)
        if leaves:
            lengths = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
            if len(lengths) != 1 or None in lengths:
                raise ValueError(
                    f"{_OWNER}: every leaf of inputs must have a leading time axis of one "
                    f"length T, got shapes {[jnp.shape(leaf) for leaf in leaves]}."
                )
            sources["inputs"] = lengths.pop()
        if not sources and obs_mask is not None and jnp.ndim(obs_mask) >= 1:
            sources["obs_mask"] = jnp.shape(obs_mask)[-1]
        if not sources:
            raise ValueError(
                f"{_OWNER}: num_steps is required when neither inputs nor obs_mask carries the "
                "time axis."
            )
        if len(set(sources.values())) != 1:
            raise ValueError(f"{_OWNER}: the number of steps T disagrees: {sources}.")
        return next(iter(sources.values()))

    def _probe(self):
        """Check what the functions return, abstractly, and record shapes and noise maps."""
        state = jax.eval_shape(self.initial_dist.sample, jax.random.key(0))
        self.state_shape, self.state_dtype = tuple(state.shape), jnp.dtype(state.dtype)
        u = jax.tree.map(lambda leaf: _struct(leaf[0]), self.inputs)
        params = jax.tree.map(_struct, self.params)
        noise = {}
        _, _, _, noise["initial_dist"] = probe_distribution(
            lambda: self.initial_dist, (), "initial_dist", _OWNER
        )
        _, _, _, noise["transition_fn"] = probe_distribution(
            self.transition_fn, (state, u, params), "transition_fn", _OWNER, self.state_shape
        )
        y_shape, y_event, support, _ = probe_distribution(
            self.emission_fn, (state, u, params), "emission_fn", _OWNER
        )
        y = jax.ShapeDtypeStruct(y_shape, jnp.result_type(float))
        if self.proposal_fn is not None:
            _, _, _, noise["proposal_fn"] = probe_distribution(
                self.proposal_fn, (state, y, u, params), "proposal_fn", _OWNER, self.state_shape
            )
        if self.initial_proposal_fn is not None:
            _, _, _, noise["initial_proposal_fn"] = probe_distribution(
                self.initial_proposal_fn,
                (y, u, params),
                "initial_proposal_fn",
                _OWNER,
                self.state_shape,
            )
        factorized = y_event == ()
        self._emission = (y_shape, factorized, support)
        self._noise = tuple(sorted(noise.items()))

    def _check_mask(self, obs_mask):
        if obs_mask is None:
            return None
        T, E = self.num_steps, self._emission[0]
        shape = obs_mask.shape
        entrywise = E and shape[len(shape) - len(E) - 1 :] == (T,) + E
        if entrywise and not self._emission[1]:
            raise ValueError(
                f"{_OWNER}: obs_mask {shape} masks single entries, but the emission's entries "
                "are not independent (its event_shape is not ()); mask whole steps, shape "
                f"(..., T) = (..., {T})."
            )
        if not entrywise and (not shape or shape[-1] != T):
            raise ValueError(
                f"{_OWNER}: obs_mask must have shape (..., T) = (..., {T})"
                + (f" or (..., T) + E = (..., {T}) + {E}" if E and self._emission[1] else "")
                + f", got {shape}."
            )
        return obs_mask

    def _mask_core_ndim(self):
        if self.obs_mask is None:
            return 1
        E = self._emission[0]
        shape = self.obs_mask.shape
        return 1 + len(E) if E and shape[len(shape) - len(E) - 1 :] == (self.num_steps,) + E else 1

    def _own_batch_shape(self):
        # from the mask itself, so that vmap over the distribution stays consistent
        if self.obs_mask is None:
            return ()
        return tuple(self.obs_mask.shape[: self.obs_mask.ndim - self._mask_core_ndim()])

    @property
    def support(self):
        """The observations' support: the emission's, over ``T`` steps."""
        y_shape, _, support = self._emission
        if support is None:
            return constraints.independent(constraints.real, 1 + len(y_shape))
        return constraints.independent(support, 1 + len(y_shape) - support.event_dim)

    def _functions(self):
        return StepFunctions(
            self.initial_dist,
            self.transition_fn,
            self.emission_fn,
            self.proposal_fn,
            self.initial_proposal_fn,
            dict(self._noise),
            self._emission[1],
        )

    # -- observations ---------------------------------------------------------------------------

    def _observations(self, value):
        """``(y zero-filled, step mask, entry mask, batch_shape)``, all broadcast to the batch."""
        value = jnp.asarray(value)
        event = self.event_shape
        if value.shape[value.ndim - len(event) :] != event:
            raise ValueError(
                f"{_OWNER}: observations must have shape (..., T) + E = (...,) + {event}, got "
                f"{value.shape}."
            )
        batch_shape = jnp.broadcast_shapes(
            value.shape[: value.ndim - len(event)], self._own_batch_shape()
        )
        entries = jnp.ones(event, bool)
        if self.obs_mask is not None:
            mask = self.obs_mask
            if self._mask_core_ndim() == 1:
                mask = mask.reshape(mask.shape + (1,) * (len(event) - 1))
            entries = entries & mask
        if jnp.issubdtype(value.dtype, jnp.inexact):
            entries = entries & ~jnp.isnan(value)
        entries = jnp.broadcast_to(entries, batch_shape + event)
        axes = tuple(range(len(batch_shape) + 1, len(batch_shape) + len(event)))
        if self._emission[1]:
            steps = jnp.any(entries, axis=axes)
        else:
            steps = jnp.all(entries, axis=axes)
            entries = jnp.broadcast_to(steps.reshape(steps.shape + (1,) * len(axes)), entries.shape)
        y = jnp.where(entries, value, jnp.zeros((), value.dtype))
        return jnp.broadcast_to(y, batch_shape + event), steps, entries, batch_shape

    def step_mask(self, value):
        """Which steps count: any observed entry (independent entries), else all of them.

        Args:
            value: observations, shape ``batch + (T,) + E``.

        Returns:
            bool, shape ``batch + (T,)``.
        """
        return self._observations(value)[1]

    def log_prob(self, value):
        """Not available: raises ``NotImplementedError`` (see the module docstring)."""
        raise NotImplementedError(_NO_LOG_PROB)

    # -- simulation -----------------------------------------------------------------------------

    def sample_with_states(self, key, sample_shape=()):
        """Joint draws of the latent states and the observations from the model.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of the draws.

        Returns:
            ``(states, observations)`` of shapes ``sample_shape + batch_shape + (T,) + S`` and
            ``sample_shape + batch_shape + (T,) + E``.
        """
        shape = tuple(sample_shape) + self._own_batch_shape()
        count = int(np.prod(shape))
        initial_dist, params, inputs = self.initial_dist, self.params, self.inputs
        transition_fn, emission_fn = self.transition_fn, self.emission_fn

        def one(key):
            key_initial, key_steps = jax.random.split(key)
            first_input = jax.tree.map(lambda leaf: leaf[0], inputs)
            k_z, k_y = jax.random.split(key_initial)
            z = initial_dist.sample(k_z)
            y = emission_fn(z, first_input, params).sample(k_y)

            def step(z, xs):
                k, u = xs
                k_z, k_y = jax.random.split(k)
                z = transition_fn(z, u, params).sample(k_z)
                return z, (z, emission_fn(z, u, params).sample(k_y))

            keys = jax.random.split(key_steps, self.num_steps - 1)
            rest = jax.tree.map(lambda leaf: leaf[1:], inputs)
            _, (zs, ys) = lax.scan(step, z, (keys, rest))
            return jnp.concatenate([z[None], zs]), jnp.concatenate([y[None], ys])

        states, observations = jax.vmap(one)(jax.random.split(key, count))
        return jax.tree.map(lambda x: x.reshape(shape + x.shape[1:]), (states, observations))

    def sample(self, key, sample_shape=()):
        """Draws of the observations from the model.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of the draws.

        Returns:
            Shape ``sample_shape + batch_shape + (T,) + E``.
        """
        return self.sample_with_states(key, sample_shape)[1]

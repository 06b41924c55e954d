"""One step of the particle filter: draw, weight, resample. Used by :mod:`.filtering` only.

A :class:`_Config` holds everything static about a run (the model, the proposal, the schemes,
the gradient mode); its methods are the pieces of a step, each on all ``N`` particles at once.

Randomness reaches a step in one of two forms, fixed for the run:

- ``("key", key_t)``: the step's key, split into a resampling key and a propagation key; the
  propagation draws all particles' standard normal noise in one call when the kernel has
  ``from_noise``, else one key per particle;
- ``("noise", (eps_t, r_t))``: standard normal arrays given by the caller, ``eps_t`` of shape
  ``(N,) + S`` for the propagation and ``r_t`` of shape ``(N,)`` whose ``Φ(r_t)`` are the
  resampling uniforms. Before resampling, the particles are sorted along a scalar projection
  (their first coordinate), so that the ancestors move continuously with ``r_t``
  (Deligiannidis, Doucet & Pitt 2018, who sort along a Hilbert curve for ``S`` above 1).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp, ndtr

from numpyro_ssm.ops.particle.model import check_draw_shape
from numpyro_ssm.ops.particle.resampling import effective_sample_size

_sg = lax.stop_gradient


class _Config(NamedTuple):
    model: Any  # ParticleModel
    proposal: Any  # ParticleProposal or None
    auxiliary_log_weight: Any  # callable or None
    resampler: Any  # Resampler
    num_particles: int
    ess_threshold: float
    gradient: str  # "score", "soft" or "none"
    soft_mix: float
    state: jax.ShapeDtypeStruct  # one particle
    dtype: Any  # the float dtype of noise and log-weights
    sharding: Any  # jax.sharding.Sharding or None
    owner: str

    # -- randomness ------------------------------------------------------------------------------

    def split(self, randomness):
        """``(resampling randomness, propagation randomness)`` of one step."""
        kind, value = randomness
        if kind == "key":
            key_resample, key_propagate = jax.random.split(value)
            return (kind, key_resample), (kind, key_propagate)
        eps, r = value
        return (kind, r), (kind, eps)

    def uniforms(self, randomness):
        """The resampling uniforms of a step."""
        kind, value = randomness
        count = self.resampler.num_uniforms(self.num_particles)
        if kind == "key":
            return jax.random.uniform(value, (count,), self.dtype)
        return ndtr(value[:count])

    def draw(self, kernel, randomness, cond, batched, name):
        """One draw of ``kernel`` per particle; ``batched[i]`` says if ``cond[i]`` has an N axis."""
        kind, value = randomness
        in_axes = (0,) + tuple(0 if b else None for b in batched)
        if kind == "key" and kernel.from_noise is None:
            keys = jax.random.split(value, self.num_particles)
            draws = jax.vmap(kernel.sample, in_axes)(keys, *cond)
        else:
            if kernel.from_noise is None:
                raise ValueError(
                    f"{self.owner}: correlated noise needs {name}.from_noise (a draw as a map "
                    "of standard normal noise), and this kernel has none."
                )
            eps = value
            if kind == "key":
                shape = (self.num_particles,) + self.state.shape
                eps = jax.random.normal(value, shape, self.dtype)
            draws = jax.vmap(kernel.from_noise, in_axes)(eps, *cond)
        check_draw_shape(
            jax.ShapeDtypeStruct(draws.shape[1:], draws.dtype), self.state, name, self.owner
        )
        draws = draws.astype(self.state.dtype)
        return _sg(draws) if self.gradient == "score" else draws

    def constrain(self, x):
        if self.sharding is None:
            return x
        return lax.with_sharding_constraint(x, self.sharding)

    # -- weighting -------------------------------------------------------------------------------

    def emission(self, y, x, u, params, observed):
        log_g = jax.vmap(self.model.emission_log_prob, (None, 0, None, None))(y, x, u, params)
        if log_g.shape != (self.num_particles,):
            raise ValueError(
                f"{self.owner}: model.emission_log_prob must return one scalar per particle, got "
                f"shape {log_g.shape[1:]} for observations of shape {jnp.shape(y)}."
            )
        return jnp.where(observed, log_g, 0.0).astype(self.dtype)

    def _score_term(self, log_p):
        """``log p - stop_gradient(log p)``: 0 in value, ``∇ log p`` in the "score" mode.

        A move from the model's own distribution has ``q = p``, so the weight omits both; the
        score estimator still needs ``∇ log p`` of the (fixed) path.
        """
        log_p = log_p.astype(self.dtype)
        return jnp.where(jnp.isfinite(log_p), log_p - _sg(log_p), 0.0)

    def _proposal_log_prob(self, kernel, x, cond, batched):
        in_axes = (0,) + tuple(0 if b else None for b in batched)
        log_q = jax.vmap(kernel.log_prob, in_axes)(x, *cond).astype(self.dtype)
        return _sg(log_q) if self.gradient == "score" else log_q

    def initial(self, randomness, y, u, params, observed):
        """Particles at step 1 and their unnormalized log-weights."""
        model, proposal = self.model, self.proposal

        def prior_move():
            x = self.draw(model.initial, randomness, (u, params), (False, False), "initial")
            log_w = self.emission(y, x, u, params, observed)
            if self.gradient == "score":
                log_p = jax.vmap(model.initial.log_prob, (0, None, None))(x, u, params)
                log_w = log_w + self._score_term(log_p)
            return x, log_w

        if proposal is None or proposal.initial is None:
            return prior_move()

        def guided_move():
            cond = (y, u, params)
            x = self.draw(proposal.initial, randomness, cond, (False,) * 3, "proposal.initial")
            log_p = jax.vmap(model.initial.log_prob, (0, None, None))(x, u, params)
            log_p = log_p.astype(self.dtype)
            log_q = self._proposal_log_prob(proposal.initial, x, cond, (False,) * 3)
            return x, log_p + self.emission(y, x, u, params, observed) - log_q

        return lax.cond(observed, guided_move, prior_move)

    def move(self, randomness, x_prev, y, u, params, observed):
        """Particles at step ``t`` from their ancestors ``x_prev``, and the incremental weights."""
        model, proposal = self.model, self.proposal

        def transition_move():
            cond = (x_prev, u, params)
            x = self.draw(model.transition, randomness, cond, (True, False, False), "transition")
            log_w = self.emission(y, x, u, params, observed)
            if self.gradient == "score":
                log_f = jax.vmap(model.transition.log_prob, (0, 0, None, None))(
                    x, x_prev, u, params
                )
                log_w = log_w + self._score_term(log_f)
            return x, log_w

        if proposal is None:
            return transition_move()

        def guided_move():
            cond = (x_prev, y, u, params)
            batched = (True, False, False, False)
            x = self.draw(proposal.transition, randomness, cond, batched, "proposal.transition")
            log_f = jax.vmap(model.transition.log_prob, (0, 0, None, None))(x, x_prev, u, params)
            log_f = log_f.astype(self.dtype)
            log_q = self._proposal_log_prob(proposal.transition, x, cond, batched)
            return x, log_f + self.emission(y, x, u, params, observed) - log_q

        return lax.cond(observed, guided_move, transition_move)

    def lookahead(self, x_prev, y, u, params, observed):
        """The auxiliary filter's first-stage log-weights ``log ĝ(y_t | z_{t-1})`` (or 0)."""
        if self.auxiliary_log_weight is None:
            return jnp.zeros((), self.dtype)
        log_h = jax.vmap(self.auxiliary_log_weight, (0, None, None, None))(x_prev, y, u, params)
        log_h = jnp.where(observed, log_h, 0.0).astype(self.dtype)
        return _sg(log_h) if self.gradient == "score" else log_h

    # -- resampling ------------------------------------------------------------------------------

    def resample(self, randomness, log_w, x_prev):
        """Ancestors and the carried log-weights after resampling normalized ``log_w``.

        The carried log-weights are ``-log N``. In the ``"score"`` mode they also
        carry ``log_w[a] - stop_gradient(log_w[a])``, which makes the derivative of the
        log-likelihood estimate the Fisher-identity estimate (Ścibior, Masrani & Wood 2021).
        In the ``"soft"`` mode ancestors are drawn from ``q = α W + (1 - α) / N`` and carry
        ``log W_a - log q_a - log N`` (Karkus, Hsu & Lee 2018).
        """
        num = self.num_particles
        kind, _ = randomness
        order = None
        if kind == "noise":  # sort along a scalar projection, for continuity in the noise
            projection = x_prev.reshape(num, -1)[:, 0]
            order = jnp.argsort(projection)
            log_w = log_w[order]
        weights = jnp.exp(_sg(log_w))
        uniforms = self.uniforms(randomness)
        log_n = jnp.log(jnp.asarray(num, log_w.dtype))
        if self.gradient == "soft":
            mixture = self.soft_mix * weights + (1.0 - self.soft_mix) / num
            ancestors = self.resampler.from_uniforms(uniforms, mixture, num)
            log_mixture = jnp.log(self.soft_mix * jnp.exp(log_w) + (1.0 - self.soft_mix) / num)
            carried = log_w[ancestors] - log_mixture[ancestors] - log_n
        else:
            ancestors = self.resampler.from_uniforms(uniforms, weights, num)
            carried = jnp.broadcast_to(-log_n, (num,))
            if self.gradient == "score":
                picked = log_w[ancestors]
                carried = carried + picked - _sg(picked)
        if order is not None:
            ancestors = order[ancestors]
        return ancestors.astype(jnp.int32), carried

    def step(self, carry, randomness, y, u, params, observed):
        """One filter step: look ahead, maybe resample, move, weight.

        Args:
            carry: ``(x_prev (N,) + S, log_w_prev (N,))``, normalized log-weights.
            randomness: this step's randomness (see the module docstring).
            y: ``y_t`` with missing entries replaced by zeros.
            u: ``u_t``.
            params: the parameters.
            observed: bool scalar, whether ``y_t`` counts.

        Returns:
            ``((x, log_w), (ancestors, increment, resampled))``.
        """
        x_prev, log_w_prev = carry
        num = self.num_particles
        resample_randomness, move_randomness = self.split(randomness)
        log_h = self.lookahead(x_prev, y, u, params, observed)
        first_stage = log_w_prev + log_h
        log_c = logsumexp(first_stage)
        first_stage = first_stage - log_c
        ess = effective_sample_size(first_stage)
        resampled = observed & (ess < self.ess_threshold * num)

        def keep(log_w):
            return jnp.arange(num, dtype=jnp.int32), log_w

        ancestors, carried = lax.cond(
            resampled,
            lambda log_w: self.resample(resample_randomness, log_w, x_prev),
            keep,
            first_stage,
        )
        x_parents = x_prev[ancestors]
        x, log_incremental = self.move(move_randomness, x_parents, y, u, params, observed)
        if self.auxiliary_log_weight is not None:
            log_incremental = log_incremental - jnp.broadcast_to(log_h, (num,))[ancestors]
        log_w = carried + log_incremental
        log_total = logsumexp(log_w)
        increment = jnp.where(observed, log_c + log_total, 0.0)
        x = self.constrain(x)
        log_w = self.constrain(log_w - log_total)
        return (x, log_w), (ancestors, increment, resampled)

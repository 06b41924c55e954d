"""The parameters of a discrete Markov chain in both forms, its marginals and its prior draws.

:class:`MarkovChainMixin` serves every distribution whose latent path is a Markov chain with
``initial_probs | initial_logits`` and ``transition_matrix | transition_logits`` (the
:class:`~numpyro_ssm.DiscreteHMM` and the :class:`~numpyro_ssm.AutoregressiveHMM`): the
lazy conversions between probabilities and logits, the normalized log-parameters the ops take,
the prior state marginals and prior path draws.
"""

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions.util import lazy_property

from numpyro_ssm.ops.hmm import safe_log

__all__ = ["MarkovChainMixin"]


class MarkovChainMixin:
    """Initial and transition probabilities in both forms, state marginals and path draws.

    The host class sets one of ``initial_probs`` / ``initial_logits`` and one of
    ``transition_matrix`` / ``transition_logits`` as attributes (the other form is computed on
    demand), and ``batch_shape``, ``num_steps`` and ``num_states``.
    """

    @lazy_property
    def initial_probs(self):
        """Shape ``(..., K)``: ``p(z_1 = k)``."""
        return jax.nn.softmax(self.initial_logits, axis=-1)

    @lazy_property
    def initial_logits(self):
        """Shape ``(..., K)``: ``log p(z_1 = k)``."""
        return safe_log(self.initial_probs)

    @lazy_property
    def transition_matrix(self):
        """Shape ``(K, K)`` or ``(..., T - 1 | 1, K, K)``: ``p(z_{t+1} = j | z_t = i)``."""
        return jax.nn.softmax(self.transition_logits, axis=-1)

    @lazy_property
    def transition_logits(self):
        """Shape like ``transition_matrix``: ``log p(z_{t+1} = j | z_t = i)``."""
        return safe_log(self.transition_matrix)

    def _log_params(self):
        """Normalized ``(log initial (..., K), log transitions)`` from whichever form was given.

        Reads ``__dict__`` directly: touching the lazy properties would cache a new attribute
        and change the distribution's pytree structure.
        """
        params = self.__dict__
        if "initial_logits" in params:
            log_init = jax.nn.log_softmax(params["initial_logits"], axis=-1)
        else:
            log_init = safe_log(params["initial_probs"])
        if "transition_logits" in params:
            log_trans = jax.nn.log_softmax(params["transition_logits"], axis=-1)
        else:
            log_trans = safe_log(params["transition_matrix"])
        return log_init, log_trans

    def _op_kwargs(self):
        """The parameters as keyword arguments of the :mod:`numpyro_ssm.ops.hmm` functions."""
        kwargs = {}
        if "initial_logits" in self.__dict__:
            kwargs["initial_logits"] = self.initial_logits
        else:
            kwargs["initial_probs"] = self.initial_probs
        if "transition_logits" in self.__dict__:
            kwargs["transition_logits"] = self.transition_logits
        else:
            kwargs["transition_matrix"] = self.transition_matrix
        return kwargs

    def _state_marginals(self):
        """Prior ``p(z_t = k)``, shape ``batch_shape + (T, K)``: the chain run forward."""
        log_init, log_trans = self._log_params()
        init = jnp.exp(log_init)
        trans = jnp.exp(log_trans if log_trans.ndim > 2 else log_trans[None])
        trans = jnp.moveaxis(trans, -3, 0)  # time first

        def step(p, A):
            p = (p[..., None, :] @ A)[..., 0, :]
            return p, p

        if trans.shape[0] == 1:
            _, rest = lax.scan(lambda p, _: step(p, trans[0]), init, None, self.num_steps - 1)
        else:
            _, rest = lax.scan(step, init, trans)
        probs = jnp.concatenate([init[None], rest], axis=0)
        probs = jnp.moveaxis(probs, 0, -2)
        return jnp.broadcast_to(probs, self.batch_shape + (self.num_steps, self.num_states))

    def _sample_states(self, key, sample_shape):
        shape = tuple(sample_shape) + self.batch_shape
        log_init, log_trans = self._log_params()
        if log_trans.ndim == 2:
            log_trans = log_trans[None]
        log_trans = jnp.moveaxis(log_trans, -3, 0)  # time first: (T-1 | 1, ..., K, K)
        init_key, step_key = jax.random.split(key)
        first = jax.random.categorical(
            init_key, jnp.broadcast_to(log_init, shape + log_init.shape[-1:])
        )
        num_states = self.num_states

        def step(state, inp):
            key_t, log_trans_t = inp
            rows = jnp.broadcast_to(log_trans_t, shape + (num_states, num_states))
            logits = jnp.take_along_axis(rows, state[..., None, None], axis=-2)[..., 0, :]
            new = jax.random.categorical(key_t, logits)
            return new, new

        keys = jax.random.split(step_key, self.num_steps - 1)
        if log_trans.shape[0] == 1:
            _, rest = lax.scan(lambda s, k: step(s, (k, log_trans[0])), first, keys)
        else:
            _, rest = lax.scan(step, first, (keys, log_trans))
        return jnp.moveaxis(jnp.concatenate([first[None], rest], axis=0), 0, -1)

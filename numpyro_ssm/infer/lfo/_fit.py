"""Fits for LFO-CV: the default vectorized NUTS fit, and the wrapper of a user's fit."""

import jax
import jax.numpy as jnp

from numpyro_ssm.infer._sites import flatten_draws


class _NutsFit:
    """The default fit: NumPyro's NUTS kernel, vectorized over fits and chains.

    One ``jit``-compiled function (per past model and batch size) runs warmup and sampling
    for a batch of ``(num_observed, chain)`` pairs, ``num_observed`` being a traced argument
    of the past model: :func:`exact_lfo` runs all its fits as one batch, and the refits of
    :func:`psis_lfo` reuse the compilation of its first fit.
    """

    def __init__(self, num_warmup, num_samples, num_chains, nuts_kwargs):
        from numpyro.infer.initialization import init_to_uniform

        self.num_warmup = int(num_warmup)
        self.num_samples = int(num_samples)
        self.num_chains = int(num_chains)
        self.nuts_kwargs = dict(nuts_kwargs or {})
        self.init_strategy = self.nuts_kwargs.pop("init_strategy", init_to_uniform)
        self._runs = {}

    def _initialize(self, keys, model, num_observed):
        from numpyro.infer.util import initialize_model

        return initialize_model(
            keys,
            model,
            init_strategy=self.init_strategy,
            dynamic_args=True,
            model_args=(jnp.asarray(num_observed),),
        )

    def _compile(self, info):
        from numpyro.infer.hmc import hmc

        init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
        num_warmup, num_samples, kwargs = self.num_warmup, self.num_samples, self.nuts_kwargs

        def one_chain(key, z, num_observed):
            args = (num_observed,)
            state = init_kernel(z, num_warmup, model_args=args, rng_key=key, **kwargs)

            def step(state, _):
                state = sample_kernel(state, model_args=args)
                return state, state.z

            # One scan over warmup and sampling: one copy of the NUTS kernel to compile.
            _, zs = jax.lax.scan(step, state, None, length=num_warmup + num_samples)
            zs = jax.tree.map(lambda x: x[num_warmup:], zs)
            return jax.vmap(info.postprocess_fn(*args))(zs)

        return jax.jit(jax.vmap(one_chain))

    def __call__(self, key, model, times):
        """Posterior draws given ``y[:t]`` for each ``t`` in ``times``: a list of dicts."""
        keys = [jax.random.split(jax.random.fold_in(key, t)) for t in times]
        init_keys = jnp.concatenate([jax.random.split(k[0], self.num_chains) for k in keys])
        run_keys = jnp.concatenate([jax.random.split(k[1], self.num_chains) for k in keys])
        # Initial values valid for the shortest series; one initialization (and compilation).
        info = self._initialize(init_keys, model, min(times))
        run = self._runs.get((id(model), len(times)))
        if run is None:
            run = self._runs[(id(model), len(times))] = self._compile(info)
        nums = jnp.repeat(jnp.asarray(times), self.num_chains)
        draws = run(run_keys, info.param_info.z, nums)
        shape = (len(times), self.num_chains * self.num_samples)
        draws = {k: v.reshape(shape + v.shape[2:]) for k, v in draws.items()}
        return [{k: v[i] for k, v in draws.items()} for i in range(len(times))]


def _user_fit(fit):
    """Wrap ``fit(key, past_model, num_observed)`` as a fit of several ``t`` at once."""

    def fit_many(key, model, times):
        out = []
        for t in times:
            samples = fit(jax.random.fold_in(key, t), model, t)
            if not isinstance(samples, dict):
                raise ValueError(
                    "fit must return a dict site name -> draws of shape (draws, ...), got "
                    f"{type(samples).__name__}."
                )
            out.append(flatten_draws(samples, 1)[0])
        return out

    return fit_many

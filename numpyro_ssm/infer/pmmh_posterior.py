"""A pure PMMH fit, ``(key, data) -> draws``: the ``posterior_fn`` that ``run_sbc`` takes.

:func:`~numpyro_ssm.infer.run_sbc` fits every replication by NUTS, which needs an exact
``log_prob``. A :class:`~numpyro_ssm.distributions.ParticleSSM` has none (its likelihood is a
particle filter's random estimate), so its calibration runs through :func:`pmmh_posterior_fn`:
one PMMH chain per replication, written as a pure function of the key and the simulated data
so that ``run_sbc`` can ``vmap`` it over replications and compile it once.
"""

from collections.abc import Callable

import jax
from numpyro import handlers

from numpyro_ssm.infer.pmmh import PMMH

__all__ = ["pmmh_posterior_fn"]


def pmmh_posterior_fn(
    model,
    *model_args,
    num_warmup: int,
    num_samples: int,
    pmmh_options: dict | None = None,
    **model_kwargs,
) -> Callable:
    """The posterior draws of one :class:`~numpyro_ssm.infer.PMMH` chain, as a pure function.

    The model is called as ``model(*model_args, **model_kwargs)`` with its data sites
    conditioned on ``data`` (exactly how :func:`~numpyro_ssm.infer.run_sbc` calls it), and the
    chain runs ``num_warmup`` adaptation steps then ``num_samples`` kept steps in one
    ``lax.scan``. PMMH targets the exact posterior for any particle count, so SBC of a
    ``ParticleSSM`` model is expected to be calibrated: non-uniform ranks point at a bug (in
    the filter, the kernel, or between the family's ``sample`` and its filter), or at chains
    too short for their autocorrelation (check ``SBCResult.min_ess``).

    Args:
        model: a NumPyro model with observed particle-filtered sites (see :class:`PMMH`).
        *model_args: the model's positional arguments, with the data sites left free.
        num_warmup: PMMH warm-up steps (the random walk's scale and covariance adapt).
        num_samples: kept steps; ``run_sbc`` thins them by its ``thinning``.
        pmmh_options: keyword arguments of :class:`PMMH` (``num_particles``,
            ``correlation``, ``target_accept_prob``, ...).
        **model_kwargs: the model's keyword arguments, with the data sites left free.

    Returns:
        ``posterior_fn(key, data)``: ``key`` a ``jax.random`` key, ``data`` a dict data site
        -> value; returns a dict site -> ``(num_samples,) + site_shape`` array of constrained
        posterior draws (every latent site, deterministic sites included).

    Raises:
        ValueError: for a negative ``num_warmup`` or a nonpositive ``num_samples`` (and, from
            :class:`PMMH`, for bad ``pmmh_options``).

    Example:
        >>> posterior_fn = pmmh_posterior_fn(
        ...     model, num_steps=20, num_warmup=300, num_samples=1000,
        ...     pmmh_options=dict(num_particles=32, correlation=0.9))
        >>> result = run_sbc(key, model, num_steps=20, num_samples=1000, thinning=10,
        ...                  posterior_fn=posterior_fn)  # doctest: +SKIP
    """
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"pmmh_posterior_fn: num_warmup must be an int >= 0, got {num_warmup!r}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(
            f"pmmh_posterior_fn: num_samples must be a positive int, got {num_samples!r}."
        )

    def conditioned(data):
        with handlers.condition(data=data):
            return model(*model_args, **model_kwargs)

    kernel = PMMH(conditioned, **(pmmh_options or {}))

    def posterior_fn(key, data):
        args = (data,)
        state = kernel.init(key, num_warmup, None, args, {})

        def step(state, _):
            state = kernel.sample(state, args, {})
            return state, state.z

        state = jax.lax.fori_loop(0, num_warmup, lambda _, s: step(s, None)[0], state)
        _, z = jax.lax.scan(step, state, length=num_samples)
        return jax.vmap(kernel.postprocess_fn(args, {}))(z)

    return posterior_fn

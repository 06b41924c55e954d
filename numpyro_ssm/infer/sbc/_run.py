"""The SBC loop: prior draws, simulated data, vectorized NUTS fits, ranks (Talts et al. 2018)."""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import Predictive, init_to_uniform
from numpyro.infer.hmc import hmc
from numpyro.infer.util import ParamInfo, find_valid_initial_params, initialize_model

from numpyro_ssm.infer._sites import unwrap_ssm

__all__ = ["SBCResult", "run_sbc"]


class SBCResult(NamedTuple):
    """What :func:`run_sbc` returns; ``R`` is ``num_replications``, ``L`` is ``num_draws``.

    Attributes:
        ranks: dict parameter site -> int array of shape ``(R,) + site_shape``: for each
            replication and each scalar element, the number of the ``L`` posterior draws that
            are smaller than the prior draw that generated the data, in ``0..L``. Uniform on
            ``0..L`` when the fit is calibrated.
        num_draws: ``L``, the posterior draws each rank counts among (after thinning).
        prior_draws: dict parameter site -> array ``(R,) + site_shape``, the true values.
        simulated: dict observed site -> array ``(R,) + value_shape``, the simulated data.
        posterior_draws: dict parameter site -> array ``(R, C, L / C) + site_shape`` of the
            thinned draws (``C`` chains; one chain when a ``posterior_fn`` gives the draws).
        num_divergent: int array ``(R,)``, divergent transitions after warmup per replication
            (zeros with a ``posterior_fn``).
        max_rhat: float array ``(R,)``, the largest split R-hat over all scalar parameters
            (NaN with one chain).
        min_ess: float array ``(R,)``, the smallest effective sample size of the thinned draws
            over all scalar parameters.
    """

    ranks: dict
    num_draws: int
    prior_draws: dict
    simulated: dict
    posterior_draws: dict
    num_divergent: np.ndarray
    max_rhat: np.ndarray
    min_ess: np.ndarray


def _sites_of(model, model_args, model_kwargs, observed):
    """``(observed site names, parameter site names)`` from one prior trace of the model."""
    seeded = handlers.seed(model, rng_seed=0)
    trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
    free = {
        name: msg
        for name, msg in trace.items()
        if msg["type"] == "sample" and not msg["is_observed"]
    }
    if observed is None:
        observed = [name for name, msg in free.items() if unwrap_ssm(msg["fn"]) is not None]
        if not observed:
            raise ValueError(
                "run_sbc: the model has no free state-space-model site to simulate. Call it "
                "with the observed site left free (e.g. y=None and num_steps=T), or name the "
                f"data sites with observed=(...). Free sample sites: {list(free)}."
            )
    else:
        observed = [observed] if isinstance(observed, str) else list(observed)
        unknown = [name for name in observed if name not in free]
        if unknown:
            raise ValueError(
                f"run_sbc: observed={unknown} are not free sample sites of the model when it is "
                f"called with these arguments; free sample sites: {list(free)}."
            )
    params = [name for name, msg in free.items() if name not in observed]
    if not params:
        raise ValueError("run_sbc: the model has no parameter (latent sample site) to calibrate.")
    discrete = [name for name in params if free[name]["fn"].support.is_discrete]
    if discrete:
        raise ValueError(
            f"run_sbc: NUTS needs continuous parameters; the sites {discrete} are discrete. "
            "Marginalize them (as the state space models do) or pass posterior_fn=...."
        )
    return observed, params


def _conditioned(model, model_args, model_kwargs):
    """The model as a function of its data: ``conditioned(data)`` with data site -> value."""

    def conditioned(data):
        with handlers.condition(data=data):
            return model(*model_args, **model_kwargs)

    return conditioned


def _nuts_fn(conditioned, template, params, settings):
    """A pure ``(key, data) -> (draws (C, L / C, ...), divergences)`` NUTS fit of ``params``."""
    num_chains, num_warmup, num_kept, thinning = (
        settings["num_chains"],
        settings["num_warmup"],
        settings["num_kept"],
        settings["thinning"],
    )
    info = initialize_model(
        jax.random.key(0), conditioned, model_args=(template,), dynamic_args=True
    )
    init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
    prototype = info.param_info.z

    def one_chain(key, data):
        init_key, run_key = jax.random.split(key)
        start, _ = find_valid_initial_params(
            init_key,
            conditioned,
            init_strategy=settings["init_strategy"],
            model_args=(data,),
            prototype_params=prototype,
        )
        state = init_kernel(
            ParamInfo(*start),
            num_warmup,
            target_accept_prob=settings["target_accept_prob"],
            max_tree_depth=settings["max_tree_depth"],
            dense_mass=settings["dense_mass"],
            model_args=(data,),
            rng_key=run_key,
        )
        step = lambda _, s: sample_kernel(s, model_args=(data,))  # noqa: E731
        state = jax.lax.fori_loop(0, num_warmup, step, state)

        def keep(carry, _):
            state, divergent = carry

            def inner(_, c):
                s = sample_kernel(c[0], model_args=(data,))
                return s, c[1] + s.diverging

            state, divergent = jax.lax.fori_loop(0, thinning, inner, (state, divergent))
            return (state, divergent), state.z

        (_, divergent), z = jax.lax.scan(keep, (state, jnp.zeros((), jnp.int32)), length=num_kept)
        constrained = jax.vmap(info.postprocess_fn(data))(z)
        return {name: constrained[name] for name in params}, divergent

    def fit(key, data):
        draws, divergent = jax.vmap(one_chain, in_axes=(0, None))(
            jax.random.split(key, num_chains), data
        )
        return draws, divergent.sum()

    return fit


def _take(tree, index):
    return jax.tree.map(lambda x: np.asarray(x)[index], tree)


def _diagnostics(draws, num_chains):
    """``(max split R-hat, min ESS)`` per replication over every scalar parameter."""
    num_reps = next(iter(draws.values())).shape[0]
    rhat, ess = np.full(num_reps, np.nan), np.full(num_reps, np.nan)
    for r in range(num_reps):
        flat = np.concatenate(
            [np.reshape(v[r], v.shape[1:3] + (-1,)) for v in draws.values()], axis=-1
        )
        ess[r] = np.min(effective_sample_size(flat))
        if num_chains > 1 and flat.shape[1] >= 4:
            rhat[r] = np.max(split_gelman_rubin(flat))
    return rhat, ess


def run_sbc(
    key,
    model,
    *model_args,
    num_replications: int = 100,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 2,
    thinning: int = 5,
    observed: str | Sequence[str] | None = None,
    batch_size: int | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init_strategy: Callable = init_to_uniform,
    posterior_fn: Callable | None = None,
    **model_kwargs,
) -> SBCResult:
    r"""Simulation-based calibration of a model's posterior (Talts et al. 2018).

    For each of ``R`` replications: draw the parameters :math:`\theta^{(r)}` from the prior and
    data :math:`y^{(r)}` from the model (NumPyro ``Predictive``, so the observed site is drawn by
    the distribution's own ``sample``), fit the model to :math:`y^{(r)}` by NUTS, and for every
    scalar element of every parameter count the ``L`` (thinned) posterior draws below
    :math:`\theta^{(r)}`. If the fit recovers the exact posterior, each rank is uniform on
    ``0..L`` (the prior is the average posterior over data drawn from the prior predictive), so
    non-uniform ranks reveal a wrong likelihood, a wrong sampler or a bug between ``sample`` and
    ``log_prob``. Test them with :func:`sbc_summary`, look at them with
    :func:`plot_sbc_ranks`.

    **Which sites.** Call the model as for prior predictive sampling: ``*model_args`` and
    ``**model_kwargs`` leave the observed site free (``y=None`` and ``num_steps=T`` for a model
    written ``numpyro.sample("y", ssm, obs=y)``). The data sites are ``observed`` (by default
    every free site whose distribution is a state space model, found through the protocol of
    :class:`~numpyro_ssm.distributions.StateSpaceModel`, so any family works); every other free
    sample site is a parameter, calibrated element by element. Masks, covariates and fixed
    inputs stay model arguments: simulated values at masked steps are drawn but never seen by
    the fit.

    **Approximate likelihoods.** For a family whose ``log_prob`` approximates the marginal
    likelihood (an extended or unscented Kalman filter, a particle filter) while ``sample``
    simulates the exact generative model, SBC tests the *approximate* posterior against the
    *true* generative model: non-uniform ranks measure the approximation's miscalibration
    (overconfidence shows as a U-shaped histogram), not a bug. For a stochastic likelihood
    estimate (PMMH), pass ``posterior_fn`` with the sampler that matches it.

    **Fits.** NumPyro's NUTS (``numpyro.infer.hmc.hmc``, windowed adaptation of the step size
    and the mass matrix over ``num_warmup`` steps, starts from ``init_strategy``) runs
    ``num_chains`` chains per replication; chains and replications are vectorized with
    ``jax.vmap`` and compiled once for all batches of ``batch_size`` replications (the last
    batch is padded). Draws are thinned by ``thinning`` to reduce their autocorrelation, which
    would otherwise make even calibrated ranks look non-uniform; check ``min_ess`` against
    ``num_draws``.

    Args:
        key: a ``jax.random`` key (required).
        model: a NumPyro model; its parameters must be continuous (the latent paths of our
            state space models are marginalized).
        *model_args: the model's positional arguments, with the data sites left free.
        num_replications: ``R``, the simulated data sets.
        num_warmup: NUTS adaptation steps per chain.
        num_samples: NUTS draws per chain after warmup, before thinning.
        num_chains: chains per replication.
        thinning: keep every ``thinning``-th draw; ``L = num_chains * num_samples / thinning``.
        observed: the data site name(s); default every free state-space-model site.
        batch_size: replications fitted together (memory and vectorization width are
            ``batch_size * num_chains`` chains); default all at once.
        target_accept_prob: NUTS's adaptation target.
        max_tree_depth: NUTS's maximal tree depth.
        dense_mass: a dense mass matrix instead of a diagonal one.
        init_strategy: a NumPyro init strategy for the chains' starts (default
            ``init_to_uniform``; ``init_to_median`` keeps chains out of the far tails, where an
            approximate likelihood can have spurious modes).
        posterior_fn: instead of NUTS, a pure function ``(key, data) -> draws`` with ``data`` a
            dict data site -> value and ``draws`` a dict parameter site -> ``(S,) + shape``
            array of posterior draws; it is ``vmap``-ed and jitted like NUTS.
        **model_kwargs: the model's keyword arguments, with the data sites left free.

    Returns:
        An :class:`SBCResult`.

    Raises:
        ValueError: no free state-space-model site (or an unknown ``observed``), no
            parameter, a discrete parameter without ``posterior_fn``, or ``num_samples`` not a
            multiple of ``thinning``.

    Example:
        >>> def model(y=None, num_steps=50):
        ...     sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        ...     level = numpyro.sample("level", dist.HalfNormal(1.0))
        ...     ssm = LinearGaussianSSM(
        ...         jnp.zeros(1), jnp.eye(1), jnp.eye(1), initial_cov=jnp.eye(1),
        ...         transition_scale_tril=level * jnp.eye(1),
        ...         emission_scale_tril=sigma * jnp.eye(1), num_steps=num_steps)
        ...     numpyro.sample("y", ssm, obs=y)
        >>> result = run_sbc(jax.random.key(0), model, num_replications=200, num_steps=50)
        >>> sbc_summary(result)["sigma"].ecdf_pvalue  # doctest: +SKIP
    """
    if num_samples % thinning:
        raise ValueError(
            f"run_sbc: num_samples={num_samples} must be a multiple of thinning={thinning}."
        )
    observed, params = _sites_of(model, model_args, model_kwargs, observed)
    sim_key, fit_key = jax.random.split(key)
    prior = Predictive(model, num_samples=num_replications, return_sites=[*params, *observed])(
        sim_key, *model_args, **model_kwargs
    )
    simulated = {name: prior[name] for name in observed}
    truth = {name: prior[name] for name in params}
    conditioned = _conditioned(model, model_args, model_kwargs)
    if posterior_fn is None:
        settings = dict(
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_kept=num_samples // thinning,
            thinning=thinning,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass,
            init_strategy=init_strategy,
        )
        template = {name: v[0] for name, v in simulated.items()}
        fit = _nuts_fn(conditioned, template, params, settings)
    else:
        num_chains = 1

        def fit(key, data):
            draws = posterior_fn(key, data)
            thinned = {name: draws[name][::thinning][None] for name in params}
            return thinned, jnp.zeros((), jnp.int32)

    batch = num_replications if batch_size is None else min(batch_size, num_replications)

    @jax.jit
    def fit_batch(keys, data, truth):
        draws, divergent = jax.vmap(fit)(keys, data)
        ranks = {
            name: jnp.sum(draws[name] < truth[name][:, None, None], axis=(1, 2)) for name in params
        }
        return draws, divergent, ranks

    keys = jax.random.split(fit_key, num_replications)
    outputs = []
    for start in range(0, num_replications, batch):
        # the last batch is padded to the same size: one compilation serves every batch
        index = np.minimum(np.arange(start, start + batch), num_replications - 1)
        kept = min(batch, num_replications - start)
        out = fit_batch(keys[index], _take(simulated, index), _take(truth, index))
        outputs.append(_take(out, slice(0, kept)))
    draws, divergent, ranks = jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
    num_draws = int(next(iter(draws.values())).shape[1] * next(iter(draws.values())).shape[2])
    max_rhat, min_ess = _diagnostics(draws, num_chains)
    return SBCResult(
        ranks=ranks,
        num_draws=num_draws,
        prior_draws=jax.tree.map(np.asarray, truth),
        simulated=jax.tree.map(np.asarray, simulated),
        posterior_draws=draws,
        num_divergent=divergent,
        max_rhat=max_rhat,
        min_ess=min_ess,
    )

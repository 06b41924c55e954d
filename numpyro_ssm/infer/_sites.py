"""Find the state-space-model sites of a NumPyro model and map a function over posterior draws.

A site is an *SSM site* when its distribution (after unwrapping ``expand``, ``to_event`` and
``mask``) has the posterior helpers ``filter``, ``smooth`` and ``sample_posterior``:
:class:`~numpyro_ssm.DiscreteHMM`, :class:`~numpyro_ssm.LinearGaussianSSM`, or any distribution
with the same duck-typed interface.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions import Distribution

from numpyro_ssm.distributions.hmm import DiscreteHMM

__all__ = ["SSMSite", "find_ssm_sites", "flatten_draws", "is_ssm", "map_draws", "trace_model"]

_SSM_METHODS = ("filter", "smooth", "sample_posterior")


def is_ssm(fn) -> bool:
    """Whether ``fn`` offers the SSM posterior helpers ``filter``, ``smooth``, ``sample_posterior``.

    Args:
        fn: any object, usually a NumPyro distribution.

    Returns:
        True for :class:`~numpyro_ssm.DiscreteHMM`, :class:`~numpyro_ssm.LinearGaussianSSM` and
        duck-typed look-alikes.
    """
    return isinstance(fn, Distribution) and all(
        callable(getattr(fn, m, None)) for m in _SSM_METHODS
    )


def unwrap_ssm(fn):
    """The SSM distribution inside ``expand`` / ``to_event`` / ``mask`` wrappers, or None.

    Args:
        fn: the distribution of a sample site.

    Returns:
        The innermost distribution with the SSM helpers, or None when there is none.
    """
    while fn is not None:
        if is_ssm(fn):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


class SSMSite(NamedTuple):
    """Static description of one SSM site, taken from one trace of the model.

    Attributes:
        name: the site name.
        is_hmm: True for a :class:`~numpyro_ssm.DiscreteHMM` (discrete states), False for a
            Gaussian state model.
        batch_shape: the site's batch axes (plates, expanded or ``to_event`` axes), in front of
            the time axis of every per-site output.
        batch_dims: one name per batch axis: the plate's name where a plate owns the axis, else
            ``"series"`` (``"series_0"``, ``"series_1"``, ... when there are several).
        num_steps: ``T``.
        step_mask: bool, shape ``batch_shape + (T,)``, True where step ``t`` contributes to the
            likelihood (see :func:`step_mask`).
        value: the site's (observed) value, shape ``batch_shape + (T,) + E``.
    """

    name: str
    is_hmm: bool
    batch_shape: tuple
    batch_dims: tuple
    num_steps: int
    step_mask: np.ndarray
    value: Any


def step_mask(ssm, value):
    """Which time steps of ``value`` contribute to the SSM's likelihood.

    For a :class:`~numpyro_ssm.DiscreteHMM` a step counts when ``obs_mask`` is True and its
    observation has no NaN entry (the HMM drops a step with any missing entry). For a Gaussian
    model (``event_shape (T, D)``), a step counts when at least one of its ``D`` entries is
    observed (``obs_mask`` True and not NaN): partially observed steps still contribute.

    Args:
        ssm: the SSM distribution, ``event_shape (T,) + E``.
        value: observations, shape ``batch + (T,) + E``.

    Returns:
        bool array of shape ``batch + (T,)`` (``batch`` broadcast with the SSM's batch shape).
    """
    value = jnp.asarray(value)
    event_ndim = len(ssm.event_shape)
    extra = event_ndim - 1  # axes right of time
    batch = jnp.broadcast_shapes(value.shape[: value.ndim - event_ndim], ssm.batch_shape)
    if jnp.issubdtype(value.dtype, jnp.inexact):
        finite = ~jnp.isnan(value)
    else:
        finite = jnp.ones(value.shape, bool)
    obs_mask = getattr(ssm, "obs_mask", None)
    if isinstance(ssm, DiscreteHMM):
        observed = jnp.all(finite, axis=tuple(range(-extra, 0))) if extra else finite
        if obs_mask is not None:
            observed = observed & obs_mask
    else:
        if obs_mask is not None:
            finite = finite & obs_mask
        observed = jnp.any(finite, axis=tuple(range(-extra, 0))) if extra else finite
    return jnp.broadcast_to(observed, batch + (ssm.event_shape[0],))


def _batch_dim_names(msg, batch_shape):
    outer_ndim = len(msg["fn"].batch_shape)
    plate_names = {frame.dim: frame.name for frame in msg.get("cond_indep_stack", ())}
    names = []
    for i in range(len(batch_shape)):
        dim = i - outer_ndim if i < outer_ndim else None
        names.append(plate_names.get(dim))
    unnamed = [i for i, n in enumerate(names) if n is None]
    for j, i in enumerate(unnamed):
        names[i] = "series" if len(unnamed) == 1 else f"series_{j}"
    return tuple(names)


def trace_model(model, params, model_args, model_kwargs, key=None):
    """Trace ``model`` with the latent sites set to ``params`` (observed sites keep their data).

    Args:
        model: a NumPyro model.
        params: dict site name -> value of one draw.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        key: PRNG key for sites that ``params`` does not cover; None uses a fixed dummy key,
            which is only consumed when a latent site is missing (see :func:`find_ssm_sites`).

    Returns:
        The NumPyro trace (an ordered dict of site messages).
    """

    def substitute_fn(msg):
        if msg.get("is_observed"):
            return None
        return params.get(msg["name"])

    seed = jax.random.key(0) if key is None else key
    substituted = handlers.substitute(model, substitute_fn=substitute_fn)
    return handlers.trace(handlers.seed(substituted, rng_seed=seed)).get_trace(
        *model_args, **model_kwargs
    )


def find_ssm_sites(model, params, model_args, model_kwargs, site=None):
    """Trace the model once and describe its SSM sites.

    Args:
        model: a NumPyro model.
        params: dict site name -> value of one draw.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        site: None (every observed SSM site), a site name, or a sequence of site names.

    Returns:
        A dict site name -> :class:`SSMSite`, in model order.

    Raises:
        ValueError: when a latent sample site has no value in ``params``, when a requested site
            is missing or is not an SSM site, or when the model has no observed SSM site.
    """
    trace = trace_model(model, params, model_args, model_kwargs)
    missing = [
        name
        for name, msg in trace.items()
        if msg["type"] == "sample" and not msg["is_observed"] and name not in params
    ]
    if missing:
        raise ValueError(
            f"posterior_samples has no draws for the latent site(s) {missing}; pass samples "
            "for every latent site (e.g. mcmc.get_samples()), so that no site is drawn from "
            "its prior."
        )
    if site is None:
        names = [
            name
            for name, msg in trace.items()
            if msg["type"] == "sample" and msg["is_observed"] and unwrap_ssm(msg["fn"]) is not None
        ]
        if not names:
            sample_sites = [n for n, m in trace.items() if m["type"] == "sample"]
            raise ValueError(
                "The model has no observed DiscreteHMM/LinearGaussianSSM site; pass site=... "
                f"to choose one. Sample sites: {sample_sites}."
            )
    else:
        names = [site] if isinstance(site, str) else list(site)
    sites = {}
    for name in names:
        msg = trace.get(name)
        if msg is None or msg["type"] != "sample":
            raise ValueError(f"site={name!r} is not a sample site of the model.")
        ssm = unwrap_ssm(msg["fn"])
        if ssm is None:
            raise ValueError(
                f"site={name!r} has distribution {type(msg['fn']).__name__}, which is not a "
                "DiscreteHMM/LinearGaussianSSM (no filter/smooth/sample_posterior)."
            )
        value = msg["value"]
        mask = step_mask(ssm, value)
        batch_shape = tuple(mask.shape[:-1])
        sites[name] = SSMSite(
            name=name,
            is_hmm=isinstance(ssm, DiscreteHMM) or hasattr(ssm, "num_states"),
            batch_shape=batch_shape,
            batch_dims=_batch_dim_names(msg, batch_shape),
            num_steps=int(mask.shape[-1]),
            step_mask=np.asarray(mask),
            value=value,
        )
    return sites


def flatten_draws(posterior_samples: Mapping[str, Any], batch_ndims: int):
    """Flatten the leading ``batch_ndims`` draw axes of every array into one.

    Args:
        posterior_samples: dict site -> array of shape ``draw_shape + site_shape``.
        batch_ndims: 1 for ``(draws, ...)``, 2 for ``(chains, draws, ...)``.

    Returns:
        ``(flat_samples, draw_shape, first_draw)``: arrays of shape ``(N,) + site_shape``, the
        draw shape, and the first draw as a dict.

    Raises:
        ValueError: for ``batch_ndims`` not 1 or 2, an empty dict, or draw shapes that differ.
    """
    if batch_ndims not in (1, 2):
        raise ValueError(f"batch_ndims must be 1 (draws) or 2 (chains, draws), got {batch_ndims}.")
    if not posterior_samples:
        raise ValueError("posterior_samples is empty.")
    arrays = {k: jnp.asarray(v) for k, v in posterior_samples.items()}
    shapes = {k: v.shape[:batch_ndims] for k, v in arrays.items()}
    draw_shape = next(iter(shapes.values()))
    if any(s != draw_shape or len(s) < batch_ndims for s in shapes.values()):
        raise ValueError(
            f"Every array of posterior_samples must start with the same {batch_ndims} draw "
            f"axes (batch_ndims={batch_ndims}); got leading shapes {shapes}."
        )
    flat = {k: v.reshape((-1,) + v.shape[batch_ndims:]) for k, v in arrays.items()}
    first = {k: v[0] for k, v in flat.items()}
    return flat, tuple(draw_shape), first


def map_draws(fn: Callable, flat_samples, draw_shape: Sequence[int], key=None, chunk_size=None):
    """``fn(params, key)`` for every draw, ``chunk_size`` draws at a time (bounded memory).

    Args:
        fn: maps one draw's dict (and a key or None) to a pytree of arrays.
        flat_samples: dict of arrays with one leading axis of ``N`` draws.
        draw_shape: the draw shape to restore (its product is ``N``).
        key: PRNG key, split into one key per draw; or None.
        chunk_size: draws evaluated together with ``vmap``; the chunks run sequentially under
            ``lax.map``. None evaluates all draws at once.

    Returns:
        The pytree of outputs, each with ``draw_shape`` leading.
    """
    num_draws = int(np.prod(draw_shape))
    keys = None if key is None else jax.random.split(key, num_draws)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}.")
    batch = 0 if chunk_size is None or chunk_size >= num_draws else int(chunk_size)

    def one(inputs):
        params, k = inputs
        return fn(params, k)

    out = jax.jit(lambda xs: jax.lax.map(one, xs, batch_size=batch))((flat_samples, keys))
    return jax.tree.map(lambda x: x.reshape(tuple(draw_shape) + x.shape[1:]), out)

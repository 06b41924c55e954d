"""Find the state-space-model sites of a NumPyro model and evaluate them over posterior draws.

A site is an *SSM site* when its distribution (after unwrapping ``expand``, ``to_event`` and
``mask``) implements the protocol of :class:`numpyro_ssm.distributions.StateSpaceModel`; this
module asks it for step masks, log-likelihood increments and latent summaries and never for its
class.
"""

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from numpyro_ssm.distributions._ssm import is_state_space_model

__all__ = [
    "SSMSite",
    "evaluate_sites",
    "find_ssm_sites",
    "flatten_draws",
    "trace_model",
    "unwrap_ssm",
]

#: ArviZ name prefix of each latent method's variables (``y_smoothed_probs``, ...)
LATENT_PREFIX = {"smooth": "smoothed", "sample": "posterior_sample", "mode": "posterior_mode"}


def unwrap_ssm(fn):
    """The SSM distribution inside ``expand`` / ``to_event`` / ``mask`` wrappers, or None.

    Args:
        fn: the distribution of a sample site.

    Returns:
        The innermost distribution that implements the SSM protocol, or None.
    """
    while fn is not None:
        if is_state_space_model(fn):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


def latent_variable_name(site_name, method, short_name):
    """The ArviZ variable of a latent output: ``{site}_{prefix}[_{short name}]``."""
    base = f"{site_name}_{LATENT_PREFIX[method]}"
    return f"{base}_{short_name}" if short_name else base


class SSMSite(NamedTuple):
    """Static description of one SSM site, taken from one trace of the model.

    Attributes:
        name: the site name.
        batch_shape: the site's batch axes (plates, expanded or ``to_event`` axes), in front of
            the time axis of every per-site output.
        batch_dims: one name per batch axis: the plate's name where a plate owns the axis, else
            ``"series"`` (``"series_0"``, ``"series_1"``, ... when there are several).
        num_steps: ``T``.
        step_mask: bool, shape ``batch_shape + (T,)``, True where step ``t`` contributes to the
            likelihood (the distribution's ``step_mask``, computed once here).
        value: the site's (observed) value, shape ``batch_shape + (T,) + E``.
        latent_dims: latent method -> dict short name -> dims after the batch axes, for every
            method the distribution supports.
    """

    name: str
    batch_shape: tuple
    batch_dims: tuple
    num_steps: int
    step_mask: np.ndarray
    value: Any
    latent_dims: dict


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
                "The model has no observed state-space-model site; pass site=... to choose one. "
                f"Sample sites: {sample_sites}."
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
                f"site={name!r} has distribution {type(msg['fn']).__name__}, which does not "
                "implement the state-space-model protocol (numpyro_ssm.distributions."
                "StateSpaceModel)."
            )
        value = msg["value"]
        mask = np.asarray(ssm.step_mask(value))
        batch_shape = tuple(mask.shape[:-1])
        sites[name] = SSMSite(
            name=name,
            batch_shape=batch_shape,
            batch_dims=_batch_dim_names(msg, batch_shape),
            num_steps=int(mask.shape[-1]),
            step_mask=mask,
            value=value,
            latent_dims={m: dict(ssm.latent_dims(m)) for m in ssm.latent_methods},
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


# ---------------------------------------------------------------------------------------------
# Evaluating the sites over draws, compiled once per model, sites, methods and shapes
# ---------------------------------------------------------------------------------------------


def _is_dynamic(leaf):
    return isinstance(leaf, jax.Array | np.ndarray)


def _split_arguments(model_args, model_kwargs):
    """Array leaves of the model's arguments (traced) and the rest (static, part of the key)."""
    leaves, treedef = jax.tree.flatten((tuple(model_args), dict(model_kwargs)))
    dynamic = [leaf for leaf in leaves if _is_dynamic(leaf)]
    static = tuple(None if _is_dynamic(leaf) else leaf for leaf in leaves)
    return dynamic, (treedef, static)


def _join_arguments(dynamic, structure):
    treedef, static = structure
    it = iter(dynamic)
    leaves = [next(it) if leaf is None else leaf for leaf in static]
    return jax.tree.unflatten(treedef, leaves)


_COMPILED: OrderedDict = OrderedDict()
_MAX_COMPILED = 32


def _compiled_evaluator(model, structure, names, methods, chunk):
    """A jitted ``(flat_samples, keys, dynamic_args) -> outputs`` function, cached.

    The cache key holds the model, the static part of its arguments, the site names, the
    methods and the chunk size; the arrays are arguments, so ``jax.jit`` compiles once per
    shape. Unhashable static arguments skip the cache (and compile per call).
    """
    key = (model, structure, names, methods, chunk)
    try:
        fn = _COMPILED.get(key)
    except TypeError:  # an unhashable static argument
        return _build_evaluator(model, structure, names, methods, chunk)
    if fn is None:
        fn = _COMPILED[key] = _build_evaluator(model, structure, names, methods, chunk)
        while len(_COMPILED) > _MAX_COMPILED:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return fn


def _build_evaluator(model, structure, names, methods, chunk):
    def one(params, draw_key, dynamic):
        args, kwargs = _join_arguments(dynamic, structure)
        trace = trace_model(model, params, args, kwargs)
        out = {}
        for i, name in enumerate(names):
            msg = trace[name]
            site_key = None if draw_key is None else jax.random.fold_in(draw_key, i)
            result = unwrap_ssm(msg["fn"]).latents(msg["value"], methods, site_key)
            out[name] = (result.log_likelihood_increments, result.latents)
        return out

    @jax.jit
    def run(flat_samples, keys, dynamic):
        def body(inputs):
            params, draw_key = inputs
            return one(params, draw_key, dynamic)

        return jax.lax.map(body, (flat_samples, keys), batch_size=chunk)

    return run


def evaluate_sites(
    model,
    flat_samples,
    draw_shape: Sequence[int],
    model_args,
    model_kwargs,
    sites: Sequence[str],
    methods=(),
    key=None,
    chunk_size=None,
):
    """Every site's log-likelihood increments and latent summaries, for every draw.

    One trace of the model per draw and one :meth:`~numpyro_ssm.distributions.StateSpaceModel.
    latents` call per site, so the increments and the latents come from the same pass over the
    data. Draws are evaluated ``chunk_size`` at a time (``vmap`` inside ``lax.map``), so memory
    stays bounded by the outputs plus one chunk's work.

    Args:
        model: the NumPyro model.
        flat_samples: dict of arrays with one leading axis of ``N`` draws.
        draw_shape: the draw shape to restore (its product is ``N``).
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        sites: the SSM site names.
        methods: latent methods to compute (possibly none).
        key: PRNG key, split into one key per draw; required with ``"sample"``.
        chunk_size: draws evaluated together; None evaluates all draws at once.

    Returns:
        dict site name -> ``(increments, latents)`` with ``draw_shape`` leading; ``latents`` is
        method -> dict short name -> array.
    """
    num_draws = int(np.prod(draw_shape))
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}.")
    chunk = 0 if chunk_size is None or chunk_size >= num_draws else int(chunk_size)
    keys = None if key is None else jax.random.split(key, num_draws)
    dynamic, structure = _split_arguments(model_args, model_kwargs)
    run = _compiled_evaluator(model, structure, tuple(sites), tuple(methods), chunk)
    out = run(flat_samples, keys, dynamic)
    return jax.tree.map(lambda x: x.reshape(tuple(draw_shape) + x.shape[1:]), out)

"""ArviZ ``InferenceData`` with per-time-step log-likelihoods and latent-path posteriors.

ArviZ and xarray (the ``arviz`` extra) are imported inside the functions only. With ArviZ 1.x
(Python >= 3.12) the result is an xarray ``DataTree`` with the same groups, dims and coords.
"""

import numpy as np

from numpyro_ssm.infer._sites import (
    SSMSite,
    evaluate_sites,
    find_ssm_sites,
    flatten_draws,
    trace_model,
)
from numpyro_ssm.infer._xarray import import_arviz, inference_data, latent_variables
from numpyro_ssm.infer.loglik import mask_steps

__all__ = ["to_inference_data"]

# numpyro extra field -> (ArviZ sample_stats name, sign)
_STAT_NAMES = {
    "diverging": ("diverging", 1),
    "potential_energy": ("lp", -1),
    "num_steps": ("n_steps", 1),
    "accept_prob": ("acceptance_rate", 1),
    "energy": ("energy", 1),
    "step_size": ("step_size", 1),
    "tree_depth": ("tree_depth", 1),
}
_METHODS = ("smooth", "sample", "mode")


def _coords_for(dims_used, coords):
    coords = coords or {}
    return {d: coords[d] for d in dims_used if d in coords}


def _plate_dims(msg, name):
    """Dim names for a site's value: plate names on plate axes, ArviZ defaults elsewhere."""
    shape = np.shape(msg["value"])
    fn = msg.get("fn")
    batch_ndim = len(fn.batch_shape) if fn is not None and hasattr(fn, "batch_shape") else 0
    dims = [f"{name}_dim_{i}" for i in range(len(shape))]
    for frame in msg.get("cond_indep_stack", ()):
        axis = batch_ndim + frame.dim
        if 0 <= axis < len(shape) and shape[axis] == frame.size:
            dims[axis] = frame.name
    return dims


def _log_likelihood_variables(site: SSMSite, values, coords, used_time):
    """Drop the steps that do not contribute; return ``(variables, extra_coords)``."""
    mask = site.step_mask
    values = np.asarray(values)
    dims = [*site.batch_dims, "time"]
    if mask.all():
        return {site.name: (values, dims)}, {}
    time_coord = np.asarray((coords or {}).get("time", np.arange(site.num_steps)))
    kept = mask.reshape(-1, site.num_steps)
    if (kept == kept[0]).all():  # the same steps are missing in every series: drop them
        keep = kept[0]
        time_dim = "time"
        if "time" in used_time and not np.array_equal(used_time["time"], time_coord[keep]):
            time_dim = f"{site.name}_time"
        used_time.setdefault(time_dim, time_coord[keep])
        return (
            {site.name: (values[..., keep], [*site.batch_dims, time_dim])},
            {time_dim: time_coord[keep]},
        )
    # Ragged (padded) series: one flat axis over the observed (series, time) pairs.
    step_dim = f"{site.name}_observed_step"
    index = np.nonzero(mask)
    flat = values[(..., *index)]
    extra = {f"{site.name}_time": (step_dim, time_coord[index[-1]])}
    for axis, (dim, idx) in enumerate(zip(site.batch_dims, index[:-1], strict=True)):
        labels = np.asarray((coords or {}).get(dim, np.arange(mask.shape[axis])))
        extra[f"{site.name}_{dim}"] = (step_dim, labels[idx])
    return {site.name: (flat, [step_dim])}, extra


def _sample_stats_from_mcmc(mcmc):
    stats = {}
    for key, value in mcmc.get_extra_fields(group_by_chain=True).items():
        value = np.asarray(value) if hasattr(value, "shape") else None
        if value is None or value.ndim != 2:
            continue
        name, sign = _STAT_NAMES.get(key, (key, 1))
        stats[name] = sign * value if sign == -1 else value
    return stats


def to_inference_data(
    mcmc,
    model=None,
    *model_args,
    latents=None,
    key=None,
    coords=None,
    dims=None,
    sample_stats=None,
    chunk_size=256,
    **model_kwargs,
):
    """ArviZ's container of a fit, whose ``log_likelihood`` group has a ``time`` dimension.

    With ArviZ 0.2x the container is an ``arviz.InferenceData``; with ArviZ 1.x (Python >= 3.12)
    it is an ``xarray.DataTree`` whose child nodes are the same groups with the same variables,
    dims and coords (``tree.posterior``, ``tree.log_likelihood["y"]``), what ArviZ 1.x takes.

    Groups:

    - ``posterior``: every latent site and deterministic site, dims ``(chain, draw, ...)``;
      axes owned by a plate are named after the plate. With ``latents``, also the latent-path
      posterior per SSM site ``y``, named and dimensioned by the site's model (see
      :mod:`numpyro_ssm.distributions._ssm`): ``y_smoothed_probs (..., time, state)`` for a
      discrete model or ``y_smoothed_means (..., time, state)`` and ``y_smoothed_covariances
      (..., time, state, state_2)`` for a Gaussian one with ``"smooth"``;
      ``y_posterior_sample`` for ``"sample"``; ``y_posterior_mode`` for ``"mode"``.
    - ``sample_stats``: NumPyro's extra fields under ArviZ names (``diverging``, ``lp``,
      ``n_steps``, ``acceptance_rate``, ...), or the ``sample_stats`` dict given.
    - ``observed_data``: every observed site; an SSM site's dims are ``[series...,] time``.
    - ``log_likelihood``: one variable per SSM site, :func:`pointwise_log_likelihood` with dims
      ``(chain, draw, [series...,] time)``, so that ``az.loo``/``az.waic`` work.

    **Missing steps.** ArviZ cannot take NaN log-likelihoods, so steps that contribute nothing
    (``obs_mask`` False or NaN data) are dropped from the ``log_likelihood`` group:

    - when every series misses the same steps, the ``time`` axis keeps only the observed steps
      and its coordinate their labels (a site whose kept steps differ from an earlier site's
      gets its own dim ``{site}_time``);
    - when series are ragged (padded with a mask), the site's values lie along one axis
      ``{site}_observed_step`` with coordinates ``{site}_time`` and ``{site}_{series dim}``
      giving each value's time and series labels.

    The log-likelihoods and the latents come from one pass over the data per draw. What
    ``az.loo`` on these terms measures is explained once, in :mod:`numpyro_ssm.infer.loglik`.

    Args:
        mcmc: a fitted ``numpyro.infer.MCMC``, or a dict of constrained samples of shape
            ``(chains, draws, ...)`` (e.g. ``run_blackjax(...).samples``; then ``model`` is
            required).
        model: the model; defaults to ``mcmc.sampler.model``.
        *model_args: the model's positional arguments; when ``model`` is None and none are
            given, the arguments of the last ``mcmc.run`` are used.
        latents: None, or a method (``"smooth"``, ``"sample"``, ``"mode"``) or a list of
            methods, see :func:`posterior_latents`.
        key: a ``jax.random`` key, required when ``latents`` includes ``"sample"``.
        coords: coordinates by dim name, e.g. ``{"time": years, "series": names}``.
        dims: dims by variable name, overriding the defaults above.
        sample_stats: dict of ``(chains, draws)`` arrays; defaults to the MCMC's extra fields.
        chunk_size: draws evaluated together (see :func:`posterior_latents`).
        **model_kwargs: the model's keyword arguments (with ``model`` None and no
            ``model_args`` and no ``model_kwargs``, those of the last ``mcmc.run``).

    Returns:
        An ``arviz.InferenceData`` (ArviZ 0.2x) or an ``xarray.DataTree`` (ArviZ 1.x).

    Raises:
        ValueError: a dict of samples without ``model``; ``"sample"`` latents without ``key``.
    """
    _, xr = import_arviz()
    if isinstance(mcmc, dict):
        if model is None:
            raise ValueError("to_inference_data: pass model=... with a dict of samples.")
        samples = {k: np.asarray(v) for k, v in mcmc.items()}
        stats = dict(sample_stats or {})
    else:
        if model is None:
            model = mcmc.sampler.model
            if not model_args and not model_kwargs:
                model_args, model_kwargs = tuple(mcmc._args), dict(mcmc._kwargs)
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
        stats = _sample_stats_from_mcmc(mcmc) if sample_stats is None else dict(sample_stats)
    methods = [] if latents is None else [latents] if isinstance(latents, str) else list(latents)
    for method in methods:
        if method not in _METHODS:
            raise ValueError(f"to_inference_data: latents must be in {_METHODS}, got {method!r}.")
    if "sample" in methods and key is None:
        raise ValueError("to_inference_data: latents='sample' draws paths; pass key=....")
    coords = dict(coords or {})
    user_dims = dict(dims or {})

    flat, draw_shape, first = flatten_draws(samples, 2)
    sites = find_ssm_sites(model, first, model_args, model_kwargs)
    for method in methods:
        for name, site in sites.items():
            if method not in site.latent_dims:
                raise ValueError(
                    f"to_inference_data: the model at site {name!r} supports the latent methods "
                    f"{tuple(site.latent_dims)}, not {method!r}."
                )
    trace = trace_model(model, first, model_args, model_kwargs)

    def ds(variables, extra_coords=None, sampled=True):
        arrays, used = {}, set()
        for name, (arr, var_dims) in variables.items():
            arr = np.asarray(arr)
            var_dims = list(user_dims.get(name, var_dims))
            lead = ["chain", "draw"] if sampled else []
            full = lead + var_dims
            full += [f"{name}_dim_{i}" for i in range(len(full), arr.ndim)]
            full = full[: arr.ndim]
            arrays[name] = xr.DataArray(arr, dims=full)
            used.update(full)
        cs = _coords_for(used - {"chain", "draw"}, coords)
        cs.update(extra_coords or {})
        if sampled and arrays:
            first_arr = next(iter(arrays.values()))
            cs["chain"] = np.arange(first_arr.shape[0])
            cs["draw"] = np.arange(first_arr.shape[1])
        return xr.Dataset(arrays, coords=cs)

    posterior = {}
    for name, value in samples.items():
        msg = trace.get(name)
        if msg is not None and msg["type"] == "sample" and msg["is_observed"]:
            continue
        var_dims = _plate_dims(msg, name)[: value.ndim - 2] if msg is not None else []
        posterior[name] = (value, var_dims)
    outputs = evaluate_sites(
        model,
        flat,
        draw_shape,
        model_args,
        model_kwargs,
        list(sites),
        tuple(methods),
        key,
        chunk_size,
    )
    for method in methods:
        for name, site in sites.items():
            posterior.update(latent_variables(site, method, outputs[name][1][method]))

    observed = {}
    for name, msg in trace.items():
        if msg["type"] == "sample" and msg["is_observed"]:
            site = sites.get(name)
            if site is not None:
                observed[name] = (msg["value"], [*site.batch_dims, "time"])
            else:
                observed[name] = (msg["value"], _plate_dims(msg, name))

    ll_vars, ll_coords, used_time = {}, {}, {}
    for name, site in sites.items():
        loglik = mask_steps(outputs[name][0], site)
        variables, extra = _log_likelihood_variables(site, loglik, coords, used_time)
        ll_vars.update(variables)
        ll_coords.update(extra)

    groups = {
        "posterior": ds(posterior),
        "log_likelihood": ds(ll_vars, ll_coords),
        "observed_data": ds(observed, sampled=False),
    }
    if stats:
        groups["sample_stats"] = ds({k: (v, []) for k, v in stats.items()})
    return inference_data(groups)

"""xarray output shared by the workflow functions: latent paths with named dims.

ArviZ and xarray (the ``arviz`` extra) are imported inside the functions only. Both ArviZ majors
are supported: 0.2x (Python 3.11), whose container is ``arviz.InferenceData``, and 1.x (Python
>= 3.12, the arviz-base/stats/plots split), whose container is xarray's ``DataTree`` with the
same groups as child nodes (:func:`inference_data`).
"""

import numpy as np

from numpyro_ssm.infer._sites import SSMSite, latent_variable_name

__all__ = [
    "arviz_major",
    "import_arviz",
    "inference_data",
    "latent_variables",
    "latents_to_xarray",
]


def import_arviz():
    """``(arviz, xarray)``, or an ``ImportError`` that names the extra to install."""
    try:
        import arviz as az
        import xarray as xr
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "numpyro_ssm.infer: InferenceData/xarray output needs the arviz extra: "
            "pip install 'numpyro-ssm[arviz]'."
        ) from err
    return az, xr


def arviz_major(az) -> int:
    """The major version of the imported ArviZ (0 or 1)."""
    return int(str(az.__version__).split(".")[0])


def inference_data(groups):
    """The ArviZ container of ``groups`` (dict group name -> ``xarray.Dataset``).

    Args:
        groups: e.g. ``{"posterior": ..., "log_likelihood": ..., "observed_data": ...}``.

    Returns:
        With ArviZ 0.2x an ``arviz.InferenceData``; with ArviZ 1.x an ``xarray.DataTree`` whose
        child nodes are the groups (``tree.posterior``, ``tree["log_likelihood"]``), which is
        what ArviZ 1.x functions (``az.loo``, ``az.summary``, ``az.plot_trace_dist``) take.
    """
    az, xr = import_arviz()
    if arviz_major(az) >= 1:
        return xr.DataTree.from_dict(dict(groups))
    return az.InferenceData(**groups)


def latent_variables(site: SSMSite, method, values):
    """``{variable name: (array, dims after chain/draw)}`` for one site's latents of ``method``.

    Args:
        site: the site description (its ``latent_dims`` name the dims).
        method: ``"smooth"``, ``"sample"`` or ``"mode"``.
        values: dict short name -> array, as the distribution's ``latents`` returns them.

    Returns:
        dict ArviZ variable name -> ``(array, dims)``.
    """
    dims = site.latent_dims[method]
    return {
        latent_variable_name(site.name, method, short): (arr, [*site.batch_dims, *dims[short]])
        for short, arr in values.items()
    }


def latents_to_xarray(values, site: SSMSite, method, batch_ndims, coords=None):
    """Wrap one site's :func:`~numpyro_ssm.infer.posterior_latents` output in xarray.

    Args:
        values: dict short name -> array with ``(draws,)`` or ``(chains, draws)`` leading.
        site: the site description from tracing the model.
        method: ``"smooth"``, ``"sample"`` or ``"mode"``.
        batch_ndims: 1 for ``(draws, ...)``, 2 for ``(chains, draws, ...)``.
        coords: coordinates by dim name, e.g. ``{"time": years}``.

    Returns:
        A ``DataArray`` with dims ``chain, draw, [series...], time, ...`` when the method has
        one output, else a ``Dataset`` keyed by the short names (``means``, ``covariances``).
    """
    _, xr = import_arviz()
    coords = coords or {}
    arrays = {}
    for short, (arr, dims) in zip(
        values, latent_variables(site, method, values).values(), strict=True
    ):
        arr = np.asarray(arr)
        if batch_ndims == 1:
            arr = arr[None]
        full = ["chain", "draw", *dims]
        named = {d: coords[d] for d in dims if d in coords}
        arrays[short] = xr.DataArray(
            arr,
            dims=full,
            coords={"chain": np.arange(arr.shape[0]), "draw": np.arange(arr.shape[1]), **named},
            name=latent_variable_name(site.name, method, short),
        )
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    return xr.Dataset(arrays)

r"""Forecasts across posterior draws, with law-of-total-variance bands.

For posterior draws :math:`\theta^{(s)}` the predictive distribution of the next ``H``
observations is the mixture :math:`\frac1S \sum_s p(y_{T+1:T+H} \mid y_{1:T}, \theta^{(s)})`.
Its mean and per-entry variance follow from each draw's forecast moments by the law of total
variance,

.. math::

    \mathrm{E}[y] = \overline{\mu}, \qquad
    \mathrm{Var}[y] = \overline{\sigma^2} + \frac1S \sum_s (\mu^{(s)} - \overline{\mu})^2,

with :math:`\mu^{(s)}, \sigma^{2(s)}` the mean and variance of draw ``s``'s forecast.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from numpyro_ssm.infer._sites import find_ssm_sites, flatten_draws, trace_model, unwrap_ssm

__all__ = ["ForecastResult", "forecast"]


class ForecastResult(NamedTuple):
    """What :func:`forecast` returns for one site (NumPy arrays, or xarray with ``as_xarray``).

    Attributes:
        means: shape ``draw_shape + batch + (H,) + E``, each draw's forecast mean.
        variances: same shape, each draw's forecast variance per entry.
        mean: shape ``batch + (H,) + E``, the predictive mean (mean of ``means``).
        variance: same shape, the predictive variance (law of total variance).
        lower: same shape, the lower end of the central ``prob`` band.
        upper: same shape, the upper end.
        prob: the band's probability.
        samples: ``draw_shape + batch + (H,) + E`` predictive draws (one per posterior draw)
            when a ``key`` was given, else None.
    """

    means: Any
    variances: Any
    mean: Any
    variance: Any
    lower: Any
    upper: Any
    prob: float
    samples: Any = None


def _normal_quantile(prob):
    from scipy.stats import norm

    return float(norm.ppf(0.5 + prob / 2))


def forecast(
    model,
    posterior_samples,
    *model_args,
    num_steps,
    site=None,
    future=None,
    key=None,
    prob=0.9,
    batch_ndims=1,
    as_xarray=False,
    coords=None,
    **model_kwargs,
):
    r"""Forecast the next ``num_steps`` observations of every SSM site, across posterior draws.

    For each draw the model is traced with the draw substituted and the site's distribution is
    asked for ``forecast(y, num_steps, **future)``; the means and variances of those forecasts
    are pooled by the law of total variance (module docstring).

    The band is the central ``prob`` interval. Without ``key`` it is the normal approximation
    ``mean ± z sd`` of the pooled moments (exact for a single Gaussian forecast, a moment match
    for the mixture); with ``key`` one predictive draw per posterior draw is sampled and the
    band is their empirical quantiles, which also suits skewed or discrete forecasts (counts).

    Args:
        model: a NumPyro model with an observed SSM site.
        posterior_samples: dict site name -> draws, shape ``(draws, ...)`` or, with
            ``batch_ndims=2``, ``(chains, draws, ...)``; it must cover every latent site.
        *model_args: positional arguments of ``model``, with the observed data.
        num_steps: ``H``, the number of future steps.
        site: None for every observed SSM site, a site name, or a list of names.
        future: the future values of time-varying parameters, passed to the model's
            ``forecast``: a dict, or a function of one draw's dict of samples returning one
            (for future controls that depend on sampled coefficients).
        key: a ``jax.random`` key for predictive draws and empirical bands (optional).
        prob: the band's probability.
        batch_ndims: number of leading draw axes of ``posterior_samples``: 1 or 2.
        as_xarray: return an ``xarray.Dataset`` per site with variables ``means``,
            ``variances``, ``mean``, ``variance``, ``lower``, ``upper`` (and ``samples``), dims
            ``chain, draw, [series...], time, ...`` (needs the ``arviz`` extra).
        coords: with ``as_xarray``, coordinates by dim name, e.g. ``{"time": future_years}``.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        A dict site name -> :class:`ForecastResult` (or ``xarray.Dataset``).

    Raises:
        ValueError: for ``num_steps < 1`` or ``prob`` outside ``(0, 1)``.
    """
    if not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"forecast: num_steps must be an int >= 1, got {num_steps!r}.")
    if not 0 < prob < 1:
        raise ValueError(f"forecast: prob must lie in (0, 1), got {prob}.")
    flat, draw_shape, first = flatten_draws(posterior_samples, batch_ndims)
    sites = find_ssm_sites(model, first, model_args, model_kwargs, site=site)
    future_fn: Callable = future if callable(future) else (lambda _: dict(future or {}))

    def one(params, draw_key):
        trace = trace_model(model, params, model_args, model_kwargs)
        out = {}
        for i, name in enumerate(sites):
            msg = trace[name]
            dist = unwrap_ssm(msg["fn"]).forecast(msg["value"], num_steps, **future_fn(params))
            draw = None if draw_key is None else dist.sample(jax.random.fold_in(draw_key, i))
            out[name] = (dist.mean, dist.variance, draw)
        return out

    num_draws = int(np.prod(draw_shape))
    keys = None if key is None else jax.random.split(key, num_draws)
    out = jax.jit(jax.vmap(one))(flat, keys)
    z = _normal_quantile(prob)
    results = {}
    for name, (means, variances, draws) in out.items():
        means = np.asarray(means).reshape(draw_shape + means.shape[1:])
        variances = np.asarray(variances).reshape(draw_shape + variances.shape[1:])
        axes = tuple(range(len(draw_shape)))
        mean = means.mean(axes)
        variance = variances.mean(axes) + ((means - mean) ** 2).mean(axes)
        samples = None
        if draws is not None:
            samples = np.asarray(draws).reshape(draw_shape + draws.shape[1:])
            flat_draws = samples.reshape((-1,) + samples.shape[len(draw_shape) :])
            lower, upper = np.quantile(flat_draws, [0.5 - prob / 2, 0.5 + prob / 2], axis=0)
        else:
            sd = np.sqrt(variance)
            lower, upper = mean - z * sd, mean + z * sd
        result = ForecastResult(means, variances, mean, variance, lower, upper, prob, samples)
        results[name] = (
            _to_xarray(result, sites[name], batch_ndims, coords) if as_xarray else result
        )
    return results


def _to_xarray(result: ForecastResult, site, batch_ndims, coords):
    from numpyro_ssm.infer._xarray import import_arviz

    _, xr = import_arviz()
    coords = coords or {}
    event_ndim = result.mean.ndim - len(site.batch_dims) - 1
    dims = [*site.batch_dims, "time"] + [f"{site.name}_dim_{i}" for i in range(event_ndim)]
    lead = ["chain", "draw"]

    def per_draw(arr):
        arr = arr[None] if batch_ndims == 1 else arr
        return xr.DataArray(arr, dims=lead + dims)

    data = {
        "means": per_draw(result.means),
        "variances": per_draw(result.variances),
        "mean": xr.DataArray(result.mean, dims=dims),
        "variance": xr.DataArray(result.variance, dims=dims),
        "lower": xr.DataArray(result.lower, dims=dims),
        "upper": xr.DataArray(result.upper, dims=dims),
    }
    if result.samples is not None:
        data["samples"] = per_draw(result.samples)
    ds = xr.Dataset(data, coords={d: coords[d] for d in dims if d in coords})
    ds.attrs["prob"] = result.prob
    return ds

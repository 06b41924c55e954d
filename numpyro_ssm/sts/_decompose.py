r"""Per-component smoothed contributions across posterior draws, as xarray.

For one draw :math:`\theta^{(s)}` the smoother gives :math:`z_t | y_{1:T} \sim \mathcal N(m_t,
P_t)`; component ``c`` contributes :math:`x^{(c)}_t = H^{(c)}_t z^{(c)}_t + d^{(c)}_t` with mean
:math:`H^{(c)}_t m^{(c)}_t + d^{(c)}_t` and variance :math:`H^{(c)}_t P^{(c)}_t H^{(c)\top}_t`.
Across draws the moments pool by the law of total variance, as in
:mod:`numpyro_ssm.infer.forecast`, and the band is the normal one, ``mean ± z sd``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.infer._sites import find_ssm_sites, flatten_draws, trace_model, unwrap_ssm

__all__ = ["decompose"]

#: the coordinate of the sum of every component's contribution (the smoothed signal)
FIT = "fit"


def structural_site(model, first_draw, model_args, model_kwargs, site):
    """``(site name, StructuralTimeSeries, T)`` of the model's observed SSM site built by ``sts``.

    Raises:
        ValueError: when the site's distribution was not built by
            :meth:`~numpyro_ssm.sts.StructuralTimeSeries.distribution`, or has batch axes.
    """
    sites = find_ssm_sites(model, first_draw, model_args, model_kwargs, site=site)
    if len(sites) != 1:
        raise ValueError(f"The model has several SSM sites {list(sites)}; pass site=... .")
    name, info = next(iter(sites.items()))
    trace = trace_model(model, first_draw, model_args, model_kwargs)
    structure = getattr(unwrap_ssm(trace[name]["fn"]), "structural_model", None)
    if structure is None:
        raise ValueError(
            f"site={name!r} was not built by numpyro_ssm.sts: observe "
            "StructuralTimeSeries.distribution() there."
        )
    if info.batch_shape:
        raise ValueError(
            f"site={name!r} has batch shape {info.batch_shape}; decompositions and component "
            "forecasts take one series (vmap over series)."
        )
    return name, structure, info.num_steps


def site_of_draw(model, params, model_args, model_kwargs, name):
    """``(ssm, value, structure)`` of site ``name`` with the latent sites set to one draw."""
    msg = trace_model(model, params, model_args, model_kwargs)[name]
    ssm = unwrap_ssm(msg["fn"])
    return ssm, msg["value"], ssm.structural_model


def contributions(structure, means, covs, num_steps, start=0):
    """Means and variances ``(C + 1, T)`` of each component's contribution and of their sum.

    Args:
        structure: the :class:`~numpyro_ssm.sts.StructuralTimeSeries`.
        means: ``(T, S)`` state means.
        covs: ``(T, S, S)`` state covariances.
        num_steps: ``T``.
        start: the first step of the window (``T`` for a forecast).

    Returns:
        ``(means, variances)``, rows in component order and the sum (``"fit"``) last.
    """
    mu, var = [], []
    H_all, d_all = [], 0.0
    for sl, H, d in structure.component_emissions(num_steps, start).values():
        H = jnp.broadcast_to(H, (num_steps, H.shape[-1]))
        mu.append(jnp.einsum("ts,ts->t", H, means[:, sl]) + d)
        var.append(jnp.einsum("ts,tsr,tr->t", H, covs[:, sl, sl], H))
        H_all.append(H)
        d_all = d_all + d
    H = jnp.concatenate(H_all, axis=1)
    mu.append(jnp.einsum("ts,ts->t", H, means) + d_all)
    var.append(jnp.einsum("ts,tsr,tr->t", H, covs, H))
    return jnp.stack(mu), jnp.stack(var)


def pool(means, variances, draw_shape, prob):
    """Law-of-total-variance pooling over the draw axes and the normal band.

    Returns:
        ``(means, variances, mean, variance, lower, upper)`` as NumPy arrays, the first two with
        ``draw_shape`` leading.
    """
    from scipy.stats import norm

    means = np.asarray(means).reshape(draw_shape + means.shape[1:])
    variances = np.asarray(variances).reshape(draw_shape + variances.shape[1:])
    axes = tuple(range(len(draw_shape)))
    mean = means.mean(axes)
    variance = variances.mean(axes) + ((means - mean) ** 2).mean(axes)
    z = float(norm.ppf(0.5 + prob / 2))
    sd = np.sqrt(np.maximum(variance, 0.0))
    return means, variances, mean, variance, mean - z * sd, mean + z * sd


def to_dataset(pooled, names, batch_ndims, time, prob, attrs=()):
    """An ``xarray.Dataset`` with dims ``(chain, draw,) component, time``."""
    from numpyro_ssm.infer._xarray import import_arviz

    _, xr = import_arviz()
    means, variances, mean, variance, lower, upper = pooled
    if batch_ndims == 1:
        means, variances = means[None], variances[None]
    coords = {"component": list(names), "time": time}
    lead = ["chain", "draw", "component", "time"]
    data = {
        "means": xr.DataArray(means, dims=lead),
        "variances": xr.DataArray(variances, dims=lead),
        "mean": xr.DataArray(mean, dims=lead[2:]),
        "variance": xr.DataArray(variance, dims=lead[2:]),
        "lower": xr.DataArray(lower, dims=lead[2:]),
        "upper": xr.DataArray(upper, dims=lead[2:]),
    }
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"prob": prob, **dict(attrs)})
    return ds


def check_prob(prob):
    """Raise unless ``0 < prob < 1``."""
    if not 0 < prob < 1:
        raise ValueError(f"prob must lie in (0, 1), got {prob}.")


def decompose(
    model,
    posterior_samples,
    *model_args,
    site=None,
    batch_ndims=1,
    prob=0.9,
    time=None,
    **model_kwargs,
):
    """Smoothed contributions of every component (and of their sum), across posterior draws.

    The model observes a :meth:`~numpyro_ssm.sts.StructuralTimeSeries.distribution`; for each
    draw it is traced with the draw substituted, the site is smoothed (with the exact diffuse
    start where the model has one), and each component's contribution gets its mean and
    variance (module docstring). One compiled, vectorized pass over the draws.

    Args:
        model: a NumPyro model with one observed site built by :mod:`numpyro_ssm.sts`.
        posterior_samples: dict site name -> draws ``(draws, ...)`` or, with
            ``batch_ndims=2``, ``(chains, draws, ...)``; every latent site.
        *model_args: the model's positional arguments (with the observations).
        site: the site's name, or None for the only observed SSM site.
        batch_ndims: 1 or 2 leading draw axes.
        prob: the probability of the pooled band.
        time: coordinates of the ``time`` dim (default ``0..T-1``).
        **model_kwargs: the model's keyword arguments.

    The observation noise's row (:func:`~numpyro_ssm.sts.irregular`) holds the smoothed
    disturbance ``y_t - E[signal_t | y]`` where ``y_t`` is observed (its prior where not).

    Returns:
        An ``xarray.Dataset`` with ``component`` coordinates (the components' names, then
        ``"fit"``, their sum without the observation noise) and ``time``: per draw ``means``
        and ``variances`` (dims ``chain, draw, component, time``), pooled ``mean``,
        ``variance``, ``lower``, ``upper`` (dims ``component, time``); ``attrs["prob"]``.

    Raises:
        ValueError: for a site not built by :mod:`numpyro_ssm.sts`, a batched site, or a
            ``prob`` outside ``(0, 1)``.
    """
    check_prob(prob)
    flat, draw_shape, first = flatten_draws(posterior_samples, batch_ndims)
    name, structure, _ = structural_site(model, first, model_args, model_kwargs, site)

    def one(params):
        ssm, value, structure = site_of_draw(model, params, model_args, model_kwargs, name)
        post = ssm.smooth(value)
        T = value.shape[-2]
        mu, var = contributions(structure, post.smoothed_means, post.smoothed_covariances, T)
        # the observation noise: E[ε_t | y] = y_t - E[signal_t | y], with the signal's variance
        y = value[..., 0]
        observed = ~jnp.isnan(y)
        if ssm.obs_mask is not None:
            observed = observed & jnp.broadcast_to(ssm.obs_mask[..., 0], y.shape)
        noise_var = jnp.sum(ssm.emission_scale_tril**2)
        for i, c in enumerate(structure.components):
            if c.observation_noise:
                mu = mu.at[i].set(jnp.where(observed, jnp.where(observed, y, 0.0) - mu[-1], 0.0))
                var = var.at[i].set(jnp.where(observed, var[-1], noise_var))
        return mu, var

    means, variances = jax.jit(jax.vmap(one))(flat)
    T = means.shape[-1]
    names = [c.name for c in structure.components] + [FIT]
    time = np.arange(T) if time is None else np.asarray(time)
    pooled = pool(means, variances, draw_shape, prob)
    return to_dataset(pooled, names, batch_ndims, time, prob)

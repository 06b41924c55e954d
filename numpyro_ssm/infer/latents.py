"""Per-draw posteriors of the latent path: smoothed marginals, FFBS paths, Viterbi paths."""

from numpyro_ssm.infer._sites import evaluate_sites, find_ssm_sites, flatten_draws

__all__ = ["posterior_latents"]

_METHODS = ("smooth", "sample", "mode")


def _unwrap(values):
    """A method's outputs: the array when there is one, else the dict of short names."""
    if len(values) == 1:
        return next(iter(values.values()))
    return dict(values)


def posterior_latents(
    model,
    posterior_samples,
    *model_args,
    site=None,
    method="smooth",
    key=None,
    batch_ndims=1,
    chunk_size=256,
    as_xarray=False,
    coords=None,
    **model_kwargs,
):
    r"""Posterior of the latent path given each posterior draw of the parameters.

    The model is traced once per draw with the draw substituted for its latent sites; the
    state space model at each chosen site is then asked for its latents given the site's
    observed value (:meth:`~numpyro_ssm.distributions.StateSpaceModel.latents`), so the user
    never rebuilds the distribution by hand. Draws are evaluated ``chunk_size`` at a time
    (``vmap`` inside ``lax.map``), so memory stays bounded by the outputs plus one chunk's work.
    The function is compiled once per model, site, method and shapes: calling it again with
    new draws of the same shapes reuses the compilation.

    For a draw :math:`\theta^{(s)}` the result is

    - ``method="smooth"``: :math:`p(z_t \mid y_{1:T}, \theta^{(s)})`: a discrete model's
      smoothed probabilities ``(..., T, K)``; a Gaussian model's dict ``{"means": (..., T, S),
      "covariances": (..., T, S, S)}``. Averaging over draws gives
      :math:`p(z_t \mid y_{1:T})`.
    - ``method="sample"``: one path :math:`z_{1:T} \sim p(z_{1:T} \mid y_{1:T}, \theta^{(s)})`
      by forward-filtering backward-sampling: ``(..., T)`` ints (discrete) or ``(..., T, S)``.
      Across draws these are joint draws from :math:`p(z_{1:T} \mid y_{1:T})`.
    - ``method="mode"``: the most probable path given :math:`\theta^{(s)}`: Viterbi ``(..., T)``
      for a discrete model; for a Gaussian model the smoothed means (the Gaussian posterior's
      mode).

    A model whose ``latents`` give several outputs for one method returns them as a dict of
    their short names (``"means"``, ``"covariances"`` above).

    Args:
        model: a NumPyro model containing at least one SSM sample site.
        posterior_samples: dict site name -> array of draws, shape ``(draws, ...)``
            (``batch_ndims=1``, e.g. ``mcmc.get_samples()``) or ``(chains, draws, ...)``
            (``batch_ndims=2``, ``mcmc.get_samples(group_by_chain=True)``). It must contain
            every latent sample site of the model; extra entries (deterministic or observed
            sites) are ignored for observed sites and substituted otherwise.
        *model_args: positional arguments of ``model``.
        site: None for every observed SSM site, a site name, or a list of names.
        method: ``"smooth"``, ``"sample"`` or ``"mode"``.
        key: a ``jax.random`` key, required for ``method="sample"`` (never defaulted).
        batch_ndims: number of leading draw axes of ``posterior_samples``: 1 or 2.
        chunk_size: draws processed together; None processes all draws at once.
        as_xarray: return ``xarray`` objects with named dims (needs the ``arviz`` extra):
            a ``DataArray`` per site with dims ``chain, draw, [series...], time`` (+ the model's
            latent dims, e.g. ``state``), or a ``Dataset`` keyed by the short names when the
            method has several outputs. With ``batch_ndims=1`` the chain dim has size 1.
            Series dims are named after the site's plates (``"series"`` when no plate names
            the axis).
        coords: with ``as_xarray``, coordinates by dim name, e.g. ``{"time": years}``.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        A dict site name -> per-draw latents with ``draw_shape`` (``(draws,)`` or
        ``(chains, draws)``) leading, then the site's batch shape (plates), then the shapes
        above.

    Raises:
        ValueError: for an unknown ``method``, ``method="sample"`` without ``key``, missing
            latent sites in ``posterior_samples``, a ``site`` that is not an SSM site, or a
            method the site's model does not support.

    Example:
        >>> mcmc.run(jax.random.key(0), counts)
        >>> probs = posterior_latents(model, mcmc.get_samples(), counts)["y"]  # (draws, T, K)
        >>> paths = posterior_latents(
        ...     model, mcmc.get_samples(), counts, method="sample", key=jax.random.key(1)
        ... )["y"]  # (draws, T)
    """
    if method not in _METHODS:
        raise ValueError(f"posterior_latents: method must be one of {_METHODS}, got {method!r}.")
    if method == "sample" and key is None:
        raise ValueError(
            "posterior_latents(method='sample') draws random paths: pass key=jax.random.key(...)."
        )
    flat, draw_shape, first = flatten_draws(posterior_samples, batch_ndims)
    sites = find_ssm_sites(model, first, model_args, model_kwargs, site=site)
    for name, info in sites.items():
        if method not in info.latent_dims:
            raise ValueError(
                f"posterior_latents: the model at site {name!r} supports the methods "
                f"{tuple(info.latent_dims)}, not {method!r}."
            )
    out = evaluate_sites(
        model, flat, draw_shape, model_args, model_kwargs, list(sites), (method,), key, chunk_size
    )
    if not as_xarray:
        return {name: _unwrap(latents[method]) for name, (_, latents) in out.items()}
    from numpyro_ssm.infer._xarray import latents_to_xarray

    return {
        name: latents_to_xarray(latents[method], sites[name], method, batch_ndims, coords)
        for name, (_, latents) in out.items()
    }

r"""Forecasts of every component and of the series, across posterior draws.

For one draw the series' forecast is the site's own
:meth:`~numpyro_ssm.LinearGaussianSSM.forecast` (from the last filtered state, with the exact
diffuse start where the model has one). Its states' moments over the horizon give each
component's :math:`H^{(c)} m^{(c)} + d^{(c)}` and :math:`H^{(c)} P^{(c)} H^{(c)\top}`; the
observation adds the noise. Covariates of the horizon are the rows past the series of the
covariates the model was built with. The draws pool by the law of total variance, as
:func:`numpyro_ssm.infer.forecast` does for the series alone (whose numbers the ``"observed"``
row reproduces).
"""

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.infer._sites import flatten_draws
from numpyro_ssm.ops.kalman import kalman_filter
from numpyro_ssm.sts._decompose import (
    FIT,
    check_prob,
    contributions,
    pool,
    site_of_draw,
    structural_site,
    to_dataset,
)

__all__ = ["forecast_components"]

#: the coordinate of the forecast of the observations (the fit plus the observation noise)
OBSERVED = "observed"


def _future_parameters(structure, T, h):
    """The forecast's keyword arguments for time-varying emission parameters (covariates)."""
    p = structure.params(h, start=T)
    future = {}
    if p.emission_matrix.ndim == 3:
        future["emission_matrix"] = p.emission_matrix
    if p.emission_bias is not None and p.emission_bias.ndim == 2:
        future["emission_bias"] = p.emission_bias
    return future


def _state_moments(forecast_ssm):
    """Means ``(h, S)`` and covariances ``(h, S, S)`` of the forecast's states."""
    h, D = forecast_ssm.event_shape
    post = kalman_filter(
        forecast_ssm.params,
        jnp.zeros((h, D), forecast_ssm.initial_mean.dtype),
        obs_mask=jnp.zeros((h, D), bool),
    )
    return post.predicted_means, post.predicted_covariances


def forecast_components(
    model,
    posterior_samples,
    *model_args,
    num_steps,
    site=None,
    batch_ndims=1,
    prob=0.9,
    time=None,
    **model_kwargs,
):
    """Forecast every component, their sum and the observations ``num_steps`` steps ahead.

    The model observes a :meth:`~numpyro_ssm.sts.StructuralTimeSeries.distribution` over the
    observed steps; regressions need covariates with ``num_steps`` more rows than the series
    (build the model with them: the extra rows are the horizon's).

    Args:
        model: a NumPyro model with one observed site built by :mod:`numpyro_ssm.sts`.
        posterior_samples: dict site name -> draws ``(draws, ...)`` or, with
            ``batch_ndims=2``, ``(chains, draws, ...)``; every latent site.
        *model_args: the model's positional arguments (with the observations).
        num_steps: ``h``, the horizon.
        site: the site's name, or None for the only observed SSM site.
        batch_ndims: 1 or 2 leading draw axes.
        prob: the probability of the pooled band.
        time: coordinates of the horizon's ``time`` dim (default ``T..T+h-1``).
        **model_kwargs: the model's keyword arguments.

    Returns:
        An ``xarray.Dataset`` as :func:`~numpyro_ssm.sts.decompose`'s, over the horizon, with
        the ``component`` coordinates: the components, ``"fit"`` (their sum) and
        ``"observed"`` (the sum plus the observation noise: the predictive distribution of
        ``y``).

    Raises:
        ValueError: for ``num_steps < 1``, too few covariate rows, or a site not built by
            :mod:`numpyro_ssm.sts`.
    """
    if not isinstance(num_steps, int | np.integer) or num_steps < 1:
        raise ValueError(f"forecast_components: num_steps must be an int >= 1, got {num_steps!r}.")
    check_prob(prob)
    h = int(num_steps)
    flat, draw_shape, first = flatten_draws(posterior_samples, batch_ndims)
    name, structure, T = structural_site(model, first, model_args, model_kwargs, site)
    structure._check_steps(T + h)

    def one(params):
        ssm, value, structure = site_of_draw(model, params, model_args, model_kwargs, name)
        T = value.shape[-2]
        fc = ssm.forecast(value, h, **_future_parameters(structure, T, h))
        means, covs = _state_moments(fc)
        mu, var = contributions(structure, means, covs, h, start=T)
        noise_var = jnp.sum(fc.emission_scale_tril**2, axis=(-2, -1))
        for i, c in enumerate(structure.components):
            if c.observation_noise:
                mu, var = mu.at[i].set(0.0), var.at[i].set(noise_var)
        observed_mu, observed_var = fc.mean[:, 0], fc.variance[:, 0]
        return jnp.concatenate([mu, observed_mu[None]]), jnp.concatenate([var, observed_var[None]])

    means, variances = jax.jit(jax.vmap(one))(flat)
    names = [c.name for c in structure.components] + [FIT, OBSERVED]
    time = np.arange(T, T + h) if time is None else np.asarray(time)
    pooled = pool(means, variances, draw_shape, prob)
    return to_dataset(pooled, names, batch_ndims, time, prob, attrs={"num_steps": h})

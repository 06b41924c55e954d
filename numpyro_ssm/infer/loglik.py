r"""Per-time-step log-likelihoods: the one-step-ahead predictive decomposition.

For an SSM site with observations :math:`y_{1:T}` the marginal likelihood factorizes as

.. math::

    \log p(y_{1:T} \mid \theta) = \sum_{t=1}^T \log p(y_t \mid y_{1:t-1}, \theta),

and the filter returns each term (``log_likelihood_increments``). These are *not* the
conditionally independent pointwise terms that leave-one-out cross-validation assumes: the
observations of a state space model are dependent, and term ``t`` conditions on the past only.
PSIS-LOO (``az.loo``) on them therefore approximates a *leave-future-out*-flavoured quantity: the
sum over ``t`` of the posterior predictive density of :math:`y_t` given its past, with the
posterior fitted to all data (including the future of :math:`y_t`). It is a sound basis for
comparing models on one-step-ahead predictive performance (as in Bürkner, Gabry & Vehtari 2020,
"Approximate leave-future-out cross-validation for Bayesian time series models"), but it is not
leave-one-out. For LFO proper, with the parameters fitted to the past only, use
:func:`~numpyro_ssm.infer.exact_lfo` (a refit per time point) or its approximation
:func:`~numpyro_ssm.infer.psis_lfo` (see :mod:`numpyro_ssm.infer.lfo`).
"""

import numpy as np

from numpyro_ssm.infer._sites import evaluate_sites, find_ssm_sites, flatten_draws

__all__ = ["pointwise_log_likelihood"]


def pointwise_log_likelihood(
    model,
    posterior_samples,
    *model_args,
    site=None,
    batch_ndims=1,
    chunk_size=256,
    **model_kwargs,
):
    r"""Per draw and time step, :math:`\log p(y_t \mid y_{1:t-1}, \theta)` for every SSM site.

    The terms sum (over time, and over the series of a plate) to the site's ``log_prob`` for
    each draw. Steps that do not contribute to the likelihood (``obs_mask`` False or NaN
    data; the site's ``step_mask``, e.g. a Gaussian model counts a step when any of its entries is
    observed) are **NaN**,
    so that they are visibly absent while the time axis stays aligned with the data: use
    ``jnp.nansum`` to total them.
    :func:`~numpyro_ssm.infer.to_inference_data` drops those steps before they reach ArviZ,
    whose ``loo``/``waic`` cannot take NaN.

    PSIS-LOO on these terms approximates one-step-ahead (leave-future-out-style) predictive
    performance, not leave-one-out: see :mod:`numpyro_ssm.infer.loglik`.

    Args:
        model: a NumPyro model containing at least one observed SSM site.
        posterior_samples: dict site name -> draws, shape ``(draws, ...)`` or, with
            ``batch_ndims=2``, ``(chains, draws, ...)``; it must cover every latent site.
        *model_args: positional arguments of ``model``.
        site: None for every observed SSM site, a site name, or a list of names.
        batch_ndims: number of leading draw axes of ``posterior_samples``: 1 or 2.
        chunk_size: draws processed together (``vmap``), chunks run sequentially; None for all.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        A dict site name -> NumPy array of shape ``draw_shape + batch_shape + (T,)``, where
        ``batch_shape`` are the site's plate (series) axes.
    """
    flat, draw_shape, first = flatten_draws(posterior_samples, batch_ndims)
    sites = find_ssm_sites(model, first, model_args, model_kwargs, site=site)
    out = evaluate_sites(
        model, flat, draw_shape, model_args, model_kwargs, list(sites), chunk_size=chunk_size
    )
    return {name: mask_steps(out[name][0], info) for name, info in sites.items()}


def mask_steps(increments, site):
    """The increments with NaN at the steps that do not count (``site.step_mask`` False).

    Args:
        increments: shape ``draw_shape + batch_shape + (T,)``.
        site: the :class:`~numpyro_ssm.infer._sites.SSMSite`.

    Returns:
        A NumPy array of the same shape.
    """
    return np.where(site.step_mask, np.asarray(increments), np.nan)

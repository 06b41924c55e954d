r"""Leave-future-out cross-validation (LFO-CV) for models with a state-space site.

A time-series model is judged by how well it forecasts. Time indices here are 0-based, as in
arrays: :math:`y_t` is ``y[t]`` and :math:`y_{:t}` is ``y[:t]``, the first ``t`` steps (so
:math:`p(y_t \mid y_{:t}, \theta)` is the :math:`p(y_t \mid y_{1:t-1}, \theta)` of the
1-based docs). The ``M``-step-ahead LFO log predictive density at time ``t`` is

.. math::

    \mathrm{elpd}_t = \log p(y_{t:t+M} \mid y_{:t})
        = \log \int \prod_{s=t}^{t+M-1} p(y_s \mid y_{:s}, \theta)\,
          p(\theta \mid y_{:t})\, d\theta ,

and LFO-CV sums it over ``t = L, ..., T - M`` (``L = min_train``, the shortest training
series). The factors :math:`p(y_s \mid y_{:s}, \theta)` are exactly the filter's
``log_likelihood_increments`` (see :func:`~numpyro_ssm.infer.pointwise_log_likelihood`), so
for posterior draws :math:`\theta^{(1..S)}` given :math:`y_{:t}`

.. math::

    \widehat{\mathrm{elpd}}_t = \log \frac{1}{S} \sum_s \exp \sum_{u=t}^{t+M-1}
        \log p(y_u \mid y_{:u}, \theta^{(s)}).

- :func:`exact_lfo` refits the model on :math:`y_{:t}` for every ``t`` (``T - M - L + 1``
  fits).
- :func:`psis_lfo` is the approximation of Bürkner, Gabry & Vehtari (2020): it fits once on
  :math:`y_{:L}` and reuses a fit on :math:`y_{:t^*}` for later ``t`` by Pareto-smoothed
  importance sampling with ratios :math:`p(\theta \mid y_{:t}) / p(\theta \mid y_{:t^*})
  \propto \prod_{u=t^*}^{t-1} p(y_u \mid y_{:u}, \theta)`, the increments of the steps added
  since the fit. When the Pareto :math:`\hat k` of those ratios exceeds ``k_threshold``, the
  weights are unreliable and the model is refitted on :math:`y_{:t}` (``t^* = t``).

**How the future is hidden.** The model needs no change: while fitting on :math:`y_{:t}`, each
chosen SSM site's likelihood is replaced by :math:`\log p(y_{:t} \mid \theta) = \sum_{u<t}
\log p(y_u \mid y_{:u}, \theta)`, the sum of its filter's first ``t`` increments. (That is
what ``obs_mask`` False from step ``t`` on would give, with the data arrays untouched, so
integer data and any emission work.) Contract: the model must not read the SSM site's
observations anywhere else (e.g. a prior centred on ``y.mean()``, or another observed site
built from ``y``), since only the SSM site is truncated; other observed sites keep all their
data. With a plate of series, every series is cut at the same ``t`` and
:math:`\mathrm{elpd}_t` is the joint density of all series' next ``M`` steps; several SSM sites
are cut together the same way and must share ``T``. Steps missing in the data contribute
nothing; a window with no observed step has :math:`\mathrm{elpd}_t = 0`.

**Why not PSIS-LOO on the per-step values** is explained in :mod:`numpyro_ssm.infer.loglik`:
it scores forecasts, but with the parameters fitted to the future; :func:`exact_lfo` and
:func:`psis_lfo` remove the future from the fit.

Reference: Bürkner, Gabry & Vehtari (2020), "Approximate leave-future-out cross-validation for
Bayesian time series models", Journal of Statistical Computation and Simulation 90(14).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_ssm.infer._sites import find_ssm_sites, trace_model
from numpyro_ssm.infer.lfo._fit import _NutsFit, _user_fit
from numpyro_ssm.infer.lfo._past import past_model
from numpyro_ssm.infer.lfo._psis import psis_log_weights
from numpyro_ssm.infer.loglik import pointwise_log_likelihood

__all__ = ["LFOResult", "exact_lfo", "past_model", "psis_lfo"]


class LFOResult(NamedTuple):
    r"""What :func:`exact_lfo` and :func:`psis_lfo` return (NumPy arrays, 0-based times).

    Attributes:
        elpd: float, the LFO expected log predictive density, ``pointwise.sum()``.
        pointwise: shape ``(P,)``, ``[i] = log p(y[t:t+M] | y[:t])`` estimated at
            ``t = times[i]``, for the ``P = T - M - min_train + 1`` prediction times.
        times: shape ``(P,)`` ints, the prediction times ``min_train, ..., T - M``: the number
            of observed steps the prediction conditions on.
        pareto_k: shape ``(P,)``, the Pareto :math:`\hat k` of the importance ratios at each
            time; NaN where no ratio was needed (a fit on exactly ``y[:t]``, before any ratio
            was formed), and at a refit time the :math:`\hat k` that caused the refit. All NaN
            for :func:`exact_lfo`.
        refit_times: shape ``(R,)`` ints, the ``t`` of every fit on ``y[:t]``, in order: all of
            ``times`` for :func:`exact_lfo`; ``min_train`` and then the refits for
            :func:`psis_lfo`.
        num_steps_ahead: ``M``, the length of each predicted window.
    """

    elpd: float
    pointwise: np.ndarray
    times: np.ndarray
    pareto_k: np.ndarray
    refit_times: np.ndarray
    num_steps_ahead: int


def _step_totals(model, draws, model_args, model_kwargs, sites, chunk_size):
    """Per draw and step, the increments summed over sites and series: shape ``(S, T)``."""
    loglik = pointwise_log_likelihood(
        model, draws, *model_args, site=sites, chunk_size=chunk_size, **model_kwargs
    )
    total = 0.0
    for values in loglik.values():
        values = np.asarray(values, dtype=np.float64)
        total = total + np.nansum(values.reshape(values.shape[0], -1, values.shape[-1]), axis=1)
    return total


def _log_mean_exp(x, log_weights=None):
    """``log mean exp(x)``, or ``log sum exp(log_weights + x)`` with normalized weights."""
    weights = 1.0 / x.shape[0] if log_weights is None else np.exp(log_weights)
    top = x.max()
    return float(top + np.log(np.sum(weights * np.exp(x - top))))


# -- argument checks -----------------------------------------------------------------------------


class _Setup(NamedTuple):
    sites: list
    times: np.ndarray
    fit: Callable
    past: Callable


def _setup(
    model,
    model_args,
    model_kwargs,
    *,
    key,
    min_train,
    num_steps_ahead,
    site,
    fit,
    num_warmup,
    num_samples,
    num_chains,
    nuts_kwargs,
    caller,
):
    """Validate the arguments, find the SSM sites and ``T``, build ``fit`` and the past model."""
    if key is None:
        raise ValueError(f"{caller}: key is required (a jax.random key).")
    if not isinstance(num_steps_ahead, int | np.integer) or num_steps_ahead < 1:
        raise ValueError(f"{caller}: num_steps_ahead must be an int >= 1, got {num_steps_ahead}.")
    if fit is None:
        if num_warmup is None or num_samples is None:
            raise ValueError(
                f"{caller}: num_warmup and num_samples are required for the default NUTS fit "
                f"(got num_warmup={num_warmup}, num_samples={num_samples}); or pass fit=..."
            )
        fit = _NutsFit(num_warmup, num_samples, num_chains, nuts_kwargs)
    elif callable(fit):
        fit = _user_fit(fit)
    else:
        raise ValueError(f"{caller}: fit must be callable, got {type(fit).__name__}.")
    # One prior draw of the latent sites, only to find the SSM sites and T.
    trace = trace_model(model, {}, model_args, model_kwargs, key=jax.random.key(0))
    params = {
        name: msg["value"]
        for name, msg in trace.items()
        if msg["type"] == "sample" and not msg["is_observed"]
    }
    sites = find_ssm_sites(model, params, model_args, model_kwargs, site=site)
    lengths = {name: info.num_steps for name, info in sites.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{caller}: the SSM sites must share T, got num_steps {lengths}.")
    num_steps = next(iter(lengths.values()))
    if (
        not isinstance(min_train, int | np.integer)
        or min_train < 1
        or min_train > num_steps - num_steps_ahead
    ):
        raise ValueError(
            f"{caller}: min_train must be an int in [1, T - num_steps_ahead] = "
            f"[1, {num_steps - num_steps_ahead}] (T={num_steps}), got {min_train}."
        )
    times = np.arange(min_train, num_steps - num_steps_ahead + 1)
    past = past_model(model, list(sites), *model_args, **model_kwargs)
    return _Setup(list(sites), times, fit, past)


# -- public functions ----------------------------------------------------------------------------


def exact_lfo(
    model,
    *model_args,
    key,
    min_train,
    num_warmup=None,
    num_samples=None,
    num_chains=1,
    num_steps_ahead=1,
    site=None,
    fit=None,
    nuts_kwargs=None,
    chunk_size=256,
    **model_kwargs,
):
    r"""Exact leave-future-out CV: refit on ``y[:t]`` and score ``y[t:t+M]`` for every ``t``.

    For ``t = min_train, ..., T - M`` the model is fitted on the first ``t`` steps of its SSM
    site(s) (the later steps hidden, see :mod:`numpyro_ssm.infer.lfo`) and
    :math:`\log p(y_{t:t+M} \mid y_{:t})` is the log mean over draws of
    :math:`\exp \sum_{u=t}^{t+M-1} \log p(y_u \mid y_{:u}, \theta^{(s)})`, the filter's
    increments (:func:`~numpyro_ssm.infer.pointwise_log_likelihood` on the full data). This
    costs ``T - M - min_train + 1`` fits; :func:`psis_lfo` approximates it with few.

    Args:
        model: a NumPyro model with an observed state-space-model site; it needs no change
            (the contract is in :mod:`numpyro_ssm.infer.lfo`).
        *model_args: positional arguments of ``model``, with the full data.
        key: a ``jax.random`` key (required); the fit on ``y[:t]`` uses
            ``jax.random.fold_in(key, t)``, so :func:`psis_lfo` with the same key draws its
            fits with the same keys.
        min_train: ``L``, the number of steps of the shortest training series, ``1 <= L <= T -
            M``.
        num_warmup: NUTS warmup steps per chain and fit (the default fit only).
        num_samples: NUTS draws per chain and fit (the default fit only).
        num_chains: NUTS chains per fit, vectorized (the default fit only).
        num_steps_ahead: ``M``, the length of the predicted window ``y[t:t+M]``.
        site: None for every observed SSM site, a site name, or a list of names.
        fit: None for NumPyro NUTS (all fits, times chains, run as one vectorized batch and
            one compilation), or ``fit(key, past_model, num_observed) -> samples``: a
            dict site name -> posterior draws with one leading draw axis (as
            ``mcmc.get_samples()``) of the one-argument model ``past_model(num_observed)``
            (e.g. ``MCMC(NUTS(past_model), ...).run(key, num_observed)``; see
            :func:`past_model`).
        nuts_kwargs: options of the default NUTS fit: ``init_strategy`` (default
            ``numpyro.infer.init_to_uniform``) and the keyword arguments of NumPyro's NUTS
            initialization (``init_kernel`` of ``numpyro.infer.hmc.hmc``), e.g.
            ``{"target_accept_prob": 0.9, "dense_mass": True, "max_tree_depth": 8}``.
        chunk_size: draws evaluated together by :func:`pointwise_log_likelihood`.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        An :class:`LFOResult`; ``pareto_k`` is all NaN and ``refit_times == times``.

    Raises:
        ValueError: without ``key``; for ``min_train`` outside ``[1, T - M]``, ``M < 1``,
            missing ``num_warmup``/``num_samples`` with the default fit, SSM sites of different
            lengths, or a ``fit`` that does not return a dict of draws.
    """
    setup = _setup(
        model,
        model_args,
        model_kwargs,
        key=key,
        min_train=min_train,
        num_steps_ahead=num_steps_ahead,
        site=site,
        fit=fit,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        nuts_kwargs=nuts_kwargs,
        caller="exact_lfo",
    )
    fits = setup.fit(key, setup.past, [int(t) for t in setup.times])
    # One pass of the filter over the draws of every fit (one compilation).
    sizes = [next(iter(draws.values())).shape[0] for draws in fits]
    stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *fits)
    totals = _step_totals(model, stacked, model_args, model_kwargs, setup.sites, chunk_size)
    per_fit = np.split(totals, np.cumsum(sizes)[:-1])
    M = num_steps_ahead
    windows = [tot[:, t : t + M].sum(1) for t, tot in zip(setup.times, per_fit, strict=True)]
    pointwise = np.array([_log_mean_exp(w) for w in windows])
    return LFOResult(
        elpd=float(pointwise.sum()),
        pointwise=pointwise,
        times=setup.times,
        pareto_k=np.full(len(setup.times), np.nan),
        refit_times=setup.times.copy(),
        num_steps_ahead=M,
    )


def psis_lfo(
    model,
    *model_args,
    key,
    min_train,
    num_warmup=None,
    num_samples=None,
    num_chains=1,
    num_steps_ahead=1,
    k_threshold=0.7,
    site=None,
    fit=None,
    nuts_kwargs=None,
    chunk_size=256,
    **model_kwargs,
):
    r"""PSIS-LFO: leave-future-out CV with few refits (Bürkner, Gabry & Vehtari 2020).

    The model is fitted on ``y[:L]`` (``L = min_train``), and ``elpd_L`` is computed exactly.
    For each later ``t``, with the last fit on ``y[:t*]``, the draws are reweighted to the
    posterior given ``y[:t]`` by Pareto-smoothed importance sampling with log ratios

    .. math::

        \log r^{(s)}_t = \sum_{u=t^*}^{t-1} \log p(y_u \mid y_{:u}, \theta^{(s)})

    (the per-step log-likelihoods of the steps added since the fit, from
    :func:`~numpyro_ssm.infer.pointwise_log_likelihood` on the full data), and
    :math:`\widehat{\mathrm{elpd}}_t = \log \sum_s w^{(s)}_t \exp \sum_{u=t}^{t+M-1} \log
    p(y_u \mid y_{:u}, \theta^{(s)})` with the normalized smoothed weights :math:`w_t`. When
    the Pareto :math:`\hat k` of the ratios exceeds ``k_threshold``, the model is refitted on
    ``y[:t]`` (``t* = t``) and ``elpd_t`` is computed exactly, as in :func:`exact_lfo`. With
    the same ``key`` the two functions use the same random keys for the fit at ``min_train``
    and at every refit.

    The Pareto tail holds ``ceil(min(S / 5, 3 sqrt(S)))`` of the ``S`` draws (relative
    efficiency 1, as in the paper). Importance ratios that are all equal (e.g. identical
    draws) give :math:`\hat k = -\infty` and uniform weights; fewer than 21 draws leave too
    short a tail to fit (:math:`\hat k = \infty`, so every step refits).

    Args:
        model: a NumPyro model with an observed SSM site (see :func:`exact_lfo`).
        *model_args: positional arguments of ``model``, with the full data.
        key: a ``jax.random`` key (required); a fit on ``y[:t]`` uses
            ``jax.random.fold_in(key, t)``.
        min_train: ``L``, the length of the first training series, ``1 <= L <= T - M``.
        num_warmup: NUTS warmup steps per chain and fit (the default fit only).
        num_samples: NUTS draws per chain and fit (the default fit only).
        num_chains: NUTS chains per fit, vectorized (the default fit only).
        num_steps_ahead: ``M``, the length of the predicted window ``y[t:t+M]``.
        k_threshold: refit when :math:`\hat k` exceeds it; 0.7 as recommended by Vehtari et
            al. (2024). ``inf`` never refits.
        site: None for every observed SSM site, a site name, or a list of names.
        fit: None for NumPyro NUTS, or a function as in :func:`exact_lfo`.
        nuts_kwargs: options of the default NUTS fit, as in :func:`exact_lfo`.
        chunk_size: draws evaluated together by :func:`pointwise_log_likelihood`.
        **model_kwargs: keyword arguments of ``model``.

    Returns:
        An :class:`LFOResult` with the Pareto :math:`\hat k` per time and the refit times.

    Raises:
        ValueError: as :func:`exact_lfo`, and for a ``k_threshold`` that is not a number.
    """
    if not isinstance(k_threshold, int | float | np.floating) or np.isnan(k_threshold):
        raise ValueError(f"psis_lfo: k_threshold must be a number, got {k_threshold!r}.")
    setup = _setup(
        model,
        model_args,
        model_kwargs,
        key=key,
        min_train=min_train,
        num_steps_ahead=num_steps_ahead,
        site=site,
        fit=fit,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        nuts_kwargs=nuts_kwargs,
        caller="psis_lfo",
    )
    M = num_steps_ahead

    def refit(t):
        (draws,) = setup.fit(key, setup.past, [t])
        return _step_totals(model, draws, model_args, model_kwargs, setup.sites, chunk_size)

    pointwise = np.empty(len(setup.times))
    pareto_k = np.full(len(setup.times), np.nan)
    fit_time = int(setup.times[0])
    refit_times = [fit_time]
    totals = refit(fit_time)
    for i, t in enumerate(setup.times):
        t = int(t)
        log_weights = None
        if t > fit_time:
            log_weights, pareto_k[i] = psis_log_weights(totals[:, fit_time:t].sum(1))
            if pareto_k[i] > k_threshold:
                fit_time, log_weights = t, None
                refit_times.append(t)
                totals = refit(t)
        pointwise[i] = _log_mean_exp(totals[:, t : t + M].sum(1), log_weights)
    return LFOResult(
        elpd=float(pointwise.sum()),
        pointwise=pointwise,
        times=setup.times,
        pareto_k=pareto_k,
        refit_times=np.asarray(refit_times),
        num_steps_ahead=M,
    )

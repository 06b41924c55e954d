r"""Pareto-smoothed importance sampling (PSIS), written from Vehtari et al. (2024).

Given log importance ratios :math:`r_s` of ``S`` draws, PSIS fits a generalized Pareto
distribution to the ``M = ceil(min(S / 5, 3 sqrt(S)))`` largest ratios, replaces them by the
fitted distribution's expected order statistics, truncates them at the largest raw ratio and
normalizes. The fitted shape :math:`\hat k` is the diagnostic: the estimate is reliable for
:math:`\hat k < 0.7`.

References:
    Vehtari, Simpson, Gelman, Yao & Gabry (2024), "Pareto smoothed importance sampling",
    JMLR 25(72). Zhang & Stephens (2009), "A new and efficient estimation method for the
    generalized Pareto distribution", Technometrics 51(3).

NumPy, float64: the inputs are ``S`` numbers per call and this runs between MCMC fits.
"""

import numpy as np

__all__ = ["psis_log_weights"]

_MIN_TAIL = 5  # fewer tail draws than this cannot support a Pareto fit
_PRIOR_WEIGHT = 10.0  # weakly informative prior on k: 10 pseudo-observations at k = 0.5
_PRIOR_K = 0.5


def _gpd_fit(exceedances):
    r"""Zhang-Stephens posterior-mean fit of a generalized Pareto distribution.

    The density is :math:`f(x) = \sigma^{-1} (1 + k x / \sigma)^{-1/k - 1}`. With
    :math:`\theta = k / \sigma`, the profile maximizer is
    :math:`k(\theta) = \mathrm{mean} \log(1 + \theta x)` and the profile log-likelihood
    :math:`n (\log(\theta / k(\theta)) - k(\theta) - 1)`. :math:`\hat\theta` is the average
    of a grid of ``m = 30 + floor(sqrt(n))`` values weighted by that profile likelihood.

    Args:
        exceedances: shape ``(n,)``, ascending, positive, the tail above the threshold.

    Returns:
        ``(k, sigma)``: the shape, shrunk toward 0.5 by the weakly informative prior, and the
        scale (from the unshrunk shape).
    """
    x = exceedances
    n = x.shape[0]
    m = 30 + int(np.sqrt(n))
    quartile = x[int(n / 4 + 0.5) - 1]
    j = np.arange(1, m + 1)
    theta = -1.0 / x[-1] + (np.sqrt(m / (j - 0.5)) - 1.0) / (3.0 * quartile)
    k = np.mean(np.log1p(theta[:, None] * x[None, :]), axis=1)
    profile = n * (np.log(theta / k) - k - 1.0)
    weights = np.exp(profile - profile.max())
    theta_hat = np.sum(theta * weights) / np.sum(weights)
    k_hat = np.mean(np.log1p(theta_hat * x))
    sigma = k_hat / theta_hat
    k_hat = (n * k_hat + _PRIOR_WEIGHT * _PRIOR_K) / (n + _PRIOR_WEIGHT)
    return k_hat, sigma


def _gpd_quantile(p, k, sigma):
    """Quantile function of the generalized Pareto distribution at probabilities ``p``."""
    if abs(k) < 1e-12:
        return -sigma * np.log1p(-p)
    return sigma * np.expm1(-k * np.log1p(-p)) / k


def psis_log_weights(log_ratios):
    r"""Pareto-smoothed, truncated, normalized log importance weights and :math:`\hat k`.

    Args:
        log_ratios: shape ``(S,)``, the log importance ratios of ``S`` draws (finite).

    Returns:
        ``(log_weights, k_hat)``: ``log_weights`` of shape ``(S,)`` with
        ``logsumexp(log_weights) == 0``, and the Pareto shape estimate ``k_hat``, a float:
        ``-inf`` when the largest ratios are all equal (nothing to smooth, e.g. equal
        ratios) and ``inf`` when ``S`` is too small for a tail of 5 draws (the weights are
        then only normalized).

    Raises:
        ValueError: when ``log_ratios`` is not a 1-D array of finite values.
    """
    log_ratios = np.asarray(log_ratios, dtype=np.float64)
    if log_ratios.ndim != 1 or not np.all(np.isfinite(log_ratios)):
        raise ValueError(
            f"log_ratios must be a 1-D array of finite values, got shape {log_ratios.shape}."
        )
    num_draws = log_ratios.shape[0]
    shifted = log_ratios - log_ratios.max()
    tail_len = int(np.ceil(min(num_draws / 5.0, 3.0 * np.sqrt(num_draws))))
    smoothed = shifted.copy()
    if tail_len < _MIN_TAIL or tail_len >= num_draws:
        k_hat = np.inf
    else:
        order = np.argsort(shifted)
        tail_idx = order[-tail_len:]
        threshold = shifted[order[-tail_len - 1]]
        exceedances = np.exp(shifted[tail_idx]) - np.exp(threshold)
        if exceedances[-1] <= 0.0:
            k_hat = -np.inf
        else:
            k_hat, sigma = _gpd_fit(exceedances)
            probs = (np.arange(1, tail_len + 1) - 0.5) / tail_len
            tail = np.log(np.exp(threshold) + _gpd_quantile(probs, k_hat, sigma))
            smoothed[tail_idx] = np.minimum(tail, 0.0)
    log_norm = np.logaddexp.reduce(smoothed)
    return smoothed - log_norm, float(k_hat)

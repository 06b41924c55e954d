r"""Tests of the uniformity of SBC ranks: a chi-square test and the simultaneous ECDF test.

Ranks ``r_1, ..., r_N`` take values in ``0..L`` (``L`` posterior draws per replication) and are
uniform on them when the fit is calibrated.

**ECDF test** (Säilynoja, Bürkner & Vehtari 2022, *Graphical test for discrete uniformity and its
applications in goodness-of-fit evaluation and multiple sample comparison*, Statistics and
Computing 32:32). The ECDF of the ranks is evaluated at ``K`` thresholds
``j_1 < ... < j_K`` in ``1..L``: ``c_i = #{n : r_n < j_i}``. Under uniformity ``c_i`` is
``Binomial(N, z_i)`` with ``z_i = j_i / (L + 1)``, and the counts form a Markov chain: given
``c_{i-1}``, ``c_i - c_{i-1} ~ Binomial(N - c_{i-1}, (z_i - z_{i-1}) / (1 - z_{i-1}))``. The
probability that every ``c_i`` stays in a set ``A_i`` is therefore an exact forward recursion
over the chain (no simulation). With the pointwise two-sided tail probability
``tail_i(c) = min(1, 2 min(P(C_i <= c), P(C_i >= c)))``:

- the test statistic is ``s = min_i tail_i(c_i)`` and its p-value is
  ``P(min_i tail_i(C_i) <= s) = 1 - P(every C_i in {c : tail_i(c) > s})``;
- the simultaneous ``1 - alpha`` envelope takes the largest ``gamma`` with
  ``P(min_i tail_i(C_i) <= gamma) <= alpha`` (by bisection) and bands
  ``{c : tail_i(c) > gamma}``. The ECDF leaves the envelope exactly when the p-value is at most
  ``alpha`` (up to the discreteness of the counts).

This is the "optimization" method of the paper, computed on the bands only, so its cost is
``K`` small matrix-vector products.

**Chi-square test** (Talts et al. 2018): ranks binned into ``B`` contiguous groups of rank
values; Pearson's statistic against counts proportional to each bin's width, ``B - 1`` degrees
of freedom.
"""

from typing import NamedTuple

import numpy as np
from scipy import special, stats

__all__ = [
    "RankUniformity",
    "chi2_rank_test",
    "ecdf_envelope",
    "ecdf_rank_test",
    "rank_uniformity",
]


class RankUniformity(NamedTuple):
    """Uniformity tests of one parameter's ranks.

    Attributes:
        chi2_statistic: Pearson's statistic of the binned ranks.
        chi2_pvalue: its p-value (``num_bins - 1`` degrees of freedom).
        num_bins: the bins of the chi-square test.
        ecdf_pvalue: the exact p-value of the simultaneous ECDF test.
    """

    chi2_statistic: float
    chi2_pvalue: float
    num_bins: int
    ecdf_pvalue: float


def _check_ranks(ranks, num_draws):
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-d array, got shape {ranks.shape}.")
    if ranks.min() < 0 or ranks.max() > num_draws:
        raise ValueError(
            f"ranks must lie in 0..num_draws={num_draws}, got [{ranks.min()}, {ranks.max()}]."
        )
    return ranks.astype(np.int64)


def default_num_bins(num_replications, num_draws):
    """At most 20 bins, each expecting at least 5 ranks."""
    return int(max(2, min(20, num_draws + 1, num_replications // 5)))


def chi2_rank_test(ranks, num_draws, num_bins=None):
    """Pearson's chi-square test of uniform ranks.

    Args:
        ranks: int array ``(N,)`` in ``0..num_draws``.
        num_draws: ``L``, the posterior draws each rank counts among.
        num_bins: bins of contiguous rank values (default: at most 20, each expecting at least
            5 ranks); bins as equal as the ``L + 1`` values allow.

    Returns:
        ``(statistic, p-value, num_bins)``.
    """
    ranks = _check_ranks(ranks, num_draws)
    num_bins = default_num_bins(ranks.size, num_draws) if num_bins is None else int(num_bins)
    edges = np.unique(np.round(np.linspace(0, num_draws + 1, num_bins + 1)).astype(np.int64))
    observed = np.histogram(ranks, bins=edges)[0]
    expected = ranks.size * np.diff(edges) / (num_draws + 1)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, len(expected) - 1)), len(expected)


def _thresholds(num_replications, num_draws, num_points):
    """Integer thresholds ``j_i`` in ``1..L`` and ``z_i = j_i / (L + 1)``."""
    if num_points is None:
        num_points = min(num_draws + 1, num_replications)
    grid = np.round(np.linspace(0, num_draws + 1, int(num_points) + 1)[1:-1]).astype(np.int64)
    thresholds = np.unique(grid[(grid >= 1) & (grid <= num_draws)])
    if thresholds.size == 0:
        raise ValueError(f"num_draws={num_draws} leaves no ECDF evaluation point (needs >= 1).")
    return thresholds, thresholds / (num_draws + 1)


def _tail_probabilities(num_replications, z):
    """``(K, N + 1)``: the two-sided tail probability of each count ``c`` at each ``z_i``."""
    counts = np.arange(num_replications + 1)
    lower = stats.binom.cdf(counts[None, :], num_replications, z[:, None])
    upper = stats.binom.sf(counts[None, :] - 1, num_replications, z[:, None])
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper))


def _log_binom_pmf(n, k, q):
    """``log Binomial(n, q).pmf(k)`` elementwise (``-inf`` where ``k`` is outside ``0..n``)."""
    valid = (k >= 0) & (k <= n)
    k_, n_ = np.where(valid, k, 0), np.where(valid, n, 0)
    log_choose = special.gammaln(n_ + 1) - special.gammaln(k_ + 1) - special.gammaln(n_ - k_ + 1)
    log_q = special.xlogy(k_, q) + special.xlog1py(n_ - k_, -q)
    return np.where(valid, log_choose + log_q, -np.inf)


def _probability_inside(z, allowed):
    """``P(C_i in allowed[i] for every i)`` for uniform samples; ``allowed`` is ``(K, N + 1)``."""
    num_replications = allowed.shape[1] - 1
    support = np.array([0])
    weights = np.array([1.0])
    previous = 0.0
    for i in range(len(z)):
        targets = np.nonzero(allowed[i])[0]
        if targets.size == 0 or support.size == 0:
            return 0.0
        q = (z[i] - previous) / (1.0 - previous)
        steps = targets[None, :] - support[:, None]
        transition = np.exp(_log_binom_pmf(num_replications - support[:, None], steps, q))
        weights = weights @ transition
        keep = weights > 0
        support, weights = targets[keep], weights[keep]
        previous = z[i]
    return float(np.sum(weights))


def ecdf_rank_test(ranks, num_draws, num_points=None):
    """The exact p-value of the simultaneous ECDF uniformity test (see the module docstring).

    Args:
        ranks: int array ``(N,)`` in ``0..num_draws``.
        num_draws: ``L``, the posterior draws each rank counts among.
        num_points: ECDF evaluation points ``K`` (default ``min(L + 1, N)``), equally spaced
            rank thresholds.

    Returns:
        The p-value: the probability, under uniform ranks, that the ECDF strays at least as far
        from uniform (in pointwise tail probability) as the observed one does somewhere.
    """
    ranks = _check_ranks(ranks, num_draws)
    thresholds, z = _thresholds(ranks.size, num_draws, num_points)
    tails = _tail_probabilities(ranks.size, z)
    counts = np.sum(ranks[None, :] < thresholds[:, None], axis=1)
    statistic = np.min(tails[np.arange(len(z)), counts])
    return 1.0 - _probability_inside(z, tails > statistic)


def ecdf_envelope(num_replications, num_draws, alpha=0.05, num_points=None):
    """The simultaneous ``1 - alpha`` envelope of the ECDF of ``N`` uniform ranks.

    Args:
        num_replications: ``N``, the ranks per parameter.
        num_draws: ``L``, the posterior draws each rank counts among.
        alpha: the probability that a calibrated fit's ECDF leaves the envelope somewhere.
        num_points: ECDF evaluation points ``K`` (default ``min(L + 1, N)``).

    Returns:
        ``(z, lower, upper)``, each ``(K,)``: the fractional ranks ``z_i = j_i / (L + 1)`` and
        the ECDF bounds at them (plot ``ECDF - z`` against the bounds minus ``z``).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}.")
    _, z = _thresholds(num_replications, num_draws, num_points)
    tails = _tail_probabilities(num_replications, z)
    low, high = 0.0, float(alpha)
    for _ in range(50):  # largest gamma with P(min tail <= gamma) <= alpha
        gamma = 0.5 * (low + high)
        if 1.0 - _probability_inside(z, tails > gamma) <= alpha:
            low = gamma
        else:
            high = gamma
    inside = tails > low
    counts = np.arange(num_replications + 1)
    lower = np.array([counts[row].min() for row in inside]) / num_replications
    upper = np.array([counts[row].max() for row in inside]) / num_replications
    return z, lower, upper


def rank_uniformity(ranks, num_draws, num_bins=None, num_points=None) -> RankUniformity:
    """Both uniformity tests of one parameter's ranks.

    Args:
        ranks: int array ``(N,)`` in ``0..num_draws``.
        num_draws: ``L``, the posterior draws each rank counts among.
        num_bins: bins of the chi-square test (see :func:`chi2_rank_test`).
        num_points: evaluation points of the ECDF test (see :func:`ecdf_rank_test`).

    Returns:
        A :class:`RankUniformity`.
    """
    statistic, pvalue, bins = chi2_rank_test(ranks, num_draws, num_bins)
    return RankUniformity(statistic, pvalue, bins, ecdf_rank_test(ranks, num_draws, num_points))

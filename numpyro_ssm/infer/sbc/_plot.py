"""Rank plots of an SBC run: histograms with a pointwise band, ECDF differences with the envelope.

matplotlib (the ``examples`` extra) is imported inside :func:`plot_sbc_ranks` only.
"""

import numpy as np
from scipy import stats

from numpyro_ssm.infer.sbc._uniformity import (
    _thresholds,
    default_num_bins,
    ecdf_envelope,
    rank_uniformity,
)

__all__ = ["plot_sbc_ranks", "sbc_summary", "scalar_ranks"]


def scalar_ranks(result) -> dict:
    """One ``(R,)`` rank array per scalar parameter, labelled ``site`` or ``site[i,j]``.

    Args:
        result: an :class:`~numpyro_ssm.infer.SBCResult`.

    Returns:
        dict label -> int array ``(R,)``, in the model's site order, elements in C order.
    """
    out = {}
    for name, ranks in result.ranks.items():
        ranks = np.asarray(ranks)
        if ranks.ndim == 1:
            out[name] = ranks
            continue
        for index in np.ndindex(ranks.shape[1:]):
            out[f"{name}[{','.join(map(str, index))}]"] = ranks[(slice(None), *index)]
    return out


def sbc_summary(result, num_bins=None, num_points=None) -> dict:
    """The uniformity tests of every scalar parameter's ranks.

    Args:
        result: an :class:`~numpyro_ssm.infer.SBCResult`.
        num_bins: bins of the chi-square test (see :func:`~numpyro_ssm.infer.chi2_rank_test`).
        num_points: evaluation points of the ECDF test.

    Returns:
        dict label (as :func:`scalar_ranks`) -> :class:`~numpyro_ssm.infer.RankUniformity`.
        With ``P`` scalar parameters, a calibrated fit still gives some small p-values: compare
        the smallest with ``alpha / P`` (Bonferroni).
    """
    return {
        label: rank_uniformity(ranks, result.num_draws, num_bins, num_points)
        for label, ranks in scalar_ranks(result).items()
    }


def plot_sbc_ranks(result, labels=None, *, alpha=0.05, num_bins=None, max_columns=4):
    """Rank histogram and ECDF-difference plot of each scalar parameter.

    Top row of each parameter: the rank histogram with the central ``1 - alpha`` interval of a
    bin's count under uniformity (pointwise). Bottom row: ``ECDF(z) - z`` of the fractional ranks
    with the simultaneous ``1 - alpha`` envelope of :func:`~numpyro_ssm.infer.ecdf_envelope`: a
    calibrated fit leaves it somewhere with probability ``alpha``. A U shape (histogram) or an
    S curve below zero then above (ECDF) means overconfident posteriors, an inverted U wider
    ones, a slope a bias.

    Args:
        result: an :class:`~numpyro_ssm.infer.SBCResult`.
        labels: scalar parameters to plot (labels as :func:`scalar_ranks`); default all.
        alpha: the level of the bands.
        num_bins: histogram bins (default as the chi-square test).
        max_columns: parameters per row of panels.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt

    ranks = scalar_ranks(result)
    labels = list(ranks) if labels is None else list(labels)
    unknown = [label for label in labels if label not in ranks]
    if unknown:
        raise ValueError(f"plot_sbc_ranks: unknown labels {unknown}; known: {list(ranks)}.")
    num_draws = result.num_draws
    num_reps = len(next(iter(ranks.values())))
    bins = default_num_bins(num_reps, num_draws) if num_bins is None else int(num_bins)
    edges = np.unique(np.round(np.linspace(0, num_draws + 1, bins + 1)).astype(np.int64))
    thresholds, z = _thresholds(num_reps, num_draws, None)
    _, lower, upper = ecdf_envelope(num_reps, num_draws, alpha)
    columns = min(max_columns, len(labels))
    rows = -(-len(labels) // columns)
    fig, axes = plt.subplots(2 * rows, columns, figsize=(3.2 * columns, 4.4 * rows), squeeze=False)
    for i in range(rows * columns):
        top, bottom = (
            axes[2 * (i // columns), i % columns],
            axes[2 * (i // columns) + 1, i % columns],
        )
        if i >= len(labels):
            top.axis("off")
            bottom.axis("off")
            continue
        label, r = labels[i], ranks[labels[i]]
        widths = np.diff(edges)
        probs = widths / (num_draws + 1)
        low_count = stats.binom.ppf(alpha / 2, num_reps, probs)
        high_count = stats.binom.ppf(1 - alpha / 2, num_reps, probs)
        top.bar(edges[:-1], low_count, width=widths, align="edge", color="none")
        top.bar(
            edges[:-1],
            high_count - low_count,
            bottom=low_count,
            width=widths,
            align="edge",
            color="0.85",
        )
        top.hist(r, bins=edges, histtype="step", color="C0", linewidth=1.5)
        top.set_title(label, fontsize=9)
        top.set_yticks([])
        ecdf = np.sum(r[None, :] < thresholds[:, None], axis=1) / num_reps
        bottom.fill_between(z, lower - z, upper - z, color="0.85", step="mid")
        bottom.step(z, ecdf - z, where="mid", color="C0")
        bottom.axhline(0.0, color="0.5", linewidth=0.5)
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("fractional rank", fontsize=8)
        if i % columns == 0:
            bottom.set_ylabel("ECDF - uniform", fontsize=8)
    fig.suptitle(
        f"SBC ranks: {num_reps} replications, {num_draws} draws each; bands at {1 - alpha:.0%}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig

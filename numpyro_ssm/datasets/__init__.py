"""Small real data sets shipped with the package, each with its source.

The files live next to this module and are read with :mod:`importlib.resources`; nothing is
downloaded.
"""

import csv
import io
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["Earthquakes", "Nile", "USGNP", "load_earthquakes", "load_nile", "load_us_gnp"]


class Earthquakes(NamedTuple):
    """Annual counts of major earthquakes, 1900–2006.

    Attributes:
        years: shape ``(107,)``, integer calendar years 1900, ..., 2006.
        counts: shape ``(107,)``, integer number of earthquakes of magnitude 7 and above
            worldwide in that year.
    """

    years: np.ndarray
    counts: np.ndarray


class Nile(NamedTuple):
    """Annual flow volume of the Nile at Aswan, 1871–1970.

    Attributes:
        years: shape ``(100,)``, integer calendar years 1871, ..., 1970.
        volume: shape ``(100,)``, float annual flow volume in 10⁸ m³.
    """

    years: np.ndarray
    volume: np.ndarray


def _read_columns(filename: str) -> dict[str, list[str]]:
    """Read a bundled CSV file into a mapping from column name to its string values."""
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], [row for row in rows[1:] if row]
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


def load_earthquakes() -> Earthquakes:
    """Load the annual counts of major earthquakes worldwide, 1900–2006.

    The number of earthquakes of magnitude 7 and above per year, 107 values. They were compiled
    from the USGS Earthquake Data Base and used throughout Zucchini, MacDonald & Langrock,
    *Hidden Markov Models for Time Series: An Introduction Using R* (2nd ed., CRC Press, 2016).
    Their published stationary 2-state Poisson-HMM fit has −log L = 342.32 and rates 15.47 and
    26.13.

    Returns:
        An :class:`Earthquakes` tuple with ``years`` and ``counts``, both integer arrays of shape
        ``(107,)``.

    Example:
        >>> from numpyro_ssm.datasets import load_earthquakes
        >>> data = load_earthquakes()
        >>> data.counts.shape
        (107,)
    """
    columns = _read_columns("earthquakes.csv")
    return Earthquakes(
        years=np.asarray(columns["year"], dtype=np.int64),
        counts=np.asarray(columns["count"], dtype=np.int64),
    )


def load_nile() -> Nile:
    """Load the annual flow volume of the Nile at Aswan, 1871–1970.

    The flow volume in 10⁸ m³, 100 values. The series is from Cobb (1978), *Biometrika* 65, and
    was analysed in Durbin & Koopman, *Time Series Analysis by State Space Methods* (2nd ed.,
    OUP, 2012). Their local level model MLE is σ²ε = 15099, σ²η = 1469.1. The same series ships
    with statsmodels (``statsmodels.datasets.nile``).

    Returns:
        A :class:`Nile` tuple with ``years``, an integer array of shape ``(100,)``, and
        ``volume``, a float array of shape ``(100,)``.

    Example:
        >>> from numpyro_ssm.datasets import load_nile
        >>> data = load_nile()
        >>> data.volume.shape
        (100,)
    """
    columns = _read_columns("nile.csv")
    return Nile(
        years=np.asarray(columns["year"], dtype=np.int64),
        volume=np.asarray(columns["volume"], dtype=np.float64),
    )


class USGNP(NamedTuple):
    """Quarterly growth of US real GNP, 1951Q2–1984Q4 (Hamilton 1989).

    Attributes:
        quarters: shape ``(135,)``, strings ``"1951Q2"``, ..., ``"1984Q4"``.
        growth: shape ``(135,)``, float: 100 times the quarterly change in log real GNP.
        nber_recession: shape ``(135,)``, bool: the quarter lies in an NBER-dated recession.
    """

    quarters: np.ndarray
    growth: np.ndarray
    nber_recession: np.ndarray


def load_us_gnp() -> USGNP:
    """Load the US real GNP growth series of Hamilton (1989), 1951Q2–1984Q4.

    100 times the quarterly change in the log of US real GNP, 135 values, with the NBER
    recession indicator. The series is the one of Hamilton, "A new approach to the economic
    analysis of nonstationary time series and the business cycle", *Econometrica* 57 (1989),
    as distributed with statsmodels' test suite (``rgnp`` and ``rec`` in
    ``statsmodels/tsa/regime_switching/tests/test_markov_autoregression.py``). At Hamilton's
    estimates of his 2-regime mean-switching AR(4), the log-likelihood (conditional on the
    first four quarters) is −181.26339.

    Returns:
        A :class:`USGNP` tuple: ``quarters`` (strings), ``growth`` (float) and
        ``nber_recession`` (bool), each of shape ``(135,)``.

    Example:
        >>> from numpyro_ssm.datasets import load_us_gnp
        >>> load_us_gnp().growth.shape
        (135,)
    """
    columns = _read_columns("us_gnp.csv")
    return USGNP(
        quarters=np.asarray(columns["quarter"]),
        growth=np.asarray(columns["growth"], dtype=np.float64),
        nber_recession=np.asarray(columns["nber_recession"], dtype=np.int64).astype(bool),
    )

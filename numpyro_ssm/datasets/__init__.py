"""Small real data sets shipped with the package, each with its source.

The files live next to this module and are read with :mod:`importlib.resources`; nothing is
downloaded.
"""

import csv
import io
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = ["CO2", "Earthquakes", "Nile", "load_co2", "load_earthquakes", "load_nile"]


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


class CO2(NamedTuple):
    """Monthly mean atmospheric CO₂ at Mauna Loa, March 1958 – December 2001.

    Attributes:
        years: shape ``(526,)``, integer calendar years.
        months: shape ``(526,)``, integer months 1, ..., 12.
        ppm: shape ``(526,)``, float CO₂ concentration in ppmv; NaN for the 5 months without
            a weekly value.
    """

    years: np.ndarray
    months: np.ndarray
    ppm: np.ndarray


def load_co2() -> CO2:
    """Load monthly mean atmospheric CO₂ at Mauna Loa, March 1958 – December 2001.

    The monthly means of the weekly series that ships with statsmodels
    (``statsmodels.datasets.co2``; public domain): Keeling, C.D. and T.P. Whorf (2004),
    *Atmospheric CO2 concentrations derived from flask air samples at sites in the SIO
    network*, in Trends: A Compendium of Data on Global Change, CDIAC, Oak Ridge National
    Laboratory. Months without a weekly value are missing (NaN).

    Returns:
        A :class:`CO2` tuple with ``years``, ``months`` (integer arrays) and ``ppm`` (float),
        each of shape ``(526,)``.

    Example:
        >>> from numpyro_ssm.datasets import load_co2
        >>> data = load_co2()
        >>> data.ppm.shape
        (526,)
    """
    columns = _read_columns("co2_monthly.csv")
    return CO2(
        years=np.asarray(columns["year"], dtype=np.int64),
        months=np.asarray(columns["month"], dtype=np.int64),
        ppm=np.asarray([float(v) if v else np.nan for v in columns["co2"]], dtype=np.float64),
    )

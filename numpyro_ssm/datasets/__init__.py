"""Small real data sets shipped with the package, each with its source.

The files live next to this module and are read with :mod:`importlib.resources`; nothing is
downloaded.
"""

import csv
import io
from importlib import resources
from typing import NamedTuple

import numpy as np

__all__ = [
    "SP500",
    "Earthquakes",
    "Geyser",
    "Nile",
    "load_earthquakes",
    "load_geyser",
    "load_nile",
    "load_sp500",
    "CO2",
    "load_co2",
    "USGNP",
    "load_us_gnp",
    "UKDriverDeaths",
    "load_uk_driver_deaths",
]


class Earthquakes(NamedTuple):
    """Annual counts of major earthquakes, 1900–2006.

    Attributes:
        years: shape ``(107,)``, integer calendar years 1900, ..., 2006.
        counts: shape ``(107,)``, integer number of earthquakes of magnitude 7 and above
            worldwide in that year.
    """

    years: np.ndarray
    counts: np.ndarray


class Geyser(NamedTuple):
    """Old Faithful eruptions, 1–15 August 1985 (Azzalini & Bowman 1990; R's ``MASS::geyser``).

    Attributes:
        waiting: shape ``(299,)``, float minutes from the start of the previous eruption to the
            start of this one.
        duration: shape ``(299,)``, float eruption length in minutes. Some night-time
            durations were only recorded as short, medium or long, and are coded 2, 3 and 4.
    """

    waiting: np.ndarray
    duration: np.ndarray


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


class SP500(NamedTuple):
    """Daily closes of the S&P 500 index, 2006–2011, and their log returns.

    Attributes:
        dates: shape ``(1511,)``, ``numpy.datetime64[D]`` trading days.
        close: shape ``(1511,)``, float adjusted closing levels.
        returns: shape ``(1510,)``, float daily log returns in percent,
            ``100 log(close[t + 1] / close[t])``, dated ``dates[1:]``.
    """

    dates: np.ndarray
    close: np.ndarray
    returns: np.ndarray


def load_sp500() -> SP500:
    """Load the daily S&P 500 closes of 2006–2011 (the financial crisis and its aftermath).

    1511 trading days from 2006-01-03 to 2011-12-30, the adjusted closes rounded to cents. They
    are a slice of the S&P 500 data set that ships with Kevin Sheppard's ``arch`` package
    (version 8.0.0, ``arch.data.sp500``, NCSA license; originally from Yahoo! Finance), used in
    its volatility-modelling examples.

    Returns:
        An :class:`SP500` tuple with ``dates``, ``close`` and the percent log ``returns``.

    Example:
        >>> from numpyro_ssm.datasets import load_sp500
        >>> load_sp500().returns.shape
        (1510,)
    """
    columns = _read_columns("sp500.csv")
    close = np.asarray(columns["close"], dtype=np.float64)
    return SP500(
        dates=np.asarray(columns["date"], dtype="datetime64[D]"),
        close=close,
        returns=100.0 * np.diff(np.log(close)),
    )


def load_geyser() -> Geyser:
    """Load the 299 consecutive eruptions of the Old Faithful geyser, 1–15 August 1985.

    Eruption lengths and the waiting times between eruption starts, measured continuously by
    Azzalini & Bowman, "A look at some data on the Old Faithful geyser", *Applied Statistics*
    39(3), 357–365 (1990), in the version of R's ``MASS`` package (``MASS::geyser``; Venables &
    Ripley, *Modern Applied Statistics with S*, 4th ed., Springer, 2002). From ``MASS``
    7.3-30 on, ``waiting[t]`` is the time *before* eruption ``t``: a short eruption ``t`` is
    followed by a short ``waiting[t + 1]``. Short eruptions (about 2 minutes) almost never
    follow each other, while long ones come in runs of varied length: a classic case for
    explicit state durations.

    Returns:
        A :class:`Geyser` tuple with ``waiting`` and ``duration``, float arrays of shape
        ``(299,)``.

    Example:
        >>> from numpyro_ssm.datasets import load_geyser
        >>> data = load_geyser()
        >>> data.duration.shape
        (299,)
    """
    columns = _read_columns("geyser.csv")
    return Geyser(
        waiting=np.asarray(columns["waiting"], dtype=np.float64),
        duration=np.asarray(columns["duration"], dtype=np.float64),
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


class UKDriverDeaths(NamedTuple):
    """Monthly car drivers killed or seriously injured in Great Britain, 1969–1984.

    Attributes:
        years: shape ``(192,)``, integer years.
        months: shape ``(192,)``, integer months 1–12.
        drivers: shape ``(192,)``, float counts.
        law: shape ``(192,)``, float 0/1, 1 from February 1983 (the compulsory seat-belt law
            took effect on 31 January 1983).
    """

    years: np.ndarray
    months: np.ndarray
    drivers: np.ndarray
    law: np.ndarray


def load_uk_driver_deaths() -> UKDriverDeaths:
    """Load the monthly UK car drivers killed or seriously injured, January 1969 – December 1984.

    R's ``datasets::UKDriverDeaths`` (the ``drivers`` column of ``Seatbelts``; taken from the
    CSV that the ``pydataset`` package ships): Harvey, A.C. and Durbin, J. (1986), The effects
    of seat belt legislation on British road casualties: a case study in structural time series
    modelling, *Journal of the Royal Statistical Society A* 149, 187–227; also Harvey (1989),
    *Forecasting, Structural Time Series Models and the Kalman Filter*, and Durbin & Koopman
    (2012, §14.3). The seat-belt law is the intervention, ``law = 1`` from February 1983.

    Returns:
        A :class:`UKDriverDeaths` tuple of four arrays of shape ``(192,)``.

    Example:
        >>> from numpyro_ssm.datasets import load_uk_driver_deaths
        >>> data = load_uk_driver_deaths()
        >>> data.drivers.shape, int(data.law.sum())
        ((192,), 23)
    """
    columns = _read_columns("uk_driver_deaths.csv")
    years = np.asarray(columns["year"], dtype=np.int64)
    months = np.asarray(columns["month"], dtype=np.int64)
    law = ((years > 1983) | ((years == 1983) & (months >= 2))).astype(np.float64)
    return UKDriverDeaths(
        years=years,
        months=months,
        drivers=np.asarray(columns["drivers"], dtype=np.float64),
        law=law,
    )

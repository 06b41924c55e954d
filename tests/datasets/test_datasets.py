import csv
from pathlib import Path

import numpy as np
import pytest

from numpyro_ssm.datasets import load_earthquakes, load_geyser, load_nile, load_sp500, load_us_gnp

DATA_DIR = Path(__file__).resolve().parents[2] / "numpyro_ssm" / "datasets"


def _read_csv(name):
    with open(DATA_DIR / name, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows


def test_earthquakes():
    data = load_earthquakes()
    rows = _read_csv("earthquakes.csv")
    assert len(rows) == 107
    assert data.years.shape == (107,)
    assert data.counts.shape == (107,)
    assert np.issubdtype(data.years.dtype, np.integer)
    assert np.issubdtype(data.counts.dtype, np.integer)
    assert data.years[0] == 1900 and data.years[-1] == 2006
    assert data.years[0] == int(rows[0]["year"])
    assert data.counts[0] == int(rows[0]["count"])
    assert data.years[-1] == int(rows[-1]["year"])
    assert data.counts[-1] == int(rows[-1]["count"])
    np.testing.assert_array_equal(data.counts, [int(r["count"]) for r in rows])
    np.testing.assert_array_equal(np.diff(data.years), 1)
    assert (data.counts >= 0).all()


def test_nile():
    data = load_nile()
    rows = _read_csv("nile.csv")
    assert len(rows) == 100
    assert data.years.shape == (100,)
    assert data.volume.shape == (100,)
    assert np.issubdtype(data.years.dtype, np.integer)
    assert np.issubdtype(data.volume.dtype, np.floating)
    assert data.years[0] == 1871 and data.years[-1] == 1970
    assert data.years[0] == int(rows[0]["year"])
    assert data.volume[0] == float(rows[0]["volume"])
    assert data.years[-1] == int(rows[-1]["year"])
    assert data.volume[-1] == float(rows[-1]["volume"])
    np.testing.assert_array_equal(data.volume, [float(r["volume"]) for r in rows])
    np.testing.assert_array_equal(np.diff(data.years), 1)


@pytest.mark.parametrize("loader", [load_earthquakes, load_nile, load_geyser])
def test_loaders_return_fresh_arrays(loader):
    first = loader()
    first[1][0] = -1
    assert loader()[1][0] != -1


def test_sp500():
    data = load_sp500()
    rows = _read_csv("sp500.csv")
    assert len(rows) == 1511 and data.close.shape == (1511,) and data.returns.shape == (1510,)
    assert str(data.dates[0]) == "2006-01-03" and str(data.dates[-1]) == "2011-12-30"
    assert (np.diff(data.dates).astype(int) > 0).all()
    assert data.close[0] == float(rows[0]["close"])
    np.testing.assert_allclose(data.returns[0], 100 * np.log(data.close[1] / data.close[0]))
    # the crisis: the largest daily moves of the period, October 2008, near +-10 %
    assert 9 < np.abs(data.returns).max() < 12


def test_geyser():
    data = load_geyser()
    rows = _read_csv("geyser.csv")
    assert len(rows) == 299 and data.waiting.shape == data.duration.shape == (299,)
    np.testing.assert_array_equal(data.waiting, [float(r["waiting"]) for r in rows])
    np.testing.assert_array_equal(data.duration, [float(r["duration"]) for r in rows])
    np.testing.assert_array_equal([int(r["eruption"]) for r in rows], np.arange(1, 300))
    # R: summary(MASS::geyser)
    assert (data.waiting.min(), data.waiting.max()) == (43, 108)
    np.testing.assert_allclose([data.duration.min(), data.duration.max()], [0.8333333, 5.45])
    np.testing.assert_allclose(
        [data.waiting.mean(), data.duration.mean()], [72.31, 3.461], atol=6e-3
    )


def test_co2_is_the_monthly_mean_of_statsmodels_weekly_series():
    from statsmodels.datasets import co2

    from numpyro_ssm.datasets import load_co2

    data = load_co2()
    assert data.ppm.shape == data.years.shape == data.months.shape == (526,)
    assert (data.years[0], data.months[0], data.years[-1], data.months[-1]) == (1958, 3, 2001, 12)
    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    np.testing.assert_allclose(data.ppm, monthly.to_numpy(), rtol=0, atol=5e-4)
    assert np.isnan(data.ppm).sum() == 5
    fresh = load_co2()
    fresh.ppm[0] = -1
    assert load_co2().ppm[0] != -1


def test_us_gnp():
    from statsmodels.tsa.regime_switching.tests.test_markov_autoregression import rec, rgnp

    data = load_us_gnp()
    assert data.growth.shape == (135,) and data.quarters[0] == "1951Q2"
    assert data.quarters[-1] == "1984Q4"
    np.testing.assert_array_equal(data.growth, rgnp)
    np.testing.assert_array_equal(data.nber_recession, np.asarray(rec, bool))


def test_uk_driver_deaths_is_r_ukdriverdeaths_with_the_law_indicator():
    from numpyro_ssm.datasets import load_uk_driver_deaths

    data = load_uk_driver_deaths()
    assert data.drivers.shape == data.law.shape == (192,)
    assert (data.years[0], data.months[0], data.years[-1], data.months[-1]) == (1969, 1, 1984, 12)
    # R: UKDriverDeaths[1], the January and February 1983 values, the last value
    assert [data.drivers[i] for i in (0, 168, 169, 191)] == [1687, 1494, 1057, 1763]
    assert np.all(data.law[:169] == 0) and np.all(data.law[169:] == 1)  # from February 1983

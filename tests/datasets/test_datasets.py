import csv
from pathlib import Path

import numpy as np
import pytest

from numpyro_ssm.datasets import load_earthquakes, load_nile, load_us_gnp

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


@pytest.mark.parametrize("loader", [load_earthquakes, load_nile])
def test_loaders_return_fresh_arrays(loader):
    first = loader()
    first[1][0] = -1
    assert loader()[1][0] != -1


def test_us_gnp():
    from statsmodels.tsa.regime_switching.tests.test_markov_autoregression import rec, rgnp

    data = load_us_gnp()
    assert data.growth.shape == (135,) and data.quarters[0] == "1951Q2"
    assert data.quarters[-1] == "1984Q4"
    np.testing.assert_array_equal(data.growth, rgnp)
    np.testing.assert_array_equal(data.nber_recession, np.asarray(rec, bool))

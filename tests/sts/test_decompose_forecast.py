"""``sts.decompose`` and ``sts.forecast_components`` against statsmodels, draw by draw (x64).

The model: a local level, a static regression with a sampled coefficient and the observation
noise, with two posterior draws. Each draw's contributions are statsmodels'
``UnobservedComponents`` smoothed level and forecasts at that draw's parameters; the pooled
moments are the law of total variance over the draws, computed here with NumPy.
"""

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from kalman_cases import close

from numpyro_ssm import sts

T, H = 30, 4
DRAWS = {
    "level_scale": np.array([0.5, 0.8]),
    "noise_scale": np.array([0.9, 0.6]),
    "beta": np.array([2.0, 1.5]),
}

# every test here reaches xarray (the decomposition) or matplotlib: rerun on ArviZ 1.x
pytestmark = pytest.mark.arviz


def model(y, X):
    level = numpyro.sample("level_scale", dist.HalfNormal(1.0))
    noise = numpyro.sample("noise_scale", dist.HalfNormal(1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 3.0))
    structure = (
        sts.local_level(level) + sts.regression(X, beta[None], name="effect") + sts.irregular(noise)
    )
    numpyro.sample("y", structure.distribution(y.shape[0]), obs=y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = (np.arange(T + H) >= 12).astype(float)[:, None]
    y = 5.0 + rng.normal(size=T).cumsum() * 0.5 + 2.0 * X[:T, 0] + rng.normal(size=T) * 0.8
    y[7] = np.nan
    return y[:, None], X


@pytest.fixture(scope="module")
def statsmodels_draws(data):
    from statsmodels.tsa.statespace.structural import UnobservedComponents

    y, X = data
    mod = UnobservedComponents(y[:, 0], exog=X[:T], level="llevel", use_exact_diffuse=True)
    out = []
    for i in range(2):
        values = {
            "sigma2.irregular": DRAWS["noise_scale"][i] ** 2,
            "sigma2.level": DRAWS["level_scale"][i] ** 2,
            "beta.x1": DRAWS["beta"][i],
        }
        res = mod.smooth(np.array([values[n] for n in mod.param_names]))
        out.append((res, res.get_forecast(H, exog=X[T:])))
    return out


@pytest.fixture(scope="module")
def decomposition(data):
    y, X = data
    return sts.decompose(model, DRAWS, y, X, prob=0.8)


@pytest.fixture(scope="module")
def forecast(data):
    y, X = data
    return sts.forecast_components(model, DRAWS, y, X, num_steps=H, prob=0.8)


def test_decomposition_per_draw_matches_statsmodels(data, decomposition, statsmodels_draws):
    y, X = data
    ds = decomposition
    assert ds["means"].dims == ("chain", "draw", "component", "time")
    assert list(ds.component.values) == ["level", "effect", "irregular", "fit"]
    for i, (res, _) in enumerate(statsmodels_draws):
        d = ds.isel(chain=0, draw=i)
        close(d["means"].sel(component="level"), res.smoothed_state[0])
        close(d["variances"].sel(component="level"), res.smoothed_state_cov[0, 0])
        close(d["means"].sel(component="effect"), DRAWS["beta"][i] * X[:T, 0])
        close(d["variances"].sel(component="effect"), 0.0, atol=0)
        fit = res.smoothed_state[0] + DRAWS["beta"][i] * X[:T, 0]
        close(d["means"].sel(component="fit"), fit)
        observed = ~np.isnan(y[:, 0])
        irregular = np.asarray(d["means"].sel(component="irregular"))
        close(irregular[observed], y[observed, 0] - fit[observed])
        assert irregular[~observed] == 0


def test_pooled_band_is_the_law_of_total_variance(decomposition):
    ds = decomposition
    means, variances = np.asarray(ds["means"])[0], np.asarray(ds["variances"])[0]
    mean = means.mean(0)
    variance = variances.mean(0) + means.var(0)
    close(ds["mean"], mean)
    close(ds["variance"], variance)
    z = 1.2815515655446004  # the 90% normal quantile: an 80% central band
    close(ds["upper"], mean + z * np.sqrt(variance))
    close(ds["lower"], mean - z * np.sqrt(variance))
    assert ds.attrs["prob"] == 0.8


def test_component_forecasts_match_statsmodels(data, forecast, statsmodels_draws):
    _, X = data
    ds = forecast
    assert list(ds.component.values) == ["level", "effect", "irregular", "fit", "observed"]
    close(ds.time, np.arange(T, T + H), rtol=0, atol=0)
    for i, (_, fc) in enumerate(statsmodels_draws):
        d = ds.isel(chain=0, draw=i)
        close(d["means"].sel(component="observed"), fc.predicted_mean)
        close(d["variances"].sel(component="observed"), fc.var_pred_mean)
        close(d["means"].sel(component="effect"), DRAWS["beta"][i] * X[T:, 0])
        noise = DRAWS["noise_scale"][i] ** 2
        close(d["variances"].sel(component="irregular"), noise)
        close(d["variances"].sel(component="level"), fc.var_pred_mean - noise)
        close(d["means"].sel(component="fit"), fc.predicted_mean)


def test_errors():
    y = np.zeros((T, 1))
    X = np.zeros((T, 1))  # no rows for the horizon
    with pytest.raises(ValueError, match=r"covariates with 30 rows, but 34 steps"):
        sts.forecast_components(model, DRAWS, y, X, num_steps=H)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        sts.forecast_components(model, DRAWS, y, X, num_steps=0)
    with pytest.raises(ValueError, match=r"prob must lie in \(0, 1\)"):
        sts.decompose(model, DRAWS, y, X, prob=1.5)


def test_plot_components_draws_every_panel(data, decomposition, forecast):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, _ = data
    fig = sts.plot_components(y, decomposition, forecast, title="smoke")
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["", "level", "effect"]
    top = fig.axes[0]
    assert [line.get_label() for line in top.get_lines()] == ["data", "fit", "forecast"]
    forecast_line = top.get_lines()[2]
    close(forecast_line.get_ydata(), forecast["mean"].sel(component="observed"))
    plt.close(fig)
    with pytest.raises(ValueError, match=r"observations must have shape \(30,\)"):
        sts.plot_components(y[:-1], decomposition)
    with pytest.raises(ValueError, match=r"no component \['trend'\]"):
        sts.plot_components(y, decomposition, components=["trend"])

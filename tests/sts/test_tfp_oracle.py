"""``numpyro_ssm.sts`` against TFP's ``tfp.sts`` where the parameterizations agree (x64).

Oracle: ``tfp.sts.Sum(...).make_state_space_model(...).log_prob`` (TFP's own Kalman filter) on
the same components, scales and proper initial priors (TFP has no diffuse start), with
``constant_offset=0`` (TFP otherwise subtracts an offset estimated from the series). The
trigonometric seasonal is TFP's ``SmoothSeasonal`` (the sine state's sign differs, which an
isotropic prior and isotropic drift make irrelevant); the autoregression is TFP's companion
form with the same state order.
"""

import numpy as np
import pytest
from kalman_cases import close

from numpyro_ssm import sts

T = 30
SCALES = {
    "observation_noise_scale": 0.7,
    "LocalLinearTrend_level_scale": 0.4,
    "LocalLinearTrend_slope_scale": 0.1,
    "SmoothSeasonal_drift_scale": 0.05,
    "LocalLevel_level_scale": 0.3,
    "Autoregressive_coefficients": np.array([0.5, -0.3]),
    "Autoregressive_level_scale": 0.6,
}


def _trend_smooth_seasonal(y):
    import tensorflow_probability.substrates.jax as tfp

    tfd = tfp.distributions
    mean, sd = np.array([1.0, 0.2]), np.array([2.0, 0.5])
    theirs = [
        tfp.sts.LocalLinearTrend(
            observed_time_series=y,
            initial_level_prior=tfd.Normal(mean[0], sd[0]),
            initial_slope_prior=tfd.Normal(mean[1], sd[1]),
        ),
        tfp.sts.SmoothSeasonal(
            period=12,
            frequency_multipliers=[1, 2],
            observed_time_series=y,
            initial_state_prior=tfd.MultivariateNormalDiag(np.full(4, 0.3), np.full(4, 1.5)),
        ),
    ]
    ours = (
        sts.local_linear_trend(0.4, 0.1, initial_mean=mean, initial_scale=sd)
        + sts.seasonal(
            12, 0.05, form="trigonometric", num_harmonics=2, initial_mean=0.3, initial_scale=1.5
        )
        + sts.irregular(0.7)
    )
    return ours, theirs


def _trend_full_seasonal(y):
    """All six harmonics of period 12: the last (at frequency pi) has one state in ours and two
    in TFP's ``SmoothSeasonal``, whose sine state never reaches the observation."""
    import tensorflow_probability.substrates.jax as tfp

    tfd = tfp.distributions
    theirs = [
        tfp.sts.LocalLinearTrend(
            observed_time_series=y,
            initial_level_prior=tfd.Normal(np.float64(1), np.float64(2)),
            initial_slope_prior=tfd.Normal(np.float64(0), np.float64(0.5)),
        ),
        tfp.sts.SmoothSeasonal(
            period=12,
            frequency_multipliers=[1, 2, 3, 4, 5, 6],
            observed_time_series=y,
            initial_state_prior=tfd.MultivariateNormalDiag(np.zeros(12), np.full(12, 1.5)),
        ),
    ]
    ours = (
        sts.local_linear_trend(
            0.4, 0.1, initial_mean=np.array([1.0, 0.0]), initial_scale=np.array([2.0, 0.5])
        )
        + sts.seasonal(12, 0.05, form="trigonometric", initial_mean=0.0, initial_scale=1.5)
        + sts.irregular(0.7)
    )
    return ours, theirs


def _level_autoregressive(y):
    import tensorflow_probability.substrates.jax as tfp

    tfd = tfp.distributions
    theirs = [
        tfp.sts.LocalLevel(
            observed_time_series=y, initial_level_prior=tfd.Normal(np.float64(-1), np.float64(3))
        ),
        tfp.sts.Autoregressive(
            order=2,
            observed_time_series=y,
            coefficients_prior=tfd.MultivariateNormalDiag(np.zeros(2), np.ones(2)),  # float64
            initial_state_prior=tfd.MultivariateNormalDiag(np.array([0.5, 0.0]), np.ones(2)),
        ),
    ]
    ours = (
        sts.local_level(0.3, initial_mean=-1.0, initial_scale=3.0)
        + sts.autoregressive(
            np.array([0.5, -0.3]), 0.6, initial_mean=np.array([0.5, 0.0]), initial_scale=1.0
        )
        + sts.irregular(0.7)
    )
    return ours, theirs


@pytest.mark.parametrize(
    "build", [_trend_smooth_seasonal, _trend_full_seasonal, _level_autoregressive]
)
def test_log_likelihood_matches_tfp_sts(build):
    import tensorflow_probability.substrates.jax as tfp

    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=T)) + np.sin(np.arange(T) * 2 * np.pi / 12)
    ours, components = build(y)
    model = tfp.sts.Sum(components, observed_time_series=y, constant_offset=0.0)
    ssm = model.make_state_space_model(T, [SCALES[p.name] for p in model.parameters])
    expected = ssm.log_prob(y[:, None])
    close(ours.distribution(T).log_prob(y[:, None]), expected, rtol=1e-8)
    # a different series gives a different value: the comparison is not vacuous
    assert abs(float(ssm.log_prob(y[::-1, None])) - float(expected)) > 1e-3

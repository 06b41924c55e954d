r"""Structural time series: components as builders of :class:`~numpyro_ssm.LinearGaussianSSM`.

Every builder takes the component's parameters (numbers, NumPy or JAX arrays, NumPyro samples)
and returns a :class:`~numpyro_ssm.sts.Component`; ``+`` stacks components into a
:class:`~numpyro_ssm.sts.StructuralTimeSeries`, whose ``distribution()`` is a
:class:`~numpyro_ssm.LinearGaussianSSM`. The observation is the sum of the components plus
noise, :math:`y_t = \sum_c x^{(c)}_t + \varepsilon_t` with the noise from :func:`irregular`.

Scales are standard deviations; a scale of 0 makes a component deterministic (a fixed slope, a
fixed seasonal pattern): the blocks' noise factors are then singular, which the square-root
filters handle exactly. Parameters are scalars (or one value per state where a docstring says
so): for many series, ``jax.vmap`` over a function that builds the model.

**Initial states.** ``initial_scale=None`` gives nonstationary states (trend, seasonal,
regression coefficients) an exact diffuse start (:mod:`numpyro_ssm.ops.kalman.diffuse`, as
statsmodels' ``UnobservedComponents(use_exact_diffuse=True)``) and stationary ones (an
autoregression, a damped cycle) their stationary distribution; ``"diffuse"`` or standard
deviations choose explicitly (``initial_mean`` is then the mean of the proper start).

The state-space forms follow Durbin & Koopman (2012, §3.2) and statsmodels' state order, so
smoothed states can be compared with ``UnobservedComponents`` directly.
"""

from numpyro_ssm.sts._component import Component
from numpyro_ssm.sts._decompose import decompose
from numpyro_ssm.sts._forecast import forecast_components
from numpyro_ssm.sts._model import StructuralTimeSeries, sum_components
from numpyro_ssm.sts._plot import plot_components
from numpyro_ssm.sts._regression import dynamic_regression, regression
from numpyro_ssm.sts._seasonal import seasonal
from numpyro_ssm.sts._stationary import autoregressive, cycle, irregular
from numpyro_ssm.sts._trend import local_level, local_linear_trend, smooth_trend

__all__ = [
    "Component",
    "StructuralTimeSeries",
    "autoregressive",
    "cycle",
    "decompose",
    "dynamic_regression",
    "forecast_components",
    "irregular",
    "local_level",
    "local_linear_trend",
    "plot_components",
    "regression",
    "seasonal",
    "smooth_trend",
    "sum_components",
]

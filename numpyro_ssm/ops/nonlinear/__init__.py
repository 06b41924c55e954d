r"""Nonlinear and non-Gaussian state space models: Gaussian filters and smoothers (pure JAX).

The model and its two parameter containers are in :mod:`~numpyro_ssm.ops.nonlinear.params`:
``z_{t+1} = f(z_t, u_{t+1}, θ) + w_t`` and either ``y_t = h(z_t, u_t, θ) + v_t``
(:class:`NonlinearGaussianParams`) or ``y_t ~ p(y | η = h(z_t, u_t, θ))`` with known
conditional moments (:class:`GeneralizedGaussianParams`, conditional-moments Gaussian
filtering). Every algorithm is a square-root Kalman algorithm on a model linearized by a rule
(:mod:`~numpyro_ssm.ops.nonlinear.rules`): first-order Taylor (EKF), unscented (UKF),
Gauss–Hermite (GHKF) or spherical cubature (CKF), passed as ``method``.

Modules, one idea each:

- :mod:`~numpyro_ssm.ops.nonlinear.rules`: the linearization rules, behind :func:`linearize`.
- :mod:`~numpyro_ssm.ops.nonlinear.filtering`: the filter driver, :func:`nonlinear_filter`
  (iterated updates with ``update_iterations``).
- :mod:`~numpyro_ssm.ops.nonlinear.iterated`: linearizing around a whole trajectory
  (:func:`linearize_trajectory`), the passes of the iterated and parallel smoothers.
- :mod:`~numpyro_ssm.ops.nonlinear.smoothing`: :func:`nonlinear_smoother` (one pass or
  iterated, serial or parallel), :func:`nonlinear_log_marginal` and
  :func:`nonlinear_posterior_mode` (the MAP path).
- :mod:`~numpyro_ssm.ops.nonlinear.sampling`: :func:`nonlinear_posterior_sample` (FFBS on the
  linearized model, approximate) and :func:`nonlinear_sample` (the model itself).

**What is approximate.** The filtered and smoothed moments, the log-marginal and the posterior
draws are those of Gaussian approximations (exact when the model is linear-Gaussian; the tests
hold every rule to the Kalman filter there to 1e-10). How far they are from the truth depends on
the model's curvature over the belief's spread; ``docs/nonlinear.md`` shows it against a grid
filter.
"""

from numpyro_ssm.ops.nonlinear.filtering import (
    nonlinear_filter,
    nonlinear_predict,
    nonlinear_predictive_moments,
)
from numpyro_ssm.ops.nonlinear.iterated import linearize_trajectory
from numpyro_ssm.ops.nonlinear.params import GeneralizedGaussianParams, NonlinearGaussianParams
from numpyro_ssm.ops.nonlinear.rules import (
    METHODS,
    GaussHermite,
    SphericalCubature,
    Taylor,
    Unscented,
    get_rule,
    linearize,
    sigma_points,
)
from numpyro_ssm.ops.nonlinear.sampling import nonlinear_posterior_sample, nonlinear_sample
from numpyro_ssm.ops.nonlinear.smoothing import (
    PosteriorMode,
    nonlinear_log_marginal,
    nonlinear_posterior_mode,
    nonlinear_smoother,
)

__all__ = [
    "METHODS",
    "GaussHermite",
    "GeneralizedGaussianParams",
    "NonlinearGaussianParams",
    "PosteriorMode",
    "SphericalCubature",
    "Taylor",
    "Unscented",
    "get_rule",
    "linearize",
    "linearize_trajectory",
    "nonlinear_filter",
    "nonlinear_log_marginal",
    "nonlinear_posterior_mode",
    "nonlinear_posterior_sample",
    "nonlinear_predict",
    "nonlinear_predictive_moments",
    "nonlinear_sample",
    "nonlinear_smoother",
    "sigma_points",
]

r"""Square-root Kalman filtering, smoothing and sampling for linear-Gaussian models (pure JAX).

The model and the parameter container are in :mod:`~numpyro_ssm.ops.kalman.params`
(:class:`LGSSMParams`, built by :func:`lgssm_params`). Every covariance enters and travels as a
lower-triangular square root (``P = U Uᵀ``); updates stack factors and triangularize them
(:func:`numpyro_ssm.ops.linalg.tria`).

Modules, one idea each:

- :mod:`~numpyro_ssm.ops.kalman.filtering`: :func:`kalman_filter` and
  :func:`kalman_log_marginal` (whose derivative is one backward recursion).
- :mod:`~numpyro_ssm.ops.kalman.smoothing`: :func:`kalman_smoother` (RTS).
- :mod:`~numpyro_ssm.ops.kalman.sampling`: :func:`kalman_posterior_sample` (FFBS) and
  :func:`lgssm_sample` (the prior).
- :mod:`~numpyro_ssm.ops.kalman.diffuse`: the same with an exact diffuse prior on some entries
  of the first state (Koopman 1997): :func:`diffuse_kalman_filter`,
  :func:`diffuse_kalman_log_marginal`, :func:`diffuse_kalman_smoother`,
  :func:`diffuse_kalman_posterior_sample`.

Every algorithm takes ``parallel=False`` (sequential ``lax.scan``) or ``parallel=True``
(associative scans of ``O(log T)`` depth: Särkkä & García-Fernández 2021, in the square-root form
of Yaghoobi, Corenflos, Hassan & Särkkä 2022); the tests hold the two equal.

**Missing data.** ``obs_mask[t, i] = False`` or a NaN in ``y[t, i]`` marks an entry missing.
A missing entry's row of ``H_t``, ``d_t`` and of the residual is zeroed, and its row and column
of the innovation covariance are replaced by those of the identity: the entry then carries
exactly no information and contributes exactly 0 to the log-likelihood (no dummy variances).
NaNs are replaced before any arithmetic, so gradients stay finite.

**Batches.** These functions take one sequence (no batch axes). They are pure and
``jax.vmap``-able; :class:`numpyro_ssm.LinearGaussianSSM` vmaps them over its batch shape.
"""

from numpyro_ssm.ops.kalman.diffuse import (
    diffuse_kalman_filter,
    diffuse_kalman_log_marginal,
    diffuse_kalman_posterior_sample,
    diffuse_kalman_smoother,
)
from numpyro_ssm.ops.kalman.filtering import GaussianPosterior, kalman_filter, kalman_log_marginal
from numpyro_ssm.ops.kalman.params import LGSSMParams, lgssm_params
from numpyro_ssm.ops.kalman.sampling import kalman_posterior_sample, lgssm_sample
from numpyro_ssm.ops.kalman.smoothing import kalman_smoother

__all__ = [
    "GaussianPosterior",
    "LGSSMParams",
    "diffuse_kalman_filter",
    "diffuse_kalman_log_marginal",
    "diffuse_kalman_posterior_sample",
    "diffuse_kalman_smoother",
    "kalman_filter",
    "kalman_log_marginal",
    "kalman_posterior_sample",
    "kalman_smoother",
    "lgssm_params",
    "lgssm_sample",
]

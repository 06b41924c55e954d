"""The augmented form of :mod:`numpyro_ssm.ops.kalman.diffuse`: smoothing and posterior draws.

With the diffuse entries ``δ`` of ``z_1`` fixed the model is proper; its means are affine in
``δ``. One forward-mode pass through the proper filter and smoother gives them and their
Jacobians, and one QR of the whitened innovations gives ``p(δ | y)`` (de Jong 1991).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from numpyro_ssm.ops.kalman._diffuse_filter import _diffuse_filter
from numpyro_ssm.ops.kalman._steps import _LOG_2PI, _covariance, _Filtered, _masked_emission, _mT
from numpyro_ssm.ops.kalman.filtering import GaussianPosterior, _filter, _filtered_posterior
from numpyro_ssm.ops.kalman.params import _EMISSION, _Model, _per_step
from numpyro_ssm.ops.kalman.sampling import _backward_sample
from numpyro_ssm.ops.kalman.smoothing import _smoothed_posterior
from numpyro_ssm.ops.linalg import chol_logdet, solve_lower, solve_lower_transpose, tria


class _Augmented(NamedTuple):
    filtered: _Filtered  # the proper filter with the diffuse entries of z_1 fixed at m_0
    smoothed: GaussianPosterior | None
    filtered_jac: jax.Array  # (T, S, S): ∂ filtered mean / ∂δ
    smoothed_jac: jax.Array | None  # (T, S, S): ∂ smoothed mean / ∂δ
    shift: jax.Array  # (S,): δ̂ - m_0 on the diffuse entries, 0 elsewhere
    cov_factor: jax.Array  # (S, S): Cov(δ | y) = V Vᵀ (identity on the other entries)
    log_marginal: jax.Array  # the diffuse log-likelihood, the de Jong way


def _augmented(model: _Model, y, observed, diffuse, parallel, smooth) -> _Augmented:
    S = model.m0.shape[0]
    mask = jnp.asarray(diffuse, model.m0.dtype)
    # A flat prior on δ absorbs any proper prior on the same entries: the diffuse entries get
    # unit variance here, so that the predicted covariances stay nonsingular for the smoother.
    chol_P0 = tria(jnp.concatenate([model.chol_P0 * (1.0 - mask)[:, None], jnp.diag(mask)], 1))
    proper = model._replace(chol_P0=chol_P0)

    def run(delta):
        fixed = proper._replace(m0=model.m0 + mask * delta)
        f = _filter(fixed, y, observed, parallel)
        post = _smoothed_posterior(fixed, f, parallel) if smooth else None
        means = (f.predicted_means, f.means) + ((post.smoothed_means,) if smooth else ())
        return means, (f, post)

    jac, (f, post) = jax.jacfwd(run, has_aux=True)(jnp.zeros(S, model.m0.dtype))
    # whitened innovations w_t and their Jacobians W_t = ∂w_t / ∂δ (sign flipped)
    em = _per_step(model, _EMISSION, 0, y.shape[0])
    H_m, chol_R_m, y_m = jax.vmap(_masked_emission)(em["H"], em["chol_R"], em["d"], y, observed)
    chol_S = jax.vmap(lambda H, U, R: tria(jnp.concatenate([H @ U, R], axis=1)))(
        H_m, f.predicted_chols, chol_R_m
    )
    w = jax.vmap(solve_lower)(chol_S, y_m - jnp.einsum("tds,ts->td", H_m, f.predicted_means))
    W = jax.vmap(solve_lower)(chol_S, H_m @ jac[0])  # (T, D, S)
    rows = jnp.concatenate([W.reshape(-1, S), jnp.diag(1.0 - mask)])
    rhs = jnp.concatenate([w.reshape(-1), jnp.zeros(S, w.dtype)])
    lower = tria(jnp.concatenate([rows, rhs[:, None]], axis=1).T)  # (S + 1, S + 1)
    L11, l21, l22 = lower[:S, :S], lower[S, :S], lower[S, S]
    shift = solve_lower_transpose(L11, l21)
    cov_factor = solve_lower_transpose(L11, jnp.eye(S, dtype=L11.dtype))
    n_obs = jnp.sum(observed.astype(w.dtype))
    log_marginal = -0.5 * (
        n_obs * _LOG_2PI + jnp.sum(jax.vmap(chol_logdet)(chol_S)) + l22 * l22
    ) - 0.5 * chol_logdet(L11)
    return _Augmented(
        f, post, jac[1], jac[2] if smooth else None, mask * shift, cov_factor, log_marginal
    )


def _diffuse_smoothed(model, y, observed, diffuse, n, parallel, aug: _Augmented):
    """Every field: the filter's from the exact initial filter, the smoothed from ``aug``."""
    f = _diffuse_filter(model, y, observed, diffuse, n, parallel)
    post = aug.smoothed
    GV = aug.smoothed_jac @ aug.cov_factor  # (T, S, S)
    return _filtered_posterior(f)._replace(
        smoothed_means=post.smoothed_means + aug.smoothed_jac @ aug.shift,
        smoothed_covariances=post.smoothed_covariances + _covariance(GV),
        smoothed_cross_covariances=post.smoothed_cross_covariances + GV[:-1] @ _mT(GV[1:]),
    )


def _diffuse_sample(key, model, y, observed, diffuse, parallel, aug: _Augmented):
    """One path ``(T, S)``: ``δ ~ p(δ | y)``, then backward sampling given ``δ``."""
    key_delta, key_path = jax.random.split(key)
    mask = jnp.asarray(diffuse, model.m0.dtype)
    eps = jax.random.normal(key_delta, mask.shape, mask.dtype)
    delta = aug.shift + mask * (aug.cov_factor @ eps)
    f = aug.filtered._replace(means=aug.filtered.means + aug.filtered_jac @ delta)
    return _backward_sample(key_path, model, f, parallel)

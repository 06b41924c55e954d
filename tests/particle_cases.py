"""Shared particle-filter test models, written as plain JAX functions of one particle.

Not oracles (those are in ``oracles.py``): these build the models the particle tests share,
with the quantities the oracles need (Kalman parameters, HMM matrices, grid densities).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jax.scipy.stats import norm

from numpyro_ssm.ops import LGSSMParams, lgssm_params
from numpyro_ssm.ops.particle import Kernel, ParticleModel, ParticleProposal

# ---------------------------------------------------------------------------------------------
# A linear-Gaussian model with state dimension S, observation dimension D (homogeneous).


def _mvn_logpdf(x, mean, scale_tril):
    z = jax.scipy.linalg.solve_triangular(scale_tril, x - mean, lower=True)
    log_det = jnp.sum(jnp.log(jnp.diagonal(scale_tril)))
    return -0.5 * jnp.sum(z**2) - log_det - 0.5 * x.shape[-1] * jnp.log(2 * jnp.pi)


def lgssm_model():
    """``ParticleModel`` of ``z_1 ~ N(m0, U0 U0ᵀ)``, ``z_t = F z + b + w``, ``y = H z + v``.

    ``params`` is an :class:`LGSSMParams`; states have shape ``(S,)``.
    """

    def initial_noise(eps, u, p):
        return p.initial_mean + p.initial_scale_tril @ eps

    def transition_mean(z, u, p):
        bias = 0.0 if p.transition_bias is None else p.transition_bias
        return p.transition_matrix @ z + bias

    initial = Kernel(
        lambda key, u, p: initial_noise(
            jax.random.normal(key, p.initial_mean.shape, p.initial_mean.dtype), u, p
        ),
        lambda z, u, p: _mvn_logpdf(z, p.initial_mean, p.initial_scale_tril),
        initial_noise,
    )
    transition = Kernel(
        lambda key, z, u, p: (
            transition_mean(z, u, p) + p.transition_scale_tril @ jax.random.normal(key, z.shape)
        ),
        lambda z_next, z, u, p: _mvn_logpdf(
            z_next, transition_mean(z, u, p), p.transition_scale_tril
        ),
        lambda eps, z, u, p: transition_mean(z, u, p) + p.transition_scale_tril @ eps,
    )

    def emission_log_prob(y, z, u, p):
        return _mvn_logpdf(y, p.emission_matrix @ z, p.emission_scale_tril)

    return ParticleModel(initial, transition, emission_log_prob)


def lgssm_optimal_proposal():
    """The locally optimal proposal ``p(z_t | z_{t-1}, y_t)``, look-ahead ``p(y_t | z_{t-1})``.

    Returns:
        ``(ParticleProposal, auxiliary_log_weight)`` for :func:`lgssm_model`.
    """

    def conditional(z_prev_mean, prior_tril, y, p):
        H, R = p.emission_matrix, p.emission_scale_tril @ p.emission_scale_tril.T
        P = prior_tril @ prior_tril.T
        S = H @ P @ H.T + R
        gain = jnp.linalg.solve(S, H @ P).T
        mean = z_prev_mean + gain @ (y - H @ z_prev_mean)
        cov = P - gain @ S @ gain.T
        return mean, jnp.linalg.cholesky(cov), H @ z_prev_mean, jnp.linalg.cholesky(S)

    def step(z, y, p):
        return conditional(p.transition_matrix @ z, p.transition_scale_tril, y, p)

    def first(y, p):
        return conditional(p.initial_mean, p.initial_scale_tril, y, p)

    def kernel(moments):
        def from_noise(eps, *cond):
            mean, tril, _, _ = moments(*cond)
            return mean + tril @ eps

        def sample(key, *cond):
            return from_noise(jax.random.normal(key, moments(*cond)[0].shape), *cond)

        def log_prob(z, *cond):
            mean, tril, _, _ = moments(*cond)
            return _mvn_logpdf(z, mean, tril)

        return Kernel(sample, log_prob, from_noise)

    proposal = ParticleProposal(
        transition=kernel(lambda z, y, u, p: step(z, y, p)),
        initial=kernel(lambda y, u, p: first(y, p)),
    )

    def lookahead(z, y, u, p):
        _, _, y_mean, y_tril = step(z, y, p)
        return _mvn_logpdf(y, y_mean, y_tril)

    return proposal, lookahead


def lgssm_case(seed, S=1, D=1, T=20, dtype=np.float64):
    """Random homogeneous LGSSM parameters (as ``LGSSMParams``) and data."""
    rng = np.random.default_rng(seed)
    F = 0.9 * np.eye(S) + 0.05 * rng.normal(size=(S, S))
    m0, H = rng.normal(size=S), rng.normal(size=(D, S))
    q, r = 0.5, 0.7
    z = m0 + rng.normal(size=S)
    y = []
    for _ in range(T):  # data from the model, so that weights stay balanced
        y.append(H @ z + r * rng.normal(size=D))
        z = F @ z + q * rng.normal(size=S)
    params = lgssm_params(
        m0.astype(dtype),
        F.astype(dtype),
        H.astype(dtype),
        initial_scale_tril=np.eye(S, dtype=dtype),
        transition_scale_tril=(q * np.eye(S)).astype(dtype),
        emission_scale_tril=(r * np.eye(D)).astype(dtype),
    )
    return params, jnp.asarray(np.stack(y).astype(dtype))


# ---------------------------------------------------------------------------------------------
# A discrete hidden Markov model with K states and Gaussian emissions.


def categorical_from_noise(eps, probs):
    """Inverse CDF of ``Categorical(probs)`` at ``Φ(eps)``."""
    cumulative = jnp.cumsum(probs)
    return jnp.minimum(jnp.sum(ndtr(eps) * cumulative[-1] >= cumulative), probs.shape[0] - 1)


def hmm_model():
    """``ParticleModel`` of an HMM; ``params = (initial_probs, transition_matrix, locs, scale)``."""

    def categorical(probs):
        return Kernel(
            lambda key, *cond: jax.random.categorical(key, jnp.log(probs(*cond))),
            lambda z, *cond: jnp.log(probs(*cond)[z]),
            lambda eps, *cond: categorical_from_noise(eps, probs(*cond)),
        )

    initial = categorical(lambda u, p: p[0])
    transition = categorical(lambda z, u, p: p[1][z])

    def emission_log_prob(y, z, u, p):
        return norm.logpdf(y, p[2][z], p[3])

    return ParticleModel(initial, transition, emission_log_prob)


def hmm_case(seed, K=3, T=15):
    rng = np.random.default_rng(seed)
    initial = rng.dirichlet(np.ones(K))
    transition = rng.dirichlet(np.ones(K) * 2, size=K) + 2 * np.eye(K)
    transition /= transition.sum(-1, keepdims=True)
    locs = np.linspace(-2.0, 2.0, K)
    states = rng.integers(K, size=T)
    y = rng.normal(locs[states], 0.8)
    return (jnp.asarray(initial), jnp.asarray(transition), jnp.asarray(locs), 0.8), jnp.asarray(y)


# ---------------------------------------------------------------------------------------------
# A nonlinear, bimodal one-dimensional model (Kitagawa's growth model without its forcing).

GROWTH_SCALES = (2.0, 1.0, 1.0)  # initial sd, transition sd, emission sd


def growth_mean(z):
    return 0.5 * z + 25.0 * z / (1.0 + z**2)


def growth_model():
    """``z_1 ~ N(0, 2²)``, ``z_t ~ N(growth_mean(z_{t-1}), 1)``, ``y_t ~ N(z_t² / 20, 1)``."""
    s0, q, r = GROWTH_SCALES
    initial = Kernel(
        lambda key, u, p: s0 * jax.random.normal(key, ()),
        lambda z, u, p: norm.logpdf(z, 0.0, s0),
        lambda eps, u, p: s0 * eps,
    )
    transition = Kernel(
        lambda key, z, u, p: growth_mean(z) + q * jax.random.normal(key, ()),
        lambda z_next, z, u, p: norm.logpdf(z_next, growth_mean(z), q),
        lambda eps, z, u, p: growth_mean(z) + q * eps,
    )
    return ParticleModel(initial, transition, lambda y, z, u, p: norm.logpdf(y, z**2 / 20.0, r))


def growth_grid_densities():
    """NumPy ``(initial_logpdf, transition_logpdf, emission_logpdf)`` for the grid oracle."""
    from scipy.stats import norm as sp_norm

    s0, q, r = GROWTH_SCALES

    def transition(z_next, z_prev, t):
        return sp_norm.logpdf(z_next, 0.5 * z_prev + 25.0 * z_prev / (1.0 + z_prev**2), q)

    return (
        lambda z: sp_norm.logpdf(z, 0.0, s0),
        transition,
        lambda y, z, t: sp_norm.logpdf(y, z**2 / 20.0, r),
    )


def growth_data(seed, T=12):
    rng = np.random.default_rng(seed)
    s0, q, r = GROWTH_SCALES
    z = s0 * rng.normal()
    ys = []
    for _ in range(T):
        ys.append(z**2 / 20.0 + r * rng.normal())
        z = float(growth_mean(z)) + q * rng.normal()
    return jnp.asarray(ys)


__all__ = [
    "LGSSMParams",
    "categorical_from_noise",
    "growth_data",
    "growth_grid_densities",
    "growth_model",
    "hmm_case",
    "hmm_model",
    "lgssm_case",
    "lgssm_model",
    "lgssm_optimal_proposal",
]

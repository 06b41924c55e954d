"""The scalar (Potter) conditioning step against the triangularizing one (x64).

``_update_to_predict`` is what the log-marginal passes run for one-entry emissions; every
filter oracle with ``D = 1`` goes through it. Here it is checked alone: the same filtered mean
and log-likelihood, a factor of the same covariance, for observed and missing entries, zero
observation noise and a rank-deficient predicted covariance.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import close

from numpyro_ssm.ops.kalman._steps import _update, _update_to_predict

jax.config.update("jax_enable_x64", True)


def _inputs(S, rank, noise, seed=0):
    rng = np.random.default_rng(seed)
    chol_P = np.tril(rng.normal(size=(S, S)))
    chol_P[:, rank:] = 0.0  # P of rank `rank`
    return (
        jnp.asarray(rng.normal(size=S)),
        jnp.asarray(chol_P),
        jnp.asarray(rng.normal(size=(1, S))),
        jnp.asarray([[noise]]),
        jnp.asarray(rng.normal(size=1)),
        jnp.asarray(rng.normal(size=1) * 3.0),
    )


@pytest.mark.parametrize("observed", [True, False])
@pytest.mark.parametrize(
    ("S", "rank", "noise"), [(1, 1, 0.7), (5, 5, 0.3), (5, 3, -0.3), (8, 8, 0.0)]
)
def test_scalar_update_matches_the_triangular_one(S, rank, noise, observed):
    m, chol_P, H, chol_R, d, y = _inputs(S, rank, noise)
    mask = jnp.asarray([observed])
    m_f, chol_f, ll = jax.jit(_update)(m, chol_P, H, chol_R, d, y, mask)
    m_p, factor, ll_p = jax.jit(_update_to_predict)(m, chol_P, H, chol_R, d, y, mask)
    close(m_p, m_f, rtol=1e-10, atol=1e-12)
    close(ll_p, ll, rtol=1e-10)
    close(factor @ factor.T, chol_f @ chol_f.T, rtol=1e-10, atol=1e-12)
    if not observed:
        close(factor, chol_P, rtol=0, atol=0)  # nothing observed: the factor is untouched
        assert float(ll_p) == 0.0
    elif S > 1:  # the factor is a square root, not a triangular one: the other path ran
        assert np.abs(np.triu(np.asarray(factor), 1)).max() > 1e-3


def test_wider_emissions_take_the_triangular_update():
    rng = np.random.default_rng(1)
    S, D = 3, 2
    args = (
        jnp.asarray(rng.normal(size=S)),
        jnp.asarray(np.tril(rng.normal(size=(S, S)))),
        jnp.asarray(rng.normal(size=(D, S))),
        jnp.asarray(np.diag([0.5, 0.4])),
        jnp.zeros(D),
        jnp.asarray(rng.normal(size=D)),
        jnp.ones(D, bool),
    )
    for a, b in zip(_update(*args), _update_to_predict(*args), strict=True):
        close(a, b, rtol=0, atol=0)

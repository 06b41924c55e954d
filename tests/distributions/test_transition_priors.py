"""StickyDirichlet: densities against SciPy, draws against its moments, NUTS recovers its law."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS
from scipy.stats import dirichlet

from numpyro_ssm import StickyDirichlet


def test_log_prob_matches_scipy_rows():
    beta = np.array([0.6, 0.3, 0.1])
    prior = StickyDirichlet(2.0, 5.0, weights=beta)
    value = np.asarray(prior.sample(jax.random.key(0)))
    expected = sum(dirichlet(2.0 * beta + 5.0 * np.eye(3)[k]).logpdf(value[k]) for k in range(3))
    np.testing.assert_allclose(prior.log_prob(value), expected, rtol=1e-10)
    counts = np.array([[3, 0, 1], [0, 0, 0], [5, 2, 9]])
    cond = prior.conditional(counts)
    expected = sum(
        dirichlet(2.0 * beta + 5.0 * np.eye(3)[k] + counts[k]).logpdf(value[k]) for k in range(3)
    )
    np.testing.assert_allclose(cond.log_prob(value), expected, rtol=1e-10)


def test_draws_have_the_dirichlet_moments_and_batch_shapes():
    prior = StickyDirichlet(jnp.array([0.5, 2.0]), 4.0, num_states=3)
    assert prior.batch_shape == (2,) and prior.event_shape == (3, 3)
    draws = prior.sample(jax.random.key(1), (20_000,))
    z = (draws.mean(0) - prior.mean) / np.sqrt(prior.variance / 20_000)
    assert np.all(np.abs(z) < 5), z
    tiny = StickyDirichlet(1.0, 0.0, weights=jnp.array([1.0, 1e-35, 1e-35])).sample(
        jax.random.key(2)
    )
    np.testing.assert_allclose(tiny.sum(-1), 1.0)  # no NaN from underflowing gammas


def test_reparameterized_gradient():
    def mean_diag(kappa):
        draws = StickyDirichlet(1.0, kappa, num_states=2).sample(jax.random.key(3), (4000,))
        return jnp.diagonal(draws, axis1=-2, axis2=-1).mean()

    # E[P_kk] = (1 + kappa) / (2 + kappa): d/dkappa = 1 / (2 + kappa)^2
    np.testing.assert_allclose(jax.grad(mean_diag)(3.0), 1 / 25, rtol=0.1)


@pytest.mark.slow
def test_nuts_on_the_hdp_prior_recovers_its_moments():
    K, alpha, kappa, gamma = 3, 2.0, 6.0, 3.0

    def model():
        beta = numpyro.sample("beta", dist.Dirichlet(jnp.full(K, gamma / K)))
        numpyro.sample("P", StickyDirichlet(alpha, kappa, weights=beta))

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=4000, progress_bar=False)
    mcmc.run(jax.random.key(4))
    P = np.asarray(mcmc.get_samples()["P"])
    e_diag = (alpha / K + kappa) / (alpha + kappa)
    diag = np.diagonal(P, axis1=-2, axis2=-1).mean(-1)
    # NUTS draws are correlated: a loose band of the exact prior mean
    assert abs(diag.mean() - e_diag) < 0.03, (diag.mean(), e_diag)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-10)


def test_bad_hyperparameters_name_the_argument():
    with pytest.raises(ValueError, match=r"stickiness \(κ\) must be >= 0, got -0.5"):
        StickyDirichlet(1.0, -0.5, num_states=3)
    with pytest.raises(ValueError, match=r"concentration \(α\) must be > 0"):
        StickyDirichlet(0.0, 1.0, num_states=3)
    with pytest.raises(ValueError, match="give num_states"):
        StickyDirichlet(1.0, 1.0)

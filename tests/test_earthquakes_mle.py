"""Maximum likelihood through ``DiscreteHMM.log_prob`` reproduces a published fit.

Zucchini, MacDonald & Langrock (2016, Section 3.2 / Table 3.1 of the 1st edition) fit a
*stationary* 2-state Poisson-HMM to the 107 annual counts of major earthquakes, 1900–2006: the
initial distribution is the stationary distribution of the transition matrix. Their maximum
likelihood estimate has −log L = 342.32 and Poisson rates 15.47 and 26.13 (two decimals).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy.optimize import minimize

from numpyro_ssm import DiscreteHMM
from numpyro_ssm.datasets import load_earthquakes

NUM_STATES = 2
PUBLISHED_NEG_LOG_LIK = 342.32
PUBLISHED_RATES = (15.47, 26.13)


def stationary_distribution(transition_matrix):
    """Solve ``delta (I - A + 1 1^T) = 1^T``, i.e. ``(I - A^T + 1 1^T) delta = 1``."""
    num_states = transition_matrix.shape[-1]
    ones = jnp.ones((num_states, num_states), transition_matrix.dtype)
    system = jnp.eye(num_states, dtype=transition_matrix.dtype) - transition_matrix.T + ones
    return jnp.linalg.solve(system, jnp.ones(num_states, transition_matrix.dtype))


def unpack(params):
    """Unconstrained ``params`` -> ``(rates (K,), transition_matrix (K, K))``.

    ``params`` holds the K log-rates, then the K (K - 1) off-diagonal transition logits (the
    diagonal logits are fixed at zero, which removes the softmax's redundant direction).
    """
    log_rates, off_diagonal = params[:NUM_STATES], params[NUM_STATES:]
    off = ~np.eye(NUM_STATES, dtype=bool)
    logits = jnp.zeros((NUM_STATES, NUM_STATES), params.dtype).at[off].set(off_diagonal)
    return jnp.exp(log_rates), jax.nn.softmax(logits, axis=-1)


def neg_log_lik(params, counts, parallel=False):
    rates, transition_matrix = unpack(params)
    hmm = DiscreteHMM(
        stationary_distribution(transition_matrix),
        transition_matrix,
        dist.Poisson(rates),
        num_steps=counts.shape[-1],
        parallel=parallel,
    )
    return -hmm.log_prob(counts)


@pytest.fixture(scope="module")
def fit():
    with jax.enable_x64(True):
        counts = jnp.asarray(load_earthquakes().counts, dtype=jnp.float64)
        value_and_grad = jax.jit(jax.value_and_grad(neg_log_lik))

        def objective(x):
            value, grad = value_and_grad(jnp.asarray(x, dtype=jnp.float64), counts)
            return float(value), np.asarray(grad, dtype=np.float64)

        # Start: rates 10 and 30, a sticky chain with 0.9 on the diagonal.
        start = np.concatenate([np.log([10.0, 30.0]), np.full(2, np.log(0.1 / 0.9))])
        result = minimize(objective, start, jac=True, method="BFGS", options={"gtol": 1e-6})
        rates, transition_matrix = unpack(jnp.asarray(result.x))
        # jit: an eager associative scan dispatches op by op and is far slower to run.
        parallel_neg_log_lik = jax.jit(neg_log_lik, static_argnames="parallel")
        parallel_value = float(parallel_neg_log_lik(jnp.asarray(result.x), counts, parallel=True))
        return {
            "result": result,
            "rates": np.asarray(rates),
            "transition_matrix": np.asarray(transition_matrix),
            "parallel_value": parallel_value,
        }


def test_optimizer_converged(fit):
    assert fit["result"].success, fit["result"].message
    assert np.max(np.abs(fit["result"].jac)) < 1e-5


def test_neg_log_likelihood_matches_published(fit):
    assert fit["result"].fun == pytest.approx(PUBLISHED_NEG_LOG_LIK, abs=0.01)


def test_rates_match_published(fit):
    np.testing.assert_allclose(fit["rates"], PUBLISHED_RATES, atol=0.01)


def test_transition_matrix_matches_published(fit):
    # Published to three decimals: Gamma = [[0.934, 0.066], [0.128, 0.872]].
    np.testing.assert_allclose(
        fit["transition_matrix"], [[0.934, 0.066], [0.128, 0.872]], atol=1e-3
    )


def test_parallel_gives_same_optimum_value(fit):
    assert fit["parallel_value"] == pytest.approx(fit["result"].fun, abs=1e-8)

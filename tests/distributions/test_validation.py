"""distributions._validation: concrete parameters are checked under jit, traced ones skipped."""

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM


def test_validation_checks_concrete_parameters_and_skips_traced_ones():
    # NumPyro raises only for concrete parameters; checks of traced ones are never built.
    rates = jnp.array([1.0, 2.0])
    bad_rows = jnp.array([[0.5, 0.6], [0.5, 0.5]])
    indefinite = jnp.array([[1.0, 2.0], [2.0, 1.0]])

    def hmm(transition_matrix, rates):
        return DiscreteHMM(
            jnp.array([0.5, 0.5]),
            transition_matrix,
            dist.Poisson(rates),
            num_steps=3,
            validate_args=True,
        )

    def ssm(emission_cov, transition_matrix):
        return LinearGaussianSSM(
            jnp.zeros(2),
            transition_matrix,
            jnp.eye(2),
            initial_cov=jnp.eye(2),
            transition_cov=jnp.eye(2),
            emission_cov=emission_cov,
            num_steps=3,
            validate_args=True,
        )

    # a bad constant is caught under jit, beside traced parameters
    with pytest.raises(ValueError, match="DiscreteHMM .* invalid transition_matrix"):
        jax.jit(lambda r: hmm(bad_rows, r).log_prob(jnp.zeros(3)))(rates)
    with pytest.raises(ValueError, match="LinearGaussianSSM .* invalid emission_cov"):
        jax.jit(lambda f: ssm(indefinite, f).log_prob(jnp.zeros((3, 2))))(jnp.eye(2))

    # a traced parameter is skipped; a strict check says it cannot run under jit
    def traced(make, bad, other):
        d = make(bad, other)
        with pytest.raises(RuntimeError, match="jitted"):
            d.validate_args(strict=True)
        return jnp.zeros(())

    jax.jit(lambda a: traced(hmm, a, rates))(bad_rows)
    jax.jit(lambda c: traced(ssm, c, jnp.eye(2)))(indefinite)

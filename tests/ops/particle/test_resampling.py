"""Resampling schemes: offspring counts have the right means and the stated variance ordering.

Counts ``o_j`` of ``M = 20 000`` independent resamplings of ``N = 8`` fixed weights (fixed
seed). The mean check allows 5 standard errors (``sqrt(Var / M)``, about 0.01 to 0.05
offspring here): an off-by-one in a scheme moves a mean by a whole offspring, a 20-fold
larger error. Variances are checked against their closed forms within 5 standard errors of
the sample variance (estimated from the draws); a wrong scheme misses by far more: systematic
counts have a quarter of multinomial's variance or less here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_ssm.ops.particle import (
    RESAMPLERS,
    effective_sample_size,
    multinomial_resample,
    residual_resample,
    stratified_resample,
    systematic_resample,
)

WEIGHTS = np.array([0.30, 0.22, 0.17, 0.12, 0.09, 0.05, 0.04, 0.01])
DRAWS = 20_000
FUNCTIONS = {
    "multinomial": multinomial_resample,
    "stratified": stratified_resample,
    "systematic": systematic_resample,
    "residual": residual_resample,
}


@pytest.fixture(scope="module")
def counts():
    """``{(scheme, n): (counts (M, N), ancestors (M, n))}`` for n = N and n = 5, one compile."""
    log_weights = jnp.log(jnp.asarray(WEIGHTS))

    @jax.jit
    def run(key):
        out = {}
        for i, (scheme, fn) in enumerate(FUNCTIONS.items()):
            for n in (8, 5):
                keys = jax.random.split(jax.random.fold_in(key, 2 * i + n), DRAWS)
                ancestors = jax.vmap(lambda k, fn=fn, n=n: fn(k, log_weights, n))(keys)
                offspring = jnp.zeros((DRAWS, WEIGHTS.size), jnp.int32)
                offspring = offspring.at[jnp.arange(DRAWS)[:, None], ancestors].add(1)
                out[scheme, n] = (offspring, ancestors)
        return out

    return {k: tuple(map(np.asarray, v)) for k, v in run(jax.random.key(0)).items()}


@pytest.fixture(scope="module", params=[8, 5], ids=["n=N", "n<N"])
def all_counts(request, counts):
    n = request.param
    return n, {scheme: counts[scheme, n] for scheme in FUNCTIONS}


def variance_and_error(counts):
    """The sample variance of each column and its standard error."""
    squares = (counts - counts.mean(0)) ** 2
    return squares.mean(0), np.sqrt(squares.var(0) / counts.shape[0])


def test_offspring_means(all_counts):
    n, results = all_counts
    expected = n * WEIGHTS
    for scheme, (counts, ancestors) in results.items():
        assert counts.sum(1).tolist() == [n] * DRAWS, scheme
        standard_error = np.sqrt(np.maximum(counts.var(0), 1e-12) / DRAWS)
        np.testing.assert_array_less(np.abs(counts.mean(0) - expected), 5 * standard_error + 1e-9)
        if scheme != "residual":  # residual: copies first, then the random draws
            assert (np.diff(ancestors, axis=1) >= 0).all(), scheme


def test_offspring_variances_and_ordering(all_counts):
    n, results = all_counts
    expected = n * WEIGHTS
    var, error = {}, {}
    for scheme, (counts, _) in results.items():
        var[scheme], error[scheme] = variance_and_error(counts)
    multinomial = n * WEIGHTS * (1 - WEIGHTS)
    np.testing.assert_array_less(np.abs(var["multinomial"] - multinomial), 5 * error["multinomial"])
    copies = np.floor(expected)
    remaining = n - copies.sum()
    residual_weights = (expected - copies) / remaining
    residual = remaining * residual_weights * (1 - residual_weights)
    np.testing.assert_array_less(np.abs(var["residual"] - residual), 5 * error["residual"] + 1e-12)
    # systematic counts are floor or ceil of n W_j: the least variance any integer count with
    # that mean can have, frac (1 - frac)
    frac = expected - copies
    counts = results["systematic"][0]
    assert ((counts == copies) | (counts == copies + 1)).all()
    systematic = frac * (1 - frac)
    np.testing.assert_array_less(
        np.abs(var["systematic"] - systematic), 5 * error["systematic"] + 1e-12
    )
    assert (np.abs(results["stratified"][0] - expected) < 2).all()
    # the stated ordering, per particle: systematic <= stratified <= multinomial, and
    # residual <= multinomial (closed forms where they exist, else within 5 standard errors)
    assert (systematic <= var["stratified"] + 5 * error["stratified"]).all()
    assert (var["stratified"] <= multinomial + 5 * error["stratified"]).all()
    assert (residual <= multinomial).all()


def test_zero_weights_are_never_picked():
    @jax.jit
    def run(log_weights):
        keys = jax.random.split(jax.random.key(0), 500)
        return {s: jax.vmap(lambda k, f=f: f(k, log_weights))(keys) for s, f in FUNCTIONS.items()}

    for scheme, ancestors in run(jnp.log(jnp.array([0.0, 0.5, 0.0, 0.5]))).items():
        assert set(np.unique(np.asarray(ancestors))) <= {1, 3}, scheme


def test_effective_sample_size():
    ess = jax.jit(jax.vmap(effective_sample_size))
    log_weights = jnp.stack(
        [jnp.zeros(8), jnp.log(jnp.eye(8)[3]), jnp.log(jnp.asarray(WEIGHTS)) + 3.0]
    )
    expected = [8.0, 1.0, 1 / np.sum(WEIGHTS**2)]
    np.testing.assert_allclose(ess(log_weights), expected, rtol=1e-12)


def test_float32_weights_keep_float32_uniforms():
    ancestors = systematic_resample(jax.random.key(0), jnp.log(jnp.asarray(WEIGHTS, jnp.float32)))
    assert ancestors.dtype == jnp.int32 and ancestors.shape == (8,)
    assert set(RESAMPLERS) == set(FUNCTIONS)


@pytest.mark.parametrize(
    "log_weights, num_samples, match",
    [(jnp.zeros((2, 3)), None, "log_weights"), (jnp.zeros(3), 0, "num_samples")],
)
def test_bad_input(log_weights, num_samples, match):
    with pytest.raises(ValueError, match=match):
        systematic_resample(jax.random.key(0), log_weights, num_samples)

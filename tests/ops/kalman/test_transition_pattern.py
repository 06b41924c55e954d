"""Concrete transition and emission matrices with many zeros are applied by slices.

``ops.kalman.params.sparsity_pattern`` reads the nonzero columns of each row of ``F``
(``transition_pattern``: where most rows copy one entry) and of a one-row ``H``
(``emission_pattern``: where at most half its entries are nonzero) when the op is called with
concrete matrices; the log-marginal's sequential pass then applies ``F`` by slices of the factor
and small products of its other rows (``_steps._sparse_matmul``), with fewer
triangularizations, and ``h`` by sums of rows (``_steps._row_times``). Both are checked against
dense products on random patterns; for the passes, the oracle is the same op with the matrices
traced (inside ``jax.jit``, where no pattern can be read), which takes the dense products: the
two must agree to rounding, on every pass the patterns reach (the deferred pass, the settled
pass of a long series, the exact diffuse steps and the steps after them; each pattern alone and
both), in float64 and float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import close, trend_seasonal

import numpyro_ssm.ops.kalman.filtering as filtering
from numpyro_ssm import LinearGaussianSSM
from numpyro_ssm.ops import LGSSMParams, diffuse_kalman_log_marginal, kalman_log_marginal
from numpyro_ssm.ops.kalman._steps import _row_times, _sparse_matmul
from numpyro_ssm.ops.kalman.params import (
    Pattern,
    emission_pattern,
    sparsity_pattern,
    transition_pattern,
)


def _structural(rng, T, period=5, dense=""):
    """A local linear trend plus a dummy seasonal (S = period + 1, few nonzeros in F), D = 1.

    ``dense``: ``"F"`` or ``"H"`` makes that matrix dense (no pattern for it)."""
    F, chol_Q, H = trend_seasonal(period, [0.3, 0.05, 0.2])
    S = F.shape[0]
    if dense == "F":
        F = 0.95 * (np.eye(S) + 0.3 * np.eye(S, k=1))  # bidiagonal: no rows copy one entry
    if dense == "H":
        H = np.full((1, S), 0.4) + H
    params = LGSSMParams(
        initial_mean=rng.normal(size=S),
        initial_scale_tril=np.eye(S) * 2.0,
        transition_matrix=F,
        transition_scale_tril=chol_Q,
        emission_matrix=H,
        emission_scale_tril=np.array([[0.5]]),
    )
    y = (
        np.cumsum(rng.normal(size=(T, 1)), axis=0)
        + np.sin(np.arange(T) * 2 * np.pi / period)[:, None]
    )
    y[[3, T // 2]] = np.nan
    return params, y


@functools.partial(jax.jit, static_argnames="diffuse")
def _traced(params, y, diffuse=None):
    """The op with ``F`` traced: the dense product."""
    if diffuse is None:
        return kalman_log_marginal(params, y)
    return diffuse_kalman_log_marginal(params, y, diffuse_states=diffuse)


def test_pattern_is_read_from_concrete_shift_matrices_only():
    F = np.array(
        [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -1.0], [0.0, 0.0, 1.0, 0.0]]
    )
    assert transition_pattern(F) == ((0, 1), (1,), (2, 3), (2,))
    assert transition_pattern(jnp.asarray(F)) == ((0, 1), (1,), (2, 3), (2,))
    bidiagonal = np.eye(4) + np.eye(4, k=1)
    assert transition_pattern(bidiagonal) is None  # fewer than half the rows copy one entry
    assert transition_pattern(np.ones((3, 3))) is None  # dense
    assert transition_pattern(np.ones((4, 3, 3))) is None  # time-varying
    assert transition_pattern(None) is None
    seen = []
    jax.jit(lambda F: seen.append(transition_pattern(F)) or F)(F)
    assert seen == [None]  # traced


def test_emission_pattern_is_read_from_concrete_sparse_rows_only():
    H = np.array([[1.0, 0.0, -2.0, 0.0, 0.0]])
    assert emission_pattern(H) == (0, 2)
    assert emission_pattern(jnp.asarray(H)) == (0, 2)
    assert emission_pattern(np.zeros((1, 3))) == ()
    assert emission_pattern(np.array([[1.0, 1.0, 0.0]])) is None  # more than half nonzero
    assert emission_pattern(np.eye(2, 5)) is None  # two entries observed
    assert emission_pattern(np.ones((4, 1, 5))) is None  # time-varying
    assert emission_pattern(None) is None
    seen = []
    jax.jit(lambda H: seen.append(emission_pattern(H)) or H)(H)
    assert seen == [None]  # traced
    bidiagonal = np.eye(5) + np.eye(5, k=1)
    both = LGSSMParams(np.zeros(5), np.eye(5), bidiagonal, np.eye(5), H, np.eye(1))
    assert sparsity_pattern(both) == Pattern(None, (0, 2))
    assert sparsity_pattern(both._replace(emission_matrix=np.ones((1, 5)))) is None


@pytest.mark.parametrize("columns", [(), (3,), (0, 4), (1, 2, 5)])
def test_row_sums_equal_the_dense_product(columns):
    rng = np.random.default_rng(len(columns))
    h = np.zeros(6)
    h[list(columns)] = rng.normal(size=len(columns))
    U, m = rng.normal(size=(6, 4)), rng.normal(size=6)
    close(_row_times(jnp.asarray(h), jnp.asarray(U), columns), h @ U, rtol=1e-12, atol=1e-14)
    close(_row_times(jnp.asarray(h), jnp.asarray(m), columns), h @ m, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_sparse_product_equals_the_dense_one(seed):
    """``_sparse_matmul`` against ``F @ U`` on random patterns: shift runs with other scales
    than 1, shifts that break (a repeated or a backward source column), zero rows, rows with
    several entries, alone and in runs; a factor and a mean."""
    rng = np.random.default_rng(seed)
    S = 9
    F = np.zeros((S, S))
    for i in range(S):
        kind = rng.integers(4)
        if kind == 0:
            continue  # a zero row
        if kind == 1 or i == 0:
            F[i, rng.integers(S)] = rng.choice([1.0, -0.7])
        elif kind == 2:
            F[i, min(np.flatnonzero(F[i - 1])[0] + 1, S - 1) if F[i - 1].any() else 0] = 1.0
        else:
            F[i, rng.choice(S, size=rng.integers(2, S + 1), replace=False)] = rng.normal(size=1)
    pattern = tuple(tuple(np.flatnonzero(row).tolist()) for row in F != 0)
    U = rng.normal(size=(S, 5))
    close(_sparse_matmul(jnp.asarray(F), jnp.asarray(U), pattern), F @ U, rtol=1e-12, atol=1e-14)
    m = rng.normal(size=(S, 1))
    close(_sparse_matmul(jnp.asarray(F), jnp.asarray(m), pattern), F @ m, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dense", ["", "F", "H"], ids=["both", "emission-only", "transition-only"])
@pytest.mark.parametrize(
    "T, diffuse",
    [(50, None), (600, None), (60, (True, True, True, False, False, False))],
    ids=["deferred", "settled", "diffuse"],
)
def test_sparse_value_equals_the_dense_one(T, diffuse, dense):
    rng = np.random.default_rng(11)
    params, y = _structural(rng, T, dense=dense)
    pattern = sparsity_pattern(params)
    assert (pattern.transition is None) == (dense == "F")
    assert (pattern.emission is None) == (dense == "H")
    if diffuse is None:
        sparse = kalman_log_marginal(params, y)
    else:
        sparse = diffuse_kalman_log_marginal(params, y, diffuse_states=diffuse)
    dense = _traced(params, y, diffuse)
    assert np.isfinite(dense)
    close(sparse, dense, rtol=1e-12)
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    y32 = jnp.asarray(y, jnp.float32)
    value32 = kalman_log_marginal(p32, y32) if diffuse is None else None
    if value32 is not None:
        assert value32.dtype == jnp.float32
        close(value32, _traced(p32, y32), rtol=1e-5)


def test_two_patterns_of_one_shape_do_not_share_a_program():
    """The pattern is part of the compiled program's key: a second matrix of the same shape
    with other zeros gets its own."""
    rng = np.random.default_rng(12)
    params, y = _structural(rng, 40)
    F = np.asarray(params.transition_matrix)
    level = F.copy()
    level[0, 1] = 0.0  # a local level beside the slope: row 0 copies one entry too
    other = params._replace(transition_matrix=level)
    assert transition_pattern(level) is not None
    assert transition_pattern(other.transition_matrix) != transition_pattern(F)
    for p in (params, other, params):
        close(kalman_log_marginal(p, y), _traced(p, y), rtol=1e-12)


def test_the_distribution_passes_a_concrete_matrix_to_the_op(monkeypatch):
    """Inside a traced model (NUTS traces it) a matrix built from constants reaches the op
    concrete, so the pattern is read there."""
    rng = np.random.default_rng(13)
    params, y = _structural(rng, 30)
    seen = []

    def recording(p):
        seen.append(
            [isinstance(a, jax.core.Tracer) for a in (p.transition_matrix, p.emission_matrix)]
        )
        return sparsity_pattern(p)

    monkeypatch.setattr(filtering, "sparsity_pattern", recording)

    @jax.jit
    def log_prob(noise):
        ssm = LinearGaussianSSM(
            params.initial_mean,
            params.transition_matrix,
            params.emission_matrix,
            initial_scale_tril=params.initial_scale_tril,
            transition_scale_tril=params.transition_scale_tril,
            emission_scale_tril=noise * params.emission_scale_tril,
            num_steps=y.shape[0],
        )
        return ssm.log_prob(jnp.asarray(y))

    value = log_prob(1.0)
    assert seen == [[False, False]]
    close(value, _traced(params, y), rtol=1e-12)

"""A concrete transition matrix whose rows mostly copy one entry is applied by slices.

``ops.kalman.params.transition_pattern`` reads the nonzero columns of each row of ``F`` where
the op is called with a concrete ``F``; the log-marginal's sequential pass then applies ``F`` by
slices of the factor and small products of its other rows (``_steps._sparse_matmul``), with
fewer triangularizations. ``_sparse_matmul`` is checked against ``F @ U`` on random patterns;
for the passes, the oracle is the same op with ``F`` traced (inside ``jax.jit``, where no
pattern can be read), which takes the dense product: the two must agree to rounding, on every
pass the pattern reaches (the deferred pass, the settled pass of a long series, the steps after
an exact diffuse start), in float64 and float32.
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
from numpyro_ssm.ops.kalman._steps import _sparse_matmul
from numpyro_ssm.ops.kalman.params import transition_pattern


def _structural(rng, T, period=5):
    """A local linear trend plus a dummy seasonal (S = period + 1, few nonzeros in F), D = 1."""
    F, chol_Q, H = trend_seasonal(period, [0.3, 0.05, 0.2])
    S = F.shape[0]
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


@pytest.mark.parametrize(
    "T, diffuse",
    [(50, None), (600, None), (60, (True, True, True, False, False, False))],
    ids=["deferred", "settled", "diffuse"],
)
def test_sparse_value_equals_the_dense_one(T, diffuse):
    rng = np.random.default_rng(11)
    params, y = _structural(rng, T)
    assert transition_pattern(params.transition_matrix) is not None
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

    def recording(F):
        seen.append(isinstance(F, jax.core.Tracer))
        return transition_pattern(F)

    monkeypatch.setattr(filtering, "transition_pattern", recording)

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
    assert seen == [False]
    close(value, _traced(params, y), rtol=1e-12)

"""The settled-covariance log-marginal of a long time-invariant series (``ops/kalman/_steady.py``).

``kalman_log_marginal(..., parallel=False)`` without time-varying parameters runs the full
square-root filter until its predicted covariance stops changing, then the mean recursion alone,
for the value and for the derivative.
The oracles: the dense joint Gaussian, statsmodels, the full sequential filter (``kalman_filter``,
whose per-step log-likelihoods never take this path) and, in float32, the float64 value. Every
series is longer than ``_MIN_STEPS`` (shorter ones run the plain filter), and the tests check
that the settled phase covers most of it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import call, close, local_linear_trend
from oracles import dense_log_marginal, random_lgssm, statsmodels_filter

from numpyro_ssm.ops import LGSSMParams, kalman_filter, kalman_log_marginal
from numpyro_ssm.ops.kalman._steady import _CHUNK, _settle, settles
from numpyro_ssm.ops.kalman.params import _inputs

KEYS = list(LGSSMParams._fields)


def _args(params):
    return [params.get(k) for k in KEYS]


def settled_at(params, y, mask=None):
    """The step at which the value switched to the mean recursion (``T`` rounded up if never)."""
    model, y, observed = _inputs(LGSSMParams(**params), jnp.asarray(y), mask, "test")
    assert settles(model, y)  # kalman_log_marginal takes the settled path
    return int(jax.jit(_settle)(model, y, observed)[0])


def homogeneous(seed, S, D, T):
    rng = np.random.default_rng(seed)
    params = random_lgssm(rng, S, D, T, time_varying=False)
    return params, rng.normal(size=(T, D)) * 2.0


# (S, D, T): unrolled triangularizations, D > S, and stacks that take one LAPACK QR (> 4 rows);
# T is never a multiple of the chunk length
@pytest.mark.parametrize("S,D,T", [(2, 1, 603), (3, 2, 530), (2, 4, 521), (6, 3, 541)])
def test_matches_dense_gaussian_and_full_filter(S, D, T):
    params, y = homogeneous(30 + S, S, D, T)
    assert settled_at(params, y) < T // 2
    value = call(kalman_log_marginal, params, y)
    close(value, dense_log_marginal(params, y), rtol=1e-10)
    close(value, jnp.sum(call(kalman_filter, params, y).log_likelihood_increments), rtol=1e-12)


def test_missing_entries_delay_settling_to_the_last_one():
    S, D, T = 3, 2, 560
    params, y = homogeneous(40, S, D, T)
    y[5, 0] = np.nan
    mask = np.ones((T, D), bool)
    mask[300] = False
    early = settled_at(params, np.where(np.isnan(y), 0.0, y))
    assert early < 300
    late = settled_at(params, y, mask)
    assert 300 < late < T  # the covariance settles again after the missing step
    value = call(kalman_log_marginal, params, y, obs_mask=mask)
    close(value, dense_log_marginal(params, y, mask), rtol=1e-10)


def test_series_that_never_settles_runs_the_full_filter():
    """No process noise: the level's variance falls like 1/t and never stops changing."""
    T = 600
    params = local_linear_trend(0.0, 0.0, 0.5, T)
    y = np.cumsum(np.random.default_rng(41).normal(size=(T, 1)), axis=0)
    assert settled_at(params, y) >= T
    close(call(kalman_log_marginal, params, y), dense_log_marginal(params, y), rtol=1e-10)


def test_slowly_settling_local_level():
    """A near-random-walk level with small noise ratio: settling takes many chunks."""
    T = 600
    params = dict(
        initial_mean=np.zeros(1),
        initial_scale_tril=np.array([[10.0]]),
        transition_matrix=np.array([[1.0]]),
        transition_scale_tril=np.array([[0.1]]),
        emission_matrix=np.array([[1.0]]),
        emission_scale_tril=np.array([[1.0]]),
    )
    rng = np.random.default_rng(42)
    y = (np.cumsum(0.1 * rng.normal(size=T)) + rng.normal(size=T))[:, None]
    assert 4 * _CHUNK < settled_at(params, y) < T
    close(call(kalman_log_marginal, params, y), dense_log_marginal(params, y), rtol=1e-10)


def test_against_statsmodels():
    params, y = homogeneous(43, S=3, D=2, T=600)
    close(call(kalman_log_marginal, params, y), statsmodels_filter(params, y).loglike(), rtol=1e-10)


def test_vmap_over_models_that_settle_at_different_steps():
    S, D, T = 2, 1, 520
    cases = [homogeneous(50 + i, S, D, T) for i in range(3)]
    cases[1][0]["transition_scale_tril"] = np.diag([1e-3, 1e-3])  # settles later
    steps = [settled_at(p, y) for p, y in cases]
    assert len(set(steps)) > 1
    stacked = {k: np.stack([p[k] for p, _ in cases]) for k in KEYS}
    ys = np.stack([y for _, y in cases])

    def one(params, y):
        return kalman_log_marginal(params, y)

    batched = jax.jit(jax.vmap(one))(LGSSMParams(**stacked), ys)
    for i, (params, y) in enumerate(cases):
        close(batched[i], dense_log_marginal(params, y), rtol=1e-10)


def test_value_alone_equals_value_of_value_and_grad():
    """The value's settled pass and the derivative's (which keeps every step's moments)."""
    S, D, T = 4, 2, 600
    params, y = homogeneous(44, S, D, T)
    args = [jnp.asarray(a) for a in _args(params)]

    def f(*args):
        return kalman_log_marginal(LGSSMParams(*args), y)

    value, grads = jax.jit(jax.value_and_grad(f, argnums=tuple(range(8))))(*args)
    close(jax.jit(f)(*args), value, rtol=1e-12)
    assert all(np.isfinite(g).all() for g in grads)


def _autodiff(params, y, mask):
    """Autodiff through the full filter's scan (``kalman_filter`` never takes the settled path)."""
    return call(kalman_filter, params, y, obs_mask=mask).log_marginal


# (6, 1) with a (6, 2) noise factor: the first phase triangularizes every few steps and keeps
# wide factors
@pytest.mark.parametrize("S,D,T", [(2, 1, 603), (3, 2, 530), (6, 3, 561), (6, 1, 540)])
def test_gradient_matches_autodiff_through_the_full_filter(S, D, T):
    params, y = homogeneous(60 + S, S, D, T)
    if (S, D) == (6, 1):
        params["transition_scale_tril"] = params["transition_scale_tril"][:, :2]
    y[3, 0] = np.nan
    mask = np.ones((T, D), bool)
    mask[40, -1] = False
    assert 40 < settled_at(params, y, mask) < T // 2
    params = {k: jnp.asarray(v) for k, v in params.items()}

    def ours(p, y):
        return call(kalman_log_marginal, p, y, obs_mask=mask)

    value, grads = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(params, jnp.asarray(y))
    ref, ref_grads = jax.jit(jax.value_and_grad(lambda p, y: _autodiff(p, y, mask), (0, 1)))(
        params, jnp.asarray(y)
    )
    close(value, ref, rtol=1e-12)
    for name in params:
        scale = np.abs(ref_grads[0][name]).max()
        close(grads[0][name], ref_grads[0][name], rtol=1e-8, atol=1e-10 * scale)
    close(grads[1], jnp.nan_to_num(ref_grads[1]), rtol=1e-8, atol=1e-10)


def test_second_derivatives_forward_and_reverse():
    """Hessians (forward over reverse, and reverse over reverse) of a settled series."""
    S, D, T = 2, 1, 520
    params, y = homogeneous(70, S, D, T)
    assert settled_at(params, y) < T // 2
    params = {k: jnp.asarray(v) for k, v in params.items()}
    x = params["transition_matrix"]

    def ours(F):
        return call(kalman_log_marginal, dict(params, transition_matrix=F), y)

    grad = jax.jit(jax.grad(lambda F: _autodiff(dict(params, transition_matrix=F), y, None)))
    h = 1e-5
    for hessian in (jax.hessian(ours)(x), jax.jacrev(jax.grad(ours))(x)):
        for j in np.ndindex(x.shape):
            step = jnp.zeros_like(x).at[j].set(h)
            column = (grad(x + step) - grad(x - step)) / (2 * h)
            close(hessian[(...,) + j], column, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("T", [1000, 100_000])
def test_float32_matches_float64_full_filter(T):
    """float32 with x64 off, as a float32 user runs it, against the float64 full filter."""
    S, D = 4, 2
    params, y = homogeneous(45, S, D, T)
    ref = jnp.sum(call(kalman_filter, params, y).log_likelihood_increments)
    args32 = [np.asarray(a, np.float32) for a in _args(params)]
    with jax.enable_x64(False):
        value = jax.jit(kalman_log_marginal)(LGSSMParams(*args32), np.asarray(y, np.float32))
        assert value.dtype == jnp.float32
    close(value, ref, rtol=2e-5 if T == 1000 else 1e-4)

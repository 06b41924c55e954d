"""The log-marginal's one-pass derivative (``kalman_log_marginal``) against oracles.

Its JVP is a closed form over the smoothing quantities, not autodiff; after the parallel filter
the backward recursion is an associative scan too, and every test runs both schedules. The
oracles are autodiff through the filter's scan (``kalman_filter(...).log_marginal``, whose
custom-derivative-free path is checked against the dense Gaussian and the parallel filter in
test_kalman.py), central differences of the dense joint Gaussian, and differences of autodiff
gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kalman_cases import CASES, call, close, local_linear_trend, make_case
from oracles import dense_log_marginal

from numpyro_ssm.ops import LGSSMParams, kalman_filter, kalman_log_marginal

KEYS = list(LGSSMParams._fields)


def _as_jax(params):
    return {k: jnp.asarray(params[k]) for k in KEYS if params.get(k) is not None}


def _ours(params, y, mask, parallel=False):
    return call(kalman_log_marginal, params, y, obs_mask=mask, parallel=parallel)


def _autodiff(params, y, mask):
    return call(kalman_filter, params, y, obs_mask=mask).log_marginal


# one entry, S > 4 and a thin (S, q) noise factor: the gradient's pass triangularizes every few
# steps and keeps wide factors
DEFERRED = pytest.param(
    dict(time_varying=True, missing="steps", S=6, D=1, T=11, q=2), id="D=1-S=6-q=2"
)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("case", CASES + [DEFERRED])
def test_gradient_matches_autodiff_through_the_scan(case, parallel):
    case = dict(case)
    q = case.pop("q", None)
    params, y, mask = make_case(21, **case)
    if q is not None:
        params["transition_scale_tril"] = params["transition_scale_tril"][..., :q]
    params = _as_jax(params)
    y = jnp.asarray(y)
    value, grads = jax.value_and_grad(lambda p, y: _ours(p, y, mask, parallel), argnums=(0, 1))(
        params, y
    )
    ref_value, ref_grads = jax.value_and_grad(lambda p, y: _autodiff(p, y, mask), argnums=(0, 1))(
        params, y
    )
    close(value, ref_value)
    close(value, dense_log_marginal(params, y, mask))
    for name in params:
        close(grads[0][name], ref_grads[0][name], atol=1e-9)
    # missing entries (NaN or masked) get an exact zero gradient
    close(grads[1], jnp.nan_to_num(ref_grads[1]), atol=1e-9)
    assert np.all(np.asarray(grads[1])[~(mask & ~np.isnan(np.asarray(y)))] == 0.0)


@pytest.mark.parametrize("parallel", [False, True])
def test_directional_derivatives_match_dense_finite_differences(parallel):
    """Forward mode (the JVP itself) against central differences of the dense Gaussian."""
    params, y, mask = make_case(22, missing="entries")
    params = _as_jax(params)
    rng = np.random.default_rng(0)
    for _ in range(3):
        direction = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()}
        _, jvp = jax.jvp(lambda p: _ours(p, y, mask, parallel), (params,), (direction,))
        h = 1e-5

        def dense(s, direction=direction):
            shifted = {k: np.asarray(params[k]) + s * np.asarray(direction[k]) for k in params}
            return dense_log_marginal(shifted, y, mask)

        close(jvp, (dense(h) - dense(-h)) / (2 * h), rtol=1e-6, atol=1e-7)


# D = 1 (serial): the one-entry passes. S = 5 and 6: stacks above 4 rows, one LAPACK QR a
# step; S = 6, D = 1 with a (6, 2) noise factor is the gradient's deferred pass. Their Hessians
# failed before the vmap rules of the LAPACK calls answered unbatched operands
# (ops/linalg.py, _unbatched).
@pytest.mark.parametrize(
    "parallel, S, D, q",
    [
        (False, 2, 2, None),
        (True, 2, 2, None),
        (False, 2, 1, None),
        (False, 5, 2, None),
        (True, 5, 2, None),
        (False, 6, 1, 2),
    ],
)
def test_hessian_matches_differences_of_autodiff_gradients(parallel, S, D, q):
    """Second derivatives (a JVP of the JVP rule) against central differences of gradients."""
    missing = "entries" if D > 1 else "steps"
    params, y, mask = make_case(23, S=S, D=D, T=6, missing=missing)
    if q is not None:
        params["transition_scale_tril"] = params["transition_scale_tril"][..., :q]
    params = _as_jax(params)
    h = 1e-5
    # the two schedules share the closed form; the parallel one differs in its backward scan
    names = ("transition_matrix",) if parallel else ("transition_matrix", "emission_scale_tril")
    for name in names:
        x = params[name]
        hessian = jax.hessian(
            lambda x, name=name: _ours(dict(params, **{name: x}), y, mask, parallel)
        )(x)
        grad = jax.jit(jax.grad(lambda x, name=name: _autodiff(dict(params, **{name: x}), y, mask)))
        for j in np.ndindex(x.shape):
            step = jnp.zeros_like(x).at[j].set(h)
            column = (grad(x + step) - grad(x - step)) / (2 * h)
            close(hessian[(...,) + j], column, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("parallel", [False, True])
def test_rank_deficient_noise_and_diffuse_start(parallel):
    """Zero level noise (Q singular) and a 1e7 initial variance: exact, finite gradients."""
    T = 20
    params = local_linear_trend(0.0, 0.3, 0.5, T, initial_sd=(np.sqrt(1e7), 1.0))
    y = np.cumsum(np.random.default_rng(24).normal(size=(T, 1)), axis=0) + 50.0
    y[5] = np.nan

    def f(log_sds):
        sds = jnp.exp(log_sds)
        p = dict(
            params,
            transition_scale_tril=jnp.diag(jnp.array([0.0, sds[0]])),
            emission_scale_tril=sds[1:].reshape(1, 1),
        )
        return call(kalman_log_marginal, p, y, parallel=parallel)

    x = jnp.log(jnp.array([0.3, 0.5]))
    close(f(x), dense_log_marginal(params, y), rtol=1e-8)
    g = jax.grad(f)(x)
    h = 1e-5
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        close(g[i], (f(x + e) - f(x - e)) / (2 * h), rtol=1e-6)
    # the gradient along the zero-noise direction is finite too
    grad_Q = jax.grad(
        lambda q: call(
            kalman_log_marginal, dict(params, transition_scale_tril=q), y, parallel=parallel
        )
    )(jnp.diag(jnp.array([0.0, 0.3])))
    assert np.isfinite(grad_Q).all()


@pytest.mark.parametrize("parallel", [False, True])
def test_single_step_and_vmap(parallel):
    params, y, mask = make_case(25, T=1, time_varying=False, missing=None)
    params = _as_jax(params)
    close(
        jax.grad(lambda p: _ours(p, y, mask, parallel))(params)["emission_matrix"],
        jax.grad(lambda p: _autodiff(p, y, mask))(params)["emission_matrix"],
    )
    ys = jnp.stack([jnp.asarray(y), 2.0 * jnp.asarray(y)])
    batched = jax.vmap(jax.grad(lambda y: _ours(params, y, mask, parallel)))(ys)
    for i in range(2):
        close(batched[i], jax.grad(lambda y: _autodiff(params, y, mask))(ys[i]))

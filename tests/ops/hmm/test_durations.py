"""Runs, durations and usages of paths against Python loops; prior durations against quadrature."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.stats import beta as beta_dist

from numpyro_ssm.ops.hmm import (
    duration_counts,
    expected_duration,
    state_runs,
    state_usage,
    stickiness_for_duration,
)


def _runs_by_loops(z, valid):
    """(start, length, state, censored) of every run, by walking the path."""
    runs, t, T = [], 0, len(z)
    while t < T:
        if not valid[t]:
            t += 1
            continue
        start = t
        while t + 1 < T and valid[t + 1] and z[t + 1] == z[start]:
            t += 1
        censored = start == 0 or not valid[start - 1] or t == T - 1 or not valid[t + 1]
        runs.append((start, t - start + 1, z[start], censored))
        t += 1
    return runs


def test_runs_durations_and_usage_match_loops():
    rng = np.random.default_rng(0)
    K, T = 3, 40
    z = np.repeat(rng.integers(K, size=(2, 14)), 3, axis=1)[:, :T]
    valid = rng.uniform(size=(2, T)) > 0.1
    runs = state_runs(jnp.asarray(z), mask=jnp.asarray(valid))
    hist = duration_counts(jnp.asarray(z), K, 5, mask=jnp.asarray(valid))
    usage = state_usage(jnp.asarray(z), K, mask=jnp.asarray(valid))
    visits = state_usage(jnp.asarray(z), K, mask=jnp.asarray(valid), by="runs")
    for b in range(2):
        expected = _runs_by_loops(z[b], valid[b])
        starts = [r[0] for r in expected]
        np.testing.assert_array_equal(np.flatnonzero(runs.starts[b]), starts)
        np.testing.assert_array_equal(runs.lengths[b, starts], [r[1] for r in expected])
        np.testing.assert_array_equal(runs.censored[b, starts], [r[3] for r in expected])
        want = np.zeros((K, 5), int)
        for _, length, state, censored in expected:
            if not censored:
                want[state, min(length, 5) - 1] += 1
        np.testing.assert_array_equal(hist[b], want)
        freq = np.bincount(z[b][valid[b]], minlength=K) / valid[b].sum()
        np.testing.assert_allclose(usage[b], freq, rtol=1e-12)
        visit_freq = np.bincount([r[2] for r in expected], minlength=K) / len(expected)
        np.testing.assert_allclose(visits[b], visit_freq, rtol=1e-12)


@pytest.mark.parametrize("weights", [None, np.array([0.5, 0.3, 0.2])])
def test_expected_duration_matches_quadrature_and_inverts(weights):
    alpha, kappa, K = 3.0, 12.0, 3
    w = np.ones(K) if weights is None else weights
    got = expected_duration(alpha, kappa, K, weights=weights)
    for k in range(K):
        a, b = alpha * w[k] + kappa, alpha * (w.sum() - w[k])
        density = beta_dist(a, b).pdf
        value, _ = integrate.quad(lambda p, f=density: f(p) / (1 - p), 0, 1)
        np.testing.assert_allclose(got[k], value, rtol=1e-8)
    back = stickiness_for_duration(got, alpha, K, weights=weights)
    np.testing.assert_allclose(back, kappa, rtol=1e-10)
    # the mean duration of a geometric visit, averaged over rows drawn from the prior
    rows = jax.random.dirichlet(
        jax.random.key(0), jnp.array([kappa + alpha, 2 * alpha]), (200_000,)
    )
    if weights is None:
        mc = 1 / rows[:, 1]
        assert abs(mc.mean() - got[0]) < 5 * mc.std() / np.sqrt(len(mc))


def test_expected_duration_diverges_and_rejects_negative_stickiness():
    assert np.isinf(expected_duration(0.2, 5.0, 3)).all()  # b = 0.4 <= 1
    assert np.isnan(stickiness_for_duration(1.0, 2.0, 3)).all()  # below the kappa = 0 duration
    with pytest.raises(ValueError, match=r"stickiness \(κ\) must be >= 0, got -2.0"):
        expected_duration(1.0, -2.0, 3)

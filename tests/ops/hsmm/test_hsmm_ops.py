"""numpyro_ssm.ops.hsmm against brute-force enumeration, HMM reductions, gaussian-hsmm, and
serial against parallel."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import hsmm_brute_force, hsmm_expanded_hmm

from numpyro_ssm.ops import (
    hmm_posterior_mode,
    hmm_smoother,
    hsmm_filter,
    hsmm_log_marginal,
    hsmm_posterior_mode,
    hsmm_posterior_sample,
    hsmm_smoother,
)
from numpyro_ssm.ops.hsmm import _blocks
from numpyro_ssm.ops.hsmm._common import _LogParams, switch_log_probs
from numpyro_ssm.ops.hsmm._passes import filter_pass

RTOL = 1e-10
ATOL = 1e-12


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # ops/ is our own code: hold it to JAX's strictest broadcasting rule.
    with jax.numpy_rank_promotion("raise"):
        yield


def random_hsmm(rng, K, D, T, batch=()):
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=K)
    np.fill_diagonal(A, 0.0)
    A /= A.sum(1, keepdims=True)
    P = rng.dirichlet(np.ones(D), size=K)
    ll = rng.normal(size=batch + (T, K)) * 1.5
    return pi, A, P, ll


# Two sequences in one batch: all steps observed, and steps 2 and 5 (and, right-censored, the
# last) masked, so that a masked step inside a segment, at its edge and at the end are covered.
K, D, T = 3, 4, 6
MASK = np.array([[True] * T, [True, True, False, True, True, False]])
PI, A, P, LL = random_hsmm(np.random.default_rng(0), K, D, T, batch=(2,))


def _brute_force(censoring, first=None, b=None):
    ll = np.where(MASK[b][:, None], LL[b], 0.0)
    end_at = None if censoring == "right" else int(np.flatnonzero(MASK[b])[-1])
    first = PI[:, None] * P if first is None else first
    return hsmm_brute_force(first, A, P, ll, end_at=end_at)


@pytest.mark.parametrize("censoring", ["right", "none"])
@pytest.mark.parametrize("parallel", [False, True])
def test_smoother_and_mode_against_brute_force(parallel, censoring):
    post = hsmm_smoother(PI, A, P, LL, obs_mask=MASK, censoring=censoring, parallel=parallel)
    mode = hsmm_posterior_mode(PI, A, P, LL, obs_mask=MASK, censoring=censoring, parallel=parallel)
    for b in range(2):
        ref = _brute_force(censoring, b=b)
        np.testing.assert_allclose(post.log_marginal[b], ref.log_marginal, rtol=RTOL)
        np.testing.assert_allclose(
            post.log_likelihood_increments[b].sum(), ref.log_marginal, rtol=RTOL
        )
        for name in (
            "smoothed_probs",
            "segment_start_probs",
            "expected_transitions",
            "expected_durations",
        ):
            np.testing.assert_allclose(
                getattr(post, name)[b], getattr(ref, name), rtol=1e-9, atol=ATOL, err_msg=name
            )
        np.testing.assert_array_equal(mode[b], ref.mode)
    assert not np.any(post.log_likelihood_increments[~MASK])


@pytest.mark.parametrize("parallel", [False, True])
def test_filter_against_truncated_brute_force(parallel):
    # Under right censoring p(z_t, y_{1:t}) is the last smoothed marginal of the first t steps.
    post = hsmm_filter(PI, A, P, LL[0], parallel=parallel)
    for t in range(T):
        ref = hsmm_brute_force(PI[:, None] * P, A, P, LL[0, : t + 1])
        np.testing.assert_allclose(post.filtered_probs[t], ref.smoothed_probs[-1], rtol=1e-9)
        previous = hsmm_brute_force(PI[:, None] * P, A, P, LL[0, :t]).log_marginal if t else 0.0
        np.testing.assert_allclose(
            post.log_likelihood_increments[t], ref.log_marginal - previous, rtol=1e-9
        )
    np.testing.assert_allclose(post.predicted_probs[0], PI, rtol=RTOL)


def test_first_segment_probs():
    # a start in the middle of a segment: any joint table of (z_1, d_1)
    first = np.random.default_rng(3).dirichlet(np.ones(K * D)).reshape(K, D)
    post = hsmm_smoother(
        first_segment_probs=first, transition_matrix=A, duration_probs=P, log_likelihoods=LL[0]
    )
    ref = _brute_force("right", first=first, b=0)
    np.testing.assert_allclose(post.log_marginal, ref.log_marginal, rtol=RTOL)
    np.testing.assert_allclose(post.smoothed_probs, ref.smoothed_probs, rtol=1e-9)
    np.testing.assert_allclose(post.expected_durations, ref.expected_durations, rtol=1e-9)
    mode = hsmm_posterior_mode(
        first_segment_probs=first, transition_matrix=A, duration_probs=P, log_likelihoods=LL[0]
    )
    np.testing.assert_array_equal(mode, ref.mode)


@pytest.mark.parametrize("parallel", [False, True])
def test_posterior_samples_follow_the_path_posterior(parallel):
    draws = 4000
    paths = hsmm_posterior_sample(
        jax.random.key(1), PI, A, P, LL, obs_mask=MASK, parallel=parallel, sample_shape=(draws,)
    )
    assert paths.shape == (draws, 2, T)
    for b in range(2):
        ref = _brute_force("right", b=b)
        counts = Counter(map(tuple, np.asarray(paths[:, b])))
        assert set(counts) <= set(ref.path_probs)
        # the ten most probable paths, each within 4.5 standard errors
        for path, prob in sorted(ref.path_probs.items(), key=lambda kv: -kv[1])[:10]:
            stderr = np.sqrt(prob * (1 - prob) / draws)
            assert abs(counts.get(path, 0) / draws - prob) < 4.5 * stderr, (path, prob)


def _geometric_table(stay, max_duration):
    """Geometric durations on 1..D with the tail P(d >= D) lumped at D: exact for T <= D."""
    d = np.arange(1, max_duration + 1)
    table = (1 - stay[:, None]) * stay[:, None] ** (d - 1)
    table[:, -1] = stay ** (max_duration - 1)
    return table


@pytest.mark.parametrize("parallel", [False, True])
def test_geometric_durations_are_an_hmm(parallel):
    rng = np.random.default_rng(4)
    k, t = 3, 9
    pi, switch, _, ll = random_hsmm(rng, k, 2, t)
    stay = rng.uniform(0.3, 0.9, size=k)
    hmm_matrix = np.diag(stay) + (1 - stay)[:, None] * switch
    post = hsmm_smoother(pi, switch, _geometric_table(stay, t), ll, parallel=parallel)
    ref = hmm_smoother(pi, hmm_matrix, ll)
    np.testing.assert_allclose(post.log_marginal, ref.log_marginal, rtol=RTOL)
    for name in ("filtered_probs", "predicted_probs", "smoothed_probs"):
        np.testing.assert_allclose(getattr(post, name), getattr(ref, name), rtol=1e-9, atol=ATOL)
    np.testing.assert_allclose(
        post.log_likelihood_increments, ref.log_likelihood_increments, rtol=1e-9, atol=ATOL
    )
    mode = hsmm_posterior_mode(pi, switch, _geometric_table(stay, t), ll, parallel=parallel)
    np.testing.assert_array_equal(mode, hmm_posterior_mode(pi, hmm_matrix, ll))


def test_expanded_state_hmm_and_serial_equals_parallel_over_many_blocks():
    # T = 120, D = 7: 11 blocks of 11 steps, a batch of two with masks and a 3-step pad
    rng = np.random.default_rng(5)
    k, d, t = 3, 7, 120
    pi, a, p, ll = random_hsmm(rng, k, d, t, batch=(2,))
    mask = rng.uniform(size=(2, t)) > 0.2
    init, matrix = hsmm_expanded_hmm(pi[:, None] * p, a, p)
    ref = hmm_smoother(init, matrix, np.repeat(ll, d, axis=-1), obs_mask=mask)
    serial = hsmm_smoother(pi, a, p, ll, obs_mask=mask)
    parallel = hsmm_smoother(pi, a, p, ll, obs_mask=mask, parallel=True)
    np.testing.assert_allclose(serial.log_marginal, ref.log_marginal, rtol=RTOL)
    smoothed = ref.smoothed_probs.reshape(2, t, k, d).sum(-1)
    np.testing.assert_allclose(serial.smoothed_probs, smoothed, rtol=1e-8, atol=ATOL)
    filtered = ref.filtered_probs.reshape(2, t, k, d).sum(-1)
    np.testing.assert_allclose(serial.filtered_probs, filtered, rtol=1e-8, atol=ATOL)
    for name in HSMMPosteriorFields:
        np.testing.assert_allclose(
            getattr(parallel, name), getattr(serial, name), rtol=1e-9, atol=1e-12, err_msg=name
        )
    for censoring in ("right", "none"):
        modes = [
            hsmm_posterior_mode(pi, a, p, ll, obs_mask=mask, censoring=censoring, parallel=par)
            for par in (False, True)
        ]
        np.testing.assert_array_equal(modes[0], modes[1])


HSMMPosteriorFields = (
    "log_marginal",
    "filtered_probs",
    "predicted_probs",
    "log_likelihood_increments",
    "final_residual_probs",
    "smoothed_probs",
    "segment_start_probs",
    "expected_transitions",
    "expected_durations",
)


def test_gradient_is_the_posterior_and_matches_autodiff():
    args = [jnp.log(x) for x in (PI, A + np.eye(K) * 0.3, P)] + [jnp.asarray(LL[1])]
    mask = MASK[1]

    def ours(li, lt, ld, ll, censoring="right"):
        return hsmm_log_marginal(
            initial_logits=li,
            transition_logits=lt,
            duration_logits=ld,
            log_likelihoods=ll,
            obs_mask=mask,
            censoring=censoring,
        )

    @jax.jit
    def autodiff(li, lt, ld, ll):  # plain autodiff through the filter's scans
        params = _LogParams(
            jax.nn.log_softmax(li)[:, None] + jax.nn.log_softmax(ld),
            switch_log_probs(lt),
            jax.nn.log_softmax(ld),
        )
        return filter_pass(params, ll, jnp.asarray(mask), False, "right").log_marginal

    got = jax.jit(jax.grad(ours, argnums=(0, 1, 2, 3)))(*args)
    want = jax.grad(autodiff, argnums=(0, 1, 2, 3))(*args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-12)
    ref = _brute_force("right", b=1)
    np.testing.assert_allclose(got[3], np.where(mask[:, None], ref.smoothed_probs, 0), rtol=1e-9)
    # censoring="none": d/d log_lik is the posterior given that the last segment ends
    none = jax.grad(ours, argnums=3)(*args, "none")
    ref = _brute_force("none", b=1)
    np.testing.assert_allclose(none, np.where(mask[:, None], ref.smoothed_probs, 0), rtol=1e-9)
    # forward mode and second derivatives
    _, jvp = jax.jvp(lambda x: ours(*args[:3], x), (args[3],), (jnp.ones_like(args[3]),))
    np.testing.assert_allclose(jvp, mask.sum(), rtol=1e-9)
    hessian = jax.hessian(lambda x: ours(x, *args[1:]))(args[0])
    assert hessian.shape == (K, K) and np.all(np.isfinite(hessian))


def test_float32_matches_float64():
    rng = np.random.default_rng(7)
    pi, a, p, ll = random_hsmm(rng, 3, 6, 300)
    f32 = [jnp.asarray(x, jnp.float32) for x in (pi, a, p, ll)]
    ref = hsmm_smoother(pi, a, p, ll)
    for parallel in (False, True):
        post = hsmm_smoother(*f32, parallel=parallel)
        assert post.smoothed_probs.dtype == jnp.float32
        np.testing.assert_allclose(post.log_marginal, ref.log_marginal, rtol=1e-5)
        np.testing.assert_allclose(post.smoothed_probs, ref.smoothed_probs, atol=2e-4)
        np.testing.assert_allclose(post.expected_durations, ref.expected_durations, atol=2e-3)
    np.testing.assert_array_equal(hsmm_posterior_mode(*f32), hsmm_posterior_mode(pi, a, p, ll))


def test_gradient_finite_at_T_1e5_float32():
    rng = np.random.default_rng(8)
    k, d, t = 3, 20, 100_000
    pi, a, p, _ = random_hsmm(rng, k, d, 1)
    y = rng.normal(size=t).astype(np.float32) * 2

    def log_marginal(means):
        ll = -0.5 * (y[:, None] - means[None, :]) ** 2
        return hsmm_log_marginal(*(jnp.asarray(x, jnp.float32) for x in (pi, a, p)), ll)

    value, grad = jax.value_and_grad(log_marginal)(jnp.array([-1.0, 0.0, 1.0], jnp.float32))
    assert value.dtype == jnp.float32 and np.isfinite(value)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_gradient_memory_grows_as_T_K_not_T_K_D():
    # XLA's buffer plan of value+grad (compiled, not run) at two lengths whose messages exceed
    # the 4 MB below which the serial passes keep them all: the growth per step is a few
    # (T, K) arrays, far below the K * D_max floats per step that keeping messages would need.
    k, d = 2, 64
    pi, a, p, _ = random_hsmm(np.random.default_rng(10), k, d, 1)

    def peak_bytes(t):
        def log_marginal(log_lik):
            return hsmm_log_marginal(pi, a, p, log_lik)

        stats = jax.jit(jax.grad(log_marginal)).lower(jnp.zeros((t, k))).compile()
        stats = stats.memory_analysis()
        assert stats is not None, "the CPU backend gives XLA's memory analysis"
        return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes

    t1, t2 = 8_000, 16_000
    assert t1 * k * d * 8 > 4 * 2**20
    per_step = (peak_bytes(t2) - peak_bytes(t1)) / (t2 - t1)
    assert per_step < 12 * k * 8 < k * d * 8 / 5, per_step


def test_one_state_and_one_step():
    ll = np.random.default_rng(9).normal(size=(5, 1))
    p = np.array([[0.5, 0.3, 0.2]])
    post = hsmm_smoother(np.ones(1), np.ones((1, 1)), p, ll)
    ref = hsmm_brute_force(p, np.ones((1, 1)), p, ll)
    np.testing.assert_allclose(post.log_marginal, ref.log_marginal, rtol=RTOL)
    np.testing.assert_allclose(post.expected_durations, ref.expected_durations, rtol=1e-9)
    single = hsmm_smoother(PI, A, P, LL[0, :1], parallel=True)
    np.testing.assert_allclose(
        single.log_marginal, hsmm_brute_force(PI[:, None] * P, A, P, LL[0, :1]).log_marginal
    )


def test_self_transitions_are_dropped():
    full = A + np.diag([0.5, 0.2, 0.9])
    full /= full.sum(1, keepdims=True)
    a = hsmm_log_marginal(PI, full, P, LL[0])
    b = hsmm_log_marginal(PI, A, P, LL[0])
    np.testing.assert_allclose(a, b, rtol=RTOL)
    logits = hsmm_log_marginal(
        PI, transition_logits=np.log(full) + 3.0, duration_probs=P, log_likelihoods=LL[0]
    )
    np.testing.assert_allclose(logits, b, rtol=RTOL)


def test_block_layout():
    # serial: one block while the T (K, D) messages fit in WHOLE_BYTES, else sqrt(T) or D
    assert _blocks.block_length(1000, 100, 5, 8, False) == 999
    assert _blocks.block_length(10_000, 100, 5, 8, False) == 100
    assert _blocks.block_length(10_001, 10, 50, 8, parallel=False) == 101
    assert _blocks.block_length(10, 2, 3, 8, parallel=True) == 4
    steps = _blocks.sequence_steps(jnp.zeros((10, 2)), jnp.ones(10, bool), "right")
    blocks = _blocks.split_blocks(steps, 4)
    assert blocks.valid.shape == (3, 4)
    np.testing.assert_array_equal(blocks.valid.reshape(-1), [True] * 9 + [False] * 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(duration_probs=np.zeros((K, 0))), "D_max >= 1"),
        (dict(duration_probs=P[:2]), "duration_probs must have shape"),
        (dict(transition_matrix=np.ones((K + 1, K + 1)) / 4), "transition_matrix must have"),
        (dict(initial_probs=np.ones(K + 1)), "initial_probs must have shape"),
        (dict(first_segment_probs=PI[:, None] * P), "exactly one of initial_probs"),
        (dict(censoring="left"), "censoring must be one of"),
        (dict(obs_mask=np.ones(T + 1, bool)), "obs_mask must have shape"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(initial_probs=PI, transition_matrix=A, duration_probs=P, log_likelihoods=LL[0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hsmm_filter(**args)


def test_against_gaussian_hsmm_peer():
    # gaussian-hsmm (PyPI) ends the last segment at the last step: our censoring="none"
    import gaussian_hsmm  # in the test extra

    rng = np.random.default_rng(10)
    k, d, t = 3, 8, 40
    pi, a, p, _ = random_hsmm(rng, k, d, 1)
    means, variances = np.array([-2.0, 0.0, 2.0]), np.array([0.5, 1.0, 0.8])
    y = rng.normal(means[rng.integers(k, size=t)], 1.0)
    peer = gaussian_hsmm.GaussianHSMM(n_components=k, covariance_type="diag", max_duration=d)
    peer.startprob_, peer.transmat_ = pi, a
    peer.means_, peer.covars_ = means[:, None], variances[:, None]
    peer.duration_probs_ = np.concatenate([np.zeros((k, 1)), p], axis=1)
    peer._log_duration_probs_ = np.log(peer.duration_probs_)
    ll = -0.5 * (np.log(2 * np.pi * variances) + (y[:, None] - means) ** 2 / variances)
    post = hsmm_smoother(pi, a, p, ll, censoring="none")
    np.testing.assert_allclose(post.log_marginal, peer.score(y[:, None]), rtol=1e-10)
    np.testing.assert_allclose(post.smoothed_probs, peer.predict_proba(y[:, None]), atol=1e-10)
    mode = hsmm_posterior_mode(pi, a, p, ll, censoring="none")
    np.testing.assert_array_equal(mode, peer.predict(y[:, None]))

"""numpyro_ssm.ops.hmm against brute-force enumeration, TFP, dynamax, and serial vs parallel."""

import zlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import hmm_brute_force

from numpyro_ssm.ops import hmm_filter, hmm_posterior_mode, hmm_posterior_sample, hmm_smoother
from numpyro_ssm.ops.hmm import _forward as hmm_forward

RTOL = 1e-10
ATOL = 1e-12


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    # ops/ is our own code: hold it to JAX's strictest broadcasting rule.
    with jax.numpy_rank_promotion("raise"):
        yield


def random_hmm(rng, K, T, *, time_varying=False, zeros=False):
    pi = rng.dirichlet(np.ones(K))
    shape = (T - 1, K) if time_varying else (K,)
    A = rng.dirichlet(np.ones(K), size=shape)
    if zeros:  # a left-to-right structure with exact zeros
        A = np.triu(A) if A.ndim == 2 else np.triu(A)
        A = A / A.sum(-1, keepdims=True)
    ll = rng.normal(size=(T, K)) * 2.0
    return pi, A, ll


def assert_posterior_matches(post, ref, smoothed=True):
    # atol: an all-masked sequence has log_marginal 0, and ours may be an ulp away
    np.testing.assert_allclose(post.log_marginal, ref.log_marginal, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(post.filtered_probs, ref.filtered_probs, rtol=1e-9, atol=ATOL)
    np.testing.assert_allclose(post.predicted_probs, ref.predicted_probs, rtol=1e-9, atol=ATOL)
    np.testing.assert_allclose(
        post.log_likelihood_increments, ref.log_likelihood_increments, rtol=1e-9, atol=ATOL
    )
    if smoothed:
        np.testing.assert_allclose(post.smoothed_probs, ref.smoothed_probs, rtol=1e-9, atol=ATOL)
        np.testing.assert_allclose(
            post.expected_transitions, ref.expected_transitions, rtol=1e-9, atol=ATOL
        )


CASES = [
    dict(K=3, T=5, time_varying=False),
    dict(K=3, T=5, time_varying=True),
    dict(K=2, T=7, time_varying=True, masked=True),
    dict(K=4, T=4, time_varying=False, zeros=True),
    dict(K=3, T=1, time_varying=False),
    # above _UNROLLED_MAX_K and _FUSED_STEP_MAX_K: reduce ops and batched products
    dict(K=17, T=3, time_varying=False),
    dict(K=17, T=3, time_varying=True, masked=True),
]


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_against_brute_force(case, parallel):
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))  # hash() varies per process
    K, T = case["K"], case["T"]
    pi, A, ll = random_hmm(rng, K, T, time_varying=case["time_varying"], zeros=case.get("zeros"))
    mask = rng.uniform(size=T) > 0.4 if case.get("masked") else None
    ref = hmm_brute_force(pi, A, ll, mask)
    assert_posterior_matches(hmm_filter(pi, A, ll, obs_mask=mask, parallel=parallel), ref, False)
    assert_posterior_matches(hmm_smoother(pi, A, ll, obs_mask=mask, parallel=parallel), ref)
    mode = hmm_posterior_mode(pi, A, ll, obs_mask=mask, parallel=parallel)
    np.testing.assert_array_equal(mode, ref.mode)


@pytest.mark.parametrize("parallel", [False, True])
def test_logits_equal_probs(parallel):
    rng = np.random.default_rng(1)
    pi, A, ll = random_hmm(rng, 3, 6, time_varying=True)
    logits_a = np.log(A) + rng.normal(size=(5, 3, 1))  # row shifts leave softmax unchanged
    logits_pi = np.log(pi) + 3.0
    by_probs = hmm_smoother(pi, A, ll, parallel=parallel)
    by_logits = hmm_smoother(
        initial_logits=logits_pi, transition_logits=logits_a, log_likelihoods=ll, parallel=parallel
    )
    for a, b in zip(by_probs, by_logits, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_extreme_log_likelihoods_and_exact_zeros():
    # Log-likelihoods of -1e4 and exact zeros in the transitions: no underflow, no NaN.
    K, T = 3, 6
    pi = np.array([1.0, 0.0, 0.0])
    A = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    ll = np.full((T, K), -1e4)
    ll[:, 2] = -1e4 - 50.0
    ll[3, 0] = 0.0
    ref = hmm_brute_force(pi, A, ll)
    assert np.isfinite(ref.log_marginal)
    for parallel in (False, True):
        post = hmm_smoother(pi, A, ll, parallel=parallel)
        assert_posterior_matches(post, ref)
        mode = hmm_posterior_mode(pi, A, ll, parallel=parallel)
        np.testing.assert_array_equal(mode, ref.mode)
        draws = hmm_posterior_sample(
            jax.random.PRNGKey(0), pi, A, ll, parallel=parallel, sample_shape=(200,)
        )
        feasible = {tuple(p) for p in ref.paths[ref.path_log_probs > -np.inf]}
        assert all(tuple(d) in feasible for d in np.asarray(draws))
        grads = jax.grad(lambda x, p=parallel: hmm_filter(pi, A, x, parallel=p).log_marginal)(ll)
        assert np.all(np.isfinite(grads))


def test_impossible_observations_give_minus_inf_not_nan():
    pi = np.array([1.0, 0.0])
    A = np.eye(2)
    ll = np.zeros((4, 2))
    ll[2, 0] = -np.inf  # the only reachable state cannot emit y_3
    for parallel in (False, True):
        value = hmm_filter(pi, A, ll, parallel=parallel).log_marginal
        assert value == -np.inf


@pytest.mark.parametrize("parallel", [False, True])
def test_batch_broadcasting_equals_loop(parallel):
    rng = np.random.default_rng(2)
    B, K, T = 3, 3, 8
    pis = rng.dirichlet(np.ones(K), size=B)
    As = rng.dirichlet(np.ones(K), size=(B, 1, K))  # a batch of homogeneous matrices
    lls = rng.normal(size=(2, B, T, K))  # extra leading axis, broadcast against (B,)
    masks = rng.uniform(size=(B, T)) > 0.3
    post = hmm_smoother(pis, As, lls, obs_mask=masks, parallel=parallel)
    assert post.smoothed_probs.shape == (2, B, T, K)
    assert post.expected_transitions.shape == (2, B, K, K)
    modes = hmm_posterior_mode(pis, As, lls, obs_mask=masks, parallel=parallel)
    for i in range(2):
        for b in range(B):
            single = hmm_smoother(pis[b], As[b, 0], lls[i, b], obs_mask=masks[b])
            np.testing.assert_allclose(post.log_marginal[i, b], single.log_marginal, rtol=1e-12)
            np.testing.assert_allclose(post.smoothed_probs[i, b], single.smoothed_probs, atol=1e-12)
            np.testing.assert_array_equal(
                modes[i, b], hmm_posterior_mode(pis[b], As[b, 0], lls[i, b], obs_mask=masks[b])
            )


def assert_smoother_and_mode_serial_equal_parallel(pi, A, ll, mask):
    serial = hmm_smoother(pi, A, ll, obs_mask=mask)
    parallel = hmm_smoother(pi, A, ll, obs_mask=mask, parallel=True)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(
        hmm_posterior_mode(pi, A, ll, obs_mask=mask),
        hmm_posterior_mode(pi, A, ll, obs_mask=mask, parallel=True),
    )


def test_serial_equals_parallel_long_time_varying_masked():
    rng = np.random.default_rng(3)
    K, T = 5, 300
    pi, A, ll = random_hmm(rng, K, T, time_varying=True)
    mask = rng.uniform(size=T) > 0.2
    assert_smoother_and_mode_serial_equal_parallel(pi, A, ll, mask)
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(  # same randomness -> same backward maps -> same paths
        hmm_posterior_sample(key, pi, A, ll, obs_mask=mask, sample_shape=(3,)),
        hmm_posterior_sample(key, pi, A, ll, obs_mask=mask, sample_shape=(3,), parallel=True),
    )


def assert_parallel_gradients_equal_serial(pi, A, ll, mask):
    def log_marginal(logits, ll, parallel):
        return hmm_filter(
            pi, transition_logits=logits, log_likelihoods=ll, obs_mask=mask, parallel=parallel
        ).log_marginal

    grad = jax.grad(log_marginal, argnums=(0, 1))
    for a, b in zip(grad(np.log(A), ll, False), grad(np.log(A), ll, True), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("time_varying", [False, True])
def test_chunked_parallel_scans_equal_serial(monkeypatch, time_varying):
    # Chunks of 16 steps (K = 5, float64) for the filter's 300 transitions: 19 chunks, the last
    # padded with 4 copies of the last step; the smoother's scan of paired elements takes
    # chunks of 8: 38 chunks, the last padded with 4 too.
    monkeypatch.setattr(hmm_forward, "_CHUNK_BYTES", 16 * 5 * 5 * 8)
    assert hmm_forward._chunk_length(5, jnp.float64) == 16
    rng = np.random.default_rng(13)
    K, T = 5, 301  # a length no other test compiles, so no cached unchunked trace is reused
    pi, A, ll = random_hmm(rng, K, T, time_varying=time_varying)
    mask = rng.uniform(size=T) > 0.2
    assert_smoother_and_mode_serial_equal_parallel(pi, A, ll, mask)
    assert_parallel_gradients_equal_serial(pi, A, ll, mask)


def test_gpu_element_product_equals_serial(monkeypatch):
    # On a CUDA GPU the parallel scans multiply K x K elements by a fused broadcast-sum
    # (hmm_forward._element_product picks it when the code is lowered). CI has no GPU, so the
    # product is checked here, and then put in the GEMM's place for the whole parallel path.
    rng = np.random.default_rng(21)
    a, b = rng.uniform(size=(2, 7, 4, 4)), rng.uniform(size=(2, 7, 4, 4))
    np.testing.assert_allclose(hmm_forward._fused_matmul(a, b), a @ b, rtol=1e-13)
    monkeypatch.setattr(hmm_forward, "_element_product", hmm_forward._fused_matmul)
    K, T = 4, 203  # a length no other test compiles, so no cached GEMM trace is reused
    pi, A, ll = random_hmm(rng, K, T)
    mask = rng.uniform(size=T) > 0.2
    assert_smoother_and_mode_serial_equal_parallel(pi, A, ll, mask)
    assert_parallel_gradients_equal_serial(pi, A, ll, mask)


def test_parallel_log_marginal_has_forward_mode_and_hessians():
    rng = np.random.default_rng(14)
    pi, A, ll = random_hmm(rng, 3, 9, time_varying=True)

    def log_marginal(ll, parallel):
        return hmm_filter(pi, A, ll, parallel=parallel).log_marginal

    tangent = rng.normal(size=ll.shape)
    for parallel in (False, True):
        _, jvp = jax.jvp(lambda x, p=parallel: log_marginal(x, p), (ll,), (tangent,))
        ref = hmm_brute_force(pi, A, ll)
        np.testing.assert_allclose(jvp, np.sum(ref.smoothed_probs * tangent), rtol=1e-9)
    hessians = [jax.hessian(log_marginal)(ll, p) for p in (False, True)]
    np.testing.assert_allclose(hessians[0], hessians[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("parallel", [False, True])
def test_ffbs_path_frequencies_match_exact_posterior(parallel):
    rng = np.random.default_rng(4)
    K, T, N = 3, 4, 40_000
    pi, A, ll = random_hmm(rng, K, T, time_varying=True)
    ll = ll * 0.5
    ref = hmm_brute_force(pi, A, ll)
    draws = np.asarray(
        hmm_posterior_sample(
            jax.random.PRNGKey(11), pi, A, ll, parallel=parallel, sample_shape=(N,)
        )
    )
    assert draws.shape == (N, T)
    codes = draws @ (K ** np.arange(T - 1, -1, -1))  # the paths are enumerated in this order
    freq = np.bincount(codes, minlength=K**T) / N
    p = np.exp(ref.path_log_probs)
    se = np.sqrt(p * (1 - p) / N)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-4)
    # Pairwise (z_t, z_{t+1}) counts against the expected transition counts.
    pair_counts = np.zeros((K, K))
    for t in range(T - 1):
        np.add.at(pair_counts, (draws[:, t], draws[:, t + 1]), 1.0 / N)
    np.testing.assert_allclose(pair_counts, ref.expected_transitions, atol=0.02)


def test_sample_shapes_and_typed_keys():
    rng = np.random.default_rng(5)
    pi, A, ll = random_hmm(rng, 3, 6)
    lls = np.stack([ll, ll + 1.0])
    draws = hmm_posterior_sample(jax.random.key(0), pi, A, lls, sample_shape=(4, 5))
    assert draws.shape == (4, 5, 2, 6)
    assert jnp.issubdtype(draws.dtype, jnp.integer)
    assert hmm_posterior_sample(jax.random.PRNGKey(0), pi, A, ll).shape == (6,)


def test_gradients_against_finite_differences():
    rng = np.random.default_rng(6)
    K, T = 3, 6
    pi, A, ll = random_hmm(rng, K, T, time_varying=True)
    mask = np.array([True, True, False, True, True, True])

    @partial(jax.jit, static_argnums=3)
    def f(init_logits, trans_logits, ll, parallel):
        return hmm_filter(
            initial_logits=init_logits,
            transition_logits=trans_logits,
            log_likelihoods=ll,
            obs_mask=mask,
            parallel=parallel,
        ).log_marginal

    args = (np.log(pi), np.log(A), ll)
    for parallel in (False, True):
        grads = jax.grad(f, argnums=(0, 1, 2))(*args, parallel)
        eps = 1e-6
        for which, g in enumerate(grads):
            flat = np.asarray(args[which]).ravel()
            numeric = np.zeros_like(flat)
            for i in range(flat.size):
                up, down = flat.copy(), flat.copy()
                up[i] += eps
                down[i] -= eps
                a_up = list(args)
                a_down = list(args)
                a_up[which] = up.reshape(np.shape(args[which]))
                a_down[which] = down.reshape(np.shape(args[which]))
                numeric[i] = (f(*a_up, parallel) - f(*a_down, parallel)) / (2 * eps)
            np.testing.assert_allclose(np.ravel(g), numeric, rtol=1e-6, atol=1e-8)


def test_gradient_wrt_log_likelihoods_is_smoothed_marginals():
    rng = np.random.default_rng(7)
    pi, A, ll = random_hmm(rng, 4, 9)
    ref = hmm_brute_force(pi, A, ll)
    grads = jax.grad(lambda x: hmm_filter(pi, A, x).log_marginal)(ll)
    np.testing.assert_allclose(grads, ref.smoothed_probs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("parallel", [False, True])
def test_float32_long_sequence_finite_value_and_gradients(parallel):
    rng = np.random.default_rng(8)
    K, T = 10, 100_000
    pi = rng.dirichlet(np.ones(K)).astype(np.float32)
    A = rng.dirichlet(np.ones(K) * 0.5, size=K).astype(np.float32)
    ll = (rng.normal(size=(T, K)) * 3.0 - 5.0).astype(np.float32)

    @jax.jit
    def value_and_grads(trans_logits, ll):
        def f(trans_logits, ll):
            return hmm_filter(
                pi, transition_logits=trans_logits, log_likelihoods=ll, parallel=parallel
            ).log_marginal

        return jax.value_and_grad(f, argnums=(0, 1))(trans_logits, ll)

    value, (g_trans, g_ll) = value_and_grads(np.log(A), ll)
    assert value.dtype == jnp.float32
    assert np.isfinite(value)
    assert np.all(np.isfinite(g_trans)) and np.all(np.isfinite(g_ll))
    # d log p / d ll are the smoothed marginals: each row sums to one, and they agree with a
    # float64 smoother to float32 accuracy.
    np.testing.assert_allclose(np.asarray(g_ll).sum(-1), 1.0, atol=1e-3)
    args64 = (pi.astype(np.float64), A.astype(np.float64), ll.astype(np.float64))
    np.testing.assert_allclose(g_ll, hmm_smoother(*args64).smoothed_probs, atol=1e-3)
    # float32 value agrees with a float64 run to float32 accuracy.
    value64 = hmm_filter(*args64)
    np.testing.assert_allclose(value, value64.log_marginal, rtol=1e-5)
    # Per-step increments are computed per step, not as differences of a cumulative sum of
    # magnitude ~1e6, so they keep float32 accuracy at every step.
    post32 = hmm_filter(pi, A, ll, parallel=parallel)
    assert post32.log_likelihood_increments.dtype == jnp.float32
    np.testing.assert_allclose(
        post32.log_likelihood_increments, value64.log_likelihood_increments, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("switch_prob", [1e-30, 1e-6])
def test_float32_sticky_chain_with_surprising_observations_matches_float64(switch_prob):
    # The serial loops and the marginals work in probability space. Near-impossible switches
    # (1e-30 is representable in float32) that the observations nevertheless demand (30 nats
    # per step) are the hardest case for that: nothing may underflow to a NaN or a zero row.
    rng = np.random.default_rng(11)
    K, T = 3, 600
    A = np.full((K, K), switch_prob)
    np.fill_diagonal(A, 1.0 - (K - 1) * switch_prob)
    pi = np.full(K, 1.0 / K)
    regime = (np.arange(T) // 50) % K
    ll = -30.0 * (np.arange(K)[None, :] != regime[:, None]) + rng.normal(size=(T, K))
    ref = hmm_smoother(pi, A, ll)
    args32 = [x.astype(np.float32) for x in (pi, A, ll)]
    for parallel in (False, True):
        post = hmm_smoother(*args32, parallel=parallel)
        assert post.smoothed_probs.dtype == jnp.float32
        np.testing.assert_allclose(post.log_marginal, ref.log_marginal, rtol=1e-5)
        np.testing.assert_allclose(post.smoothed_probs, ref.smoothed_probs, atol=1e-5)
        np.testing.assert_allclose(
            post.expected_transitions, ref.expected_transitions, rtol=1e-4, atol=1e-5
        )
        grad = jax.grad(lambda x, p=parallel: hmm_filter(*args32[:2], x, parallel=p).log_marginal)(
            args32[2]
        )
        np.testing.assert_allclose(grad, ref.smoothed_probs, atol=1e-5)


def test_against_tfp_hidden_markov_model():
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions
    rng = np.random.default_rng(9)
    K, T = 3, 12
    pi = rng.dirichlet(np.ones(K))
    A = rng.dirichlet(np.ones(K), size=(T - 1, K))
    means = np.array([-2.0, 0.0, 2.5])
    y = rng.normal(size=T) * 1.5
    mask = rng.uniform(size=T) < 0.25  # TFP: True = masked out

    def tfp_hmm(mask=None):
        return tfd.HiddenMarkovModel(
            tfd.Categorical(probs=pi),
            tfd.Categorical(probs=A),
            tfd.Normal(means, 1.0),
            num_steps=T,
            time_varying_transition_distribution=True,
            mask=mask,
        )

    with jax.numpy_rank_promotion("allow"):  # TFP itself relies on rank promotion
        ref_marginals = tfp_hmm().posterior_marginals(y, mask=mask).probs_parameter()
        ref_mode = tfp_hmm().posterior_mode(y, mask=mask)
        ref_log_prob = tfp_hmm(mask).log_prob(y)
    ll = -0.5 * (y[:, None] - means) ** 2 - 0.5 * np.log(2 * np.pi)
    for parallel in (False, True):
        post = hmm_smoother(pi, A, ll, obs_mask=~mask, parallel=parallel)
        np.testing.assert_allclose(post.smoothed_probs, ref_marginals, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.log_marginal, ref_log_prob, rtol=1e-10)
        mode = hmm_posterior_mode(pi, A, ll, obs_mask=~mask, parallel=parallel)
        np.testing.assert_array_equal(mode, ref_mode)


def test_against_dynamax():
    from dynamax.hidden_markov_model import inference

    rng = np.random.default_rng(10)
    K, T = 4, 50
    pi, A, ll = random_hmm(rng, K, T, time_varying=True)
    ref = inference.hmm_smoother(jnp.asarray(pi), jnp.asarray(A), jnp.asarray(ll))
    for parallel in (False, True):
        post = hmm_smoother(pi, A, ll, parallel=parallel)
        np.testing.assert_allclose(post.log_marginal, ref.marginal_loglik, rtol=1e-10)
        np.testing.assert_allclose(post.filtered_probs, ref.filtered_probs, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.predicted_probs, ref.predicted_probs, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.smoothed_probs, ref.smoothed_probs, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(transition_matrix=np.eye(3)), r"transition_matrix.*K=2.*\(3, 3\)"),
        (dict(transition_matrix=np.ones((4, 2, 2)) / 2), r"time axis of length 4.*T-1=5"),
        (dict(initial_probs=np.ones(3) / 3), r"initial_probs.*K=2.*\(3,\)"),
        (dict(obs_mask=np.ones(5, bool)), r"obs_mask.*T=6.*\(5,\)"),
        (dict(initial_logits=np.zeros(2)), "exactly one of initial_probs and initial_logits"),
        (dict(log_likelihoods=np.zeros(6)), r"log_likelihoods.*\(6,\)"),
    ],
)
def test_bad_shapes_raise_value_errors(kwargs, match):
    args = dict(
        initial_probs=np.ones(2) / 2, transition_matrix=np.eye(2), log_likelihoods=np.zeros((6, 2))
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        hmm_filter(**args)

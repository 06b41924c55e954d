"""Property-based tests of the HMM and Kalman ops (hypothesis), on inputs the distributions never
build: log-likelihoods with near-impossible entries and structural zeros in the transitions (the
logits form), and rank-deficient transition noise (a zero on the diagonal of its square root).

Properties: serial equals parallel (filter, smoother, Viterbi path score); the logits form equals
the probabilities form; ``*_log_marginal`` equals the filter's; the increments sum to it and are
zero at masked steps. Shapes come from small sets and the jitted functions are shared, so each
shape compiles once.
"""

import jax
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from property_settings import property_settings

from numpyro_ssm.ops import (
    LGSSMParams,
    hmm_filter,
    hmm_log_marginal,
    hmm_posterior_mode,
    hmm_smoother,
    kalman_filter,
    kalman_log_marginal,
    kalman_smoother,
)

SETTINGS = property_settings(6)
TOL = dict(rtol=1e-9, atol=1e-10)
SCHEDULES = (False, True)


@st.composite
def hmm_inputs(draw):
    K = draw(st.sampled_from([2, 3]))
    T = draw(st.sampled_from([1, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(size=(max(T - 1, 1), K, K))
    zeros = rng.uniform(size=logits.shape) < 0.3
    zeros[..., np.arange(K), rng.integers(0, K, K)] = False  # every row keeps a way out
    logits = np.where(zeros, -np.inf, logits)
    log_lik = 3 * rng.normal(size=(T, K))
    log_lik[rng.uniform(size=(T, K)) < 0.2] = -1e4  # near impossible, not NaN-producing
    mask = np.array(draw(st.lists(st.booleans(), min_size=T, max_size=T)))
    return rng.normal(size=K), logits, log_lik, mask


@jax.jit
def hmm_outputs(init_logits, trans_logits, log_lik, mask):
    out = {}
    for parallel in SCHEDULES:
        kw = dict(obs_mask=mask, parallel=parallel)
        logits = dict(initial_logits=init_logits, transition_logits=trans_logits)
        probs = dict(
            initial_probs=jax.nn.softmax(init_logits),
            transition_matrix=jax.nn.softmax(trans_logits, axis=-1),
        )
        smooth = hmm_smoother(log_likelihoods=log_lik, **logits, **kw)
        by_probs = hmm_filter(log_likelihoods=log_lik, **probs, **kw)
        mode = hmm_posterior_mode(log_likelihoods=log_lik, **logits, **kw)
        out["parallel" if parallel else "serial"] = dict(
            log_marginal=smooth.log_marginal,
            alone=hmm_log_marginal(log_likelihoods=log_lik, **logits, **kw),
            by_probs=by_probs.log_marginal,
            filtered=by_probs.filtered_probs,
            increments=smooth.log_likelihood_increments,
            smoothed=smooth.smoothed_probs,
            transitions=smooth.expected_transitions,
            mode=mode,
        )
    return out


def _path_score(init_logits, trans_logits, log_lik, mask, path):
    log_init = jax.nn.log_softmax(init_logits)
    log_trans = np.asarray(jax.nn.log_softmax(trans_logits, axis=-1))
    T = len(path)
    score = log_init[path[0]] + sum(
        log_trans[min(t, len(log_trans) - 1), path[t], path[t + 1]] for t in range(T - 1)
    )
    return score + sum(log_lik[t, path[t]] for t in range(T) if mask[t])


@SETTINGS
@given(hmm_inputs())
def test_hmm_ops_schedules_forms_and_increments(inputs):
    init_logits, trans_logits, log_lik, mask = inputs
    if len(log_lik) == 1:
        trans_logits = trans_logits[0]  # a homogeneous (K, K) matrix
    out = hmm_outputs(init_logits, trans_logits, log_lik, mask)
    for key, value in out["serial"].items():
        if key != "mode":
            np.testing.assert_allclose(value, out["parallel"][key], **TOL, err_msg=key)
    s = out["serial"]
    np.testing.assert_allclose(s["alone"], s["log_marginal"], **TOL)
    np.testing.assert_allclose(s["by_probs"], s["log_marginal"], **TOL)
    np.testing.assert_allclose(s["increments"].sum(), s["log_marginal"], **TOL)
    assert np.all(np.asarray(s["increments"])[~mask] == 0.0)
    scores = [
        _path_score(init_logits, trans_logits, log_lik, mask, np.asarray(out[k]["mode"]))
        for k in ("serial", "parallel")
    ]
    np.testing.assert_allclose(scores[0], scores[1], **TOL)  # ties may pick different paths
    assert np.isfinite(scores[0])


@st.composite
def kalman_inputs(draw):
    S, D = 2, 2  # one shape per T: partial (entry) masks included
    T = draw(st.sampled_from([1, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tril = lambda *shape: np.tril(rng.normal(size=shape)) * 0.5 + np.eye(shape[-1])  # noqa: E731
    chol_Q = tril(S, S)
    dead = draw(st.integers(0, S))  # this state's noise is zero (S: none is)
    if dead < S:
        chol_Q[dead, :] = 0.0
    params = LGSSMParams(
        initial_mean=rng.normal(size=S),
        initial_scale_tril=tril(S, S),
        transition_matrix=rng.normal(size=(S, S)) * 0.5,
        transition_scale_tril=chol_Q,
        emission_matrix=rng.normal(size=(T, D, S)),
        emission_scale_tril=tril(T, D, D),
        transition_bias=rng.normal(size=S),
        emission_bias=rng.normal(size=(T, D)),
    )
    mask = np.reshape(draw(st.lists(st.booleans(), min_size=T * D, max_size=T * D)), (T, D))
    return params, rng.normal(size=(T, D)), mask


@jax.jit
def kalman_outputs(params, y, mask):
    out = {}
    for parallel in SCHEDULES:
        smooth = kalman_smoother(params, y, obs_mask=mask, parallel=parallel)
        alone = kalman_log_marginal(params, y, obs_mask=mask, parallel=parallel)
        filtered = kalman_filter(params, y, obs_mask=mask, parallel=parallel)
        out["parallel" if parallel else "serial"] = dict(
            log_marginal=smooth.log_marginal,
            alone=alone,
            filtered_means=filtered.filtered_means,
            filtered_covariances=filtered.filtered_covariances,
            increments=smooth.log_likelihood_increments,
            smoothed_means=smooth.smoothed_means,
            smoothed_covariances=smooth.smoothed_covariances,
        )
    return out


@SETTINGS
@given(kalman_inputs())
def test_kalman_ops_schedules_and_increments_with_rank_deficient_noise(inputs):
    params, y, mask = inputs
    out = kalman_outputs(params, y, mask)
    for key, value in out["serial"].items():
        np.testing.assert_allclose(value, out["parallel"][key], rtol=1e-8, atol=1e-9, err_msg=key)
    s = out["serial"]
    assert all(np.all(np.isfinite(v)) for v in s.values())
    np.testing.assert_allclose(s["alone"], s["log_marginal"], **TOL)
    np.testing.assert_allclose(s["increments"].sum(), s["log_marginal"], **TOL)
    assert np.all(np.asarray(s["increments"])[~mask.any(-1)] == 0.0)
    symmetric = np.asarray(s["smoothed_covariances"])
    np.testing.assert_allclose(symmetric, np.swapaxes(symmetric, -1, -2), **TOL)
    assert np.all(np.linalg.eigvalsh(symmetric) > -1e-10)

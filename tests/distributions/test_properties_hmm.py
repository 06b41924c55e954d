"""Property-based tests of DiscreteHMM and its ops (hypothesis): shapes, masks, schedules.

Random K, T, batch shapes, homogeneous or time-varying parameters, masks (all-masked and
single-step sequences included) and NaN at masked steps. One jitted function evaluates both
schedules and the gradients of a drawn model, so each shape compiles once and the other
examples of that shape reuse it; shapes come from small sets. Properties:

- serial equals parallel (log-probability, increments, smoothed marginals);
- the log-probability is the sum of the per-step increments, which are zero at masked steps;
- masking a step equals deleting it (composing the transitions across it), and leaves the
  increments of the earlier steps unchanged; its value (or a NaN there) changes nothing;
- padding a sequence with masked steps leaves its log-probability and marginals unchanged;
- an all-masked sequence has log-probability 0 (to rounding) and the prior marginals;
- gradients are finite, and zero with respect to masked observations.
"""

import functools

import jax
import numpy as np
import numpyro.distributions as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from property_settings import property_settings

from numpyro_ssm import DiscreteHMM

SETTINGS = property_settings(8)
TOL = dict(rtol=1e-9, atol=1e-10)
PADDED_STEPS = 4


@st.composite
def hmm_cases(draw, min_steps=1):
    """``(params, y, mask)``: a random Gaussian-emission HMM, data and mask (numpy, x64)."""
    K = draw(st.sampled_from([1, 3]))
    # deleting a step and padding to PADDED_STEPS stay within these lengths (few compilations)
    T = draw(st.sampled_from([s for s in (1, 2, 3) if s >= min_steps]))
    batch = draw(st.sampled_from([(), (2,)]))
    tv_trans = T > 1 and draw(st.booleans())
    tv_emission = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lead = batch + ((1,) if batch else ())  # (B, 1, ...): a batch of homogeneous parameters
    params = {
        "init": rng.dirichlet(np.ones(K), size=batch),
        "trans": rng.dirichlet(np.ones(K), size=(batch + (T - 1,) if tv_trans else lead) + (K,)),
        "loc": 2 * rng.normal(size=(batch + (T,) if tv_emission else lead) + (K,)),
        "scale": rng.uniform(0.5, 2.0, size=K),
    }
    mask = np.array(draw(st.lists(st.booleans(), min_size=T, max_size=T)))
    mask = np.broadcast_to(mask, batch + (T,)).copy()
    if batch and draw(st.booleans()):  # ragged: the second series misses other steps
        mask[1] = draw(st.lists(st.booleans(), min_size=T, max_size=T))
    y = rng.normal(size=batch + (T,)) * 2
    if draw(st.booleans()):
        y = np.where(mask, y, np.nan)  # NaN at masked steps must change nothing
    return params, y, mask


def _hmm(p, mask, parallel):
    return DiscreteHMM(
        p["init"],
        p["trans"],
        dist.Normal(p["loc"], p["scale"]),
        num_steps=mask.shape[-1],  # a length-1 axis reads as homogeneous, not as T = 1
        obs_mask=mask,
        parallel=parallel,
    )


SCHEDULES = (("serial", False), ("parallel", True))
SERIAL = SCHEDULES[:1]  # the masking and padding properties need one schedule only


@functools.partial(jax.jit, static_argnames="schedules")
def evaluate(params, y, mask, schedules=SCHEDULES):
    """Both schedules' ``(log-probability, increments, smoothed marginals)``."""
    out = {}
    for name, parallel in schedules:
        hmm = _hmm(params, mask, parallel)
        post = hmm.smooth(y)
        out[name] = (hmm.log_prob(y), post.log_likelihood_increments, post.smoothed_probs)
    return out


@jax.jit
def gradients(params, y, mask):
    """Both schedules' gradients of the summed log-probability, ``(params, y)``."""
    out = {}
    for name, parallel in (("serial", False), ("parallel", True)):

        def log_prob(p, y, parallel=parallel):
            return _hmm(p, mask, parallel).log_prob(y).sum()

        out[name] = jax.grad(log_prob, argnums=(0, 1))(params, y)
    return out


def _full(params, T):
    """``(init (..., K), trans (..., T - 1, K, K), loc (..., T, K))`` with every axis spelt out."""
    init, trans, loc = (np.asarray(params[k]) for k in ("init", "trans", "loc"))
    K = init.shape[-1]
    trans = trans[None] if trans.ndim == 2 else trans
    loc = loc[None] if loc.ndim == 1 else loc
    batch = np.broadcast_shapes(init.shape[:-1], trans.shape[:-3], loc.shape[:-2])
    trans_steps = max(T - 1, 1) if trans.shape[-3] == 1 else trans.shape[-3]
    return (
        np.broadcast_to(init, batch + (K,)),
        np.broadcast_to(trans, batch + (trans_steps, K, K))[..., : T - 1, :, :],
        np.broadcast_to(loc, batch + (T, K)),
    )


def _with(params, init, trans, loc):
    """The same model with these (full) arrays; a single step keeps a dummy transition."""
    K = init.shape[-1]
    if trans.shape[-3] == 0:
        trans = np.broadcast_to(np.eye(K), trans.shape[:-3] + (1, K, K))
    return dict(params, init=init, trans=trans, loc=loc)


def test_single_step_and_homogeneous_shapes_examples():
    """The small sets of shapes above do include the corner cases (a sanity check)."""
    seen = set()

    @settings(max_examples=60, database=None, derandomize=True, deadline=None)
    @given(hmm_cases())
    def collect(case):
        params, y, mask = case
        seen.add((y.shape[-1], mask.any(), mask.all(), np.asarray(params["trans"]).ndim))

    collect()
    assert {t for t, *_ in seen} == {1, 2, 3}
    assert any(not any_ for _, any_, _, _ in seen) and any(all_ for _, _, all_, _ in seen)


@SETTINGS
@given(hmm_cases())
def test_schedules_agree_increments_sum_and_gradients_are_finite(case):
    params, y, mask = case
    out = evaluate(params, y, mask)
    for a, b in zip(out["serial"], out["parallel"], strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    log_prob, increments, smoothed = (np.asarray(x) for x in out["serial"])
    np.testing.assert_allclose(log_prob, increments.sum(-1), **TOL)
    assert np.all(increments[~mask] == 0.0)
    np.testing.assert_allclose(smoothed.sum(-1), 1.0, **TOL)
    for grads, grad_y in gradients(params, y, mask).values():
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        assert np.all(np.isfinite(grad_y)) and np.all(np.asarray(grad_y)[~mask] == 0.0)
    all_masked = ~mask.any(-1)
    if all_masked.any():  # nothing observed: log p = 0 and the marginals are the prior's
        init, trans, _ = _full(params, y.shape[-1])
        prior = [init]
        for t in range(y.shape[-1] - 1):
            prior.append((prior[-1][..., None, :] @ trans[..., t, :, :])[..., 0, :])
        prior = np.broadcast_to(np.stack(prior, axis=-2), smoothed.shape)
        np.testing.assert_allclose(log_prob[all_masked], 0.0, atol=1e-12)  # to rounding
        np.testing.assert_allclose(smoothed[all_masked], prior[all_masked], **TOL)


@SETTINGS
@given(hmm_cases(min_steps=2), st.data())
def test_masking_a_step_equals_deleting_it(case, data):
    params, y, mask = case
    T = y.shape[-1]
    t = data.draw(st.integers(0, T - 1), label="masked step")
    mask = mask.copy()
    mask[..., t] = False
    y = np.where(mask, y, np.nan)
    # the value at a masked step changes nothing
    out = evaluate(params, y, mask, SERIAL)
    other = evaluate(params, np.where(mask, y, 7.5), mask, SERIAL)
    for a, b in zip(out["serial"], other["serial"], strict=True):
        np.testing.assert_array_equal(a, b)
    # deleting the step: the chain jumps across it with the product of the two transitions
    init, trans, loc = _full(params, T)
    if t == 0:
        init = (init[..., None, :] @ trans[..., 0, :, :])[..., 0, :]
        trans = trans[..., 1:, :, :]
    elif t < T - 1:
        jump = trans[..., t - 1, :, :] @ trans[..., t, :, :]
        trans = np.concatenate(
            [trans[..., : t - 1, :, :], jump[..., None, :, :], trans[..., t + 1 :, :, :]], -3
        )
    else:
        trans = trans[..., :-1, :, :]
    shorter = _with(params, init, trans, np.delete(loc, t, axis=-2))
    deleted = evaluate(shorter, np.delete(y, t, axis=-1), np.delete(mask, t, axis=-1), SERIAL)
    log_prob, increments, smoothed = out["serial"]
    np.testing.assert_allclose(log_prob, deleted["serial"][0], **TOL)
    np.testing.assert_allclose(np.delete(increments, t, axis=-1), deleted["serial"][1], **TOL)
    np.testing.assert_allclose(np.delete(smoothed, t, axis=-2), deleted["serial"][2], **TOL)
    # the earlier steps' increments do not see the masking
    unmasked = evaluate(params, case[1], case[2], SERIAL)
    np.testing.assert_allclose(increments[..., :t], unmasked["serial"][1][..., :t], **TOL)


@SETTINGS
@given(hmm_cases(), st.integers(0, 2**32 - 1))
def test_padding_with_masked_steps_changes_nothing(case, seed):
    params, y, mask = case
    rng = np.random.default_rng(seed)
    T = y.shape[-1]
    pad = PADDED_STEPS - T
    init, trans, loc = _full(params, T)
    K, batch = init.shape[-1], init.shape[:-1]
    trans = np.concatenate([trans, rng.dirichlet(np.ones(K), size=batch + (pad, K))], axis=-3)
    loc = np.concatenate([loc, rng.normal(size=batch + (pad, K))], axis=-2)
    padded_y = np.concatenate(
        [np.broadcast_to(y, batch + (T,)), rng.normal(size=batch + (pad,))], -1
    )
    padded_mask = np.concatenate(
        [np.broadcast_to(mask, batch + (T,)), np.zeros(batch + (pad,), bool)], -1
    )
    out = evaluate(params, y, mask, SERIAL)
    padded = evaluate(_with(params, init, trans, loc), padded_y, padded_mask, SERIAL)
    log_prob, increments, smoothed = out["serial"]
    np.testing.assert_allclose(padded["serial"][0], log_prob, **TOL)
    np.testing.assert_allclose(padded["serial"][1][..., :T], increments, **TOL)
    np.testing.assert_array_equal(padded["serial"][1][..., T:], 0.0)
    np.testing.assert_allclose(padded["serial"][2][..., :T, :], smoothed, **TOL)

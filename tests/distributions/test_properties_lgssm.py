"""Property-based tests of LinearGaussianSSM and its Kalman ops (hypothesis).

Random state and observation sizes, T, batch shapes, homogeneous or time-varying parameters,
entry masks (all-masked and single-step sequences included) and NaN at masked entries. One
jitted function evaluates both schedules of a drawn model and another the gradients, so each
shape compiles once; shapes come from small sets. Properties:

- serial equals parallel (log-probability, increments, smoothed means and covariances);
- the log-probability is the sum of the per-step increments, zero at fully masked steps;
- masking a whole step equals deleting it (composing the transitions across it:
  ``F' = F_t F_{t-1}``, ``b' = F_t b_{t-1} + b_t``, ``Q' = F_t Q_{t-1} F_tᵀ + Q_t``), and leaves
  the earlier steps' increments unchanged; a masked entry's value (or a NaN) changes nothing;
- padding a sequence with masked steps leaves its log-probability and smoothed moments unchanged;
- an all-masked sequence has log-probability exactly 0 and the prior state means;
- gradients are finite, and zero with respect to masked observations.
"""

import functools

import jax
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from property_settings import property_settings

from numpyro_ssm import LinearGaussianSSM

SETTINGS = property_settings(6)
TOL = dict(rtol=1e-8, atol=1e-9)
PADDED_STEPS = 4
TRANSITION = ("F", "Q", "b")
EMISSION = ("H", "R", "d")


def _spd(rng, size, n):
    a = rng.normal(size=size + (n, n)) * 0.4
    return a @ np.swapaxes(a, -1, -2) + 0.3 * np.eye(n)


@st.composite
def lgssm_cases(draw, min_steps=1):
    """``(params, y, mask)``: a random LG-SSM (covariance form), data and entry mask."""
    # few shapes, so that few compilations serve every example: deleting a step of T = 3
    # gives 2, padding gives PADDED_STEPS
    S, D = draw(st.sampled_from([(1, 2), (2, 1)]))
    T = draw(st.sampled_from([s for s in (1, 3) if s >= min_steps]))
    batch = draw(st.sampled_from([(), (2,)]))
    tv_emission = draw(st.booleans())
    tv_transition = T > 1 and tv_emission
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lead = batch + ((1,) if batch else ())  # (B, 1, ...): a batch of homogeneous parameters
    trans = batch + (T - 1,) if tv_transition else lead
    emit = batch + (T,) if tv_emission else lead
    params = {
        "m0": rng.normal(size=batch + (S,)),
        "P0": _spd(rng, batch, S),
        "F": rng.normal(size=trans + (S, S)) * 0.6,
        "Q": _spd(rng, trans, S),
        "b": rng.normal(size=trans + (S,)) * 0.5,
        "H": rng.normal(size=emit + (D, S)),
        "R": _spd(rng, emit, D),
        "d": rng.normal(size=emit + (D,)),
    }
    mask = np.array(draw(st.lists(st.booleans(), min_size=T * D, max_size=T * D))).reshape(T, D)
    mask = np.broadcast_to(mask, batch + (T, D)).copy()
    if batch and draw(st.booleans()):  # ragged: the second series misses other entries
        mask[1] = np.reshape(draw(st.lists(st.booleans(), min_size=T * D, max_size=T * D)), (T, D))
    y = rng.normal(size=batch + (T, D)) * 2
    if draw(st.booleans()):
        y = np.where(mask, y, np.nan)  # NaN at masked entries must change nothing
    return params, y, mask


def _ssm(p, mask, parallel):
    return LinearGaussianSSM(
        p["m0"],
        p["F"],
        p["H"],
        initial_cov=p["P0"],
        transition_cov=p["Q"],
        emission_cov=p["R"],
        transition_bias=p["b"],
        emission_bias=p["d"],
        num_steps=mask.shape[-2],  # a length-1 axis reads as homogeneous, not as T = 1
        obs_mask=mask,
        parallel=parallel,
    )


SCHEDULES = (("serial", False), ("parallel", True))
SERIAL = SCHEDULES[:1]  # the masking and padding properties need one schedule only


@functools.partial(jax.jit, static_argnames="schedules")
def evaluate(params, y, mask, schedules=SCHEDULES):
    """Both schedules' ``(log-probability, increments, smoothed means, smoothed covariances)``."""
    out = {}
    for name, parallel in schedules:
        ssm = _ssm(params, mask, parallel)
        post = ssm.smooth(y)
        out[name] = (
            ssm.log_prob(y),
            post.log_likelihood_increments,
            post.smoothed_means,
            post.smoothed_covariances,
        )
    return out


@jax.jit
def gradients(params, y, mask):
    """Both schedules' gradients of the summed log-probability, ``(params, y)``."""
    out = {}
    for name, parallel in (("serial", False), ("parallel", True)):

        def log_prob(p, y, parallel=parallel):
            return _ssm(p, mask, parallel).log_prob(y).sum()

        out[name] = jax.grad(log_prob, argnums=(0, 1))(params, y)
    return out


CORE = {"m0": 1, "P0": 2, "F": 2, "Q": 2, "b": 1, "H": 2, "R": 2, "d": 1}


def _full(params, T, batch):
    """The parameters with their batch and time axes spelt out (``T - 1`` transitions)."""
    out = {}
    for k, a in params.items():
        a = np.asarray(a)
        core = a.shape[a.ndim - CORE[k] :]
        if k in ("m0", "P0"):
            out[k] = np.broadcast_to(a, batch + core)
            continue
        a = a[None] if a.ndim == CORE[k] else a
        steps = T - 1 if k in TRANSITION else T
        out[k] = np.broadcast_to(a, batch + (steps,) + core)
    return out


def _with_dummy_transition(full):
    """A single step keeps one (unused) transition: a zero-length time axis is not allowed."""
    if full["F"].shape[-3] > 0:
        return full
    batch, S = full["m0"].shape[:-1], full["m0"].shape[-1]
    eye = np.broadcast_to(np.eye(S), batch + (1, S, S))
    return dict(full, F=eye, Q=eye, b=np.zeros(batch + (1, S)))


def _check_close(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, **TOL)


@SETTINGS
@given(lgssm_cases())
def test_schedules_agree_increments_sum_and_gradients_are_finite(case):
    params, y, mask = case
    out = evaluate(params, y, mask)
    _check_close(out["serial"], out["parallel"])
    log_prob, increments, means, _ = (np.asarray(x) for x in out["serial"])
    np.testing.assert_allclose(log_prob, increments.sum(-1), **TOL)
    step_observed = mask.any(-1)
    assert np.all(increments[~step_observed] == 0.0)
    for grads, grad_y in gradients(params, y, mask).values():
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        assert np.all(np.isfinite(grad_y)) and np.all(np.asarray(grad_y)[~mask] == 0.0)
    nothing = ~step_observed.any(-1)
    if nothing.any():  # nothing observed: log p = 0 exactly and the prior state means
        T, batch = y.shape[-2], y.shape[:-2]
        full = _full(params, T, batch)
        prior = [full["m0"]]
        for t in range(T - 1):
            prior.append(np.einsum("...ij,...j->...i", full["F"][..., t, :, :], prior[-1]))
            prior[-1] = prior[-1] + full["b"][..., t, :]
        prior = np.stack(prior, axis=-2)
        np.testing.assert_array_equal(log_prob[nothing], 0.0)
        np.testing.assert_allclose(means[nothing], prior[nothing], **TOL)


@SETTINGS
@given(lgssm_cases(min_steps=2), st.data())
def test_masking_a_step_equals_deleting_it(case, data):
    params, y, mask = case
    T, batch = y.shape[-2], y.shape[:-2]
    t = data.draw(st.integers(0, T - 1), label="masked step")
    mask = mask.copy()
    mask[..., t, :] = False
    y = np.where(mask, y, np.nan)
    # a masked entry's value changes nothing
    out = evaluate(params, y, mask, SERIAL)
    other = evaluate(params, np.where(mask, y, 7.5), mask, SERIAL)
    for a, b in zip(out["serial"], other["serial"], strict=True):
        np.testing.assert_array_equal(a, b)
    # deleting the step: the state jumps across it with the composed transition
    full = _full(params, T, batch)
    F, Q, b = full["F"], full["Q"], full["b"]
    tr = lambda x: np.swapaxes(x, -1, -2)  # noqa: E731
    if t == 0:
        full["m0"] = np.einsum("...ij,...j->...i", F[..., 0, :, :], full["m0"]) + b[..., 0, :]
        full["P0"] = F[..., 0, :, :] @ full["P0"] @ tr(F[..., 0, :, :]) + Q[..., 0, :, :]
        full.update(F=F[..., 1:, :, :], Q=Q[..., 1:, :, :], b=b[..., 1:, :])
    elif t < T - 1:
        Ft, Fp = F[..., t, :, :], F[..., t - 1, :, :]
        merged = {
            "F": Ft @ Fp,
            "Q": Ft @ Q[..., t - 1, :, :] @ tr(Ft) + Q[..., t, :, :],
            "b": np.einsum("...ij,...j->...i", Ft, b[..., t - 1, :]) + b[..., t, :],
        }
        for k, m in merged.items():
            a = full[k]
            axis = a.ndim - CORE[k] - 1
            head = np.take(a, np.arange(t - 1), axis=axis)
            tail = np.take(a, np.arange(t + 1, T - 1), axis=axis)
            full[k] = np.concatenate([head, np.expand_dims(m, axis), tail], axis=axis)
    else:
        full.update(F=F[..., :-1, :, :], Q=Q[..., :-1, :, :], b=b[..., :-1, :])
    for k in EMISSION:
        full[k] = np.delete(full[k], t, axis=full[k].ndim - CORE[k] - 1)
    shorter = _with_dummy_transition(full)
    deleted = evaluate(shorter, np.delete(y, t, axis=-2), np.delete(mask, t, axis=-2), SERIAL)
    log_prob, increments, means, covs = out["serial"]
    np.testing.assert_allclose(log_prob, deleted["serial"][0], **TOL)
    np.testing.assert_allclose(np.delete(increments, t, axis=-1), deleted["serial"][1], **TOL)
    np.testing.assert_allclose(np.delete(means, t, axis=-2), deleted["serial"][2], **TOL)
    np.testing.assert_allclose(np.delete(covs, t, axis=-3), deleted["serial"][3], **TOL)
    # the earlier steps' increments do not see the masking
    unmasked = evaluate(params, case[1], case[2], SERIAL)
    np.testing.assert_allclose(increments[..., :t], unmasked["serial"][1][..., :t], **TOL)


@SETTINGS
@given(lgssm_cases(), st.integers(0, 2**32 - 1))
def test_padding_with_masked_steps_changes_nothing(case, seed):
    params, y, mask = case
    rng = np.random.default_rng(seed)
    T, batch = y.shape[-2], y.shape[:-2]
    pad = PADDED_STEPS - T
    full = _full(params, T, batch)
    for k in TRANSITION + EMISSION:  # any parameters for the padded steps
        a = full[k]
        extra = rng.normal(size=batch + (pad,) + a.shape[a.ndim - CORE[k] :])
        if k in ("Q", "R"):
            extra = extra @ np.swapaxes(extra, -1, -2) + np.eye(extra.shape[-1])
        full[k] = np.concatenate([a, extra], axis=a.ndim - CORE[k] - 1)
    padded_y = np.concatenate([y, rng.normal(size=batch + (pad, y.shape[-1]))], axis=-2)
    padded_mask = np.concatenate([mask, np.zeros(batch + (pad, y.shape[-1]), bool)], axis=-2)
    out = evaluate(params, y, mask, SERIAL)["serial"]
    padded = evaluate(full, padded_y, padded_mask, SERIAL)["serial"]
    np.testing.assert_allclose(padded[0], out[0], **TOL)
    np.testing.assert_allclose(padded[1][..., :T], out[1], **TOL)
    np.testing.assert_array_equal(padded[1][..., T:], 0.0)
    np.testing.assert_allclose(padded[2][..., :T, :], out[2], **TOL)
    np.testing.assert_allclose(padded[3][..., :T, :, :], out[3], **TOL)

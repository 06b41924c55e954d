"""What a new user hit in the first hour (issue 17, section 3): one regression test per report.

Each test failed on the code before the fix (commit 9b3385d): a rejected singular factor, a
reason-less constraint error, shape errors that blamed the wrong argument, a float mask silently
reinterpreted, rejected ``-inf`` logits, complex numbers accepted or failing inside a scan,
``forecast`` without logits, ``DiscreteHMM.mean`` missing.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import log_density
from oracles import dense_log_marginal

from numpyro_ssm import DiscreteHMM, LinearGaussianSSM

jax.config.update("jax_enable_x64", True)

A = jnp.array([[0.9, 0.1], [0.2, 0.8]])
PI = jnp.array([0.5, 0.5])
RATES = jnp.array([1.0, 5.0])
Y = jnp.array([0.0, 1, 4, 6, 5, 0, 1, 2, 3, 4])
T = Y.shape[0]


def hmm(**kwargs):
    kwargs = {"num_steps": T, **kwargs}
    return DiscreteHMM(PI, A, dist.Poisson(RATES), **kwargs)


def trend(level_sd=0.0, **kwargs):
    """A local linear trend whose level has no noise: its Q has a zero on the diagonal."""
    return LinearGaussianSSM(
        jnp.zeros(2),
        jnp.array([[1.0, 1.0], [0.0, 1.0]]),
        jnp.array([[1.0, 0.0]]),
        initial_cov=jnp.eye(2),
        transition_scale_tril=jnp.diag(jnp.array([level_sd, 0.1])),
        emission_cov=jnp.eye(1),
        num_steps=T,
        **kwargs,
    )


# -- singular factors are accepted wherever the docs allow them ------------------------------------


def test_singular_transition_factor_passes_validation_and_survives_forecast():
    ssm = trend(validate_args=True)
    params = {
        "initial_mean": np.zeros(2),
        "initial_scale_tril": np.eye(2),
        "transition_matrix": np.array([[1.0, 1.0], [0.0, 1.0]]),
        "transition_scale_tril": np.diag([0.0, 0.1]),
        "emission_matrix": np.array([[1.0, 0.0]]),
        "emission_scale_tril": np.eye(1),
    }
    y = Y[:, None]
    np.testing.assert_allclose(ssm.log_prob(y), dense_log_marginal(params, np.asarray(y)))
    future = ssm.forecast(y, 3)
    assert future._validate_args  # the derived distribution keeps the parent's setting
    assert np.isfinite(future.mean).all()
    assert not trend(validate_args=False).forecast(y, 3)._validate_args
    assert hmm(validate_args=True).forecast(Y, 3)._validate_args


def test_negative_diagonal_is_still_rejected_with_the_entry():
    expected = r"transition_scale_tril.*non-negative.*entries \(0,\) are \[-0.5\]"
    with pytest.raises(ValueError, match=expected):
        trend(level_sd=-0.5, validate_args=True)


# -- constraint failures say why -------------------------------------------------------------------


def test_constraint_errors_name_the_row_and_the_entry():
    bad_rows = jnp.array([[0.9, 0.2], [0.2, 0.8]])
    with pytest.raises(ValueError, match=r"transition_matrix.*row \(0,\) sums to 1\.1"):
        DiscreteHMM(PI, bad_rows, dist.Poisson(RATES), num_steps=T, validate_args=True)
    with pytest.raises(ValueError, match=r"initial_probs.*negative.*\(1,\)"):
        DiscreteHMM(jnp.array([1.2, -0.2]), A, dist.Poisson(RATES), num_steps=T, validate_args=True)
    with pytest.raises(ValueError, match=r"emission_cov.*smallest eigenvalue is -1"):
        LinearGaussianSSM(
            jnp.zeros(1),
            jnp.eye(1),
            jnp.eye(1),
            initial_cov=jnp.eye(1),
            transition_cov=jnp.eye(1),
            emission_cov=-jnp.eye(1),
            num_steps=T,
            validate_args=True,
        )


# -- shape errors name the argument at fault -------------------------------------------------------


def test_obs_mask_of_the_wrong_length_is_an_obs_mask_error():
    # T read from the mask alone, then data of another length: the error says where T came from
    with pytest.raises(ValueError, match=r"T=9 from obs_mask"):
        DiscreteHMM(PI, A, dist.Poisson(RATES), obs_mask=jnp.ones(9, bool)).log_prob(Y)
    with pytest.raises(ValueError, match=r"^obs_mask has shape \(9,\)"):
        hmm(obs_mask=jnp.ones(9, bool))
    with pytest.raises(ValueError, match=r"^obs_mask has shape \(10, 3\)"):  # (T, B): transposed
        hmm(obs_mask=jnp.ones((10, 3), bool))
    with pytest.raises(ValueError, match=r"T=9 from obs_mask"):
        LinearGaussianSSM(
            jnp.zeros(1),
            jnp.eye(1),
            jnp.eye(1),
            initial_cov=jnp.eye(1),
            transition_cov=jnp.eye(1),
            emission_cov=jnp.eye(1),
            obs_mask=jnp.ones((9, 1), bool),
        ).log_prob(Y[:, None])


@pytest.mark.parametrize("family", ["hmm", "lgssm"])
def test_obs_mask_against_a_plate_is_named(family):
    def model():
        with numpyro.plate("series", 3):
            mask = jnp.ones((4, T) if family == "hmm" else (4, T, 1), bool)  # 4 series, plate 3
            d = hmm(obs_mask=mask) if family == "hmm" else trend(obs_mask=mask, level_sd=0.1)
            numpyro.sample("y", d, obs=jnp.ones((3, T) if family == "hmm" else (3, T, 1)))

    with pytest.raises(ValueError, match=r"obs_mask has batch shape \(4,\).*plate 'series'"):
        log_density(model, (), {}, {})


def test_emission_without_its_k_axis_or_transposed_names_emission_dist():
    with pytest.raises(ValueError, match=r"^emission_dist must have the K=2 states.*\(\)"):
        DiscreteHMM(PI, A, dist.Poisson(3.0), num_steps=T)
    with pytest.raises(ValueError, match=r"^emission_dist.*\(2, 10\).*not \(K, T\)"):
        DiscreteHMM(PI, A, dist.Poisson(jnp.ones((2, T))))


@pytest.mark.parametrize("mask", [jnp.array([1.0, 0.5] * 5), jnp.array([1, 0] * 5)])
def test_non_boolean_obs_mask_is_rejected_not_reinterpreted(mask):
    with pytest.raises(ValueError, match="obs_mask must be a bool array"):
        hmm(obs_mask=mask)
    with pytest.raises(ValueError, match="obs_mask must be a bool array"):
        trend(obs_mask=mask[:, None], level_sd=0.1)


# -- structural zeros as -inf logits ---------------------------------------------------------------


def test_minus_infinity_logits_are_structural_zeros():
    logits = jnp.log(jnp.array([[1.0, 0.0], [0.3, 0.7]]))  # -inf in row 0
    initial = jnp.array([0.0, -jnp.inf])
    with_logits = DiscreteHMM(
        initial_logits=initial,
        transition_logits=logits,
        emission_dist=dist.Poisson(RATES),
        num_steps=T,
        validate_args=True,
    )
    with_probs = DiscreteHMM(
        jnp.array([1.0, 0.0]), jnp.exp(logits), dist.Poisson(RATES), num_steps=T
    )
    np.testing.assert_allclose(with_logits.log_prob(Y), with_probs.log_prob(Y), rtol=1e-12)
    grad = jax.grad(
        lambda r: DiscreteHMM(
            initial_logits=initial,
            transition_logits=logits,
            emission_dist=dist.Poisson(r),
            num_steps=T,
        ).log_prob(Y)
    )(RATES)
    assert np.isfinite(grad).all()
    with pytest.raises(ValueError, match=r"transition_logits.*no finite entry"):
        DiscreteHMM(
            initial_logits=initial,
            transition_logits=jnp.full((2, 2), -jnp.inf),
            emission_dist=dist.Poisson(RATES),
            num_steps=T,
            validate_args=True,
        )


# -- complex numbers -------------------------------------------------------------------------------


def test_complex_inputs_raise_naming_the_argument():
    with pytest.raises(TypeError, match="DiscreteHMM: observations is complex"):
        hmm().log_prob(Y.astype(complex))
    with pytest.raises(TypeError, match="DiscreteHMM: transition_matrix is complex"):
        DiscreteHMM(PI, A.astype(complex), dist.Poisson(RATES), num_steps=T)
    with pytest.raises(TypeError, match="LinearGaussianSSM: observations is complex"):
        trend(level_sd=0.1).log_prob(Y[:, None].astype(complex))
    with pytest.raises(TypeError, match="LinearGaussianSSM: initial_mean is complex"):
        LinearGaussianSSM(
            jnp.zeros(1, complex),
            jnp.eye(1),
            jnp.eye(1),
            initial_cov=jnp.eye(1),
            transition_cov=jnp.eye(1),
            emission_cov=jnp.eye(1),
            num_steps=T,
        )


# -- forecast with logits; the HMM's marginal moments ---------------------------------------------


def test_forecast_accepts_transition_logits():
    future = jnp.array([[0.5, 0.5], [0.1, 0.9]])
    a = hmm().forecast(Y, 4, transition_matrix=future)
    b = hmm().forecast(Y, 4, transition_logits=jnp.log(future) + 3.0)  # unnormalized
    np.testing.assert_allclose(a.log_prob(Y[:4]), b.log_prob(Y[:4]), rtol=1e-12)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    with pytest.raises(ValueError, match="at most one of transition_matrix and transition_logits"):
        hmm().forecast(Y, 4, transition_matrix=future, transition_logits=future)


def _enumerated_moments(initial, trans, means, variances, num_steps):
    """E[y_t] and Var[y_t] by summing over all K^T state paths (independent of the code)."""
    K = len(initial)
    first, second = np.zeros(num_steps), np.zeros(num_steps)
    for path in itertools.product(range(K), repeat=num_steps):
        p = initial[path[0]] * np.prod([trans[i, j] for i, j in itertools.pairwise(path)])
        m = means[list(path)]
        first += p * m
        second += p * (variances[list(path)] + m**2)
    return first, second - first**2


@pytest.mark.parametrize("emission", ["poisson", "normal-time-varying"])
def test_hmm_mean_and_variance_match_enumeration(emission):
    initial, trans, num_steps = np.array([0.3, 0.7]), np.array([[0.6, 0.4], [0.1, 0.9]]), 5
    if emission == "poisson":
        d = dist.Poisson(jnp.array([2.0, 9.0]))
        means = variances = np.array([2.0, 9.0])
        means, variances = (
            np.broadcast_to(means, (num_steps, 2)),
            np.broadcast_to(variances, (num_steps, 2)),
        )
    else:
        locs = np.arange(num_steps * 2.0).reshape(num_steps, 2)
        scales = np.array([0.5, 2.0])
        d = dist.Normal(jnp.asarray(locs), jnp.asarray(scales))
        means, variances = locs, np.broadcast_to(scales**2, (num_steps, 2))
    model = DiscreteHMM(initial, trans, d, num_steps=num_steps)
    exp_mean, exp_var = np.zeros(num_steps), np.zeros(num_steps)
    for t in range(num_steps):  # enumerate with the step's own emission moments
        m, v = _enumerated_moments(initial, trans, means[t], variances[t], num_steps)
        exp_mean[t], exp_var[t] = m[t], v[t]
    np.testing.assert_allclose(model.mean, exp_mean, rtol=1e-12)
    np.testing.assert_allclose(model.variance, exp_var, rtol=1e-12)

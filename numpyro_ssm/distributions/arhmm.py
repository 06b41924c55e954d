r"""``AutoregressiveHMM``: K switched vector autoregressions, the state path marginalized exactly.

.. math::

    z_1 \sim \mathrm{Cat}(\pi), \quad z_{t+1} \mid z_t \sim \mathrm{Cat}(P_t[z_t]), \quad
    y_t \mid z_t = k, y_{1:t-1} \sim
    \mathcal N\big(A_k [y_{t-1}; \dots; y_{t-L}] + b_k,\; Q_k\big).

``log_prob`` runs the HMM forward algorithm of :mod:`numpyro_ssm.ops.hmm` on the ``(T, K)``
array of autoregressive log-likelihoods (:mod:`numpyro_ssm.ops.switching.autoregression`).

**The first L observations** have no complete lags. Three conventions, chosen by the
arguments, never a silent zero padding:

- neither ``initial_lags`` nor ``initial_emission_dist`` (the default): the first ``L``
  observations are *conditioned on*, as jax_moseq does by dropping them: ``log_prob(y) = log
  p(y_{L+1:T} | y_{1:L})``. The chain still runs over all ``T`` steps (its first ``L`` states
  are informed by the transitions only), so every latent output has ``T`` steps. Such a model
  cannot draw its own first ``L`` observations: ``sample`` raises.
- ``initial_emission_dist``: an explicit initial distribution, ``y_t | z_t = k ~
  initial_emission_dist[k]`` for ``t <= L``; every step counts.
- ``initial_lags``: the ``L`` observations before ``y_1`` are given (``y_{1-L}, ..., y_0``);
  every step counts. dynamax's ``LinearAutoregressiveHMM`` pads with zeros, which is
  ``initial_lags=zeros`` here, explicitly. Forecasts are models of this kind.

**Missing data.** ``obs_mask[t] = False`` or a NaN in ``y_t`` marks ``y_t`` missing: it does not
count, and the next ``L`` steps, whose lags it belongs to, do not count either (their
likelihood would need the missing value integrated out). After a gap the likelihood
conditions on the first ``L`` observations again, as at the start. Padding at the end of a
ragged batch (:func:`~numpyro_ssm.pad_sequences`) is therefore exact.
"""

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions import constraints

from numpyro_ssm.distributions._arhmm_shapes import arhmm_shapes
from numpyro_ssm.distributions._hmm_posterior import HMMPosteriorMixin
from numpyro_ssm.distributions._markov_chain import MarkovChainMixin
from numpyro_ssm.distributions._shapes import check_plates
from numpyro_ssm.distributions._ssm import StateSpaceModel
from numpyro_ssm.distributions._validation import (
    check_bool_mask,
    check_real,
    log_probability_vector,
    validate_concrete_args,
)
from numpyro_ssm.ops import hmm as hmm_ops
from numpyro_ssm.ops.linalg import cholesky
from numpyro_ssm.ops.switching.autoregression import (
    ARParams,
    ar_log_likelihoods,
    lag_matrix,
    lagged_step_mask,
)
from numpyro_ssm.ops.switching.moments import arhmm_moments

__all__ = ["AutoregressiveHMM"]


def _shape(x):
    if x is None:
        return None
    return tuple(x) if isinstance(x, tuple) else jnp.shape(x)


class AutoregressiveHMM(HMMPosteriorMixin, MarkovChainMixin, StateSpaceModel):
    r"""Autoregressive hidden Markov model: an L-lag vector AR emission per discrete state.

    .. math::

        z_1 \sim \mathrm{Cat}(\pi),\quad z_{t+1} \mid z_t \sim \mathrm{Cat}(P_t[z_t]),\quad
        y_t \mid z_t = k \sim \mathcal N\Big(\sum_{l=1}^{L} A_{k,l}\, y_{t-l} + b_k,\; Q_k\Big),

    with the path summed out exactly in ``log_prob``. The first ``L`` observations follow one of
    three conventions (module docstring): conditioned on (default), ``initial_emission_dist``,
    or ``initial_lags``.

    Args:
        initial_probs: shape ``(..., K)``, ``p(z_1 = k)``. Or give ``initial_logits``.
        transition_matrix: shape ``(K, K)`` or ``(..., T - 1 | 1, K, K)``,
            ``[t, i, j] = p(z_{t+1} = j | z_t = i)``. Or give ``transition_logits``.
        ar_matrix: shape ``(..., K, D, L D)``, ``A_k = [A_{k,1}, ..., A_{k,L}]``: block ``l``
            multiplies ``y_{t-l}`` (most recent lag first). ``L`` is read from the shape. The
            AR parameters do not vary over time: their leading axes are batch axes.
        ar_bias: shape ``(..., K, D)``, ``b_k``; zeros by default.
        ar_cov: shape ``(..., K, D, D)``, ``Q_k`` (positive definite). Or give
            ``ar_scale_tril``.
        ar_scale_tril: shape ``(..., K, D, D)``, lower-triangular ``chol(Q_k)``.
        initial_logits: shape ``(..., K)``, instead of ``initial_probs``.
        transition_logits: like ``transition_matrix``, unnormalized log-probabilities.
        initial_lags: shape ``(..., L, D)``, the observations ``y_{1-L}, ..., y_0`` before the
            series, in time order (given, not modeled).
        initial_emission_dist: a NumPyro distribution with batch shape ``(..., K)`` and event
            shape ``(D,)``: ``y_t | z_t = k`` for ``t <= L``.
        num_steps: ``T``; required when neither ``obs_mask`` nor a time-varying transition
            matrix carries it.
        obs_mask: bool, shape ``(..., T)``, True where ``y_t`` is observed (see the module
            docstring for what a missing step does to the next ``L`` steps).
        parallel: use the O(log T)-depth associative scans.
        validate_args: check the parameters' constraints (NumPyro semantics).

    ``batch_shape`` broadcasts every argument's batch axes; ``event_shape = (T, D)``.

    Example:
        >>> def model(y):  # y: (T, D); a sticky 3-state AR(1)
        ...     P = numpyro.sample("P", StickyDirichlet(1.0, 20.0, num_states=3))
        ...     A = numpyro.sample("A", dist.Normal(0, 0.5).expand([3, D, D]).to_event(3))
        ...     arhmm = AutoregressiveHMM(jnp.ones(3) / 3, P, A, ar_cov=0.1 * jnp.eye(D),
        ...                               num_steps=len(y))
        ...     numpyro.sample("y", arhmm, obs=y)
    """

    arg_constraints = {
        "initial_probs": constraints.simplex,
        "initial_logits": log_probability_vector,
        "transition_matrix": constraints.independent(constraints.simplex, 1),
        "transition_logits": constraints.independent(log_probability_vector, 1),
        "ar_matrix": constraints.independent(constraints.real, 3),
        "ar_bias": constraints.independent(constraints.real, 2),
        "ar_cov": constraints.independent(constraints.positive_definite, 1),
        "ar_scale_tril": constraints.independent(constraints.lower_cholesky, 1),
        "initial_lags": constraints.independent(constraints.real, 2),
    }
    support = constraints.independent(constraints.real_vector, 1)
    pytree_data_fields = (
        "initial_probs",
        "initial_logits",
        "transition_matrix",
        "transition_logits",
        "ar_matrix",
        "ar_bias",
        "ar_cov",
        "ar_scale_tril",
        "initial_lags",
        "initial_emission_dist",
        "obs_mask",
    )
    pytree_aux_fields = ("num_steps", "num_states", "num_lags", "parallel")
    # optional arguments: None unless given
    ar_cov = None
    initial_lags = None
    initial_emission_dist = None

    def __init__(
        self,
        initial_probs=None,
        transition_matrix=None,
        ar_matrix=None,
        *,
        ar_bias=None,
        ar_cov=None,
        ar_scale_tril=None,
        initial_logits=None,
        transition_logits=None,
        initial_lags=None,
        initial_emission_dist=None,
        num_steps=None,
        obs_mask=None,
        parallel=False,
        validate_args=None,
    ):
        owner = "AutoregressiveHMM"
        for first, second in (
            ("initial_probs", "initial_logits"),
            ("transition_matrix", "transition_logits"),
            ("ar_cov", "ar_scale_tril"),
        ):
            if (locals()[first] is None) == (locals()[second] is None):
                raise ValueError(f"{owner}: give exactly one of {first} and {second}.")
        if ar_matrix is None:
            raise ValueError(f"{owner}: ar_matrix of shape (..., K, D, L*D) is required.")
        if initial_lags is not None and initial_emission_dist is not None:
            raise ValueError(
                f"{owner}: give at most one of initial_lags (the observations before the series) "
                "and initial_emission_dist (a distribution of the first L observations)."
            )
        arrays = {
            "initial_probs": initial_probs,
            "initial_logits": initial_logits,
            "transition_matrix": transition_matrix,
            "transition_logits": transition_logits,
            "ar_matrix": ar_matrix,
            "ar_bias": ar_bias,
            "ar_cov": ar_cov,
            "ar_scale_tril": ar_scale_tril,
            "initial_lags": initial_lags,
        }
        for name, arg in arrays.items():
            check_real(name, arg, owner)
        obs_mask = check_bool_mask(obs_mask, owner)
        factor_name = "ar_cov" if ar_cov is not None else "ar_scale_tril"
        shapes = arhmm_shapes(
            initial_shape=_shape(initial_probs if initial_probs is not None else initial_logits),
            transition_shape=_shape(
                transition_matrix if transition_matrix is not None else transition_logits
            ),
            ar_matrix_shape=_shape(ar_matrix),
            ar_bias_shape=_shape(ar_bias),
            ar_factor_shape=_shape(arrays[factor_name]),
            ar_factor_name=factor_name,
            initial_lags_shape=_shape(initial_lags),
            initial_emission_dist=initial_emission_dist,
            obs_mask_shape=_shape(obs_mask),
            num_steps=num_steps,
        )
        check_plates(shapes.parts, owner)
        for name in ("initial_probs", "initial_logits", "transition_matrix", "transition_logits"):
            if arrays[name] is not None:
                setattr(self, name, jnp.asarray(arrays[name]))
        self.ar_matrix = jnp.asarray(ar_matrix)
        if ar_cov is not None:
            self.ar_cov = jnp.asarray(ar_cov)
            self.ar_scale_tril = cholesky(self.ar_cov)
        else:
            self.ar_scale_tril = jnp.asarray(ar_scale_tril)
        dtype = jnp.result_type(self.ar_matrix, self.ar_scale_tril)
        self.ar_bias = (
            jnp.zeros(self.ar_matrix.shape[:-1], dtype) if ar_bias is None else jnp.asarray(ar_bias)
        )
        if initial_lags is not None:
            self.initial_lags = jnp.asarray(initial_lags)
        if initial_emission_dist is not None:
            self.initial_emission_dist = initial_emission_dist
        self.obs_mask = obs_mask
        self.num_steps, self.num_states = shapes.num_steps, shapes.num_states
        self.num_lags = shapes.num_lags
        self._time_source = shapes.source
        self.parallel = bool(parallel)
        super().__init__(shapes.batch_shape, shapes.event_shape, validate_args=validate_args)

    def get_args(self):
        """The given parameters (NumPyro's ``get_args`` without the optional ones left out)."""
        return {k: v for k, v in super().get_args().items() if v is not None}

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints; traced ones are skipped.

        See :func:`~numpyro_ssm.distributions._validation.validate_concrete_args`.
        """
        validate_concrete_args(self, strict)

    @classmethod
    def infer_shapes(
        cls,
        initial_probs=None,
        transition_matrix=None,
        ar_matrix=None,
        *,
        ar_bias=None,
        ar_cov=None,
        ar_scale_tril=None,
        initial_logits=None,
        transition_logits=None,
        initial_lags=None,
        initial_emission_dist=None,
        num_steps=None,
        obs_mask=None,
        **kwargs,
    ):
        """``(batch_shape, event_shape)`` from the arguments' shape tuples, without arrays.

        Args:
            initial_probs: shape of ``initial_probs`` (or give ``initial_logits``).
            transition_matrix: shape of ``transition_matrix`` (or ``transition_logits``).
            ar_matrix: shape of ``ar_matrix``.
            ar_bias: shape of ``ar_bias``, or None.
            ar_cov: shape of ``ar_cov`` (or give ``ar_scale_tril``).
            ar_scale_tril: shape of ``ar_scale_tril``.
            initial_logits: shape, instead of ``initial_probs``.
            transition_logits: shape, instead of ``transition_matrix``.
            initial_lags: shape of ``initial_lags``, or None.
            initial_emission_dist: a distribution or a ``(batch_shape, event_shape)`` pair.
            num_steps: ``T`` when nothing else carries it.
            obs_mask: shape of ``obs_mask``, or None.
            **kwargs: ignored (``parallel``, ``validate_args``).

        Returns:
            ``(batch_shape, event_shape)``.
        """
        factor = ar_cov if ar_cov is not None else ar_scale_tril
        shapes = arhmm_shapes(
            initial_shape=initial_probs if initial_probs is not None else initial_logits,
            transition_shape=transition_matrix
            if transition_matrix is not None
            else transition_logits,
            ar_matrix_shape=ar_matrix,
            ar_bias_shape=ar_bias,
            ar_factor_shape=factor,
            ar_factor_name="ar_cov" if ar_cov is not None else "ar_scale_tril",
            initial_lags_shape=initial_lags,
            initial_emission_dist=initial_emission_dist,
            obs_mask_shape=obs_mask,
            num_steps=num_steps,
        )
        return shapes.batch_shape, shapes.event_shape

    @property
    def ar_params(self) -> ARParams:
        """The AR parameters as :class:`~numpyro_ssm.ops.switching.ARParams`."""
        return ARParams(self.ar_matrix, self.ar_bias, self.ar_scale_tril)

    # -- likelihoods ------------------------------------------------------------------------------

    def _check_value(self, value):
        value = jnp.asarray(value)
        check_real("observations", value, "AutoregressiveHMM")
        T, D = self.event_shape
        if value.ndim < 2 or value.shape[-2:] != (T, D):
            raise ValueError(
                f"AutoregressiveHMM: observations must have shape (..., T, D) = (..., {T}, {D}) "
                f"(T from {self._time_source}, D from ar_matrix), got {value.shape}."
            )
        try:
            jnp.broadcast_shapes(value.shape[:-2], self.batch_shape)
        except ValueError:
            raise ValueError(
                f"AutoregressiveHMM: observations of shape {value.shape} do not broadcast with "
                f"batch_shape {self.batch_shape} + event_shape {self.event_shape}."
            ) from None
        return value

    def step_mask(self, value):
        """Which steps count: observed, with all ``L`` lags observed (or known, or not needed).

        Args:
            value: observations, shape ``batch + (T, D)``.

        Returns:
            bool array of shape ``batch + (T,)``, ``batch`` broadcast with ``batch_shape``.
        """
        value = self._check_value(value)
        T = self.num_steps
        batch = jnp.broadcast_shapes(value.shape[:-2], self.batch_shape)
        observed = (
            ~jnp.any(jnp.isnan(value), axis=-1)
            if jnp.issubdtype(value.dtype, jnp.inexact)
            else jnp.ones(value.shape[:-1], bool)
        )
        if self.obs_mask is not None:
            observed = observed & self.obs_mask
        observed = jnp.broadcast_to(observed, batch + (T,))
        initial_known = None
        if self.initial_lags is not None:
            initial_known = ~jnp.any(jnp.isnan(self.initial_lags), axis=-1)
        return lagged_step_mask(
            observed,
            self.num_lags,
            initial_known,
            first_steps_count=self.initial_emission_dist is not None,
        )

    def _log_likelihoods(self, value):
        """``(log_likelihoods (..., T, K), step_mask (..., T))`` for observations ``value``.

        Missing values are replaced by zeros before any arithmetic and the steps they touch are
        masked (the double-``where`` pattern), so gradients stay finite.
        """
        value = self._check_value(value)
        mask = self.step_mask(value)
        safe = jnp.where(jnp.isnan(value), 0.0, value)
        initial_lags = self.initial_lags
        if initial_lags is not None:
            initial_lags = jnp.where(jnp.isnan(initial_lags), 0.0, initial_lags)
        lags = lag_matrix(safe, self.num_lags, initial_lags)
        log_lik = ar_log_likelihoods(self.ar_params, safe, lags)
        if self.initial_emission_dist is not None:
            L = self.num_lags
            first = self.initial_emission_dist.log_prob(safe[..., :L, None, :])
            first = jnp.broadcast_to(first, log_lik.shape[:-2] + (L, self.num_states))
            log_lik = jnp.concatenate([first, log_lik[..., L:, :]], axis=-2)
        log_lik = jnp.where(mask[..., None], log_lik, 0.0)
        return log_lik, jnp.broadcast_to(mask, log_lik.shape[:-1])

    def log_prob(self, value):
        """``log p(y_{L+1:T} | y_{1:L})`` or ``log p(y_{1:T})``, by the HMM forward algorithm.

        Args:
            value: observations, shape ``sample_shape + batch_shape + (T, D)``.

        Returns:
            Shape ``sample_shape + batch_shape``.
        """
        return self._run_op(hmm_ops.hmm_log_marginal, value)

    # -- prior draws and moments ------------------------------------------------------------------

    def _require_generative(self, what):
        if self.initial_lags is None and self.initial_emission_dist is None:
            raise ValueError(
                f"AutoregressiveHMM.{what}: this model conditions on its first L={self.num_lags} "
                "observations and does not model them; give initial_lags= (the observations "
                "before the series) or initial_emission_dist= to draw whole series, or use "
                ".forecast(y, num_steps) to continue an observed one."
            )

    def sample_with_states(self, key, sample_shape=()):
        """Draw state paths and observations, the observations recursively from their own lags.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            ``(states, observations)`` of shapes ``sample_shape + batch_shape + (T,)`` and
            ``sample_shape + batch_shape + (T, D)``.

        Raises:
            ValueError: for a model that conditions on its first ``L`` observations.
        """
        self._require_generative("sample")
        shape = tuple(sample_shape) + self.batch_shape
        T, D = self.event_shape
        L, K = self.num_lags, self.num_states
        state_key, noise_key, first_key = jax.random.split(key, 3)
        states = self._sample_states(state_key, sample_shape)
        A, b, U = (
            jnp.broadcast_to(x, shape + x.shape[x.ndim - n :])
            for x, n in zip(self.ar_params, (3, 2, 3), strict=True)
        )
        dtype = jnp.result_type(A, U)
        noise = jax.random.normal(noise_key, (T,) + shape + (D,), dtype)
        fixed = jnp.zeros((T,) + shape + (D,), dtype)
        use_fixed = jnp.zeros((T,), bool)
        if self.initial_lags is not None:
            lags0 = jnp.flip(jnp.broadcast_to(self.initial_lags, shape + (L, D)), axis=-2)
            lags0 = lags0.reshape(shape + (L * D,)).astype(dtype)
        else:
            lags0 = jnp.zeros(shape + (L * D,), dtype)
            emission = self.initial_emission_dist.expand(self.batch_shape + (L, K))
            per_state = emission.sample(first_key, tuple(sample_shape))  # shape + (L, K, D)
            index = states[..., :L, None, None]
            first = jnp.take_along_axis(per_state, index, axis=-2)[..., 0, :]
            fixed = fixed.at[:L].set(jnp.moveaxis(first, -2, 0).astype(dtype))
            use_fixed = use_fixed.at[:L].set(True)

        def step(lags, inputs):
            z, eps, given, use_given = inputs
            # every state's draw, then the one of z: (..., K, D) -> (..., D)
            drawn = (
                (A @ lags[..., None, :, None])[..., 0] + b + (U @ eps[..., None, :, None])[..., 0]
            )
            drawn = jnp.take_along_axis(drawn, z[..., None, None], axis=-2)[..., 0, :]
            y = jnp.where(use_given, given, drawn)
            return jnp.concatenate([y, lags[..., : (L - 1) * D]], axis=-1), y

        time_states = jnp.moveaxis(states, -1, 0)
        _, ys = lax.scan(step, lags0, (time_states, noise, fixed, use_fixed))
        return states, jnp.moveaxis(ys, 0, -2)

    def sample(self, key, sample_shape=()):
        """Draw observations recursively from the model, ``sample_shape + batch + (T, D)``.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            Observations of shape ``sample_shape + batch_shape + (T, D)``.
        """
        return self.sample_with_states(key, sample_shape)[1]

    def _moments(self):
        if self.initial_lags is None:
            raise NotImplementedError(
                "AutoregressiveHMM.mean/variance are computed exactly for models with "
                "initial_lags (forecasts are such models); with initial_emission_dist or "
                "conditioned first observations they are not implemented."
            )
        log_init, log_trans = self._log_params()
        trans = jnp.exp(log_trans if log_trans.ndim > 2 else log_trans[None])
        means, variances = arhmm_moments(
            jnp.exp(log_init), trans, self.ar_params, self.initial_lags, self.num_steps
        )
        full = self.batch_shape + self.event_shape
        return jnp.broadcast_to(means, full), jnp.broadcast_to(variances, full)

    @property
    def mean(self):
        """Exact ``E[y_t]``, shape ``batch_shape + (T, D)`` (models with ``initial_lags``)."""
        return self._moments()[0]

    @property
    def variance(self):
        """Exact ``Var[y_t]`` per entry, shape ``batch_shape + (T, D)`` (``initial_lags``)."""
        return self._moments()[1]

    # -- forecasts --------------------------------------------------------------------------------

    def forecast(self, value, num_steps, *, transition_matrix=None, transition_logits=None):
        """The distribution of ``y_{T+1:T+H}`` given ``y_{1:T}``: an ``AutoregressiveHMM``.

        It starts from ``p(z_{T+1} | y_{1:T})`` with the last ``L`` observations as its
        ``initial_lags``, so its draws are recursive in their own values (never the observed
        ones) and its ``mean``/``variance`` are exact (:mod:`numpyro_ssm.ops.switching.moments`).
        The last ``L`` observations must be observed (NaN lags give NaN forecasts).

        Args:
            value: observations, shape ``batch_shape + (T, D)``.
            num_steps: ``H``.
            transition_matrix: future transitions ``(K, K)`` or ``(..., H | 1, K, K)``
                (required when this model's are time-varying).
            transition_logits: the same as unnormalized log-probabilities.

        Returns:
            An :class:`AutoregressiveHMM` with ``event_shape (H, D)``.
        """
        value = self._check_value(value)
        initial, future_log_trans = self._forecast_chain(
            value, transition_matrix, transition_logits
        )
        return AutoregressiveHMM(
            initial,
            transition_logits=future_log_trans,
            ar_matrix=self.ar_matrix,
            ar_bias=self.ar_bias,
            ar_scale_tril=self.ar_scale_tril,
            initial_lags=value[..., value.shape[-2] - self.num_lags :, :],
            num_steps=num_steps,
            parallel=self.parallel,
            validate_args=self._validate_args,
        )

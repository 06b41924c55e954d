r"""``LinearGaussianSSM``: a linear-Gaussian state space model with its states marginalized.

.. math::

    z_1 &\sim \mathcal N(m_0, P_0), \\
    z_{t+1} &= F_t z_t + b_t + w_t, \qquad w_t \sim \mathcal N(0, Q_t), \qquad t = 1..T-1, \\
    y_t &= H_t z_t + d_t + v_t, \qquad v_t \sim \mathcal N(0, R_t), \qquad t = 1..T.

``log_prob(y)`` is the exact ``log p(y_{1:T})`` from the square-root Kalman filter of
:mod:`numpyro_ssm.ops.kalman` (serial, or parallel-in-time with ``parallel=True``). Inputs and
controls enter through time-varying biases, ``b_t = B u_t`` and ``d_t = D u_t``.
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.util import lazy_property

from numpyro_ssm.distributions._lgssm_diffuse import check_diffuse, with_diffuse
from numpyro_ssm.distributions._lgssm_params import (
    _CORE,
    _PAIRS,
    _batch_keys,
    _core_ndim,
    _lgssm_shapes,
    _map_batch,
    _shape,
)
from numpyro_ssm.distributions._lgssm_posterior import LGSSMPosteriorMixin
from numpyro_ssm.distributions._shapes import check_plates
from numpyro_ssm.distributions._ssm import StateSpaceModel
from numpyro_ssm.distributions._validation import (
    check_bool_mask,
    check_real,
    lower_cholesky_psd,
    validate_concrete_args,
)
from numpyro_ssm.ops import kalman as kalman_ops
from numpyro_ssm.ops.kalman import LGSSMParams
from numpyro_ssm.ops.linalg import cholesky

__all__ = ["LinearGaussianSSM"]


class LinearGaussianSSM(LGSSMPosteriorMixin, StateSpaceModel):
    r"""Linear-Gaussian state space model over ``T`` observations, states marginalized exactly.

    .. math::

        z_1 \sim \mathcal N(m_0, P_0),\quad
        z_{t+1} = F_t z_t + b_t + w_t,\ w_t \sim \mathcal N(0, Q_t),\quad
        y_t = H_t z_t + d_t + v_t,\ v_t \sim \mathcal N(0, R_t),

    with ``T - 1`` transitions. ``log_prob(y) = log p(y_{1:T})`` is computed by a square-root
    Kalman filter; ``sample`` is reparameterized (``has_rsample``), so the distribution can also
    be a latent site under SVI.

    **Time axis by shape.** Time is the rightmost batch-like axis of every time-indexable
    argument: transition parameters have a time axis of length ``T - 1`` or 1, emission
    parameters one of length ``T`` or 1, and an absent or length-1 axis means homogeneous. A
    *batch* of ``B`` homogeneous transition matrices is therefore ``(B, 1, S, S)``: a
    ``(B, S, S)`` array is read as ``B`` time steps. ``num_steps`` is required when nothing
    carries time.

    Args:
        initial_mean: shape ``(..., S)``, ``m_0 = E[z_1]``.
        transition_matrix: shape ``(S, S)`` or ``(..., T-1 | 1, S, S)``, ``F_t``.
        emission_matrix: shape ``(D, S)`` or ``(..., T | 1, D, S)``, ``H_t``.
        initial_cov: shape ``(..., S, S)``, ``P_0`` (positive definite). Give this or
            ``initial_scale_tril``.
        initial_scale_tril: shape ``(..., S, S)``, a lower-triangular factor of ``P_0`` with a
            non-negative diagonal; zeros mark exactly known states.
        transition_cov: shape ``(S, S)`` or ``(..., T-1 | 1, S, S)``, ``Q_t``. Or give
            ``transition_scale_tril``, which may have zeros on the diagonal (a rank-deficient
            ``Q_t``, e.g. a noiseless level); a singular ``transition_cov`` has no Cholesky
            factor.
        transition_scale_tril: shape like ``transition_cov``, a lower-triangular factor of
            ``Q_t`` with a non-negative diagonal; or thin, ``(S, q)`` (time axis as
            ``transition_cov``) with ``1 <= q <= S`` and zeros above the diagonal, one column per
            independent noise (as :class:`~numpyro_ssm.ops.LGSSMParams`): narrower stacks to
            triangularize when only ``q`` directions get noise.
        emission_cov: shape ``(D, D)`` or ``(..., T | 1, D, D)``, ``R_t`` (positive definite).
        emission_scale_tril: shape like ``emission_cov``, ``chol(R_t)``.
        transition_bias: shape ``(S,)`` or ``(..., T-1 | 1, S)``, ``b_t``; zeros by default.
            Controls enter here: ``b_t = B u_t``.
        emission_bias: shape ``(D,)`` or ``(..., T | 1, D)``, ``d_t``; zeros by default.
        num_steps: ``T``; required only when no argument carries a time axis.
        obs_mask: bool, broadcastable against ``batch_shape + (T, D)`` (shape ``(..., T, D)``
            or ``(..., T, 1)`` for whole steps); True where observed. NaN in ``y`` also marks
            an entry missing. Missing entries contribute nothing; the others are conditioned on
            exactly. Other dtypes are rejected (pass ``mask.astype(bool)``).
        parallel: use the ``O(log T)``-depth associative scans (faster on accelerators).
        validate_args: check the parameters' constraints (positive-definite covariances,
            lower-triangular factors with a non-negative diagonal, positive for
            ``emission_scale_tril``). Derived distributions (``forecast``) keep this setting.
        diffuse_states: bool, shape ``(S,)`` (concrete, shared by the batch), or None: True for
            the entries of ``z_1`` with a diffuse (flat) prior. ``log_prob`` is then the exact
            diffuse log-likelihood and ``filter``, ``smooth``, ``sample_posterior`` and
            ``forecast`` follow it (:mod:`numpyro_ssm.ops.kalman.diffuse`: the convention, and
            what is ignored of the initial moments). ``sample`` has no improper prior to draw
            from: it draws ``z_1`` from ``initial_mean`` and the initial covariance as given.
        num_diffuse_steps: how many leading steps the exact initial filter runs; None for the
            steps that resolve every diffuse direction, followed before the filter runs when
            the observations and matrices are concrete and unbatched (else at least the number
            of diffuse entries, counted over observed steps when the observations are
            concrete). A start left unresolved gives a NaN log-likelihood.

    ``batch_shape`` broadcasts all arguments' batch axes; ``event_shape = (T, D)``.

    Example:
        A local level model, and the same with a control input ``u_t`` (shape ``(T-1, 1)``)
        through a time-varying bias ``b_t = B u_t``:

        >>> import numpyro, numpyro.distributions as dist
        >>> def model(y, u):
        ...     sigma_obs = numpyro.sample("sigma_obs", dist.HalfNormal(1.0))
        ...     sigma_level = numpyro.sample("sigma_level", dist.HalfNormal(1.0))
        ...     B = numpyro.sample("B", dist.Normal(0.0, 1.0))
        ...     ssm = LinearGaussianSSM(
        ...         jnp.zeros(1), jnp.eye(1), jnp.eye(1),
        ...         initial_cov=jnp.eye(1) * 10.0,
        ...         transition_scale_tril=sigma_level * jnp.eye(1),
        ...         emission_scale_tril=sigma_obs * jnp.eye(1),
        ...         transition_bias=B * u,  # (T-1, 1): b_t = B u_t
        ...     )
        ...     numpyro.sample("y", ssm, obs=y)  # y: (T, 1)
    """

    arg_constraints = {
        "initial_mean": constraints.real_vector,
        "initial_cov": constraints.positive_definite,
        "initial_scale_tril": lower_cholesky_psd,
        "transition_matrix": constraints.real_matrix,
        "transition_cov": constraints.positive_definite,
        "transition_scale_tril": lower_cholesky_psd,
        "transition_bias": constraints.real_vector,
        "emission_matrix": constraints.real_matrix,
        "emission_cov": constraints.positive_definite,
        "emission_scale_tril": constraints.lower_cholesky,
        "emission_bias": constraints.real_vector,
    }
    support = constraints.independent(constraints.real_vector, 1)
    reparametrized_params = list(arg_constraints)
    pytree_data_fields = (*_CORE, "obs_mask")
    pytree_aux_fields = ("num_steps", "parallel", "diffuse_states", "num_diffuse_steps")

    def __init__(
        self,
        initial_mean,
        transition_matrix,
        emission_matrix,
        *,
        initial_cov=None,
        initial_scale_tril=None,
        transition_cov=None,
        transition_scale_tril=None,
        emission_cov=None,
        emission_scale_tril=None,
        transition_bias=None,
        emission_bias=None,
        num_steps=None,
        obs_mask=None,
        parallel=False,
        validate_args=None,
        diffuse_states=None,
        num_diffuse_steps=None,
    ):
        given = {
            "initial": (initial_cov, initial_scale_tril),
            "transition": (transition_cov, transition_scale_tril),
            "emission": (emission_cov, emission_scale_tril),
        }
        for prefix, (cov, tril) in given.items():
            if (cov is None) == (tril is None):
                raise ValueError(
                    f"LinearGaussianSSM: give exactly one of {prefix}_cov and "
                    f"{prefix}_scale_tril (got {'both' if cov is not None else 'neither'})."
                )
        arguments = {
            "initial_mean": initial_mean,
            "transition_matrix": transition_matrix,
            "emission_matrix": emission_matrix,
            "transition_bias": transition_bias,
            "emission_bias": emission_bias,
        }
        for prefix, (cov, tril) in given.items():
            arguments[f"{prefix}_cov"], arguments[f"{prefix}_scale_tril"] = cov, tril
        for name, arg in arguments.items():
            check_real(name, arg, "LinearGaussianSSM")
        obs_mask = check_bool_mask(obs_mask, "LinearGaussianSSM")
        batch_shape, event_shape, source, parts = self.infer_shapes(
            initial_mean=_shape(initial_mean),
            transition_matrix=_shape(transition_matrix),
            emission_matrix=_shape(emission_matrix),
            initial_cov=_shape(initial_cov),
            initial_scale_tril=_shape(initial_scale_tril),
            transition_cov=_shape(transition_cov),
            transition_scale_tril=_shape(transition_scale_tril),
            emission_cov=_shape(emission_cov),
            emission_scale_tril=_shape(emission_scale_tril),
            transition_bias=_shape(transition_bias),
            emission_bias=_shape(emission_bias),
            num_steps=num_steps,
            obs_mask=_shape(obs_mask),
            _with_details=True,
        )
        check_plates(parts, "LinearGaussianSSM")
        self._time_source = source
        self.initial_mean = jnp.asarray(initial_mean)
        # converted eagerly even inside a traced model: a fixed F or H stays concrete, so the
        # ops can read their zeros (``ops.kalman.params.sparsity_pattern``)
        with jax.ensure_compile_time_eval():
            self.transition_matrix = jnp.asarray(transition_matrix)
            self.emission_matrix = jnp.asarray(emission_matrix)
        dtype = jnp.result_type(self.initial_mean, self.transition_matrix, self.emission_matrix)
        for prefix, (cov, tril) in given.items():
            if cov is not None:
                cov = jnp.asarray(cov)
                setattr(self, f"{prefix}_cov", cov)
                tril = cholesky(cov)
            setattr(self, f"{prefix}_scale_tril", jnp.asarray(tril))
        S, D = self.initial_mean.shape[-1], event_shape[1]
        self.transition_bias = (
            jnp.zeros((S,), dtype) if transition_bias is None else jnp.asarray(transition_bias)
        )
        self.emission_bias = (
            jnp.zeros((D,), dtype) if emission_bias is None else jnp.asarray(emission_bias)
        )
        self.obs_mask = obs_mask
        self.num_steps = event_shape[0]
        self.parallel = bool(parallel)
        self.diffuse_states, self.num_diffuse_steps = check_diffuse(
            diffuse_states, num_diffuse_steps, S
        )
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def validate_args(self, strict: bool = True) -> None:
        """Check the concrete parameters' constraints; traced ones are skipped.

        See :func:`~numpyro_ssm.distributions._validation.validate_concrete_args`.
        """
        validate_concrete_args(self, strict)

    @classmethod
    def infer_shapes(
        cls,
        initial_mean=None,
        transition_matrix=None,
        emission_matrix=None,
        *,
        initial_cov=None,
        initial_scale_tril=None,
        transition_cov=None,
        transition_scale_tril=None,
        emission_cov=None,
        emission_scale_tril=None,
        transition_bias=None,
        emission_bias=None,
        num_steps=None,
        obs_mask=None,
        _with_details=False,
        **kwargs,
    ):
        """Infer ``(batch_shape, event_shape)`` from argument shapes, without arrays.

        Args:
            initial_mean: shape tuple of ``initial_mean``.
            transition_matrix: shape tuple of ``transition_matrix``.
            emission_matrix: shape tuple of ``emission_matrix``.
            initial_cov: shape tuple, or give ``initial_scale_tril``.
            initial_scale_tril: shape tuple, or give ``initial_cov``.
            transition_cov: shape tuple, or give ``transition_scale_tril``.
            transition_scale_tril: shape tuple, or give ``transition_cov``.
            emission_cov: shape tuple, or give ``emission_scale_tril``.
            emission_scale_tril: shape tuple, or give ``emission_cov``.
            transition_bias: shape tuple or None.
            emission_bias: shape tuple or None.
            num_steps: ``T`` when no argument carries time.
            obs_mask: shape tuple of ``obs_mask``, or None.
            _with_details: also return where ``T`` came from and each batch shape (internal).
            **kwargs: ignored (``parallel``, ``validate_args``).

        Returns:
            ``(batch_shape, event_shape)`` with ``event_shape = (T, D)``.
        """
        if initial_mean is None or transition_matrix is None or emission_matrix is None:
            raise ValueError(
                "LinearGaussianSSM needs initial_mean, transition_matrix and emission_matrix."
            )
        shapes = {
            "initial_mean": tuple(initial_mean),
            "initial_scale_tril": initial_scale_tril or initial_cov,
            "transition_matrix": tuple(transition_matrix),
            "transition_scale_tril": transition_scale_tril or transition_cov,
            "transition_bias": transition_bias,
            "emission_matrix": tuple(emission_matrix),
            "emission_scale_tril": emission_scale_tril or emission_cov,
            "emission_bias": emission_bias,
        }
        shapes = {k: None if v is None else tuple(v) for k, v in shapes.items()}
        if transition_cov is not None and (
            len(transition_cov) < 2 or transition_cov[-1] != transition_cov[-2]
        ):
            raise ValueError(
                "transition_cov must be square, shape (..., S, S), got "
                f"{tuple(transition_cov)}; a thin (S, q) factor goes in transition_scale_tril."
            )
        for prefix in _PAIRS:
            if shapes[f"{prefix}_scale_tril"] is None:
                raise ValueError(f"LinearGaussianSSM needs {prefix}_cov or {prefix}_scale_tril.")
        obs_mask = None if obs_mask is None else tuple(obs_mask)
        batch_shape, event_shape, source, parts = _lgssm_shapes(shapes, num_steps, obs_mask)
        if _with_details:
            return batch_shape, event_shape, source, parts
        return batch_shape, event_shape

    # -- covariances in both forms --------------------------------------------------------------

    @lazy_property
    def initial_cov(self):
        """Shape ``(..., S, S)``: ``P_0``."""
        return self.initial_scale_tril @ jnp.swapaxes(self.initial_scale_tril, -1, -2)

    @lazy_property
    def transition_cov(self):
        """Shape like ``transition_scale_tril``: ``Q_t``."""
        return self.transition_scale_tril @ jnp.swapaxes(self.transition_scale_tril, -1, -2)

    @lazy_property
    def emission_cov(self):
        """Shape like ``emission_scale_tril``: ``R_t``."""
        return self.emission_scale_tril @ jnp.swapaxes(self.emission_scale_tril, -1, -2)

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def params(self) -> LGSSMParams:
        """The parameters as one :class:`~numpyro_ssm.ops.LGSSMParams` (with batch axes)."""
        return LGSSMParams(**{name: getattr(self, name) for name in _CORE})

    def _params(self):
        """The parameter arrays in :data:`_CORE` order, with each one's per-sequence axes."""
        arrays = [getattr(self, name) for name in _CORE]
        cores = [_core_ndim(name, a.shape) for name, a in zip(_CORE, arrays, strict=True)]
        return arrays, cores

    def _current_batch_shape(self):
        # From the arrays themselves, not the stored batch_shape, so that jax.vmap over the
        # distribution (which strips a batch axis from every leaf) stays consistent.
        arrays, cores = self._params()
        shapes = [a.shape[: a.ndim - c] for a, c in zip(arrays, cores, strict=True)]
        if self.obs_mask is not None:
            shapes.append(self.obs_mask.shape[:-2])
        return jnp.broadcast_shapes(*shapes)

    def _observations(self, value, what="observations"):
        value = jnp.asarray(value)
        check_real(what, value, "LinearGaussianSSM")
        T, D = self.event_shape
        if value.ndim < 2 or value.shape[-2:] != (T, D):
            source = getattr(self, "_time_source", None)
            origin = f" (T={T} from {source})" if source else ""
            raise ValueError(
                f"LinearGaussianSSM: {what} must have shape (..., T, D) = (..., {T}, {D}){origin},"
                f" got {value.shape}."
            )
        own = self._current_batch_shape()
        try:
            batch_shape = jnp.broadcast_shapes(value.shape[:-2], own)
        except ValueError:
            raise ValueError(
                f"LinearGaussianSSM: {what} of shape {value.shape} do not broadcast with "
                f"batch_shape {own} + event_shape {(T, D)}."
            ) from None
        mask = jnp.ones((T, D), bool) if self.obs_mask is None else self.obs_mask
        mask = jnp.broadcast_to(mask, batch_shape + (T, D))
        return jnp.broadcast_to(value, batch_shape + (T, D)), mask, batch_shape

    def _run(self, op, value, *lead, lead_cores=()):
        """``op(*lead, params, y, obs_mask=..., parallel=...)`` on every sequence of the batch."""
        y, mask, batch_shape = self._observations(value)
        arrays, cores = self._params()
        parallel, n = self.parallel, len(lead)
        op = with_diffuse(self, op, value)

        def one(*args):
            *arrays, y, mask = args[n:]
            params = LGSSMParams(**dict(zip(_CORE, arrays, strict=True)))
            return op(*args[:n], params, y, obs_mask=mask, parallel=parallel)

        return _map_batch(one, [*lead, *arrays, y, mask], [*lead_cores, *cores, 2, 2], batch_shape)

    def step_mask(self, value):
        """Which steps count: those with at least one observed entry (``obs_mask`` and not NaN).

        Partially observed steps count: their observed entries are conditioned on exactly.

        Args:
            value: observations, shape ``batch + (T, D)``.

        Returns:
            bool array of shape ``batch + (T,)``, ``batch`` broadcast with ``batch_shape``.
        """
        y, mask, _ = self._observations(value)
        return jnp.any(mask & ~jnp.isnan(y), axis=-1)

    # -- distribution interface -----------------------------------------------------------------

    def log_prob(self, value):
        """Log marginal likelihood ``log p(y_{1:T})`` of the observed entries.

        Args:
            value: observations, shape ``sample_shape + batch_shape + (T, D)`` (leading axes
                broadcast). NaN entries are missing.

        Returns:
            Shape ``sample_shape + batch_shape``.
        """
        return self._run(kalman_ops.kalman_log_marginal, value)

    def sample(self, key, sample_shape=()):
        """Reparameterized draws of the observations.

        Args:
            key: a JAX PRNG key.
            sample_shape: leading shape of the draws.

        Returns:
            Shape ``sample_shape + batch_shape + (T, D)``.
        """
        return self.sample_with_states(key, sample_shape)[1]

    def sample_with_states(self, key, sample_shape=()):
        """Reparameterized joint draws of the states and the observations.

        Args:
            key: a JAX PRNG key.
            sample_shape: leading shape of the draws.

        Returns:
            ``(states, observations)`` of shapes ``sample_shape + batch_shape + (T, S)`` and
            ``sample_shape + batch_shape + (T, D)``.
        """
        sample_shape = tuple(sample_shape)
        batch_shape = self._current_batch_shape()
        arrays, cores = self._params()
        keys = _batch_keys(key, batch_shape)
        T, parallel = self.event_shape[0], self.parallel

        def one(*args):
            *arrays, k = args
            params = LGSSMParams(**dict(zip(_CORE, arrays, strict=True)))
            return kalman_ops.lgssm_sample(
                k, params, num_steps=T, sample_shape=sample_shape, parallel=parallel
            )

        key_core = keys.ndim - len(batch_shape)
        out = _map_batch(one, [*arrays, keys], [*cores, key_core], batch_shape)
        nb, ns = len(batch_shape), len(sample_shape)
        order = lambda x: jnp.moveaxis(  # noqa: E731
            x, tuple(range(nb, nb + ns)), tuple(range(ns))
        )
        return jax.tree.map(order, out)

    def rsample(self, key, sample_shape=()):
        """Same as :meth:`sample` (which is reparameterized).

        Args:
            key: a JAX PRNG key.
            sample_shape: leading shape of the draws.

        Returns:
            Shape ``sample_shape + batch_shape + (T, D)``.
        """
        return self.sample(key, sample_shape)

    def _prior_moments(self):
        """Prior state moments: the filter with every entry missing is a pure prediction."""
        T, D = self.event_shape
        y = jnp.zeros((T, D), self.initial_mean.dtype)
        arrays, cores = self._params()
        batch_shape = self._current_batch_shape()
        parallel = self.parallel

        def one(*args):
            *arrays, y = args
            p = LGSSMParams(**dict(zip(_CORE, arrays, strict=True)))
            post = kalman_ops.kalman_filter(
                p, y, obs_mask=jnp.zeros((T, D), bool), parallel=parallel
            )
            H, R, d = p.emission_matrix, p.emission_scale_tril, p.emission_bias
            mean = jnp.einsum("...ds,...s->...d", H, post.predicted_means) + d
            HP = jnp.einsum("...ds,...sr->...dr", H, post.predicted_covariances)
            var = jnp.einsum("...dr,...dr->...d", HP, H)
            var = var + jnp.sum(R * R, axis=-1)
            return jnp.broadcast_to(mean, (T, D)), jnp.broadcast_to(var, (T, D))

        return _map_batch(one, [*arrays, y], [*cores, 2], batch_shape)

    @property
    def mean(self):
        """Marginal means ``E[y_t]``, shape ``batch_shape + (T, D)``."""
        return self._prior_moments()[0]

    @property
    def variance(self):
        """Marginal variances ``Var[y_t]`` (per entry), shape ``batch_shape + (T, D)``."""
        return self._prior_moments()[1]

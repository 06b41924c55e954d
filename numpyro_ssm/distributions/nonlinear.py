r"""``NonlinearGaussianSSM``: a nonlinear state space model with additive Gaussian noise.

.. math::

    z_1 &\sim \mathcal N(m_0, P_0), \\
    z_{t+1} &= f(z_t, u_{t+1}, \theta) + w_t, \qquad w_t \sim \mathcal N(0, Q_t), \\
    y_t &= h(z_t, u_t, \theta) + v_t, \qquad v_t \sim \mathcal N(0, R_t).

``log_prob`` is a Gaussian filter's approximation of ``log p(y_{1:T})``: extended, unscented,
Gauss–Hermite or cubature (``method``), one pass or iterated
(:mod:`numpyro_ssm.ops.nonlinear`).
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.util import lazy_property

from numpyro_ssm.distributions._nonlinear import NonlinearSSMBase, _factor, _shape
from numpyro_ssm.distributions._validation import check_bool_mask, check_real
from numpyro_ssm.ops import nonlinear as nl

__all__ = ["NonlinearGaussianSSM"]


def _cov(tril):
    return tril @ jnp.swapaxes(tril, -1, -2)


class NonlinearGaussianSSM(NonlinearSSMBase):
    r"""Nonlinear Gaussian state space model over ``T`` steps, states integrated out approximately.

    .. math::

        z_1 \sim \mathcal N(m_0, P_0),\quad
        z_{t+1} = f(z_t, u_{t+1}, \theta) + w_t,\ w_t \sim \mathcal N(0, Q_t),\quad
        y_t = h(z_t, u_t, \theta) + v_t,\ v_t \sim \mathcal N(0, R_t).

    **log_prob is an approximation.** ``log_prob(y)`` is the approximate ``log p(y_{1:T})`` of
    a Gaussian filter (:mod:`numpyro_ssm.ops.nonlinear`): the sum of the one-step predictive
    densities ``N(y_t; ŷ_t, S_t)`` of the model linearized by ``method`` around the filter's
    own beliefs (``smoother_iterations=0``), or the Kalman log-likelihood of the model
    linearized around the iterated smoother's posterior (``smoother_iterations=k``; for
    ``"ekf"`` at the MAP path this is a Laplace approximation with the Gauss–Newton curvature).
    It is exact for a linear-Gaussian model. Otherwise its error grows with the curvature of
    ``f`` and ``h`` over the spread of the beliefs: on the mildly nonlinear scalar model of the
    tests it is about 0.01 nats per observation for one pass and ten times smaller iterated
    (``docs/nonlinear.md`` compares the methods with a grid filter). The posterior over
    parameters inherits this bias; ``sample`` is exact (it simulates the model itself).

    **Functions.** ``transition_fn(z, u, params)`` and ``emission_fn(z, u, params)`` take one
    state ``z`` of shape ``(S,)``, the step's input ``u`` (a time slice of ``inputs``, or None)
    and ``params``; they return shapes ``(S,)`` and ``(D,)``. They are static; what NUTS samples
    goes in ``params`` (any pytree). The emission of step ``t`` and the transition *into* step
    ``t`` see ``u_t`` (as in dynamax).

    Args:
        initial_mean: shape ``(..., S)``, ``m_0``.
        transition_fn: ``f(z, u, params) -> (S,)``.
        emission_fn: ``h(z, u, params) -> (D,)``.
        initial_cov: shape ``(..., S, S)``, ``P_0``; or give ``initial_scale_tril``.
        initial_scale_tril: shape ``(..., S, S)``, lower-triangular factor of ``P_0``.
        transition_cov: shape ``(S, S)`` or ``(..., T-1 | 1, S, S)``, ``Q_t``; or give
            ``transition_scale_tril``. Positive definite for the sigma-point methods.
        transition_scale_tril: shape like ``transition_cov``.
        emission_cov: shape ``(D, D)`` or ``(..., T | 1, D, D)``, ``R_t``; or give
            ``emission_scale_tril``.
        emission_scale_tril: shape like ``emission_cov``.
        params: any pytree, the third argument of both functions, shared by the batch.
        inputs: pytree whose leaves have a leading time axis of length ``T``, shared by the
            batch; or None.
        num_steps: ``T``; required only when no argument carries a time axis.
        obs_mask: bool, broadcastable against ``batch_shape + (T, D)`` (``(..., T, D)``, or
            ``(..., T, 1)`` for whole steps); True where observed. NaN in ``y`` also marks an
            entry missing.
        method: ``"ekf"`` (first-order Taylor), ``"ukf"`` (unscented, dynamax's defaults
            ``α=√3, β=2, κ=1``), ``"ghkf"`` (Gauss–Hermite, order 3), ``"ckf"`` (spherical
            cubature), or a rule object of :mod:`numpyro_ssm.ops.nonlinear.rules` with its own
            settings.
        update_iterations: emission linearizations per filter step (1: plain; more: iterated
            extended / posterior-linearization filter).
        smoother_iterations: 0 for the one-pass filter and smoother; ``k >= 1`` for ``k``
            passes of the iterated smoother, which then also defines ``log_prob``.
        parallel: run every smoothing pass with associative scans (the one-pass filter that
            starts them is sequential by nature).
        validate_args: check the covariances and that both functions have finite Jacobians at
            ``initial_mean``.

    ``batch_shape`` broadcasts the array arguments' batch axes; ``event_shape = (T, D)``.

    Example:
        The pendulum of Särkkä (2013), with the gravity and the noise scales sampled:

        >>> import numpyro, numpyro.distributions as dist
        >>> def f(z, u, p):
        ...     return jnp.stack([z[0] + 0.01 * z[1], z[1] - p["g"] * 0.01 * jnp.sin(z[0])])
        >>> def h(z, u, p):
        ...     return jnp.sin(z[:1])
        >>> def model(y):  # y: (T, 1)
        ...     g = numpyro.sample("g", dist.Normal(9.81, 1.0))
        ...     r = numpyro.sample("r", dist.HalfNormal(1.0))
        ...     ssm = NonlinearGaussianSSM(
        ...         jnp.array([1.5, 0.0]), f, h, initial_cov=jnp.eye(2),
        ...         transition_cov=1e-4 * jnp.eye(2), emission_scale_tril=r * jnp.eye(1),
        ...         params={"g": g}, num_steps=y.shape[0], method="ukf")
        ...     numpyro.sample("y", ssm, obs=y)
    """

    arg_constraints = {
        "initial_mean": constraints.real_vector,
        "initial_cov": constraints.positive_definite,
        "initial_scale_tril": constraints.lower_cholesky,
        "transition_cov": constraints.positive_definite,
        "transition_scale_tril": constraints.lower_cholesky,
        "emission_cov": constraints.positive_definite,
        "emission_scale_tril": constraints.lower_cholesky,
    }
    support = constraints.independent(constraints.real_vector, 1)
    reparametrized_params = list(arg_constraints)
    _array_names = (
        "initial_mean",
        "initial_scale_tril",
        "transition_scale_tril",
        "emission_scale_tril",
    )
    pytree_data_fields = (*_array_names, "params", "inputs", "obs_mask")
    pytree_aux_fields = (
        "transition_fn",
        "emission_fn",
        "num_steps",
        "method",
        "update_iterations",
        "smoother_iterations",
        "parallel",
    )

    def __init__(
        self,
        initial_mean,
        transition_fn,
        emission_fn,
        *,
        initial_cov=None,
        initial_scale_tril=None,
        transition_cov=None,
        transition_scale_tril=None,
        emission_cov=None,
        emission_scale_tril=None,
        params=None,
        inputs=None,
        num_steps=None,
        obs_mask=None,
        method="ekf",
        update_iterations=1,
        smoother_iterations=0,
        parallel=False,
        validate_args=None,
    ):
        owner = "NonlinearGaussianSSM"
        for name, fn in (("transition_fn", transition_fn), ("emission_fn", emission_fn)):
            if not callable(fn):
                raise TypeError(f"{owner}: {name} must be a function, got {type(fn).__name__}.")
        nl.get_rule(method)  # ValueError for an unknown method, before anything else
        check_real("initial_mean", initial_mean, owner)
        arrays = {"initial_mean": jnp.asarray(initial_mean)}
        for prefix, cov, tril in (
            ("initial", initial_cov, initial_scale_tril),
            ("transition", transition_cov, transition_scale_tril),
            ("emission", emission_cov, emission_scale_tril),
        ):
            check_real(f"{prefix}_cov", cov, owner)
            check_real(f"{prefix}_scale_tril", tril, owner)
            cov, arrays[f"{prefix}_scale_tril"] = _factor(owner, prefix, cov, tril)
            if cov is not None:
                setattr(self, f"{prefix}_cov", cov)
        self.transition_fn, self.emission_fn = transition_fn, emission_fn
        self.params, self.inputs = params, inputs
        self._obs_dim = arrays["emission_scale_tril"].shape[-1]
        self._setup(
            owner,
            arrays,
            {name: _shape(a) for name, a in arrays.items()},
            num_steps,
            check_bool_mask(obs_mask, owner),
            (method, update_iterations, smoother_iterations, parallel),
            validate_args,
        )

    @classmethod
    def infer_shapes(
        cls,
        initial_mean=None,
        transition_fn=None,
        emission_fn=None,
        *,
        initial_cov=None,
        initial_scale_tril=None,
        transition_cov=None,
        transition_scale_tril=None,
        emission_cov=None,
        emission_scale_tril=None,
        num_steps=None,
        obs_mask=None,
        inputs=None,
        **kwargs,
    ):
        """``(batch_shape, event_shape)`` from argument shapes, without arrays.

        Args:
            initial_mean: shape tuple.
            transition_fn: ignored.
            emission_fn: ignored.
            initial_cov: shape tuple, or give ``initial_scale_tril``.
            initial_scale_tril: shape tuple.
            transition_cov: shape tuple, or give ``transition_scale_tril``.
            transition_scale_tril: shape tuple.
            emission_cov: shape tuple, or give ``emission_scale_tril``.
            emission_scale_tril: shape tuple.
            num_steps: ``T`` when no argument carries time.
            obs_mask: shape tuple, or None.
            inputs: a pytree of shape tuples (or arrays), or None.
            **kwargs: ignored (``params``, ``method``, ...).

        Returns:
            ``(batch_shape, event_shape)`` with ``event_shape = (T, D)``.
        """
        from numpyro_ssm.distributions._nonlinear import _shapes

        emission = tuple(emission_scale_tril or emission_cov)
        shapes = {
            "initial_mean": tuple(initial_mean),
            "initial_scale_tril": tuple(initial_scale_tril or initial_cov),
            "transition_scale_tril": tuple(transition_scale_tril or transition_cov),
            "emission_scale_tril": emission,
        }
        input_shapes = jax.tree.map(
            lambda s: jnp.zeros(tuple(s) if isinstance(s, tuple) else jnp.shape(s)),
            inputs,
            is_leaf=lambda s: isinstance(s, tuple),
        )
        batch_shape, event_shape, _, _ = _shapes(
            cls.__name__,
            shapes,
            num_steps,
            None if obs_mask is None else tuple(obs_mask),
            input_shapes,
            emission[-1],
        )
        return batch_shape, event_shape

    def _container(self, arrays):
        return nl.NonlinearGaussianParams(
            transition_fn=self.transition_fn,
            emission_fn=self.emission_fn,
            params=self.params,
            **arrays,
        )

    def _ops_mask(self, y, mask):
        return mask & ~jnp.isnan(y)

    @lazy_property
    def initial_cov(self):
        """Shape ``(..., S, S)``: ``P_0``."""
        return _cov(self.initial_scale_tril)

    @lazy_property
    def transition_cov(self):
        """Shape like ``transition_scale_tril``: ``Q_t``."""
        return _cov(self.transition_scale_tril)

    @lazy_property
    def emission_cov(self):
        """Shape like ``emission_scale_tril``: ``R_t``."""
        return _cov(self.emission_scale_tril)

    def sample(self, key, sample_shape=()):
        """Draws of the observations from the nonlinear model itself (reparameterized).

        Args:
            key: a JAX PRNG key.
            sample_shape: leading shape of the draws.

        Returns:
            Shape ``sample_shape + batch_shape + (T, D)``.
        """
        return self.sample_with_states(key, sample_shape)[1]

    def rsample(self, key, sample_shape=()):
        """Same as :meth:`sample` (which is reparameterized)."""
        return self.sample(key, sample_shape)

    def forecast(self, value, num_steps, **future):
        """Distribution of the next ``num_steps`` observations given ``value``.

        Its initial state is ``z_{T+1} | y_{1:T}``: the last filtered state predicted one step
        by the rule. Pass future ``inputs`` (leaves of leading axis ``num_steps``; the first
        drives the transition into step ``T + 1``) when the model has inputs, and future
        ``transition_scale_tril`` | ``transition_cov`` and ``emission_scale_tril`` |
        ``emission_cov`` (time axis ``num_steps``) where they are time-varying. Its ``mean``
        and ``variance`` are the rule's approximate moments.

        Args:
            value: observations, shape ``batch_shape + (T, D)``.
            num_steps: ``H``.
            **future: see above.

        Returns:
            A :class:`NonlinearGaussianSSM` with ``event_shape (H, D)``.
        """
        future = dict(future)
        arrays, inputs = self._forecast_arrays(value, num_steps, future)
        emission = self._future("emission_scale_tril", future, num_steps, 2)
        if future:
            raise ValueError(f"forecast: unknown future arguments {sorted(future)}.")
        return NonlinearGaussianSSM(
            arrays["initial_mean"],
            self.transition_fn,
            self.emission_fn,
            initial_scale_tril=arrays["initial_scale_tril"],
            transition_scale_tril=arrays["transition_scale_tril"],
            emission_scale_tril=emission,
            params=self.params,
            inputs=inputs,
            num_steps=int(num_steps),
            method=self.method,
            update_iterations=self.update_iterations,
            smoother_iterations=self.smoother_iterations,
            parallel=self.parallel,
            validate_args=self._validate_args,
        )

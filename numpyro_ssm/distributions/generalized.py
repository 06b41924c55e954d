r"""``GeneralizedGaussianSSM``: nonlinear Gaussian dynamics, any NumPyro emission distribution.

.. math::

    z_1 \sim \mathcal N(m_0, P_0),\quad
    z_{t+1} = f(z_t, u_{t+1}, \theta) + w_t,\ w_t \sim \mathcal N(0, Q_t),\quad
    y_t \sim \texttt{emission\_dist}(h(z_t, u_t, \theta)).

(dynamax's name for the model.) The states are integrated out approximately by
conditional-moments Gaussian filtering (Tronarp, García-Fernández & Särkkä 2018): each update
conditions on ``y_t`` through its conditional mean ``E[y_t | z_t]`` and covariance
``Cov[y_t | z_t]``, taken from the emission distribution's ``mean`` and ``variance`` (or
``covariance_matrix``).
"""

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints
from numpyro.distributions.util import lazy_property

from numpyro_ssm.distributions._nonlinear import NonlinearSSMBase, _factor, _shape
from numpyro_ssm.distributions._validation import check_bool_mask, check_real
from numpyro_ssm.ops import nonlinear as nl
from numpyro_ssm.ops.linalg import cholesky

__all__ = ["GeneralizedGaussianSSM"]


class _Emission:
    """The emission distribution as the pure functions of the ops (hashable: static).

    ``factorized``: the distribution of one step has batch shape ``(D,)`` and event shape
    ``()`` (entries independent given ``z``: masks act entry by entry); otherwise batch ``()``
    and event ``(D,)`` (masks act on whole steps).
    """

    def __init__(self, emission_dist, factorized, obs_dim):
        self.emission_dist, self.factorized, self.obs_dim = emission_dist, factorized, obs_dim

    def __eq__(self, other):
        return isinstance(other, _Emission) and (
            (self.emission_dist, self.factorized, self.obs_dim)
            == (other.emission_dist, other.factorized, other.obs_dim)
        )

    def __hash__(self):
        return hash((self.emission_dist, self.factorized, self.obs_dim))

    def _dist(self, eta):
        return self.emission_dist(eta)

    def moments(self, eta):
        d = self._dist(eta)
        mean = jnp.reshape(d.mean, (self.obs_dim,))
        if self.factorized:
            return mean, jnp.diag(jnp.sqrt(jnp.reshape(d.variance, (self.obs_dim,))))
        if hasattr(d, "scale_tril"):
            return mean, d.scale_tril
        return mean, cholesky(d.covariance_matrix)

    def log_prob(self, y, observed, eta):
        d = self._dist(eta)
        if self.factorized:
            safe = jnp.where(observed, y, d.support.feasible_like(y))
            return jnp.sum(jnp.where(observed, jnp.reshape(d.log_prob(safe), y.shape), 0.0))
        every = jnp.all(observed)
        safe = jnp.where(every, y, d.support.feasible_like(y))
        return jnp.where(every, d.log_prob(safe), 0.0)

    def sample(self, key, eta):
        return jnp.reshape(self._dist(eta).sample(key), (self.obs_dim,))


def _probe(owner, emission_fn, emission_dist, z, u, params):
    """``(eta shapes, factorized, D)``: the emission's shapes, checked for usable moments."""
    info = {}

    def trace(z, u, params):
        eta = emission_fn(z, u, params)
        d = emission_dist(eta)
        info["batch"], info["event"] = tuple(d.batch_shape), tuple(d.event_shape)
        if len(info["batch"]) + len(info["event"]) != 1:
            raise ValueError(
                f"{owner}: emission_dist(eta) for one step must have batch shape (D,) and event "
                f"shape () (independent entries) or batch shape () and event shape (D,); got "
                f"batch {info['batch']} and event {info['event']}."
            )
        try:
            moments = (d.mean, d.variance if info["event"] == () else _covariance(d))
        except (NotImplementedError, AttributeError) as err:
            raise ValueError(
                f"{owner}: the emission distribution {type(d).__name__} does not provide the "
                "conditional moments conditional-moments filtering needs (mean and variance, "
                f"or covariance_matrix for a joint emission): {type(err).__name__}."
            ) from err
        return eta, moments

    try:
        eta, _ = jax.eval_shape(trace, z, u, params)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the functions named
        raise TypeError(
            f"{owner}: evaluating emission_dist(emission_fn(z, u, params)) failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    factorized = info["event"] == ()
    return eta, factorized, (info["batch"] + info["event"])[0]


def _covariance(d):
    if hasattr(d, "covariance_matrix"):
        return d.covariance_matrix
    raise NotImplementedError("covariance_matrix")


class GeneralizedGaussianSSM(NonlinearSSMBase):
    r"""Nonlinear Gaussian dynamics with any emission distribution (conditional-moments filtering).

    .. math::

        z_1 \sim \mathcal N(m_0, P_0),\quad
        z_{t+1} = f(z_t, u_{t+1}, \theta) + w_t,\ w_t \sim \mathcal N(0, Q_t),\quad
        y_t \sim \texttt{emission\_dist}(\eta_t),\ \eta_t = h(z_t, u_t, \theta).

    ``emission_fn`` returns the emission's parameter ``η`` (any pytree) and ``emission_dist``
    maps it to the NumPyro distribution of one step's ``y_t``, e.g.
    ``emission_dist=lambda eta: dist.Poisson(jnp.exp(eta))``, ``dist.BernoulliLogits``, or
    ``lambda eta: dist.NegativeBinomial2(jnp.exp(eta), 5.0)``. That distribution has batch shape
    ``(D,)`` and event shape ``()`` (entries independent given the state; masks act per entry)
    or batch shape ``()`` and event shape ``(D,)`` (a joint emission with a
    ``covariance_matrix``; masks act on whole steps). Its ``mean`` and ``variance`` (or
    ``covariance_matrix``) are the conditional moments the filter uses.

    **log_prob is an approximation.** Each step adds

    .. math::

        \log \sum_i w_i\, p(y_t \mid \chi_i)\,
            \frac{\mathcal N(\chi_i; m_{t|t-1}, P_{t|t-1})}{\mathcal N(\chi_i; m_{t|t}, P_{t|t})},

    the rule's cubature of the one-step predictive integral ``∫ p(y_t | z) N(z; m_{t|t-1},
    P_{t|t-1}) dz`` centred on the filtered Gaussian (points ``χ_i`` and weights ``w_i`` of
    ``N(m_{t|t}, P_{t|t})``). It is a probability of the observed count, not of a Gaussian
    stand-in, it accounts for the uncertainty of the state, it is exact whenever the Gaussian
    update is (linear-Gaussian emissions), and with ``"ekf"`` it is a Laplace approximation at
    the filtered mean. dynamax's filter scores ``y_t`` with a plug-in distribution at the
    predicted mean (``Poisson(rate = ŷ_t)``), which ignores the state's uncertainty: on the
    Poisson model of the tests its ``log p(y)`` is 2 nats off a grid filter's over 25 counts,
    ours 0.05 to 0.15 (``"ghkf"``, ``"ukf"``). The remaining error is that of the Gaussian
    approximation of the filtered state, and it grows with the state's spread: on a Poisson
    AR(1) log-rate with 50 counts, at a stationary standard deviation of 0.9 the default
    ``"ghkf"`` (order 3) is 1.6 nats off the grid filter (order 7: 0.5), at 1.7 it is 11 nats off
    (order 7: 0.1), and beyond about 2.5 every order is tens of nats off, the 3-point rule with a
    spurious local maximum that can trap NUTS chains started there (``docs/calibration.md``):
    keep such scales' priors, or the chains' starts, where the approximation holds.

    Args:
        initial_mean: shape ``(..., S)``, ``m_0``.
        transition_fn: ``f(z, u, params) -> (S,)``.
        emission_fn: ``h(z, u, params) -> η``, the emission distribution's parameter.
        emission_dist: ``η -> numpyro Distribution`` of one step's ``y_t`` (static).
        initial_cov: shape ``(..., S, S)``, ``P_0``; or give ``initial_scale_tril``.
        initial_scale_tril: shape ``(..., S, S)``.
        transition_cov: shape ``(S, S)`` or ``(..., T-1 | 1, S, S)``, ``Q_t``; or give
            ``transition_scale_tril``.
        transition_scale_tril: shape like ``transition_cov``.
        params: any pytree, the third argument of both functions, shared by the batch.
        inputs: pytree with leaves of leading time axis ``T``, shared by the batch; or None.
        num_steps: ``T``; required only when no argument carries a time axis.
        obs_mask: bool, ``(..., T, D)`` or ``(..., T, 1)``; True where observed. NaN in a float
            ``y`` also marks an entry missing.
        method: the linearization rule, as for :class:`~numpyro_ssm.NonlinearGaussianSSM`.
        update_iterations: relinearizations of each update (posterior linearization).
        smoother_iterations: passes of the iterated smoother (0: one pass).
        parallel: associative scans for every smoothing pass.
        validate_args: check the covariances and the functions' Jacobians at ``initial_mean``.

    Example:
        A Poisson linear dynamical system for counts ``y`` of shape ``(T, 1)``:

        >>> import numpyro, numpyro.distributions as dist
        >>> def model(y):
        ...     a = numpyro.sample("a", dist.Uniform(-1.0, 1.0))
        ...     q = numpyro.sample("q", dist.HalfNormal(0.5))
        ...     c = numpyro.sample("c", dist.Normal(0.0, 2.0))
        ...     ssm = GeneralizedGaussianSSM(
        ...         jnp.zeros(1), lambda z, u, p: p["a"] * z, lambda z, u, p: z + p["c"],
        ...         lambda eta: dist.Poisson(jnp.exp(eta)),
        ...         initial_cov=jnp.eye(1), transition_scale_tril=q * jnp.eye(1),
        ...         params={"a": a, "c": c}, num_steps=y.shape[0], method="ghkf")
        ...     numpyro.sample("y", ssm, obs=y)
    """

    arg_constraints = {
        "initial_mean": constraints.real_vector,
        "initial_cov": constraints.positive_definite,
        "initial_scale_tril": constraints.lower_cholesky,
        "transition_cov": constraints.positive_definite,
        "transition_scale_tril": constraints.lower_cholesky,
    }
    pytree_data_fields = (*NonlinearSSMBase._array_names, "params", "inputs", "obs_mask")
    pytree_aux_fields = (
        "transition_fn",
        "emission_fn",
        "emission",
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
        emission_dist,
        *,
        initial_cov=None,
        initial_scale_tril=None,
        transition_cov=None,
        transition_scale_tril=None,
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
        owner = "GeneralizedGaussianSSM"
        for name, fn in (
            ("transition_fn", transition_fn),
            ("emission_fn", emission_fn),
            ("emission_dist", emission_dist),
        ):
            if not callable(fn):
                raise TypeError(f"{owner}: {name} must be a function, got {type(fn).__name__}.")
        nl.get_rule(method)
        check_real("initial_mean", initial_mean, owner)
        arrays = {"initial_mean": jnp.asarray(initial_mean)}
        for prefix, cov, tril in (
            ("initial", initial_cov, initial_scale_tril),
            ("transition", transition_cov, transition_scale_tril),
        ):
            check_real(f"{prefix}_cov", cov, owner)
            check_real(f"{prefix}_scale_tril", tril, owner)
            cov, arrays[f"{prefix}_scale_tril"] = _factor(owner, prefix, cov, tril)
            if cov is not None:
                setattr(self, f"{prefix}_cov", cov)
        self.transition_fn, self.emission_fn = transition_fn, emission_fn
        self.params, self.inputs = params, inputs
        m0 = arrays["initial_mean"]
        z = jax.ShapeDtypeStruct(m0.shape[-1:], m0.dtype)
        u = None if inputs is None else jax.tree.map(lambda x: jnp.asarray(x)[0], inputs)
        _, factorized, obs_dim = _probe(owner, emission_fn, emission_dist, z, u, params)
        self.emission = _Emission(emission_dist, factorized, obs_dim)
        self._obs_dim = obs_dim
        mask = check_bool_mask(obs_mask, owner)
        if mask is not None and not factorized and (mask.ndim < 2 or mask.shape[-1] != 1):
            raise ValueError(
                f"{owner}: the emission distribution is joint over the D={obs_dim} entries "
                f"(event shape ({obs_dim},)), so obs_mask masks whole steps: give shape "
                f"(..., T, 1), got {mask.shape}."
            )
        self._setup(
            owner,
            arrays,
            {name: _shape(a) for name, a in arrays.items()},
            num_steps,
            mask,
            (method, update_iterations, smoother_iterations, parallel),
            validate_args,
        )

    @classmethod
    def infer_shapes(
        cls,
        initial_mean=None,
        transition_fn=None,
        emission_fn=None,
        emission_dist=None,
        *,
        initial_cov=None,
        initial_scale_tril=None,
        transition_cov=None,
        transition_scale_tril=None,
        num_steps=None,
        obs_mask=None,
        inputs=None,
        params=None,
        **kwargs,
    ):
        """``(batch_shape, event_shape)`` from argument shapes.

        The observation dim ``D`` comes from ``emission_dist(emission_fn(z, u, params))``, so
        the functions (and ``params``, ``inputs`` as arrays) are needed.

        Args:
            initial_mean: shape tuple.
            transition_fn: the transition function.
            emission_fn: the emission function.
            emission_dist: the emission distribution's constructor.
            initial_cov: shape tuple, or give ``initial_scale_tril``.
            initial_scale_tril: shape tuple.
            transition_cov: shape tuple, or give ``transition_scale_tril``.
            transition_scale_tril: shape tuple.
            num_steps: ``T`` when no argument carries time.
            obs_mask: shape tuple, or None.
            inputs: the inputs pytree (arrays), or None.
            params: the functions' parameters, or None.
            **kwargs: ignored.

        Returns:
            ``(batch_shape, event_shape)`` with ``event_shape = (T, D)``.
        """
        from numpyro_ssm.distributions._nonlinear import _shapes

        m0 = tuple(initial_mean)
        z = jax.ShapeDtypeStruct(m0[-1:], jnp.result_type(float))
        u = None if inputs is None else jax.tree.map(lambda x: jnp.asarray(x)[0], inputs)
        _, _, obs_dim = _probe(cls.__name__, emission_fn, emission_dist, z, u, params)
        shapes = {
            "initial_mean": m0,
            "initial_scale_tril": tuple(initial_scale_tril or initial_cov),
            "transition_scale_tril": tuple(transition_scale_tril or transition_cov),
        }
        batch_shape, event_shape, _, _ = _shapes(
            cls.__name__,
            shapes,
            num_steps,
            None if obs_mask is None else tuple(obs_mask),
            inputs,
            obs_dim,
        )
        return batch_shape, event_shape

    @property
    def support(self):
        """The emission's support over ``(T, D)`` (from the distribution of one step)."""
        e = self.emission
        eta = jax.eval_shape(
            self.emission_fn,
            jax.ShapeDtypeStruct(self.initial_mean.shape[-1:], self.initial_mean.dtype),
            None if self.inputs is None else jax.tree.map(lambda x: x[0], self.inputs),
            self.params,
        )
        dummy = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), eta)
        base = e.emission_dist(dummy).support
        return constraints.independent(base, 2 - base.event_dim)

    @lazy_property
    def has_enumerate_support(self):
        """No: the sequence's outcomes are not enumerated."""
        return False

    def _container(self, arrays):
        e = self.emission
        return nl.GeneralizedGaussianParams(
            transition_fn=self.transition_fn,
            emission_fn=self.emission_fn,
            emission_moments_fn=e.moments,
            emission_log_prob_fn=e.log_prob,
            emission_sample_fn=e.sample,
            params=self.params,
            **arrays,
        )

    def _ops_mask(self, y, mask):
        observed = mask & ~jnp.isnan(y) if jnp.issubdtype(y.dtype, jnp.floating) else mask
        if self.emission.factorized:
            return observed
        return jnp.broadcast_to(jnp.all(observed, axis=-1, keepdims=True), observed.shape)

    @lazy_property
    def initial_cov(self):
        """Shape ``(..., S, S)``: ``P_0``."""
        return self.initial_scale_tril @ jnp.swapaxes(self.initial_scale_tril, -1, -2)

    @lazy_property
    def transition_cov(self):
        """Shape like ``transition_scale_tril``: ``Q_t``."""
        return self.transition_scale_tril @ jnp.swapaxes(self.transition_scale_tril, -1, -2)

    def sample(self, key, sample_shape=()):
        """Draws of the observations from the model itself (not reparameterized).

        Args:
            key: a JAX PRNG key.
            sample_shape: leading shape of the draws.

        Returns:
            Shape ``sample_shape + batch_shape + (T, D)``.
        """
        return self.sample_with_states(key, sample_shape)[1]

    def forecast(self, value, num_steps, **future):
        """Distribution of the next ``num_steps`` observations given ``value``.

        As :meth:`NonlinearGaussianSSM.forecast <numpyro_ssm.NonlinearGaussianSSM.forecast>`:
        future ``inputs`` and time-varying ``transition_scale_tril`` | ``transition_cov``.

        Args:
            value: observations, shape ``batch_shape + (T, D)``.
            num_steps: ``H``.
            **future: see above.

        Returns:
            A :class:`GeneralizedGaussianSSM` with ``event_shape (H, D)``.
        """
        future = dict(future)
        arrays, inputs = self._forecast_arrays(value, num_steps, future)
        if future:
            raise ValueError(f"forecast: unknown future arguments {sorted(future)}.")
        return GeneralizedGaussianSSM(
            arrays["initial_mean"],
            self.transition_fn,
            self.emission_fn,
            self.emission.emission_dist,
            initial_scale_tril=arrays["initial_scale_tril"],
            transition_scale_tril=arrays["transition_scale_tril"],
            params=self.params,
            inputs=inputs,
            num_steps=int(num_steps),
            method=self.method,
            update_iterations=self.update_iterations,
            smoother_iterations=self.smoother_iterations,
            parallel=self.parallel,
            validate_args=self._validate_args,
        )

r"""``SwitchingAutoregression``: a continuous path driven by a given discrete path.

The latent dynamics of a switching linear dynamical system, given its discrete path ``z``:

.. math::

    s_1 = [x_1; x_0; \dots; x_{2-L}] \sim \mathcal N(m_0, P_0), \qquad
    x_t \mid z_t = k \sim \mathcal N\big(A_k [x_{t-1}; \dots; x_{t-L}] + b_k,\; Q_k\big),
    \quad t = 2, \dots, T.

The value is the whole path *including the* ``L - 1`` *latents before the series*, shape
``(T + L - 1, D)``: ``[x_{2-L}, ..., x_0, x_1, ..., x_T]``. As a Gibbs site it is drawn exactly
given ``z`` and the observations by :func:`numpyro_ssm.infer.gibbs.latents_step` (the Kalman
sampler on the companion form, :func:`~numpyro_ssm.ops.switching.ar_to_lds`).
"""

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions import Distribution, constraints

from numpyro_ssm.ops.linalg import cholesky, solve_lower
from numpyro_ssm.ops.switching.autoregression import (
    ARParams,
    ar_log_likelihoods,
    lag_matrix,
    num_lags_of,
)

__all__ = ["SwitchingAutoregression"]


class SwitchingAutoregression(Distribution):
    """The latent path of a switching L-lag autoregression given the discrete path.

    Args:
        states: int, shape ``(..., T)``, the discrete path ``z``.
        ar_matrix: shape ``(K, D, L D)``, lag blocks most recent first.
        ar_bias: shape ``(K, D)``; zeros by default.
        ar_cov: shape ``(K, D, D)``, ``Q_k``. Or give ``ar_scale_tril``.
        ar_scale_tril: shape ``(K, D, D)``.
        initial_mean: shape ``(L D,)``, the mean of ``s_1 = [x_1; x_0; ...; x_{2-L}]``.
        initial_cov: shape ``(L D, L D)``. Or give ``initial_scale_tril``.
        initial_scale_tril: shape ``(L D, L D)``.
        validate_args: NumPyro's flag.

    ``batch_shape`` is that of ``states`` without time; ``event_shape = (T + L - 1, D)``.
    """

    arg_constraints = {
        "states": constraints.independent(constraints.nonnegative_integer, 1),
        "ar_matrix": constraints.independent(constraints.real, 3),
        "ar_bias": constraints.independent(constraints.real, 2),
        "ar_scale_tril": constraints.independent(constraints.lower_cholesky, 1),
        "initial_mean": constraints.real_vector,
        "initial_scale_tril": constraints.lower_cholesky,
    }
    support = constraints.independent(constraints.real_vector, 1)
    reparametrized_params = ["ar_matrix", "ar_bias", "ar_scale_tril", "initial_mean"]
    pytree_data_fields = (
        "states",
        "ar_matrix",
        "ar_bias",
        "ar_scale_tril",
        "initial_mean",
        "initial_scale_tril",
    )
    pytree_aux_fields = ("num_lags",)

    def __init__(
        self,
        states,
        ar_matrix,
        *,
        ar_bias=None,
        ar_cov=None,
        ar_scale_tril=None,
        initial_mean,
        initial_cov=None,
        initial_scale_tril=None,
        validate_args=None,
    ):
        owner = "SwitchingAutoregression"
        for a, b in (("ar_cov", "ar_scale_tril"), ("initial_cov", "initial_scale_tril")):
            if (locals()[a] is None) == (locals()[b] is None):
                raise ValueError(f"{owner}: give exactly one of {a} and {b}.")
        self.states = jnp.asarray(states)
        self.ar_matrix = jnp.asarray(ar_matrix)
        L = num_lags_of(self.ar_matrix.shape, f"{owner}: ar_matrix")
        K, D = self.ar_matrix.shape[-3:-1]
        self.ar_scale_tril = (
            cholesky(jnp.asarray(ar_cov)) if ar_scale_tril is None else jnp.asarray(ar_scale_tril)
        )
        self.ar_bias = (
            jnp.zeros((K, D), self.ar_matrix.dtype) if ar_bias is None else jnp.asarray(ar_bias)
        )
        self.initial_mean = jnp.asarray(initial_mean)
        self.initial_scale_tril = (
            cholesky(jnp.asarray(initial_cov))
            if initial_scale_tril is None
            else jnp.asarray(initial_scale_tril)
        )
        if self.initial_mean.shape[-1:] != (L * D,) or self.initial_scale_tril.shape[-2:] != (
            L * D,
            L * D,
        ):
            raise ValueError(
                f"{owner}: initial_mean must have shape (L*D,) = ({L * D},) and initial_cov "
                f"(L*D, L*D), got {self.initial_mean.shape} and {self.initial_scale_tril.shape}."
            )
        if self.states.ndim < 1 or self.states.shape[-1] < 1:
            raise ValueError(f"{owner}: states must have shape (..., T), got {self.states.shape}.")
        self.num_lags = L
        T = self.states.shape[-1]
        super().__init__(self.states.shape[:-1], (T + L - 1, D), validate_args=validate_args)

    @property
    def ar_params(self) -> ARParams:
        """The AR parameters as :class:`~numpyro_ssm.ops.switching.ARParams`."""
        return ARParams(self.ar_matrix, self.ar_bias, self.ar_scale_tril)

    def log_prob(self, value):
        """``log N(s_1 | m_0, P_0) + sum_{t >= 2} log N(x_t | A_{z_t} x_{t-1:t-L} + b, Q)``.

        Args:
            value: shape ``(..., T + L - 1, D)``, the path with the latents before it.

        Returns:
            Shape ``sample + batch``.
        """
        x = jnp.asarray(value)
        L = self.num_lags
        first = jnp.flip(x[..., :L, :], axis=-2).reshape(x.shape[:-2] + (-1,))
        resid = first - self.initial_mean
        white = solve_lower(self.initial_scale_tril, resid[..., None])[..., 0]
        diag = jnp.diagonal(self.initial_scale_tril, axis1=-2, axis2=-1)
        n = first.shape[-1]
        log_first = (
            -0.5 * jnp.sum(white**2, -1)
            - jnp.sum(jnp.log(diag), -1)
            - 0.5 * n * jnp.log(2 * jnp.pi)
        )
        lags = lag_matrix(x, L)[..., L:, :]
        log_lik = ar_log_likelihoods(self.ar_params, x[..., L:, :], lags)  # (..., T - 1, K)
        z = jnp.broadcast_to(self.states[..., 1:], log_lik.shape[:-1])
        return log_first + jnp.take_along_axis(log_lik, z[..., None], -1)[..., 0].sum(-1)

    def sample(self, key, sample_shape=()):
        """Draw paths recursively, shape ``sample_shape + batch_shape + (T + L - 1, D)``.

        Args:
            key: a ``jax.random`` key.
            sample_shape: leading shape of independent draws.

        Returns:
            Paths including the ``L - 1`` latents before the series.
        """
        shape = tuple(sample_shape) + self.batch_shape
        L = self.num_lags
        T1, D = self.event_shape
        first_key, noise_key = jax.random.split(key)
        eps0 = jax.random.normal(first_key, shape + (L * D,))
        s1 = self.initial_mean + (self.initial_scale_tril @ eps0[..., None])[..., 0]
        z = jnp.broadcast_to(self.states, shape + self.states.shape[-1:])
        noise = jax.random.normal(noise_key, (T1 - L,) + shape + (D,))
        A, b, U = self.ar_params

        def step(lags, inputs):
            z_t, eps = inputs
            x = (A[z_t] @ lags[..., None])[..., 0] + b[z_t] + (U[z_t] @ eps[..., None])[..., 0]
            return jnp.concatenate([x, lags[..., : (L - 1) * D]], -1), x

        _, rest = lax.scan(step, s1, (jnp.moveaxis(z[..., 1:], -1, 0), noise))
        head = jnp.flip(s1.reshape(shape + (L, D)), axis=-2)
        return jnp.concatenate([head, jnp.moveaxis(rest, 0, -2)], axis=-2)

"""The Poisson LDS on the earthquake counts, written two ways for ``benchmarks/nuts.py``.

The model of ``examples/earthquakes_poisson_lds.py`` (issue 18's real CMGF example), on
``load_earthquakes()`` (T = 107)::

    mu ~ N(3, 1),  phi ~ U(0, 1),  sigma ~ HalfNormal(0.5),
    z_1 ~ N(mu, sigma² / (1 - phi²)),  z_{t+1} = mu + phi (z_t - mu) + sigma eps_t,
    y_t ~ Poisson(exp(z_t))

- ``ours``: a ``GeneralizedGaussianSSM`` sample site, the 107 log-rates integrated out by
  conditional-moments Gaussian filtering (Gauss-Hermite rule of order 3). NUTS samples three
  parameters; the likelihood is an approximation (docs/nonlinear.md).
- ``latent_explicit``: the exact joint density, the log-rates from standard-normal
  innovations, 110 dimensions.
- ``priors_only``: the three parameters with no likelihood (the floor).

Every variant starts at the prior medians (``init_to_median``): from NumPyro's default start
(uniform in (-2, 2) on the unconstrained scale) the CMGF chains can reach a spurious local mode
of the approximate likelihood near ``sigma = 2.7`` (docs/nonlinear.md).

The two posteriors are not the same distribution (one likelihood is approximate), so the
benchmark compares their time per effective sample of ``(mu, phi, sigma)`` and prints both
posterior means; the example and ``tests/test_examples.py`` compare the posteriors themselves.
"""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import init_to_median

from numpyro_ssm import GeneralizedGaussianSSM
from numpyro_ssm.datasets import load_earthquakes

PARAMS = ("mu", "phi", "sigma")


def _priors():
    mu = numpyro.sample("mu", dist.Normal(3.0, 1.0))
    phi = numpyro.sample("phi", dist.Uniform(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    return mu, phi, sigma


def _ar1(z, u, p):
    return p["mu"] + p["phi"] * (z - p["mu"])


def _log_rate(z, u, p):
    return z


def _poisson(eta):
    return dist.Poisson(jnp.exp(eta))


def ours(counts):
    """``counts``: shape ``(T,)``; the log-rates integrated out by CMGF (``"ghkf"``)."""
    mu, phi, sigma = _priors()
    ssm = GeneralizedGaussianSSM(
        jnp.reshape(mu, (1,)),
        _ar1,
        _log_rate,
        _poisson,
        initial_scale_tril=jnp.reshape(sigma / jnp.sqrt(1.0 - phi**2), (1, 1)),
        transition_scale_tril=jnp.reshape(sigma, (1, 1)),
        params={"mu": mu, "phi": phi},
        num_steps=counts.shape[0],
        method="ghkf",
    )
    numpyro.sample("y", ssm, obs=counts[:, None])


def latent_explicit(counts):
    """The log-rates sampled explicitly from standard-normal innovations (exact joint)."""
    mu, phi, sigma = _priors()
    eps = numpyro.sample("eps", dist.Normal(0.0, 1.0).expand(counts.shape).to_event(1))
    z_1 = mu + sigma / jnp.sqrt(1.0 - phi**2) * eps[0]

    def step(z, e):
        z_next = mu + phi * (z - mu) + sigma * e
        return z_next, z_next

    _, rest = jax.lax.scan(step, z_1, eps[1:])
    z = jnp.concatenate([z_1[None], rest])
    numpyro.sample("y", dist.Poisson(jnp.exp(z)).to_event(1), obs=counts)


def priors_only(counts):
    """The floor: the same parameters and priors, no likelihood."""
    del counts
    _priors()


POSTERIOR = {
    "data": lambda: jnp.asarray(load_earthquakes().counts, dtype=jnp.float64),
    "params": PARAMS,
    "point": {"mu": 2.9, "phi": 0.9, "sigma": 0.15},
    "init_strategy": init_to_median,
    "variants": {
        "ours": ours,
        "latent_explicit": latent_explicit,
        "priors_only": priors_only,
    },
}

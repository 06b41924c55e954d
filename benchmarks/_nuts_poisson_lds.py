"""The Poisson LDS of ``examples/earthquakes_poisson_lds.py`` as a posterior for ``nuts.py``.

The example's own model functions (loaded from its file, so the benchmark times exactly the
model the example fits), on ``load_earthquakes()`` (T = 107)::

    mu ~ N(3, 1),  phi ~ U(0, 1),  sigma ~ HalfNormal(0.5),
    z_1 ~ N(mu, sigma² / (1 - phi²)),  z_{t+1} = mu + phi (z_t - mu) + sigma eps_t,
    y_t ~ Poisson(exp(z_t))

- ``ours``: the example's ``marginalized``, a ``GeneralizedGaussianSSM`` sample site with the 107
  log-rates integrated out by conditional-moments Gaussian filtering (Gauss-Hermite rule of
  order 3). NUTS samples three parameters; the likelihood is an approximation
  (docs/nonlinear.md).
- ``latent_explicit``: the example's ``explicit``, the exact joint density with the log-rates
  from standard-normal innovations, 110 dimensions.
- ``priors_only``: the three parameters with no likelihood (the floor).

Every variant starts at the prior medians (``init_to_median``), as in the example: from
NumPyro's default start (uniform in (-2, 2) on the unconstrained scale) the CMGF chains can
reach a spurious local mode of the approximate likelihood near ``sigma = 2.7``
(docs/nonlinear.md).

The two posteriors are not the same distribution (one likelihood is approximate), so the
benchmark compares their time per effective sample of ``(mu, phi, sigma)`` and prints both
posterior means; the example and ``tests/test_examples.py`` compare the posteriors themselves.
"""

import importlib.util
from pathlib import Path

import jax.numpy as jnp
from numpyro.infer import init_to_median

from numpyro_ssm.datasets import load_earthquakes

_EXAMPLE_FILE = Path(__file__).resolve().parents[1] / "examples" / "earthquakes_poisson_lds.py"


def _load_example():
    """The example as a module (its ``main`` is not run)."""
    spec = importlib.util.spec_from_file_location("earthquakes_poisson_lds", _EXAMPLE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_example = _load_example()


def ours(counts):
    """``counts``: shape ``(T,)``; the log-rates integrated out by CMGF (``"ghkf"``)."""
    _example.marginalized(counts[:, None])


def priors_only(counts):
    """The floor: the same parameters and priors, no likelihood."""
    del counts
    _example.priors()


POSTERIOR = {
    "data": lambda: jnp.asarray(load_earthquakes().counts, dtype=jnp.float64),
    "params": _example.PARAMS,
    "point": {"mu": 2.9, "phi": 0.9, "sigma": 0.15},
    "init_strategy": init_to_median,
    "variants": {
        "ours": ours,
        "latent_explicit": _example.explicit,
        "priors_only": priors_only,
    },
}

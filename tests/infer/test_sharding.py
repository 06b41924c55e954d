"""Multi-device: a plate of sequences sharded over 4 (emulated CPU) devices gives the same numbers.

Runs in a subprocess, because the device count is fixed when JAX starts.
"""

import subprocess
import sys
import textwrap

from emulated_devices import emulated_devices_env

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from numpyro.infer.util import log_density

    from numpyro_ssm import DiscreteHMM
    from numpyro_ssm.infer import pointwise_log_likelihood

    assert jax.device_count() == 4, jax.devices()
    A = np.array([[0.9, 0.1], [0.2, 0.8]])

    def model(y):
        rates = numpyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
        with numpyro.plate("series", y.shape[0]):
            hmm = DiscreteHMM(np.ones(2) / 2, A, dist.Poisson(rates), num_steps=y.shape[-1])
            numpyro.sample("y", hmm, obs=y)

    rng = np.random.default_rng(0)
    y = rng.poisson(rng.choice([1.0, 8.0], size=(8, 30))).astype(float)
    mesh = Mesh(np.array(jax.devices()), ("series",))
    y_sharded = jax.device_put(y, NamedSharding(mesh, P("series", None)))
    assert len(y_sharded.sharding.device_set) == 4
    params = {"rates": jnp.array([1.5, 7.0])}

    @jax.jit
    def joint(y):
        return log_density(model, (y,), {}, params)[0]

    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    close(joint(y_sharded), joint(y))
    samples = {"rates": jnp.array([[1.5, 7.0], [1.0, 9.0]])}
    close(
        pointwise_log_likelihood(model, samples, y_sharded)["y"],
        pointwise_log_likelihood(model, samples, y)["y"],
    )
    print("OK")
    """
)


def test_sharded_plate_log_likelihood_equals_unsharded():
    env = emulated_devices_env(4)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")

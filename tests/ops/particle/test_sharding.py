"""Particles sharded over 4 (emulated CPU) devices give the same numbers as on one device.

Runs in a subprocess, because the device count is fixed when JAX starts. With JAX's
partitionable Threefry (the default) the random draws do not depend on the sharding, so the
two runs agree to rounding (the sums over particles are split differently).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from emulated_devices import emulated_devices_env

TESTS = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from particle_cases import lgssm_case, lgssm_model
    from numpyro_ssm.ops.particle import particle_filter

    assert jax.device_count() == 4, jax.devices()
    params, y = lgssm_case(0, T=15)
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("particles",)), P("particles"))

    def run(sharding):
        return jax.jit(
            lambda key: particle_filter(
                key, lgssm_model(), params, y, 1024, particle_sharding=sharding
            )
        )(jax.random.key(3))

    sharded, single = run(sharding), run(None)
    assert len(sharded.final_particles.sharding.device_set) == 4
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10)
    close(sharded.log_marginal, single.log_marginal)
    close(sharded.filtered_means, single.filtered_means)
    np.testing.assert_array_equal(sharded.ancestors, single.ancestors)
    print("OK")
    """
)


def test_sharded_particles_equal_unsharded():
    env = emulated_devices_env(4)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")

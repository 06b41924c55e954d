"""The Gibbs sweeps and the ARHMM likelihood on 4 emulated CPU devices: the same numbers.

Runs in a subprocess, because the device count is fixed when JAX starts.
"""

import subprocess
import sys
import textwrap

from emulated_devices import emulated_devices_env

SCRIPT = textwrap.dedent(
    """
    from functools import partial
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.util import log_density

    from numpyro_ssm import AutoregressiveHMM
    from numpyro_ssm.ops.switching import (
        SLDSEmission, TransitionPrior, ar_prior, arhmm_gibbs_step, init_arhmm_gibbs,
        init_slds_gibbs, shard_sequences, slds_gibbs_step,
    )

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    B, T, D, K = 8, 40, 2, 3
    y = jnp.asarray(rng.normal(size=(B, T, D)).cumsum(1) * 0.3)
    mask = jnp.ones((B, T), bool).at[5, 30:].set(False)
    ys, masks = shard_sequences((y, mask))
    assert len(ys.sharding.device_set) == 4
    def close(a, b):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)

    prior = ar_prior(D, 1)
    transitions = TransitionPrior(1.0, 10.0, jnp.ones(K) / K, gamma=2.0)
    state = init_arhmm_gibbs(jax.random.key(0), y, mask, num_states=K, num_lags=1,
                             ar_prior=prior, transition_prior=transitions)
    step = jax.jit(partial(arhmm_gibbs_step, ar_prior=prior, transition_prior=transitions))
    plain = step(jax.random.key(1), state, y, mask)
    sharded_state = state._replace(states=shard_sequences(state.states))
    sharded = step(jax.random.key(1), sharded_state, ys, masks)
    assert len(sharded.states.sharding.device_set) == 4, sharded.states.sharding
    np.testing.assert_array_equal(np.asarray(sharded.states), np.asarray(plain.states))
    jax.tree.map(close, sharded.ar, plain.ar)
    close(sharded.transition_matrix, plain.transition_matrix)

    emission = SLDSEmission(jnp.eye(D), jnp.zeros(D), 0.5 * jnp.eye(D), jnp.zeros(D), jnp.eye(D))
    slds = init_slds_gibbs(jax.random.key(2), y, mask[..., None], num_states=K, num_lags=1,
                           emission=emission, ar_prior=prior, transition_prior=transitions)
    sstep = jax.jit(partial(slds_gibbs_step, emission=emission, ar_prior=prior,
                            transition_prior=transitions))
    plain = sstep(jax.random.key(3), slds, y, mask[..., None])
    sharded_slds = slds._replace(states=shard_sequences(slds.states))
    sharded = sstep(jax.random.key(3), sharded_slds, ys, masks[..., None])
    close(sharded.latents, plain.latents)
    np.testing.assert_array_equal(np.asarray(sharded.states), np.asarray(plain.states))
    jax.tree.map(close, sharded.ar, plain.ar)

    def model(y, mask):
        A = numpyro.sample("A", dist.Normal(0, 0.3).expand([K, D, D]).to_event(3))
        with numpyro.plate("series", y.shape[0]):
            numpyro.sample("y", AutoregressiveHMM(jnp.ones(K) / K, jnp.full((K, K), 1 / K), A,
                                                  ar_cov=jnp.broadcast_to(jnp.eye(D), (K, D, D)),
                                                  num_steps=T, obs_mask=mask), obs=y)

    params = {"A": jnp.asarray(rng.normal(size=(K, D, D)) * 0.2)}
    joint = jax.jit(lambda y, m: log_density(model, (y, m), {}, params)[0])
    close(joint(ys, masks), joint(y, mask))
    try:
        shard_sequences(jnp.zeros((3, 2)))
        raise SystemExit("expected a ValueError")
    except ValueError as err:
        assert "multiple of the 4 devices" in str(err)
    print("OK")
    """
)


def test_sharded_sweeps_and_likelihood_equal_unsharded():
    env = emulated_devices_env(4)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")

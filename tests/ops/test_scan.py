"""ops.scan.prefix_scan: chunked parallel scans against one associative scan and a loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_ssm.ops import prefix_scan


def _combine(earlier, later):
    # A non-commutative operator on pytrees: (matrix product, running sum).
    return earlier[0] @ later[0], earlier[1] + later[1]


def _make_element(inputs_t):
    matrix, value = inputs_t
    return matrix, value


def _loop(first, inputs, reverse):
    """Reference: the combinations by a Python loop, in the documented order."""
    matrices, values = (np.asarray(x) for x in inputs)
    n = matrices.shape[0]
    out_m, out_v = [None] * (n + 1), [None] * (n + 1)
    if reverse:
        out_m[n], out_v[n] = np.broadcast_to(first[0], (3, 3)), np.asarray(first[1])
        for t in range(n - 1, -1, -1):
            out_m[t], out_v[t] = matrices[t] @ out_m[t + 1], values[t] + out_v[t + 1]
    else:
        out_m[0], out_v[0] = np.broadcast_to(first[0], (3, 3)), np.asarray(first[1])
        for t in range(n):
            out_m[t + 1], out_v[t + 1] = out_m[t] @ matrices[t], out_v[t] + values[t]
    return np.stack(out_m), np.stack(out_v)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("num_steps", [12, 13, 1])
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 5, 12, 50])
def test_chunked_parallel_scan_equals_loop_and_single_scan(reverse, num_steps, chunk_size):
    rng = np.random.default_rng(num_steps + chunk_size)
    # Entries near 1/3 keep products of up to 13 matrices of order one.
    inputs = (rng.uniform(0.2, 0.45, size=(num_steps, 3, 3)), rng.normal(size=num_steps))
    first = (rng.uniform(0.2, 0.45, size=(1, 3)) if not reverse else rng.uniform(size=(3, 1)), 0.5)
    first = (jnp.asarray(first[0]), jnp.asarray(first[1]))
    expected = _loop(first, inputs, reverse)
    chunked = prefix_scan(
        _combine,
        _make_element,
        first,
        inputs,
        parallel=True,
        reverse=reverse,
        chunk_size=chunk_size,
    )
    whole = prefix_scan(_combine, _make_element, first, inputs, parallel=True, reverse=reverse)
    for got, ref, one in zip(chunked, expected, whole, strict=True):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got, one, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("parallel, chunk_size", [(False, None), (True, None), (True, 4)])
def test_keep_returns_its_part_of_every_combination(reverse, parallel, chunk_size):
    # Prefixes from a row have equal rows, suffixes into a column equal columns: keep one.
    def keep(out):
        return (out[0][..., :, -1] if reverse else out[0][..., -1, :]), out[1]

    rng = np.random.default_rng(3)
    inputs = (rng.uniform(0.2, 0.45, size=(11, 3, 3)), rng.normal(size=11))
    first = (jnp.asarray(rng.uniform(size=(3, 1) if reverse else (1, 3))), jnp.asarray(0.5))
    expected = keep(_loop(first, inputs, reverse))
    got = prefix_scan(
        _combine,
        _make_element,
        first,
        inputs,
        parallel=parallel,
        reverse=reverse,
        chunk_size=chunk_size,
        keep=keep,
    )
    for g, ref in zip(got, expected, strict=True):
        assert g.shape == ref.shape
        np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-15)


def test_chunked_scan_under_jit_vmap_and_grad():
    rng = np.random.default_rng(0)
    matrices = rng.uniform(0.2, 0.45, size=(2, 11, 3, 3))
    first = (jnp.full((1, 3), 0.3), jnp.zeros(()))

    def total(mats, chunk_size):
        values = jnp.zeros(mats.shape[0])
        out, _ = prefix_scan(
            _combine, _make_element, first, (mats, values), parallel=True, chunk_size=chunk_size
        )
        return jnp.sum(jnp.log(out[-1]))

    batched = jax.jit(jax.vmap(jax.value_and_grad(lambda m: total(m, 4))))
    reference = jax.vmap(jax.value_and_grad(lambda m: total(m, None)))
    for got, ref in zip(batched(matrices), reference(matrices), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12)

"""The environment of a subprocess that runs JAX on emulated CPU devices."""

import os


def emulated_devices_env(count):
    """``os.environ`` with ``count`` host CPU devices, keeping tests/conftest.py's XLA flags."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
    return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")

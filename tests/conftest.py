"""Test configuration: x64 everywhere (oracle checks at rtol <= 1e-8).

float32 checks pass float32 arrays explicitly and assert the output dtype, so they test the
float32 code path even with x64 enabled.
"""

import jax

jax.config.update("jax_enable_x64", True)

"""Hypothesis settings shared by the property-based tests (tests/distributions/test_properties_*).

Few examples, drawn from small sets of shapes so that a jitted function compiles once per shape;
the same examples in every run; no example database in the checkout; no shrinking (a failing
example is printed as drawn, and shrinking re-runs compilations for minutes).
``NUMPYRO_SSM_HYPOTHESIS_EXAMPLES=200`` explores more.
"""

import os

from hypothesis import HealthCheck, Phase, settings


def property_settings(default_examples):
    """``hypothesis.settings`` with ``default_examples`` examples (or the environment's)."""
    return settings(
        max_examples=int(os.environ.get("NUMPYRO_SSM_HYPOTHESIS_EXAMPLES", default_examples)),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
        phases=(Phase.explicit, Phase.generate),
    )

"""Side-by-side benchmarks of numpyro_ssm against TFP, dynamax, statsmodels and hmmlearn.

Run everything with ``python -m benchmarks --quick``; see ``docs/performance.md``.
"""

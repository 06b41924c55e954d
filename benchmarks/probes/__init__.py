"""One-off research probes (XLA loop limits, compile-time floors), not peer comparisons."""

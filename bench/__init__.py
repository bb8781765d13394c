"""Benchmarks and the soak. Run as modules from the repository root (``python -m bench.run``,
``make bench``), so that they share the helpers of tests/ instead of copying them."""

"""Benchmarks of moot (run ``python -m bench``); timings live here, never in tests."""

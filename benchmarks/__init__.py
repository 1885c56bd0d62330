"""Benchmarks, each run as `python -m benchmarks.NAME`; each ends with one JSON line of measured figures."""

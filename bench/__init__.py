"""Benchmarks (``python -m bench.ingest``) and the seeded synthetic data they and the demo use."""

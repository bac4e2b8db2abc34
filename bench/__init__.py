"""Benchmarks (``python -m bench.ingest``): the product measured from outside; not in the wheel or the image."""

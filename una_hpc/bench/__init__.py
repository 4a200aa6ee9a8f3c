"""Benchmarks that are product commands: `una-hpc bench replicate` (una_hpc/bench/replicate.py)."""

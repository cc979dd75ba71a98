"""Benchmarks. Each prints its figure beside a raw baseline measured in the same
run, and the ratio. Run them all with `make bench` (python -m bench)."""

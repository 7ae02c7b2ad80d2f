"""Benchmarks for pounce_worker; see bench/README.rst. Servers import ``bench.apps:app``."""

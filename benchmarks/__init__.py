"""Throughput benchmarks; each module runs alone (`python -m benchmarks.NAME`) or from run_all."""

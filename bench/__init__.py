"""Benchmark suite: the gateway and a naive reference bridge under the same load (issue 5)."""

"""Tether's benchmarks: latency, throughput, footprint and start-up, next to baselines."""

"""Benchmarks: ``cdistream bench`` (speed and memory targets live here, not in tests)."""

from .run import format_table, plot_latency, run_bench, run_scaleout, write_json

__all__ = ["format_table", "plot_latency", "run_bench", "run_scaleout", "write_json"]

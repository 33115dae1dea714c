"""Compute-only measurements: the sCDI/pCDI pair per batch size, and the ER/HIO baseline on
the same patterns, on this machine, in this run."""

from __future__ import annotations

import time

import numpy as np

from cdistream.inference import BUCKETS, Reconstructor
from cdistream.physics import diffraction_magnitudes, phase_retrieval, random_objects

__all__ = ["baseline_ms", "model_throughput", "test_patterns"]


def test_patterns(count: int, seed: int = 99, pad: int = 1) -> np.ndarray:
    """Magnitudes of ``count`` recipe objects; ``pad=2`` zero-pads the object to twice the
    grid first (the paper's 64 x 64 setting for its iterative comparison)."""
    objects = random_objects(count, seed)
    if pad > 1:
        n = objects.shape[-1]
        padded = np.zeros((count, n * pad, n * pad), objects.dtype)
        padded[:, :n, :n] = objects
        objects = padded
    return diffraction_magnitudes(objects)


def model_throughput(rec: Reconstructor, seconds: float = 2.0) -> dict[int, float]:
    """Reconstructions per second of the network pair alone (traced function, no pre/post
    processing), for each batch-size bucket, each run for about ``seconds``."""
    rec.warm_up()
    patterns = test_patterns(max(BUCKETS))
    rates = {}
    for size in BUCKETS:
        batch = patterns[:size]
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            rec.predict(batch)
            done += size
        rates[size] = done / (time.perf_counter() - start)
    return rates


def baseline_ms(patterns: np.ndarray, iterations: int = 620, singles: int = 5) -> dict[str, float]:
    """Milliseconds per pattern of ER/HIO (``iterations``, shrink-wrap): one pattern at a time
    (median of ``singles``) and batched over all ``patterns``."""
    times = []
    for p in patterns[:singles]:
        t0 = time.perf_counter()
        phase_retrieval(p, iterations, seed=0)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    phase_retrieval(patterns, iterations, seed=0)
    batched = (time.perf_counter() - t0) / len(patterns)
    return {"single_ms": 1e3 * float(np.median(times)), "batched_ms": 1e3 * batched}

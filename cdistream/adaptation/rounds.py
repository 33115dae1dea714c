"""What a round of adaptation does in its own process (one thread, the lowest CPU priority):
label the frames that deserve trust, tune, and judge models on frames. Each function takes
and returns plain values (weights as numpy arrays), so that a process pool can carry them."""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

from cdistream.inference.gate import REFINE_ITERATIONS
from cdistream.inference.reconstructor import Reconstructor

from .judge import networks_chi2
from .tuning import TuneSettings, tune

__all__ = ["judge_round", "one_quiet_thread", "refined_labels", "tune_round"]

log = logging.getLogger(__name__)


def one_quiet_thread() -> None:
    """A pool's initializer: the lowest CPU priority and one compute thread, so that a round
    takes at most one core, and only what the service leaves. SCHED_IDLE where Linux has it:
    under nice 19 alone the service's p99 latency at half its capacity rose 1.7x while a round
    tuned (``cdistream bench``), the service's compute threads waiting for the core."""
    os.nice(19)
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = "1"
    from cdistream.inference.tf import tensorflow

    tf = tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


@functools.cache
def _reconstructor(source: str) -> Reconstructor:
    """The networks of ``source`` in float32, loaded once per process; weights swapped in."""
    return Reconstructor.load(source, precision="float32")


def refined_labels(reconstructor: Reconstructor, counts: np.ndarray,
                   valid: np.ndarray) -> np.ndarray:
    """Each frame's refined reconstruction (:func:`cdistream.inference.reconstructor.
    refine_result`) where it fits the pattern better than the networks alone, NaN elsewhere:
    labels the data themselves vouch for."""
    magnitudes = np.sqrt(np.maximum(counts, 0))
    alone = reconstructor.reconstruct(magnitudes, 0, valid)
    refined = reconstructor.reconstruct(magnitudes, REFINE_ITERATIONS, valid)
    labels = refined.complex_object().astype(np.complex64)
    labels[~(refined.chi2 < alone.chi2)] = np.nan
    return labels


def tune_round(source: str, weights: list[np.ndarray], counts: np.ndarray, valid: np.ndarray,
               settings: TuneSettings, path: str | None = None) -> dict:
    """The networks ``weights`` (architecture of ``source``) tuned on the frames: the new
    weights (saved to ``path`` when given, so that the service never spends its own time
    writing them), the losses, the wall and CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    rec = _reconstructor(source)
    rec.use_weights(weights)
    labels = refined_labels(rec, counts, valid)
    result = tune(rec.model, counts, valid, settings, labels)
    if path is not None:
        result.model.save(path)
    return {"weights": result.model.get_weights(), "losses": result.losses.tolist(),
            "labelled": int(np.isfinite(labels).all(axis=(1, 2)).sum()),
            "frames": len(counts), "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu}


def judge_round(source: str, models: dict[str, list[np.ndarray]], counts: np.ndarray,
                valid: np.ndarray) -> dict[str, list[float]]:
    """Each named set of weights' chi2 on each frame, the networks alone."""
    rec = _reconstructor(source)
    out = {}
    for name, weights in models.items():
        rec.use_weights(weights)
        out[name] = networks_chi2(rec, counts, valid).tolist()
    return out

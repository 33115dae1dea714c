"""3D reconstructions off the hot path: one worker process, at the lowest CPU priority, phases
at most one series' cube at a time; a series that ends while it is busy is skipped (counted),
never queued behind it, so the next series' frames are never delayed by a 3D reconstruction."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cdistream.volume import Cube

__all__ = ["VOLUME_TIMEOUT_S", "VolumeJob", "VolumeWorker"]

log = logging.getLogger(__name__)

VOLUME_TIMEOUT_S = 300.0  # a run waits this long for its volume, then closes without it


def _lowest_priority() -> None:
    os.nice(19)  # the service's own threads first, always


def _reconstruct(cube: Cube, path: str, meta: dict) -> dict:
    """In the worker process: phase the cube, write the volume file, say what came of it."""
    from cdistream.volume import reconstruct_volume
    from cdistream.volume_file import write_volume

    volume = reconstruct_volume(cube)
    write_volume(path, volume, cube, meta)
    return {"path": path, "shape": tuple(volume.obj.shape), "chi2": volume.chi2,
            "seconds": volume.seconds}


@dataclass
class VolumeJob:
    run: int
    future: Future
    deadline: float


class VolumeWorker:
    """``submit`` a cube (refused while busy); ``finished`` hands back what is done."""

    def __init__(self, timeout_s: float = VOLUME_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._job: VolumeJob | None = None

    @property
    def busy(self) -> bool:
        return self._job is not None

    def submit(self, run: int, cube: Cube, path: Path, meta: dict) -> bool:
        """Start phasing ``cube`` into ``path``; False (nothing started) while busy."""
        if self._job is not None:
            return False
        if self._pool is None:  # started on first use: a spawned interpreter, nothing shared
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_lowest_priority)
        future = self._pool.submit(_reconstruct, cube, str(path), meta)
        self._job = VolumeJob(run, future, time.monotonic() + self.timeout_s)
        return True

    def finished(self) -> tuple[int, dict | BaseException] | None:
        """(run, result or the exception it raised) of a job done or past its time, once."""
        job = self._job
        if job is None:
            return None
        if job.future.done():
            self._job = None
            error = job.future.exception()
            return job.run, error if error is not None else job.future.result()
        if time.monotonic() > job.deadline:
            self._job = None  # its result, should it come, is not waited for
            return job.run, TimeoutError(f"no volume after {self.timeout_s:.0f} s")
        return None

    def wait(self, timeout_s: float) -> None:
        """Give a running job up to ``timeout_s`` to finish (the service stopping)."""
        if self._job is not None:
            try:
                self._job.future.result(timeout=timeout_s)
            except Exception:  # reported by finished()
                log.debug("volume job ended with an error", exc_info=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

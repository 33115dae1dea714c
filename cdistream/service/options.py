"""Options checked before anything starts: every option the service cannot honour is refused
with one line naming what is allowed, instead of a service that starts and then rejects every
frame."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from cdistream.errors import ConfigError
from cdistream.inference import BUCKETS

__all__ = ["MIN_MEMORY_BUDGET", "checked", "roi_for_model"]

MIN_MEMORY_BUDGET = 64 * 2**20


def roi_for_model(roi, n: int):
    """The model takes n x n: an ROI of k * n pixels is binned k x k down to it."""
    if roi.size == n:
        return roi
    if roi.size % n == 0 and roi.binning in (1, roi.size // n):
        return dataclasses.replace(roi, size=n, binning=roi.size // n)
    allowed = ", ".join(str(n * k) for k in range(1, 5))
    raise ConfigError(
        f"--roi-size {roi.size}: the model takes {n} x {n}; use {allowed}, ... (a multiple of"
        f" {n} is binned down to {n})"
    )


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".cdistream-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--archive {directory}: not a writable directory ({exc.strerror})"
        ) from None


def checked(config):
    """``config`` if it can work, else :class:`ConfigError`; everything but the ROI, which
    the model decides (:func:`roi_for_model`), so that these are refused at once, before the
    model (and TensorFlow) loads."""
    if not 1 <= config.max_batch <= BUCKETS[-1]:
        raise ConfigError(f"--max-batch {config.max_batch}: allowed 1 to {BUCKETS[-1]}")
    if config.max_wait_ms < 0:
        raise ConfigError(f"--max-wait-ms {config.max_wait_ms}: must be 0 or more")
    if config.queue_size < 1:
        raise ConfigError(f"--queue-size {config.queue_size}: must be 1 or more")
    if config.memory_budget < MIN_MEMORY_BUDGET:
        raise ConfigError(
            f"--memory-budget {config.memory_budget}: at least {MIN_MEMORY_BUDGET} bytes"
        )
    if config.series_timeout <= 0:
        raise ConfigError(f"--series-timeout {config.series_timeout}: must be above 0")
    if config.refine_iterations < 1:
        raise ConfigError(f"--refine-iterations {config.refine_iterations}: at least 1")
    if config.adapt and config.workers:
        raise ConfigError(
            "--adapt with --workers: the PVA workers do not load adapted networks yet; adapt"
            " in-process (no --workers)"
        )
    if config.archive is not None:
        _writable(Path(config.archive))
    if config.curve_keys is not None and not os.path.isdir(config.curve_keys):
        raise ConfigError(
            f"--curve-keys {config.curve_keys}: not a directory (see docs/security.md)"
        )
    return config

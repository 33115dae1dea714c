"""N reconstruction workers behind PVAccess, seen from the ingest process: it hosts the channel
``PREFIX:frames`` on which it publishes cropped patterns, starts (or, across hosts, expects)
``pvapy-hpc-consumer`` processes running :class:`~.worker.ReconstructionProcessor` whose
distributor hands each pattern to one worker in turn, and collects the results from every
worker's ``PREFIX:worker:K:output``. Ordering and lost frames are the
:class:`~.sequencer.Sequencer`'s job; this class only moves patterns and results."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from cdistream.errors import ConfigError

from .common import pvaccess
from .worker import frame_pv, result_fields

__all__ = ["SERVER_QUEUE", "WorkerPool", "consumer_command"]

SERVER_QUEUE = 1000  # PVA updates the server queues for each worker's monitor
LIVED_S = 60.0  # a worker that ran this long before it exited is restarted after 1 s
MOST_PAUSE_S = 60.0  # the longest pause before restarting a worker that keeps dying young
SETTLED_KEPT = 100_000  # ids taken or given up on whose results may still come, the newest kept

log = logging.getLogger(__name__)


def consumer_command(prefix: str, worker: int, processor_args: dict[str, Any]) -> list[str]:
    """The command that runs worker ``worker`` (1, 2, ...) on any host that reaches the PVA
    channels (``docs/scale-out.md``)."""
    exe = shutil.which("pvapy-hpc-consumer") or os.path.join(
        os.path.dirname(sys.executable), "pvapy-hpc-consumer"
    )
    return [
        exe,
        "--input-channel", f"{prefix}:frames",
        "--output-channel", f"{prefix}:worker:*:output",
        "--processor-class", "cdistream.service.pva.worker.ReconstructionProcessor",
        "--processor-args", json.dumps(processor_args),
        "--consumer-id", str(worker),
        "--distributor-trigger", "uniqueId",
        "--distributor-updates", "1",
        "--skip-initial-updates", "0",
        "--server-queue-size", str(SERVER_QUEUE),
        "--disable-curses",
        "--report-period", "0",
    ]


class WorkerPool:
    """``workers`` workers; with ``spawn`` this process starts them on this host (as
    ``cdistream serve --workers N`` does), otherwise they are run elsewhere and only awaited."""

    def __init__(
        self,
        prefix: str,
        workers: int,
        processor_args: dict[str, Any],
        spawn: bool = True,
    ):
        # frames out at once: a batch in each worker's hands and one waiting, well inside the
        # PVA server's queue per worker (--server-queue-size), so PVA itself never drops one
        pva = pvaccess()
        if workers < 1:
            raise ConfigError(f"--workers {workers}: at least 1")
        self.prefix, self.workers = prefix, workers
        self.window = min(workers * 2 * int(processor_args.get("max_batch", 32)), SERVER_QUEUE)
        self.frames_channel = f"{prefix}:frames"
        self._server = pva.PvaServer()
        self._server.addRecord(
            self.frames_channel, frame_pv(0, np.zeros((1, 1)), np.zeros((1, 1)))
        )
        self._lock = threading.Lock()
        self._results: dict[int, dict] = {}
        # ids taken or given up on, oldest first: a result that comes for one (a late worker's,
        # or the same update again after a monitor reconnects) is dropped, never held
        self._settled: dict[int, None] = {}
        self.ready: set[int] = set()
        self.processes: dict[int, subprocess.Popen] = {}
        self._args = processor_args
        self._started: dict[int, float] = {}
        self._exited: dict[int, float] = {}  # worker -> when its exit was seen
        self._young_deaths: dict[int, int] = {}  # worker -> exits in a row before LIVED_S
        if spawn:
            for k in range(1, workers + 1):
                self._spawn(k)
        self._channels = []
        for k in range(1, workers + 1):
            channel = pva.Channel(f"{prefix}:worker:{k}:output", pva.PVA)
            channel.monitor(self._arrived, "record[queueSize=1000]field()")
            self._channels.append(channel)

    def _spawn(self, worker: int) -> None:
        self.processes[worker] = subprocess.Popen(
            consumer_command(self.prefix, worker, self._args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the service is the service's to pass
        )
        self._started[worker] = time.monotonic()

    def revive(self, now: float | None = None) -> list[int]:
        """Start again each worker this process started that has exited; the ids started.
        One that had run for a while comes back after a second; one that keeps dying young
        (a model it cannot load, a host out of memory) after a pause that doubles each time,
        up to a minute, so that it never restarts in a tight loop."""
        now = time.monotonic() if now is None else now
        started = []
        for k, process in self.processes.items():
            if process.poll() is None:
                continue
            if k not in self._exited:
                lived = now - self._started[k]
                deaths = 0 if lived >= LIVED_S else self._young_deaths.get(k, 0) + 1
                self._young_deaths[k], self._exited[k] = deaths, now
                log.warning("worker %d exited (code %s) after %.0f s; starting it again in"
                            " %.0f s", k, process.returncode, lived, self._pause(k))
            if now - self._exited[k] >= self._pause(k):
                try:
                    self._spawn(k)
                except OSError as exc:  # no processes or files left: try again, later
                    log.error("worker %d could not be started again: %s", k, exc)
                    self._young_deaths[k] += 1
                    self._exited[k] = now
                    continue
                del self._exited[k]
                started.append(k)
        return started

    def _pause(self, worker: int) -> float:
        return min(2.0 ** self._young_deaths[worker], MOST_PAUSE_S)

    def _arrived(self, pv) -> None:
        """pvapy's monitor callback (results are copied out: pvapy reuses its structure)."""
        fields = result_fields(pv)
        if fields is None:
            log.warning("a worker published something that is not a result")
            return
        with self._lock:
            uid = fields["uniqueId"]
            if uid == 0:
                self.ready.add(fields["worker"])
            elif uid in self._settled:
                log.debug("result %d came again or after it was given up on: dropped", uid)
            else:
                self._results[uid] = fields

    def wait_ready(self, timeout: float) -> None:
        """Until every worker has loaded its model; :class:`ConfigError` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.ready) < self.workers:
            dead = [k for k, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"worker(s) {dead} exited" if dead else f"not ready after {timeout:.0f} s"
                raise ConfigError(f"--workers {self.workers}: {why} (ready: {sorted(self.ready)})")
            time.sleep(0.1)
        log.info("%d workers ready on %s", self.workers, self.frames_channel)

    def submit(self, unique_id: int, magnitudes: np.ndarray, valid: np.ndarray) -> None:
        self._server.update(self.frames_channel, frame_pv(unique_id, magnitudes, valid))

    def take(self, unique_id: int) -> dict | None:
        """The result for ``unique_id`` if a worker returned it (removed from the pool)."""
        with self._lock:
            result = self._results.pop(unique_id, None)
            if result is not None:
                self._settle(unique_id)
            return result

    def forget(self, unique_id: int) -> None:
        """The collector gave up on ``unique_id``: its result is dropped, now or when it
        comes (a slow worker's late results would otherwise be held for ever)."""
        with self._lock:
            self._results.pop(unique_id, None)
            self._settle(unique_id)

    def _settle(self, unique_id: int) -> None:
        """Remember ``unique_id`` as done with (the lock held); the oldest are let go."""
        self._settled[unique_id] = None
        if len(self._settled) > SETTLED_KEPT:
            del self._settled[next(iter(self._settled))]

    def close(self) -> None:
        for channel in self._channels:
            try:
                channel.stopMonitor()
            except Exception:
                log.debug("stopMonitor", exc_info=True)
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._server.removeRecord(self.frames_channel)

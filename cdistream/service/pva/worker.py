"""The reconstruction stage as a PvaPy user-data processor, so that ``pvapy-hpc-consumer`` (with
its distributor) runs N of them on one host or many:

    pvapy-hpc-consumer --input-channel PREFIX:frames --output-channel 'PREFIX:worker:*:output' \\
        --processor-class cdistream.service.pva.worker.ReconstructionProcessor \\
        --processor-args '{"max_batch": 64}' --consumer-id K --distributor-trigger uniqueId \\
        --distributor-updates 1 --skip-initial-updates 0 --disable-curses

Each worker takes the cropped patterns the ingest process publishes on ``PREFIX:frames``
(:data:`FRAME_TYPE`: 4 KB per 32 x 32 pattern), reconstructs them in micro-batches (the trust
gate included), and publishes each result on its own output channel (:data:`RESULT_TYPE`),
which the ingest process collects in frame order. A worker announces that it is ready (model
loaded, traced) by publishing the empty result, ``uniqueId`` 0, once."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from cdistream.inference import Reconstructor
from cdistream.inference.gate import REFINE_ITERATIONS, TrustGate

__all__ = ["FRAME_TYPE", "RESULT_TYPE", "ReconstructionProcessor", "frame_pv", "result_fields"]

log = logging.getLogger(__name__)

try:  # pvapy is the optional extra `cdistream[pva]`
    import pvaccess as _pva
    from pvapy.hpc.userDataProcessor import UserDataProcessor
except ImportError:  # pragma: no cover - only without pvapy
    _pva = None
    UserDataProcessor = object

FRAME_TYPE = {"uniqueId": "INT", "n": "INT", "magnitudes": ["FLOAT"], "valid": ["UBYTE"]}
RESULT_TYPE = {
    "uniqueId": "INT",
    "worker": "INT",
    "amplitude": ["FLOAT"],
    "phase": ["FLOAT"],
    "chi2": "DOUBLE",
    "peak_offset": ["FLOAT"],
    "refined": "BOOLEAN",
}


def _pv_type(spec: dict) -> dict:
    """A structure spec with pvaccess type names resolved."""
    return {
        k: [getattr(_pva, v[0])] if isinstance(v, list) else getattr(_pva, v)
        for k, v in spec.items()
    }


def frame_pv(unique_id: int, magnitudes: np.ndarray, valid: np.ndarray):
    """A cropped pattern as the ingest process publishes it for the workers."""
    return _pva.PvObject(
        _pv_type(FRAME_TYPE),
        {
            "uniqueId": int(unique_id),
            "n": int(magnitudes.shape[-1]),
            "magnitudes": np.ascontiguousarray(magnitudes, np.float32).reshape(-1),
            "valid": np.ascontiguousarray(valid, np.uint8).reshape(-1),
        },
    )


def result_fields(pv: Any) -> dict[str, Any] | None:
    """A worker's result as plain values (copied: pvapy reuses its structures), or None for
    anything else."""
    try:
        uid = int(pv["uniqueId"])
        if uid == 0:  # a worker saying it is ready
            return {"uniqueId": 0, "worker": int(pv["worker"])}
        amplitude = np.array(pv["amplitude"], np.float32)
        n = int(round(np.sqrt(amplitude.size)))
        return {
            "uniqueId": uid,
            "worker": int(pv["worker"]),
            "amplitude": amplitude.reshape(n, n),
            "phase": np.array(pv["phase"], np.float32).reshape(n, n),
            "chi2": float(pv["chi2"]),
            "peak_offset": np.array(pv["peak_offset"], np.float32).reshape(2),
            "refined": bool(pv["refined"]),
        }
    except Exception:
        return None


class ReconstructionProcessor(UserDataProcessor):
    """processor args (JSON): ``models`` (path; default the shipped), ``max_batch`` (64),
    ``max_wait_ms`` (5), ``refine_above`` (chi2 or null), ``refine_iterations`` (50)."""

    def __init__(self, configDict: dict | None = None):  # noqa: N803  (pvapy's interface)
        super().__init__(configDict or {})
        config = configDict or {}
        self.models = config.get("models")
        self.max_batch = int(config.get("max_batch", 64))
        self.max_wait = float(config.get("max_wait_ms", 5.0)) / 1e3
        self.refine_above = config.get("refine_above")
        self.gate = TrustGate(
            self.refine_above if self.refine_above is not None else 0.0,
            int(config.get("refine_iterations", REFINE_ITERATIONS)),
        )
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="cdistream-pva-worker",
                                        daemon=True)
        self.reconstructed = 0
        self.failed = 0
        # here, not in start(): pvapy-hpc-consumer makes its processor before it subscribes to
        # the frames and starts it after, so a worker (re)joining a running pipeline is handed
        # frames only once it can reconstruct them
        self.reconstructor = Reconstructor.load(self.models)
        self.reconstructor.warm_up()

    # -- pvapy's interface -------------------------------------------------------------------
    def start(self) -> None:
        self.pvaServer.addRecord(self.outputChannel, self._result(0, None))  # ready
        self._thread.start()
        log.info("worker %s ready on %s", self.processorId, self.outputChannel)

    def process(self, pvObject):  # noqa: N803
        uid = pvObject["uniqueId"]
        if uid <= 0:  # the input record's initial value, not a frame
            return None
        n = pvObject["n"]
        magnitudes = np.array(pvObject["magnitudes"], np.float32).reshape(n, n)
        valid = np.array(pvObject["valid"], np.uint8).reshape(n, n).astype(bool)
        self._inbox.put((uid, magnitudes, valid))
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def getOutputPvObjectType(self, pvObject):  # noqa: N802, N803
        return None  # the output record is made in start(), before any frame

    def getStats(self) -> dict:  # noqa: N802
        return {"reconstructed": self.reconstructed, "failed": self.failed}

    def getStatsPvaTypes(self) -> dict:  # noqa: N802
        return {"reconstructed": _pva.UINT, "failed": _pva.UINT}

    # -- micro-batching ----------------------------------------------------------------------
    def _batch(self) -> list:
        try:
            items = [self._inbox.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                items.append(self._inbox.get(timeout=max(left, 0)) if left > 0
                             else self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def _work(self) -> None:
        while not self._stop.is_set():
            items = self._batch()
            if not items:
                continue
            try:
                self._reconstruct(items)
            except Exception:  # a bad batch costs its frames (the collector counts them)
                log.exception("worker %s: a batch of %d failed", self.processorId, len(items))
                self.failed += len(items)

    def _reconstruct(self, items: list) -> None:
        uids = [uid for uid, _, _ in items]
        magnitudes = np.stack([m for _, m, _ in items])
        valid = np.stack([v for _, _, v in items])
        outcome = self.gate.reconstruct(
            self.reconstructor, magnitudes, valid, self.refine_above is not None
        )
        result, refined = outcome.result, outcome.refined
        for k, uid in enumerate(uids):
            self.pvaServer.update(self.outputChannel, self._result(uid, (result, refined, k)))
        self.reconstructed += len(items)

    def _result(self, uid: int, found):
        values: dict[str, Any] = {"uniqueId": int(uid), "worker": int(self.processorId or 0)}
        if found is not None:
            result, refined, k = found
            values.update(
                amplitude=result.amplitude[k].reshape(-1),
                phase=result.phase[k].reshape(-1),
                chi2=float(result.chi2[k]),
                peak_offset=result.peak_offset[k].astype(np.float32),
                refined=bool(refined[k]),
            )
        return _pva.PvObject(_pv_type(RESULT_TYPE), values)

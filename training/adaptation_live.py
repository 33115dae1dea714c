"""``serve --adapt`` measured live (the model card's adaptation section): the real scan streamed
in the order it was measured (``sim_detector``'s replay), then a different crystal (a simulated
3D crystal's rocking series, :mod:`sim_detector.crystals3d`), then the scan again, through one
service; every figure read back from the documents it published and the archive it wrote.

- every accepted model against the one it replaced: on the frames its round judged it on
  (held out and later), and on the frames it served afterwards;
- every model that served, against the shipped one, on the frames it served;
- every frame accounted for.

``python -m training.adaptation_live [--rate 2] [--out live.json]``"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import zmq

from cdistream.adaptation.judge import networks_chi2
from cdistream.inference import Reconstructor
from cdistream.service import Service, ServiceConfig
from cdistream.wire import unpackb
from sim_detector import DetectorPublisher
from sim_detector.crystals3d import Crystal3DRecipe, crystal3d, rocking_frames
from sim_detector.replay import open_frames

from .realdata import default_scan

__all__ = ["crystal_series", "documents_by_run", "run_live"]

log = logging.getLogger(__name__)

LOOPBACK = "tcp://127.0.0.1:*"


def crystal_series(shape: tuple[int, int], steps: int = 64, seed: int = 7,
                   photons: float = 2e4) -> np.ndarray:
    """A simulated crystal's rocking scan as detector frames of ``shape``: its 32 x 32 window
    of reciprocal space in the middle, ``photons`` in the brightest pixel, Poisson noise."""
    rng = np.random.default_rng(seed)
    crystal = crystal3d(rng, Crystal3DRecipe(min_extent=8.0, max_extent=12.0))  # as the scan's
    intensity = rocking_frames(crystal, steps, 32)
    intensity *= photons / intensity.max()
    frames = np.zeros((steps, *shape), np.uint32)
    r0, c0 = shape[0] // 2 - 16, shape[1] // 2 - 16
    frames[:, r0:r0 + 32, c0:c0 + 32] = rng.poisson(intensity)
    return frames


class _Documents:
    """Every document on the feedback channel, decoded."""

    def __init__(self, context: zmq.Context, address: str):
        self.sock = context.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.rcvhwm = 0
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)
        self.docs: list[tuple[str, dict]] = []

    def drain(self, until_stops: int = 0, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            stops = sum(n == "stop" for n, _ in self.docs)
            left = deadline - time.monotonic()
            if stops >= until_stops and not self.sock.poll(0):
                return
            if left <= 0 and stops >= until_stops:
                return
            if left <= 0:
                raise TimeoutError(f"{stops} of {until_stops} runs stopped")
            if self.sock.poll(int(min(left, 0.5) * 1000)):
                _, name, payload = self.sock.recv().split(b" ", 2)
                self.docs.append((name.decode(), unpackb(payload)))


def documents_by_run(docs: list[tuple[str, dict]]) -> list[dict]:
    """Per run, in order: its start, and the data of its primary and its model events."""
    runs, streams = {}, {}
    for name, doc in docs:
        if name == "start":
            runs[doc["uid"]] = {"start": doc, "events": [], "model": []}
        elif name == "descriptor":
            streams[doc["uid"]] = (doc["run_start"], doc["name"])
        elif name == "event" and doc["descriptor"] in streams:
            run, stream = streams[doc["descriptor"]]
            if stream in ("primary", "model"):
                runs[run]["events" if stream == "primary" else "model"].append(doc["data"])
    return list(runs.values())


def _crops(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return (f["entry/data/frame"][()], f["entry/instrument/detector/data"][()],
                f["entry/instrument/detector/valid"][()].astype(bool))


def _weights(path: str) -> list[np.ndarray]:
    return Reconstructor.load(path, precision="float32").weights()


def run_live(rate: float = 2.0, seed: int = 7) -> dict:
    """The three series through one ``serve --adapt``; the figures."""
    context = zmq.Context()
    shipped = Reconstructor.load()
    scan = str(default_scan())
    with tempfile.TemporaryDirectory(prefix="cdistream-live-") as tmp:
        config = ServiceConfig(input="", feedback=LOOPBACK, archive=Path(tmp), adapt=True,
                               status_interval=30)
        with DetectorPublisher(LOOPBACK, context=context) as pub:
            service = Service(ServiceConfig(**{**config.__dict__, "input": pub.address}),
                              shipped, context).start()
            docs = _Documents(context, service.feedback.address)
            service.feedback.wait_for_subscribers(1, 10)
            pub.wait_for_subscriber(10)
            count, shape, dtype, mask, meta, _ = open_frames(scan)
            passes = ["scan", "crystal", "scan"]
            try:
                for series, what in enumerate(passes, 1):
                    if what == "scan":
                        images = open_frames(scan)[5]
                        n = count
                    else:
                        images = crystal_series(shape, seed=seed)
                        n = len(images)
                    t0 = time.monotonic()
                    pub.run_series(series, shape, "uint32", images, rate, mask, meta, n)
                    log.info("series %d (%s): %d frames in %.0f s", series, what, n,
                             time.monotonic() - t0)
                    docs.drain(series, timeout=120)
            finally:
                counts = service.stop()
            docs.drain(len(passes), timeout=30)
            rounds = service.adapter.rounds
            files = {p.stem.removeprefix("cdi_nn-"): str(p)
                     for p in service.adapter.directory.glob("cdi_nn-*.keras")}
            # scored by a fresh copy: the service's own reconstructor ends on its last model
            scorer = Reconstructor.load(precision=shipped.precision)
            return _figures(documents_by_run(docs.docs), passes, rounds, counts, scorer, files)


def _medians(served: np.ndarray, other: np.ndarray, signal: np.ndarray) -> dict:
    """Median chi2 of the model that served and of another, on all frames and on those with
    signal (at least 5% of the series' brightest frame's counts)."""
    out = {"frames": len(served), "chi2_new_median": float(np.median(served)),
           "chi2_replaced_median": float(np.median(other)), "frames_with_signal":
           int(signal.sum())}
    if signal.any():
        out["with_signal"] = {"chi2_new_median": float(np.median(served[signal])),
                              "chi2_replaced_median": float(np.median(other[signal]))}
    return out


def _figures(runs, passes, rounds, counts, shipped: Reconstructor, files: dict) -> dict:
    """``shipped``: the shipped networks (the scorer); ``files``: version -> file of every
    accepted model."""
    out = {"counts": counts, "rounds": rounds, "series": []}
    shipped_weights = shipped.weights()
    for what, run in zip(passes, runs, strict=True):
        frames, crops, valid = _crops(run["start"]["archive"])
        row = {f: k for k, f in enumerate(frames.tolist())}
        events = run["events"]
        served = np.array([e["chi2"] for e in events])
        rows = np.array([row[e["frame"]] for e in events])
        version = np.array([e["model_version"] for e in events])
        shipped.use_weights(shipped_weights)
        ship = networks_chi2(shipped, crops[rows], valid[rows])
        totals = (crops[rows] * valid[rows]).sum(axis=(1, 2))
        signal = totals >= 0.05 * totals.max()
        per_version = {}
        for v in dict.fromkeys(version.tolist()):
            sel = version == v
            per_version[v] = _medians(served[sel], ship[sel], signal[sel])
        # each change of this run: the model it replaced, on the frames the new one served
        changes = []
        for change in run["model"]:
            sel = np.zeros(len(events), bool)
            after = False
            for k, e in enumerate(events):
                after = after or e["model_version"] == change["version"]
                sel[k] = after and e["model_version"] == change["version"]
            entry = dict(change)
            if sel.any():
                before = change["previous"]
                weights = shipped_weights if before.startswith("shipped") else _weights(
                    files[before])
                shipped.use_weights(weights)
                replaced = networks_chi2(shipped, crops[rows[sel]], valid[rows[sel]])
                entry["served_after"] = _medians(served[sel], replaced, signal[sel])
            changes.append(entry)
        out["series"].append({"what": what, "events": len(events), "per_version": per_version,
                              "changes": changes})
    shipped.use_weights(shipped_weights)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.adaptation_live", description=__doc__)
    p.add_argument("--rate", type=float, default=2.0, help="frames/s (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the figures here (JSON)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = run_live(args.rate)
    for s in out["series"]:
        log.info("%s: %d events; %s", s["what"], s["events"], json.dumps(s["per_version"]))
        for c in s["changes"]:
            log.info("  %s -> %s (%s): %s", c["previous"], c["version"], c["reason"],
                     json.dumps(c.get("served_after")))
    log.info("counts %s", out["counts"])
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()

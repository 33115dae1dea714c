"""``cdistream adapt``: the networks tuned on frames saved in files (any input ``cdistream
reconstruct`` reads) and judged on frames of them they were not tuned on; written as a
versioned model only when they beat the networks they started from there."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from cdistream._version import __version__
from cdistream.adaptation.judge import HOLD_OUT_EVERY, Verdict, held_out, networks_chi2, verdict
from cdistream.adaptation.rounds import tune_round
from cdistream.adaptation.tuning import TuneSettings
from cdistream.adaptation.versions import ModelVersion, save_version
from cdistream.errors import ConfigError
from cdistream.files import CalibrationFiles
from cdistream.inference import Reconstructor
from cdistream.offline import reconstruct_files
from cdistream.roi import RoiConfig

__all__ = ["AdaptOutcome", "adapt_files", "select_frames"]

log = logging.getLogger(__name__)

def select_frames(frames: np.ndarray, spec: str) -> np.ndarray:
    """Which of ``frames`` (numbers) ``spec`` names: ``all``, ``even``, ``odd`` or
    ``FIRST:LAST`` (inclusive)."""
    if spec == "all":
        return np.ones(len(frames), bool)
    if spec in ("even", "odd"):
        return frames % 2 == (0 if spec == "even" else 1)
    first, sep, last = spec.partition(":")
    try:
        if not sep:
            raise ValueError
        lo = int(first) if first else frames.min()
        hi = int(last) if last else frames.max()
    except ValueError:
        raise ConfigError(f"--frames {spec}: all, even, odd or FIRST:LAST") from None
    return (frames >= lo) & (frames <= hi)


@dataclass
class AdaptOutcome:
    """What came of it: the verdict on the held-out frames, and the file when accepted."""

    verdict: Verdict
    tuned: list[int]
    judged: list[int]
    seconds: float
    path: Path | None
    version: str | None

    def lines(self) -> list[str]:
        v = self.verdict
        head = (f"tuned on {len(self.tuned)} frames, judged on {len(self.judged)} it never saw:"
                f" median chi2 {v.serving:.4f} -> {v.candidate:.4f} ({self.seconds:.0f} s)")
        if self.path is None:
            return [head, "not better than the networks it started from: nothing written"]
        return [head, f"wrote {self.path} (version {self.version})"]


def _crops(inputs: list[str], rec: Reconstructor, roi: RoiConfig,
           calibration: CalibrationFiles | None) -> tuple[np.ndarray, ...]:
    """Every frame's ROI as ``cdistream reconstruct`` crops it: (frames, counts, valid)."""
    with tempfile.TemporaryDirectory(prefix="cdistream-adapt-") as tmp:
        out = Path(tmp) / "crops.h5"
        reconstruct_files(inputs, out, rec, roi, 0, progress=False, calibration=calibration)
        with h5py.File(out, "r") as f:
            return (f["entry/data/frame"][()], f["entry/instrument/detector/data"][()],
                    f["entry/instrument/detector/valid"][()].astype(bool))


def adapt_files(
    inputs: list[str],
    output: Path,
    reconstructor: Reconstructor,
    roi: RoiConfig,
    frames: str = "all",
    settings: TuneSettings | None = None,
    calibration: CalibrationFiles | None = None,
) -> AdaptOutcome:
    """Tune ``reconstructor``'s networks on 3 of every 4 frames ``frames`` selects (those
    holding at least ``settings.min_share`` of the brightest frame's counts), judge them on the
    4th, write them to ``output`` (with provenance) when they beat the starting ones."""
    settings = settings or TuneSettings()
    started = time.perf_counter()
    numbers, counts, valid = _crops(inputs, reconstructor, roi, calibration)
    totals = (counts * valid).sum(axis=(1, 2))
    bright = totals >= settings.min_share * totals.max()  # the others hold little but noise
    chosen = np.flatnonzero(select_frames(numbers, frames) & bright)
    if len(chosen) < HOLD_OUT_EVERY:
        raise ConfigError(f"--frames {frames}: {len(chosen)} frames with signal, need 4")
    judge = chosen[held_out(len(chosen))]
    tune_on = chosen[~held_out(len(chosen))]
    before = reconstructor.weights()
    tuned = tune_round(reconstructor.source, before, counts[tune_on], valid[tune_on], settings)
    candidate = ModelVersion.of(tuned["weights"], "adapted")
    scores = {}
    for name, weights in (("candidate", candidate.weights), ("serving", before)):
        reconstructor.use_weights(weights)
        scores[name] = networks_chi2(reconstructor, counts[judge], valid[judge])
    reconstructor.use_weights(before)
    judged = verdict(scores["candidate"], scores["serving"], scores["serving"])
    seconds = time.perf_counter() - started
    outcome = AdaptOutcome(judged, numbers[tune_on].tolist(), numbers[judge].tolist(),
                           seconds, None, None)
    if not judged.accepted:
        return outcome
    candidate.provenance = {
        "tuned_from": reconstructor.version,
        "tuned_from_file": reconstructor.source,
        "inputs": [str(i) for i in inputs],
        "frames": frames,
        "frames_tuned": outcome.tuned,
        "frames_judged": outcome.judged,
        "figures": judged.document(),
        "chi2_per_frame": {k: v.tolist() for k, v in scores.items()},
        "labelled_frames": tuned["labelled"],
        "settings": asdict(settings),
        "seconds": seconds,
        "tune_cpu_seconds": tuned["cpu_seconds"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "cdistream_version": __version__,
    }
    saved = save_version(reconstructor.model, candidate, output)
    outcome.path, outcome.version = Path(saved.path), saved.version
    return outcome

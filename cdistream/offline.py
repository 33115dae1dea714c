"""``cdistream reconstruct``: the service's ROI, networks (and refinement) over frames saved in
files, into the same NeXus file the archive writes, with a summary of what became of them."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from cdistream._version import __version__
from cdistream.files import CalibrationFiles, open_source
from cdistream.inference import Reconstructor
from cdistream.inference.gate import REFINE_ABOVE
from cdistream.inference.registration import SeriesRegistration
from cdistream.roi import BadPixels, PeakTracker, RoiConfig, RoiRejected, choose_binning, extract
from cdistream.service.archive import RunArchive
from cdistream.volume import CubeCollector, reconstruct_volume
from cdistream.volume_file import volume_path, write_volume
from cdistream.wire.documents_safe import document_safe

__all__ = ["Summary", "reconstruct_files"]

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What became of the frames."""

    output: Path
    frames: int = 0
    reconstructed: int = 0
    rejected: Counter = field(default_factory=Counter)
    chi2: list[float] = field(default_factory=list)
    seconds: float = 0.0
    sampling: list[dict] = field(default_factory=list)  # per input: how its crystal fits
    volume: dict | None = None  # the 3D reconstruction, when asked: its file, chi2, seconds

    def lines(self) -> list[str]:
        c = np.asarray(self.chi2) if self.chi2 else np.full(1, np.nan)
        p10, p50, p90 = np.percentile(c, [10, 50, 90])
        rejected = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()) or "none"
        fits = [
            f"binning {s['binning']} (asked {s['asked_binning']}), oversampling"
            f" {s['oversampling']}" + ("" if s["fits"] else ": THE CRYSTAL DOES NOT FIT")
            for s in self.sampling if s.get("estimated")
        ]
        volume = []
        if self.volume is not None:
            v = self.volume
            volume = [f"3D: {v['path']} ({v['shape']}, chi2 {v['chi2']:.4f}, {v['seconds']:.1f} s)"
                      if "path" in v else f"3D: none ({v['why']})"]
        return [
            f"{self.frames} frames: {self.reconstructed} reconstructed, rejected: {rejected}",
            *fits,
            *volume,
            f"chi2: p10 {p10:.4f}, median {p50:.4f}, p90 {p90:.4f};"
            f" {np.mean(c > REFINE_ABOVE):.1%} above the trust threshold {REFINE_ABOVE}",
            f"{self.frames / max(self.seconds, 1e-9):.0f} frames/s; wrote {self.output}",
        ]


def reconstruct_files(
    inputs: list[str],
    output: Path,
    reconstructor: Reconstructor,
    roi: RoiConfig,
    refine: int = 0,
    batch: int = 256,
    progress: bool = True,
    calibration: CalibrationFiles | None = None,
    volume: bool = False,
    positions: np.ndarray | None = None,
) -> Summary:
    """Reconstruct every frame of ``inputs`` (in order, numbered from 0) into ``output``, raw
    frames dark- and flat-field corrected by ``calibration`` when given; with ``volume`` the
    rocking scan they make in 3D too (beside ``output``, :func:`volume_path`), its rocking axis
    in ``positions`` (one per frame, e.g. the motor's from the SPEC file) when given."""
    from tqdm import tqdm

    started = time.monotonic()
    summary = Summary(Path(output))
    sources = []
    for spec in inputs:
        sources.append(open_source(spec, calibration))
    try:
        total = sum(s.count for s in sources)
        detector, _ = document_safe(sources[0].meta)
        run = {
            "uid": str(uuid.uuid4()),
            "time": time.time(),
            "model": reconstructor.source,
            "cdistream_version": __version__,
            "roi": asdict(roi),
            "refine_iterations": refine,
            "device": reconstructor.device,
        }
        archive = RunArchive(output, 0, "", reconstructor.n, run, detector, exact=True)
        registration = SeriesRegistration()
        pending: list[tuple[int, np.ndarray, np.ndarray, tuple[int, int], int]] = []
        bar = tqdm(total=total, unit="frame", disable=not progress)

        def flush() -> None:
            if not pending:
                return
            frames = [p[0] for p in pending]
            counts = np.stack([p[1] for p in pending])
            valid = np.stack([p[2] for p in pending])
            result = reconstructor.reconstruct(np.sqrt(counts), refine=refine, valid=valid)
            trusted = result.chi2 <= REFINE_ABOVE
            result = registration.register(result)
            peaks = np.array([p[3] for p in pending])
            refined = np.full(len(frames), refine > 0)
            archive.append(frames, [0.0] * len(frames), counts, valid, peaks, result, refined,
                           trusted)
            summary.reconstructed += len(frames)
            summary.chi2.extend(result.chi2.tolist())
            pending.clear()

        number = 0
        collector = CubeCollector() if volume else None
        for source in sources:
            bad = BadPixels.from_mask(source.mask) if source.mask is not None else None
            tracker = PeakTracker()  # one file, one series: the peak moves little
            saturation = roi.saturation or source.meta.get("saturation_value")
            series_roi = None  # its binning chosen on the first frame
            for block, valid in source.frames():
                for k, image in enumerate(block):
                    if series_roi is None and not source.rois:
                        sampling = choose_binning(image, roi, bad, saturation)
                        series_roi = replace(roi, binning=sampling.binning)
                        summary.sampling.append(sampling.document())
                    summary.frames += 1
                    try:
                        if source.rois:  # already cropped: the networks' input as saved
                            counts = np.asarray(image, np.float32)
                            mask = valid[k] if valid is not None else np.ones_like(counts, bool)
                            pending.append((number, counts * mask, mask, (0, 0), 0))
                        else:
                            crop = extract(image, series_roi, bad, saturation, tracker)
                            peak = (crop.peak_row, crop.peak_col)
                            pending.append((number, crop.counts, crop.valid, peak, crop.saturated))
                            if collector is not None:
                                motor = float("nan")
                                if positions is not None and number < len(positions):
                                    motor = float(positions[number])
                                collector.add(number, crop.counts, crop.valid, peak, motor)
                    except RoiRejected as exc:
                        summary.rejected[exc.reason] += 1
                    number += 1
                    bar.update()
                    if len(pending) >= batch:
                        flush()
        flush()
        bar.close()
        archive.close("success")
        if collector is not None:
            summary.volume = _volume(collector, Path(output), run)
    finally:
        for source in sources:
            source.close()
    summary.seconds = time.monotonic() - started
    return summary


def _volume(collector: CubeCollector, output: Path, run: dict) -> dict:
    """The 3D reconstruction of the collected frames, written beside ``output``."""
    if not collector.rocking():
        return {"why": "not a rocking scan (too few frames, or no peaked rocking curve)"}
    cube = collector.cube()
    result = reconstruct_volume(cube)
    path = write_volume(volume_path(output), result, cube, {"run_uid": run["uid"]})
    return {"path": str(path), "shape": "x".join(map(str, result.obj.shape)),
            "chi2": result.chi2, "seconds": result.seconds}

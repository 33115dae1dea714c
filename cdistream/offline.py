"""``cdistream reconstruct``: the service's ROI, networks (and refinement) over frames saved in
files, into the same NeXus file the archive writes, with a summary of what became of them."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cdistream._version import __version__
from cdistream.files import open_source
from cdistream.inference import Reconstructor
from cdistream.inference.gate import REFINE_ABOVE
from cdistream.inference.registration import SeriesRegistration
from cdistream.roi import BadPixels, PeakTracker, RoiConfig, RoiRejected, extract
from cdistream.service.archive import RunArchive
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

    def lines(self) -> list[str]:
        c = np.asarray(self.chi2) if self.chi2 else np.full(1, np.nan)
        p10, p50, p90 = np.percentile(c, [10, 50, 90])
        rejected = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()) or "none"
        return [
            f"{self.frames} frames: {self.reconstructed} reconstructed, rejected: {rejected}",
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
) -> Summary:
    """Reconstruct every frame of ``inputs`` (in order, numbered from 0) into ``output``."""
    from tqdm import tqdm

    started = time.monotonic()
    summary = Summary(Path(output))
    sources = [open_source(spec) for spec in inputs]
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
        for source in sources:
            bad = BadPixels.from_mask(source.mask) if source.mask is not None else None
            tracker = PeakTracker()  # one file, one series: the peak moves little
            saturation = roi.saturation or source.meta.get("saturation_value")
            for block, valid in source.frames():
                for k, image in enumerate(block):
                    summary.frames += 1
                    try:
                        if source.rois:  # already cropped: the networks' input as saved
                            counts = np.asarray(image, np.float32)
                            mask = valid[k] if valid is not None else np.ones_like(counts, bool)
                            pending.append((number, counts * mask, mask, (0, 0), 0))
                        else:
                            crop = extract(image, roi, bad, saturation, tracker)
                            pending.append(
                                (number, crop.counts, crop.valid, (crop.peak_row, crop.peak_col),
                                 crop.saturated)
                            )
                    except RoiRejected as exc:
                        summary.rejected[exc.reason] += 1
                    number += 1
                    bar.update()
                    if len(pending) >= batch:
                        flush()
        flush()
        bar.close()
        archive.close("success")
    finally:
        for source in sources:
            source.close()
    summary.seconds = time.monotonic() - started
    return summary

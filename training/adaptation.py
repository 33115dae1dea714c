"""The per-sample adaptation measured on the real scan (the model card's adaptation section):
``cdistream adapt`` on the scan's even-numbered frames, then the networks alone
(``cdistream reconstruct --models M --refine 0``) on its odd-numbered Bragg frames, which the
adaptation never saw, each judged by the slices of the scan's own 3D reconstruction (ours and
cohere-core's), before and after.

``python -m training.adaptation [--out metrics.json]``"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from cdistream.adaptation.tuning import TuneSettings
from cdistream.bench.cohere import cohere_available
from cdistream.inference import Reconstructor
from cdistream.offline_adapt import adapt_files
from cdistream.roi import RoiConfig

from .realdata import bragg_frames, default_scan, run_product, slice_chi2, yardstick

__all__ = ["evaluate_adaptation"]

log = logging.getLogger(__name__)


def _scores(scan, slices: dict[str, np.ndarray]) -> dict:
    out = {"chi2": {"per_frame": scan.chi2.tolist(), "median": float(np.median(scan.chi2))}}
    for engine, ref in slices.items():
        own = float(np.median(slice_chi2(ref, scan.counts, scan.valid)))
        out[engine] = {**yardstick(scan.objects, ref), "slices_chi2": own,
                       "chi2_ratio": out["chi2"]["median"] / own}
    return out


def evaluate_adaptation(spec: str | Path | None = None, model: Path | None = None,
                        settings: TuneSettings | None = None, cohere: bool | None = None) -> dict:
    """The figures before and after adapting on the even frames, on the odd Bragg frames."""
    spec = str(default_scan() if spec is None else spec)
    settings = settings or TuneSettings()
    rec = Reconstructor.load(model)
    odd = bragg_frames(spec)
    odd = odd[odd % 2 == 1]
    use_cohere = cohere_available() if cohere is None else cohere
    before = run_product(spec, rec, 0, odd, volume=True, cohere=use_cohere)
    with tempfile.TemporaryDirectory(prefix="cdistream-adapted-") as tmp:
        t0 = time.perf_counter()
        outcome = adapt_files([spec], Path(tmp) / "adapted.keras", rec, RoiConfig(size=rec.n),
                              "even", settings)
        seconds = time.perf_counter() - t0
        out = {"scan": spec, "frames_scored": odd.tolist(), "tuned_on": outcome.tuned,
               "judged_on": outcome.judged, "verdict": outcome.verdict.document(),
               "adapt_seconds": seconds, "settings": settings.__dict__,
               "before": _scores(before, before.slices)}
        if outcome.path is None:
            out["after"] = None
            return out
        adapted = Reconstructor.load(outcome.path)
        provenance = json.loads(outcome.path.with_suffix(".json").read_text())
        out["tune_cpu_seconds"] = provenance["tune_cpu_seconds"]
        out["version"] = adapted.version
        after = run_product(spec, adapted, 0, odd)
    out["after"] = _scores(after, before.slices)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.adaptation", description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="write the figures here (JSON)")
    p.add_argument("--steps", type=int, default=TuneSettings.steps)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = evaluate_adaptation(settings=TuneSettings(steps=args.steps, seed=args.seed))
    for when in ("before", "after"):
        s = out[when]
        if s is None:
            log.info("%s: the adaptation was not accepted", when)
            continue
        for engine in [k for k in s if k != "chi2"]:
            e = s[engine]
            log.info("%s vs %s slices: chi2 %.4f (%.1fx the slices' %.4f), IoU %.3f, phase %.3f"
                     " rad, core %.3f rad", when, engine, s["chi2"]["median"], e["chi2_ratio"],
                     e["slices_chi2"], e["iou"]["median"], e["phase"]["median"],
                     e["phase_core"]["median"])
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

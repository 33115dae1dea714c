"""The model measured on a real scan (``../shared/data/aps-34idc-au-scan54``: 201 raw Timepix
frames of a gold crystal's rocking scan at APS 34-ID-C): the frames near the Bragg condition
reconstructed by ``cdistream reconstruct`` with the shipped defaults (networks alone, and with
the default refinement), each judged by the yardstick a rocking scan carries: the slices of the
scan's own 3D reconstruction (ours and cohere-core's), which imply every frame's 2D object. 2D
ER/HIO and cohere-core (best of 4 random starts, on the very ROIs the product cropped) are
peers, not the truth. Every score is the product's own (the archive's chi2) or
ambiguity-invariant (twin and shift registered)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import gaussian_filter, label

from cdistream.bench.cohere import cohere_available, cohere_phase_retrieval
from cdistream.files import open_source
from cdistream.inference import Reconstructor
from cdistream.inference.gate import REFINE_ITERATIONS
from cdistream.inference.result import finish
from cdistream.offline import reconstruct_files
from cdistream.physics import compare, diffraction_magnitudes, fit_ramp, phase_retrieval
from cdistream.physics.compare import align
from cdistream.physics.ramp import remove_ramp
from cdistream.roi import RoiConfig
from cdistream.volume_file import volume_path

__all__ = [
    "RealScan",
    "bragg_frames",
    "cohere_best_3d",
    "default_scan",
    "evaluate_scan",
    "evaluate_volume",
    "iterative_best",
    "phase_vs",
    "slice_chi2",
    "slices_of",
    "yardstick",
]

log = logging.getLogger(__name__)

BRAGG_SHARE = 0.2  # frames holding at least this share of the brightest frame's counts
STARTS = 4
ITERATIONS = 620
SKIRT_CUTS = (0.1, 0.3)  # amplitude levels below which a slice's faint skirt is cut away


def default_scan() -> Path:
    """The scan's frame folder beside the project: ``../shared/data/aps-34idc-au-scan54``."""
    return Path(__file__).resolve().parents[2] / "shared/data/aps-34idc-au-scan54/frames"


def bragg_frames(spec: str | Path, share: float = BRAGG_SHARE) -> np.ndarray:
    """Indices of the frames whose total counts reach ``share`` of the brightest frame's."""
    totals = []
    with open_source(str(spec)) as source:
        for block, _ in source.frames():
            totals.extend(block.reshape(len(block), -1).sum(axis=1, dtype=np.float64))
    totals = np.asarray(totals)
    return np.flatnonzero(totals >= share * totals.max())


@dataclass
class RealScan:
    """One pass of the product over the scan: the selected frames' ROIs and reconstructions."""

    frames: np.ndarray  # detector frame numbers
    counts: np.ndarray  # (k, N, N) the ROIs as cropped
    valid: np.ndarray  # (k, N, N) bool
    objects: np.ndarray  # (k, N, N) complex, as published
    chi2: np.ndarray  # (k,) as archived
    seconds_per_frame: float  # the product's wall time over all frames of the scan
    # (k, N, N) per 3D engine ("ours", "cohere"): the 2D objects the scan's 3D image implies
    slices: dict[str, np.ndarray] | None = None


def slices_of(obj: np.ndarray, cube_frames: np.ndarray, select: np.ndarray) -> np.ndarray:
    """The 2D object each ``select`` frame's pattern is the Fourier transform of, as the 3D
    object ``obj`` (depth, N, N) of the scan's cube has it (Fourier slice theorem: the cube's
    slice at that frame's rocking offset is the FT of the 3D object's projection along the
    rocking axis, each layer weighted by the offset's phase factor); ``cube_frames`` names the
    detector frame of each of the cube's slices."""
    depth = obj.shape[0]
    z = np.arange(depth) - depth // 2
    out = []
    for frame in select:
        where = np.flatnonzero(cube_frames == frame)
        k = int(where[0]) if len(where) else depth // 2
        q = (k - depth // 2) / depth
        out.append((obj * np.exp(-2j * np.pi * q * z)[:, None, None]).sum(axis=0))
    return np.stack(out)


def cohere_best_3d(magnitudes: np.ndarray, valid: np.ndarray,
                   starts: int = STARTS) -> tuple[np.ndarray, float, float]:
    """cohere-core's 3D reconstruction of a cube, best of ``starts`` seeded random starts by
    chi2 (its 620-iteration sequence): (object, chi2, seconds)."""
    from cdistream.bench.cohere import cohere_phase_retrieval_3d
    from cdistream.physics.iterative3d import chi2_3d

    best, best_chi2, t0 = None, np.inf, time.perf_counter()
    for seed in range(starts):
        obj = cohere_phase_retrieval_3d(magnitudes * valid, seed=seed)
        score = chi2_3d(magnitudes, obj, valid)
        if score < best_chi2:
            best, best_chi2 = obj, score
    return best, float(best_chi2), time.perf_counter() - t0


def _reference_slices(path: Path, select: np.ndarray, cohere: bool) -> dict[str, np.ndarray]:
    """The ``select`` frames' slices of the scan's 3D reconstruction at ``path`` (ours) and,
    with ``cohere``, of cohere-core's best of 4 on the very cube ours was made from."""
    from cdistream.volume_file import read_volume

    volume = read_volume(path)
    with h5py.File(path, "r") as f:
        frames = f["entry/instrument/detector/frames"][()]
        valid = f["entry/instrument/detector/valid"][()].astype(bool)
    out = {"ours": slices_of(volume["object"], frames, select)}
    if cohere:
        obj, _, _ = cohere_best_3d(np.sqrt(volume["counts"]), valid)
        out["cohere"] = slices_of(obj, frames, select)
    return out


def run_product(spec: str | Path, rec: Reconstructor, refine: int, select: np.ndarray,
                volume: bool = False, cohere: bool = False) -> RealScan:
    """``cdistream reconstruct`` over the whole scan; the ``select`` frames read back; with
    ``volume`` the scan in 3D too (its slices' 2D objects in ``RealScan.slices``, with
    ``cohere`` also those of cohere-core's 3D reconstruction of the same cube)."""
    with tempfile.TemporaryDirectory(prefix="cdistream-real-") as tmp:
        out = Path(tmp) / "scan.h5"
        summary = reconstruct_files([str(spec)], out, rec, RoiConfig(size=rec.n), refine,
                                    progress=False, volume=volume)
        slices = _reference_slices(volume_path(out), select, cohere) if volume else None
        with h5py.File(out, "r") as f:
            frame = f["entry/data/frame"][()]
            rows = np.flatnonzero(np.isin(frame, select))
            missing = sorted(set(select.tolist()) - set(frame[rows].tolist()))
            if missing:
                raise RuntimeError(f"frames {missing} were not reconstructed: {summary.lines()}")
            return RealScan(
                frame[rows],
                f["entry/instrument/detector/data"][rows],
                f["entry/instrument/detector/valid"][rows].astype(bool),
                f["entry/image_1/data"][rows],
                f["entry/reconstruction/chi2"][rows],
                summary.seconds / max(summary.frames, 1),
                slices,
            )


def _scored(objects: np.ndarray, measured: np.ndarray, valid: np.ndarray):
    amp = np.abs(objects)
    amp = amp / np.maximum(amp.max(axis=(1, 2), keepdims=True), 1e-30)
    return finish(measured, amp, np.angle(objects), valid, fit_ramp(objects, amp * (amp > 0.1)))


def iterative_best(
    counts: np.ndarray,
    valid: np.ndarray,
    engine: str = "er_hio",
    starts: int = STARTS,
    first_seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(objects, chi2, seconds) of the best of ``starts`` random starts by chi2, per frame:
    our ER/HIO (620 iterations) or cohere-core's (its 620-iteration sequence)."""
    m = np.sqrt(np.maximum(counts, 0)).astype(np.float32)
    best_obj, best_chi2 = None, None
    t0 = time.perf_counter()
    for seed in range(first_seed, first_seed + starts):
        if engine == "er_hio":
            obj = phase_retrieval(m, ITERATIONS, seed=seed, valid=valid)
        else:
            obj = cohere_phase_retrieval(m * valid, seed=seed)
        result = _scored(obj, m, valid)
        if best_obj is None:
            best_obj, best_chi2 = result.complex_object(), result.chi2.copy()
            continue
        better = result.chi2 < best_chi2
        best_obj[better] = result.complex_object()[better]
        best_chi2[better] = result.chi2[better]
    return best_obj, best_chi2, time.perf_counter() - t0


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return compare(a, b).iou


def _wrapped_support(objects: np.ndarray) -> np.ndarray:
    """The support as shrink-wrap draws it (and the 3D reconstruction reports it): the
    amplitude blurred by a Gaussian of one pixel, above 10% of its maximum. At half maximum a
    speckled amplitude (iterative phase retrieval's) covers fewer pixels than a smooth one of
    the same crystal; blurred and at 10%, both cover the crystal."""
    blurred = gaussian_filter(np.abs(objects), (0, 1.0, 1.0), mode="wrap")
    return blurred > 0.1 * blurred.max(axis=(1, 2), keepdims=True)


def _wrapped_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of :func:`_wrapped_support` of ``a`` (twin and shift registered on ``b``) and ``b``."""
    moved, _ = align(a, b)
    sa, sb = _wrapped_support(moved), _wrapped_support(b)
    return (sa & sb).sum(axis=(1, 2)) / np.maximum((sa | sb).sum(axis=(1, 2)), 1)


def phase_vs(objects: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Phase RMSE (radians) of ``objects`` against ``reference`` (both (k, N, N)) over the whole
    reference crystal (amplitude above 10% of its maximum), each pixel weighted by the
    reference's amplitude, modulo the global phase and a linear ramp; twin and shift
    registered. Unlike :func:`cdistream.physics.compare` (inside the half-maximum core) it
    counts the crystal's faint rim, where a frame's own data say least."""
    moved, _ = align(objects, reference)
    amp = np.abs(reference)
    weight = amp * (amp > 0.1 * amp.max(axis=(1, 2), keepdims=True))
    rest = remove_ramp(np.angle(moved * np.conj(reference)), weight)
    return np.sqrt((weight * rest**2).sum(axis=(1, 2)) / np.maximum(weight.sum(axis=(1, 2)), 1e-30))


def slice_chi2(slices: np.ndarray, counts: np.ndarray, valid: np.ndarray,
               reach: int = 4) -> np.ndarray:
    """The product's chi2 of the 3D reconstruction's slices against their frames: the slices'
    patterns sit where the cube aligned them, so each is moved by the integer shift (within
    ``reach`` pixels) that fits its frame best; a sub-pixel ramp is not fitted."""
    from cdistream.physics import intensity_chi2, predicted_intensity

    predicted = predicted_intensity(np.abs(slices), np.angle(slices))
    shifts = [(dr, dc) for dr in range(-reach, reach + 1) for dc in range(-reach, reach + 1)]
    return np.min([intensity_chi2(counts, np.roll(predicted, s, axis=(1, 2)), valid)
                   for s in shifts], axis=0)


def _median_list(values: np.ndarray) -> dict:
    return {"per_frame": np.asarray(values).tolist(), "median": float(np.median(values))}


def yardstick(objects: np.ndarray, reference: np.ndarray) -> dict:
    """A method's frames against the 3D reconstruction's slices (``reference``): support IoU as
    shrink-wrap draws it, the whole crystal's phase (:func:`phase_vs`) and the half-maximum
    core's (:func:`cdistream.physics.compare`), per frame and median."""
    return {"iou": _median_list(_wrapped_iou(objects, reference)),
            "phase": _median_list(phase_vs(objects, reference)),
            "phase_core": _median_list(compare(objects, reference).phase_rmse)}


def evaluate_scan(
    model: Path | None = None,
    spec: str | Path | None = None,
    refine: int = REFINE_ITERATIONS,
    figure: Path | None = None,
    cohere: bool | None = None,
) -> dict:
    """Every figure of the model card's real-data section."""
    spec = default_scan() if spec is None else spec
    rec = Reconstructor.load(model)
    rec.warm_up()
    select = bragg_frames(spec)
    use_cohere = cohere_available() if cohere is None else cohere
    nn = run_product(spec, rec, 0, select, volume=True, cohere=use_cohere)
    refined = run_product(spec, rec, refine, select)
    er_obj, er_chi2, er_s = iterative_best(nn.counts, nn.valid, "er_hio")
    baselines = {"er_hio": (er_obj, er_chi2, er_s)}
    if use_cohere:
        baselines["cohere"] = iterative_best(nn.counts, nn.valid, "cohere")
    # the same frames, the same process: the networks (+ refinement) alone, timed as ER/HIO was
    m = np.sqrt(nn.counts).astype(np.float32)
    t0 = time.perf_counter()
    rec.reconstruct(m, valid=nn.valid)
    nn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec.reconstruct(m, refine=refine, valid=nn.valid)
    refine_s = time.perf_counter() - t0
    k = len(select)
    out: dict = {
        "scan": str(spec),
        "frames": select.tolist(),
        "refine_iterations": refine,
        "methods": {},
        "seconds_per_frame": {
            "nn": nn_s / k,
            "nn_refine": refine_s / k,
            **{name: b[2] / k for name, b in baselines.items()},
        },
        "product_seconds_per_frame": {"nn": nn.seconds_per_frame,
                                      "nn_refine": refined.seconds_per_frame},
        "roi_counts": nn.counts.reshape(k, -1).sum(axis=1).tolist(),
    }
    methods = {"nn": (nn.objects, nn.chi2), "nn_refine": (refined.objects, refined.chi2)}
    methods.update({name: (b[0], b[1]) for name, b in baselines.items()})
    slices = nn.slices or {}
    for name, (obj, chi2) in methods.items():
        entry = {
            "yardstick_3d": {engine: yardstick(obj, ref) for engine, ref in slices.items()},
            "chi2": chi2.tolist(),
            "chi2_median": float(np.median(chi2)),
            "consecutive_iou": _iou(obj[1:], obj[:-1]).tolist(),
        }
        entry["consecutive_iou_median"] = float(np.median(entry["consecutive_iou"]))
        for ref in baselines:
            if ref != name:
                iou = _iou(obj, methods[ref][0])
                entry[f"iou_vs_{ref}"] = iou.tolist()
                entry[f"iou_vs_{ref}_median"] = float(np.median(iou))
        entry["support_pixels_median"] = float(np.median(_half_max_area(obj)))
        if slices:  # the crystal as the whole scan, in 3D, has it
            iou = _iou(obj, slices["ours"])
            entry["iou_vs_3d"] = iou.tolist()
            entry["iou_vs_3d_median"] = float(np.median(iou))
        # the same scores with the support as shrink-wrap draws it
        wrapped = {"consecutive_iou_median": _wrapped_iou(obj[1:], obj[:-1]),
                   "support_pixels_median": _wrapped_support(obj).sum(axis=(1, 2))}
        wrapped.update({f"iou_vs_{ref}_median": _wrapped_iou(obj, methods[ref][0])
                        for ref in baselines if ref != name})
        if slices:  # the yardstick's, against our 3D slices
            entry["wrapped_iou_vs_3d"] = entry["yardstick_3d"]["ours"]["iou"]["per_frame"]
            wrapped["iou_vs_3d_median"] = np.asarray(entry["wrapped_iou_vs_3d"])
        entry["wrapped_support"] = {k: float(np.median(v)) for k, v in wrapped.items()}
        out["methods"][name] = entry
    out["er_hio_repeat"] = _repeat(nn.counts, nn.valid, er_obj)
    out["autocorrelation_area"] = _autocorrelation_area(nn.counts, nn.valid)
    if slices:
        ours = slices["ours"]
        out["slices_3d"] = {
            "engines_agree": yardstick(ours, slices["cohere"]) if "cohere" in slices else None,
            "chi2": {engine: _median_list(slice_chi2(ref, nn.counts, nn.valid))
                     for engine, ref in slices.items()},
            "support_pixels_median": float(np.median(_half_max_area(ours))),
            "consecutive_iou_median": float(np.median(_iou(ours[1:], ours[:-1]))),
            "wrapped_support_pixels_median": float(np.median(
                _wrapped_support(ours).sum(axis=(1, 2)))),
            "wrapped_consecutive_iou_median": float(np.median(
                _wrapped_iou(ours[1:], ours[:-1]))),
        }
        # the networks on those slices' own noise-free patterns: is it the crystal or the
        # measurement they have not learned?
        own = rec.reconstruct(diffraction_magnitudes(ours).astype(np.float32))
        out["slices_3d"]["networks_on_their_patterns"] = {
            "chi2_median": float(np.median(own.chi2)),
            "iou_median": float(np.median(_iou(own.complex_object(), ours))),
            "support_pixels_median": float(np.median(_half_max_area(own.complex_object()))),
        }
        # and on those of the slices' bright cores alone, their faint skirt cut away
        out["slices_3d"]["networks_on_their_cores"] = {}
        for level in SKIRT_CUTS:
            core = _core(ours, level)
            own = rec.reconstruct(diffraction_magnitudes(core).astype(np.float32))
            out["slices_3d"]["networks_on_their_cores"][str(level)] = {
                "chi2_median": float(np.median(own.chi2)),
                "support_ratio_median": float(np.median(
                    _half_max_area(own.complex_object()) / np.maximum(_half_max_area(core), 1))),
            }
    if figure is not None:
        from .figures import plot_real

        plot_real(m, nn.frames, {k: v[0] for k, v in methods.items()}, figure)
    return out


def evaluate_volume(model: Path | None = None, spec: str | Path | None = None,
                    starts: int = STARTS) -> dict:
    """The 3D reconstruction of the scan as ``cdistream reconstruct --3d`` makes it, against
    cohere-core's (best of ``starts`` random starts, its 620-iteration sequence) on the very
    cube the product stacked: chi2 against the cube, support IoU, seconds."""
    from cdistream.physics.iterative3d import chi2_3d, compare_3d
    from cdistream.volume_file import read_volume, volume_path

    spec = default_scan() if spec is None else spec
    rec = Reconstructor.load(model)
    with tempfile.TemporaryDirectory(prefix="cdistream-real3d-") as tmp:
        out = Path(tmp) / "scan.h5"
        summary = reconstruct_files([str(spec)], out, rec, RoiConfig(size=rec.n), 0,
                                    progress=False, volume=True)
        ours = read_volume(volume_path(out))
        with h5py.File(volume_path(out), "r") as f:
            valid = f["entry/instrument/detector/valid"][()].astype(bool)
    magnitudes = np.sqrt(ours["counts"])
    best, best_chi2, seconds = cohere_best_3d(magnitudes, valid, starts)
    ours_chi2 = chi2_3d(magnitudes, ours["object"], valid)
    return {
        "cube": list(magnitudes.shape),
        "chi2": ours_chi2,
        "cohere_chi2": float(best_chi2),
        "chi2_ratio": ours_chi2 / float(best_chi2),
        "iou_vs_cohere": compare_3d(ours["object"], best)["iou"],
        "seconds": summary.volume["seconds"],
        "cohere_seconds": seconds,
    }


def _repeat(counts: np.ndarray, valid: np.ndarray, first: np.ndarray) -> dict:
    """ER/HIO's best of 4 again, from the next 4 seeds: how far the reference itself is
    determined by the data (support IoU between the two, per frame, and their chi2)."""
    again, chi2, _ = iterative_best(counts, valid, "er_hio", first_seed=STARTS)
    iou = _iou(again, first)
    return {"iou": iou.tolist(), "iou_median": float(np.median(iou)),
            "wrapped_iou_median": float(np.median(_wrapped_iou(again, first))),
            "chi2_median": float(np.median(chi2))}


def _core(objects: np.ndarray, level: float) -> np.ndarray:
    """``objects`` without their faint skirt: zero where the amplitude is below ``level`` of
    its maximum, and outside the largest connected region above it."""
    amp = np.abs(objects)
    out = np.zeros_like(objects)
    for k, (obj, a) in enumerate(zip(objects, amp, strict=True)):
        regions, count = label(a > level * a.max())
        if count:
            out[k] = obj * (regions == 1 + np.bincount(regions.ravel())[1:].argmax())
    return out


def _half_max_area(objects: np.ndarray) -> np.ndarray:
    amp = np.abs(objects)
    return (amp > 0.5 * amp.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2))


def _autocorrelation_area(counts: np.ndarray, valid: np.ndarray) -> dict:
    """The object's area the data imply, without any phasing: the autocorrelation's support
    (above 4% of its peak, noise floor removed) is the object's difference body, whose area
    lies between 4 (centro-symmetric) and 6 times the object's (Rogers-Shephard)."""
    from cdistream.physics import autocorrelation_support

    m = np.sqrt(np.maximum(counts, 0)) * valid
    area = autocorrelation_support(m).sum(axis=(1, 2)).astype(float)
    return {"autocorrelation_pixels_median": float(np.median(area)),
            "object_pixels_range": [float(np.median(area) / 6), float(np.median(area) / 4)]}


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m training.realdata", description=__doc__)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--scan", default=None)
    p.add_argument("--refine", type=int, default=REFINE_ITERATIONS)
    p.add_argument("--figure", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--no-cohere", action="store_true")
    p.add_argument("--3d", dest="volume", action="store_true",
                   help="only the 3D reconstruction, against cohere-core's")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.volume:
        print(json.dumps(evaluate_volume(args.model, args.scan), indent=1))  # noqa: T201
        return
    out = evaluate_scan(args.model, args.scan, args.refine, args.figure,
                        False if args.no_cohere else None)
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text)
    summary = {k: {m: v for m, v in e.items() if m.endswith("median")}
               for k, e in out["methods"].items()}
    print(json.dumps({"methods": summary, "seconds": out["seconds_per_frame"],  # noqa: T201
                      "autocorrelation": out["autocorrelation_area"]}, indent=1))


if __name__ == "__main__":
    main()

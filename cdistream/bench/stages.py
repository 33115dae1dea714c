"""CPU cost of each pipeline stage per frame, measured alone on pre-made inputs: what a frame
costs from the wire to the feedback message, and so how many cores a given rate needs."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cdistream.inference import Reconstructor
from cdistream.inference.registration import SeriesRegistration
from cdistream.inference.result import finish
from cdistream.roi import BadPixels, PeakTracker, RoiConfig, extract, warm
from cdistream.service.documents import RunComposer
from cdistream.wire import Frame, SeriesStart, packb
from cdistream.wire.formats import make_decoder, make_encoder

__all__ = ["stage_costs"]


def _us_per_call(fn: Callable[[int], object], calls: int) -> float:
    fn(0)
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return 1e6 * (time.perf_counter() - start) / calls


def stage_costs(rec: Reconstructor, calls: int = 400) -> dict[str, float]:
    """Microseconds per frame of each stage on one core (the model: on all of them)."""
    from cdistream.simulator import DetectorModel, Scenario, scenario_frames

    detector = DetectorModel()  # 512 x 512 uint16
    images = list(scenario_frames(Scenario("static", 0, 16, detector.shape), detector, 16))
    start = SeriesStart(1, detector.shape, detector.dtype, detector.mask(), {})
    costs: dict[str, float] = {}
    for name, fmt, compression in (
        ("decode_native_raw", "native", None),
        ("decode_eiger_v2_bslz4", "eiger-v2", "bslz4"),
        ("decode_eiger_v1_bslz4", "eiger-v1", "bslz4"),
    ):
        encoder, decoder = make_encoder(fmt, compression), make_decoder(fmt)
        for parts in encoder.encode(start):
            decoder.decode(parts)
        wire = [
            [bytes(memoryview(p)) for p in encoder.encode(Frame(1, i, 0.0, im))[0]]
            for i, im in enumerate(images)
        ]
        costs[name] = _us_per_call(lambda i, d=decoder, w=wire: d.decode(w[i % 16]), calls)
    bad, roi = BadPixels.from_mask(detector.mask()), RoiConfig(rec.n)
    warm(detector.dtype)  # compiled at the series' start in the service too, not timed here
    costs["roi_512x512"] = _us_per_call(lambda i: extract(images[i % 16], roi, bad), calls)
    tracker = PeakTracker()  # the service's way: a window around the last frame's peak
    costs["roi_512x512_tracked"] = _us_per_call(
        lambda i: extract(images[i % 16], roi, bad, None, tracker), calls
    )
    crops = [extract(im, roi, bad) for im in images]
    batch = np.stack([crops[i % 16].magnitudes for i in range(256)])
    valid = np.stack([crops[i % 16].valid for i in range(256)])
    amplitude, phase = rec.predict(batch, valid)
    costs["model_per_pattern_batch_256"] = (
        _us_per_call(lambda i: rec.predict(batch, valid), 5) / 256
    )
    costs["finish"] = _us_per_call(lambda i: finish(batch, amplitude, phase, valid), 10) / 256
    result = finish(batch, amplitude, phase, valid)
    registration = SeriesRegistration()
    costs["registration"] = _us_per_call(lambda i: registration.register(result), 10) / 256
    composer = RunComposer(lambda name, doc: packb(doc), rec.n, {"plan_name": "bench"})
    frames = [(i, 0.0, crops[i % 16], {}) for i in range(256)]
    flags = np.zeros(256, bool)
    costs["documents_and_msgpack"] = (
        _us_per_call(lambda i: composer.reconstructions(frames, result, flags, flags), 10) / 256
    )
    return costs

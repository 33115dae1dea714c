"""Fidelity on the stream: an operando series as a beamline records it (DECTRIS stream V2,
2e4 photons on a dark background, a crystal 8 to 14 pixels across whose phase grows to 4 rad,
the peak drifting), through loopback sockets and the shipped networks, scored against the
simulator's ground truth; one orientation through the series; the trust gate on the stream."""

from __future__ import annotations

import numpy as np
import pytest

from cdistream.inference.gate import REFINE_ABOVE
from cdistream.physics import compare, twin_distinction
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames
from sim_detector.crystals import CrystalRecipe

from .conftest import LOOPBACK, validate
from .test_service import accounted, start_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
DET = DetectorModel(shape=(256, 256), photons=2e4, dark=0.5)
FRAMES = 200


def _stream(shipped, context, sim: Scenario, rate: float | None = None, **settings):
    """The series over stream V2 into a service; its events and the stop document's counts."""
    with DetectorPublisher(LOOPBACK, "push", context, "eiger-v2", "bslz4") as pub:
        service, sink = start_service(shipped, context, pub, format="eiger-v2", socket="pull",
                                      **settings)
        try:
            images = scenario_frames(sim, DET, FRAMES, sim.seed)
            pub.run_series(1, DET.shape, DET.dtype, images, rate, DET.mask(), DET.metadata(),
                           FRAMES)
            sink.collect(timeout=180)
        finally:
            counts = service.stop()
    validate(sink.docs)
    events = sink.events()
    assert [e["data"]["frame"] for e in events] == list(range(FRAMES))
    assert counts["received"] == FRAMES == counts["reconstructed"] == accounted(counts)
    truth = np.stack([sim.truth(e["data"]["frame"]).obj for e in events])
    recon = np.stack([e["data"]["amplitude"] * np.exp(1j * e["data"]["phase"]) for e in events])
    return events, compare(recon, truth), _flips(recon, truth)


def _flips(recon: np.ndarray, truth: np.ndarray) -> int:
    """Twin flips between consecutive published frames, where a measurement can tell a
    crystal from its twin at all (a centro-symmetric, unstrained one is its own twin)."""
    distinct = twin_distinction(truth[1:]) > 0.05
    flipped = compare(recon[1:], recon[:-1]).twinned
    return int(np.sum(flipped & distinct))


def test_an_operando_series_is_right_and_keeps_one_orientation(shipped, context):
    sim = Scenario("operando", 11, FRAMES, DET.shape, drift=0.3, max_strain=4.0)
    phase = np.angle(sim.truth(FRAMES - 1).obj)[np.abs(sim.truth(FRAMES - 1).obj) > 0.1]
    assert np.ptp(phase) > 3.0, "the strain grows past 3 rad"
    _, scores, flips = _stream(shipped, context, sim)
    assert np.median(scores.iou) >= 0.85, np.median(scores.iou)
    assert np.median(scores.phase_rmse) <= 0.3
    assert flips <= 1
    assert np.sum(scores.twinned[1:] != scores.twinned[:-1]) <= 1, "against the truth too"


def test_a_nearly_centrosymmetric_crystal_is_not_flipped_as_its_strain_grows(shipped, context):
    """An ellipse with hardly any strain at first: each early frame alone is as likely its twin;
    registered on the previous frame, the series still shows one continuous evolution.
    (Past about 2 rad this crystal is reconstructed poorly, IoU near 0.5: see the note on
    centro-symmetric crystals in models/MODEL_CARD.md; the bar here is the orientation.)"""
    recipe = CrystalRecipe(families=("ellipse",), min_extent=9, max_extent=13)
    sim = Scenario("operando", 5, FRAMES, DET.shape, drift=0.3, recipe=recipe, max_strain=3.5)
    truth = np.stack([sim.truth(k).obj for k in range(FRAMES)])
    assert twin_distinction(truth[:10]).max() < 0.05, "the early frames are nearly their twins"
    _, scores, flips = _stream(shipped, context, sim)
    assert flips <= 1
    assert np.median(scores.iou[:50]) >= 0.85


def test_the_gate_refines_every_frame_above_its_threshold(shipped, context):
    """Within the service's capacity with refinement on (here 40 frames/s: most frames of this
    crystal are flagged, and refining one alone costs about 7 ms on 2 CPU cores) the gate's
    time budget holds every flagged frame; past it, the worst go first and the rest are
    counted (``refine_skipped``), and ``cdistream bench`` measures the latency either way."""
    sim = Scenario("operando", 11, FRAMES, DET.shape, drift=0.3, max_strain=4.0)
    events, scores, flips = _stream(shipped, context, sim, rate=40,
                                    refine_above=REFINE_ABOVE)
    refined = np.array([e["data"]["refined"] for e in events])
    trusted = np.array([e["data"]["trusted"] for e in events])
    chi2 = np.array([e["data"]["chi2"] for e in events])
    assert refined.any(), "some frames of a 4 rad crystal exceed the default threshold"
    assert not np.any(~refined & ~trusted), "every frame above the threshold was refined"
    np.testing.assert_array_equal(trusted, chi2 <= REFINE_ABOVE)
    assert np.median(scores.iou) >= 0.85
    assert flips <= 1

"""The shipped model on a real measurement, read from ``../shared/data`` (never copied): frames
of the APS 34-ID-C gold crystal's rocking scan near its Bragg condition, through the product's
own offline path (TIFF series -> ROI -> networks -> archive), against ER/HIO on the very ROIs
the product cropped. A reduced version of the model card's real-data bars
(``models/MODEL_CARD.md``, "Real measurement")."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cdistream.inference.gate import REFINE_ITERATIONS
from cdistream.physics import compare
from training.realdata import iterative_best, run_product

SCAN = Path(__file__).resolve().parents[2] / "shared/data/aps-34idc-au-scan54"
FRAMES = np.arange(95, 103)  # 8 of the 16 frames holding at least 20% of the Bragg frame's
pytestmark = [
    pytest.mark.skipif(not SCAN.is_dir(), reason=f"the real scan is not at {SCAN}"),
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def measured(shipped, tmp_path_factory):
    """The frames reconstructed by the product, alone and with the default refinement, and
    ER/HIO's best of 2 random starts on the same ROIs (timed in this process)."""
    folder = tmp_path_factory.mktemp("scan")
    for k in FRAMES:  # a folder of links: the product reads the series it is given
        name = f"Staff20-1a_S0054_{k:05d}.tif"
        (folder / name).symlink_to(SCAN / "frames" / name)
    select = np.arange(len(FRAMES))
    nn = run_product(folder, shipped, 0, select)
    refined = run_product(folder, shipped, REFINE_ITERATIONS, select)
    m = np.sqrt(nn.counts).astype(np.float32)
    t0 = time.perf_counter()
    shipped.reconstruct(m, refine=REFINE_ITERATIONS, valid=nn.valid)
    refine_s = time.perf_counter() - t0
    er, er_chi2, er_s = iterative_best(nn.counts, nn.valid, starts=2)
    return nn, refined, er, er_chi2, refine_s, er_s


def test_every_frame_is_reconstructed_and_consecutive_frames_agree(measured):
    nn, refined, *_ = measured
    assert len(nn.chi2) == len(FRAMES) == len(refined.chi2)
    consecutive = compare(nn.objects[1:], nn.objects[:-1]).iou
    assert np.median(consecutive) >= 0.8, consecutive
    # refined, frames fit to the noise agree less (0.78 over the 16 frames: the model card)
    consecutive = compare(refined.objects[1:], refined.objects[:-1]).iou
    assert np.median(consecutive) >= 0.7, consecutive


def test_the_default_refinement_fits_as_well_as_er_hio_ten_times_faster(measured):
    nn, refined, _, er_chi2, refine_s, er_s = measured
    assert np.median(refined.chi2) <= 1.05 * np.median(er_chi2), (refined.chi2, er_chi2)
    assert np.all(refined.chi2 <= nn.chi2 + 1e-6), "never worse than the networks alone"
    assert er_s * 2 / refine_s >= 10, "4 ER/HIO runs take ten times as long (2 timed here)"


@pytest.mark.xfail(strict=True, reason="the networks alone misfit the real scan several times"
                   " worse than ER/HIO: models/MODEL_CARD.md, 'Real measurement'")
def test_the_networks_alone_fit_within_twice_er_hio(measured):
    nn, _, _, er_chi2, *_ = measured
    assert np.median(nn.chi2) <= 2 * np.median(er_chi2)


def test_the_refined_support_agrees_with_er_hio_as_well_as_er_hio_with_itself(measured):
    """ER/HIO's support is not fixed by these patterns: from other seeds it lands elsewhere.
    The bar the card replaces (IoU >= 0.85 with ER/HIO) is measured against that spread."""
    nn, refined, er, *_ = measured
    again, _, _ = iterative_best(nn.counts, nn.valid, starts=2, first_seed=2)
    itself = np.median(compare(again, er).iou)
    assert itself < 0.85, "ER/HIO reproduces itself here: the card's argument no longer holds"
    assert np.median(compare(refined.objects, er).iou) >= itself

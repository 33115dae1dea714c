"""The ROI on realistic detector frames: hot pixels, a masked gap, a peak near the edge, no peak."""

import numpy as np
import pytest

from cdistream.physics import diffraction_magnitudes, random_objects
from cdistream.roi import BadPixels, RoiConfig, RoiRejected, extract, find_peak
from sim_detector import DetectorModel

OBJ = random_objects(1, seed=11)[0]


def render(peak, **kw):
    det = DetectorModel(**kw)
    return det, det.render(OBJ, *peak, np.random.default_rng(0))


def test_hot_pixels_do_not_win():
    det, frame = render((300, 200), hot_pixels=20, gap_rows=0)
    assert frame.max() > 60000, "hot pixels are far brighter than the Bragg peak"
    crop = extract(frame, RoiConfig())
    assert (crop.peak_row, crop.peak_col) == (300, 200)
    truth = diffraction_magnitudes(OBJ)
    corr = np.corrcoef(crop.magnitudes.ravel(), truth.ravel())[0, 1]
    assert corr > 0.95


def test_masked_gap_is_ignored_and_zeroed():
    det = DetectorModel(gap_rows=4)
    gap_top = det.shape[0] // 3
    frame = det.render(OBJ, gap_top + 10, 256, np.random.default_rng(1))
    assert (frame[gap_top] == np.iinfo(np.uint16).max).all(), "gap pixels carry the invalid value"
    for bad in (BadPixels.from_mask(det.mask()), None):  # the mask, or the invalid value alone
        crop = extract(frame, RoiConfig(), bad)
        assert (crop.peak_row, crop.peak_col) == (gap_top + 10, 256)
        gap_in_crop = slice(16 - 10, 16 - 10 + 4)
        assert not crop.counts[gap_in_crop].any(), "masked pixels enter the pattern as zeros"


def test_peak_near_the_edge_is_cropped_with_zero_padding():
    det, frame = render((5, 507), gap_rows=0, hot_pixels=0)
    crop = extract(frame, RoiConfig())
    assert (crop.peak_row, crop.peak_col) == (5, 507)
    assert crop.magnitudes.shape == (32, 32)
    assert not crop.counts[: 16 - 5].any() and not crop.counts[:, 16 + 5 :].any()
    assert crop.magnitudes[16, 16] == crop.magnitudes.max()


def test_frame_without_a_peak_is_rejected_with_a_reason():
    dark = np.random.default_rng(0).poisson(0.5, (512, 512)).astype(np.uint16)
    dark[100, 100] = 60000  # a lone hot pixel is not a peak
    with pytest.raises(RoiRejected) as info:
        extract(dark, RoiConfig())
    assert info.value.reason == "no_peak"


@pytest.mark.parametrize(
    "image, reason",
    [(np.full((64, 64), np.nan, np.float32), "bad_image"), (np.zeros(10, np.uint16), "bad_image")],
)
def test_unusable_images_are_rejected(image, reason):
    with pytest.raises(RoiRejected) as info:
        extract(image, RoiConfig())
    assert info.value.reason == reason


def test_binning_sums_pixels():
    frame = np.zeros((256, 256), np.uint32)
    frame[100:104, 100:104] = 100
    crop = extract(frame, RoiConfig(size=8, binning=2))
    assert crop.counts.sum() == 1600 and crop.counts.max() == 400


def test_find_peak_reports_height():
    frame = np.zeros((64, 64), np.uint16)
    frame[30:33, 40:43] = [[5, 20, 5], [20, 50, 20], [5, 20, 5]]
    row, col, height = find_peak(frame)
    assert (row, col) == (31, 41) and height == 20  # the dimmer of the best horizontal pair
    frame[29, 42] = 400  # a hot pixel beside the peak does not take it over
    assert find_peak(frame)[:2] == (31, 41)


def _series(path, **kw):
    det = DetectorModel(**kw)
    rng = np.random.default_rng(5)
    return det, [det.render(OBJ, r, c, rng) for r, c in path]


@pytest.mark.parametrize(
    "path",
    [
        [(200 + 0.7 * k, 150 + 1.3 * k) for k in range(80)],  # drifting, sub-pixel steps
        [(200, 150)] * 30 + [(420, 380)] * 30 + [(60, 450)] * 20,  # jumping across the frame
    ],
    ids=["drifting", "jumping"],
)
def test_tracking_finds_the_same_peak_as_a_full_search(path):
    from cdistream.roi import PeakTracker

    det, frames = _series(path, hot_pixels=8, gap_rows=4)
    bad = BadPixels.from_mask(det.mask())
    tracker = PeakTracker()
    for frame in frames:
        tracked = extract(frame, RoiConfig(), bad, tracker=tracker)
        full = extract(frame, RoiConfig(), bad)
        assert (tracked.peak_row, tracked.peak_col) == (full.peak_row, full.peak_col)
        np.testing.assert_array_equal(tracked.counts, full.counts)
        np.testing.assert_array_equal(tracked.valid, full.valid)
    assert tracker.full_searches <= len(frames) // 8, "most frames are searched in the window"


def test_tracking_reset_after_a_frame_without_peak():
    from cdistream.roi import PeakTracker

    det, (frame,) = _series([(256, 256)], gap_rows=0, hot_pixels=0)
    tracker = PeakTracker()
    extract(frame, RoiConfig(), tracker=tracker)
    with pytest.raises(RoiRejected):
        extract(np.zeros_like(frame), RoiConfig(), tracker=tracker)
    assert tracker.last is None

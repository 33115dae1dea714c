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


def _crop_rules(frame, mask, row, col, saturation, n=32):
    """The crop's rules as whole-array numpy, written apart from the compiled loops."""
    from scipy.ndimage import maximum_filter

    unsigned = frame.dtype.kind == "u"
    padded = np.zeros((frame.shape[0] + 2 * n, frame.shape[1] + 2 * n), np.float64)
    inside = np.zeros(padded.shape, bool)
    padded[n:-n, n:-n], inside[n:-n, n:-n] = frame, True
    bad = np.zeros(padded.shape, bool)
    bad[n:-n, n:-n] = mask
    top, left = row + n - n // 2, col + n - n // 2
    counts = padded[top : top + n, left : left + n]
    valid = inside[top : top + n, left : left + n] & ~bad[top : top + n, left : left + n]
    valid &= counts != np.iinfo(frame.dtype).max if unsigned else counts >= 0
    counts = np.where(valid, counts, 0.0)
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    around = maximum_filter(counts, footprint=ring, mode="constant", cval=0.0)
    hot = valid & (counts > 16 * np.maximum(around, 1.0))
    hot[n // 2 - 1 : n // 2 + 2, n // 2 - 1 : n // 2 + 2] = False  # never the peak itself
    saturated = valid & ~hot & (counts >= saturation)
    valid &= ~hot & ~saturated
    return np.where(valid, counts, 0.0), valid, int(saturated.sum())


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "int32", "float32"])
def test_crop_follows_its_rules_on_every_pixel(dtype):
    """Edges, masked and all-ones pixels, hot pixels beside the peak and saturation, against
    a numpy statement of the rules, on peaks tracked across the detector and to its edges."""
    from cdistream.roi import PeakTracker

    rng = np.random.default_rng(21)
    det = DetectorModel(
        shape=(200, 240), dtype=dtype, photons=2000, hot_pixels=40, gap_rows=3, saturation=900
    )
    bad = BadPixels.from_mask(det.mask())
    tracker = PeakTracker()
    path = [(100, 120), (101, 122), (3, 235), (4, 236), (196, 2), (150, 60), (151, 61)]
    for peak in path:
        frame = det.render(OBJ, *peak, rng)
        if dtype in ("int32", "float32"):  # signed data: negative counts are not valid
            frame[rng.integers(0, 200, 300), rng.integers(0, 240, 300)] = -3
        r, c = min(max(peak[0], 6), 190), max(peak[1], 10)
        frame[r + 5, c - 9] = 5000  # an isolated hot pixel near the peak
        frame[r - 6, c - 3 : c - 1] = 950  # a saturated pair: not hot, but not valid either
        crop = extract(frame, RoiConfig(min_peak=5), bad, 900.0, tracker)
        counts, valid, saturated = _crop_rules(frame, det.mask(), crop.peak_row, crop.peak_col, 900)
        np.testing.assert_array_equal(crop.valid, valid)
        np.testing.assert_array_equal(crop.counts, counts.astype(np.float32))
        assert crop.saturated == saturated
    assert 0 < tracker.full_searches < len(path)


def test_warm_up_takes_any_announced_type():
    """The detector names the pixel type at a series' start; none of them stops the ingest."""
    from cdistream.roi import warm

    for name in ("uint16", "float16", "bool", "no such type", "i4,i4", "M8[s]", "U10", "O"):
        warm(name)

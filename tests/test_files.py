"""Frames saved as beamlines save them: areaDetector TIFF series (a folder, a glob, one
multi-page file), dark and flat-field correction, and the ROI's binning chosen so that the
crystal fits the window. Real files written by tifffile, read by the product's own reader."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cdistream.calibration import Calibration, CalibrationError
from cdistream.errors import CdistreamError
from cdistream.files import CalibrationFiles, open_source
from cdistream.physics import oversampling
from cdistream.roi import RoiConfig, choose_binning, extract
from sim_detector import DetectorModel
from sim_detector.crystals import CrystalRecipe, crystals
from sim_detector.replay import open_frames, wire_dtype


def _series(folder, count=5, shape=(40, 48), dtype=np.int32):
    """areaDetector-style single-frame TIFFs, with NDFileTIFF's uniqueId and timeStamp tags."""
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 1000, (count, *shape)).astype(dtype)
    for k, frame in enumerate(frames):
        tags = [(65000, "d", 1, 1e9 + k, True), (65001, "i", 1, 100 + k, True)]
        tifffile.imwrite(folder / f"scan_{k:05d}.tif", frame, extratags=tags,
                         software="EPICS areaDetector")
    return frames


def test_a_tiff_series_reads_in_name_order_from_a_folder_a_glob_or_one_file(tmp_path):
    frames = _series(tmp_path / "scan")
    (tmp_path / "scan" / "notes.txt").write_text("not a frame")
    for spec in (tmp_path / "scan", f"{tmp_path}/scan/scan_*.tif"):
        with open_source(str(spec)) as source:
            assert (source.count, source.shape, source.dtype) == (5, (40, 48), "int32")
            got = np.concatenate([block for block, _ in source.frames(chunk=2)])
            np.testing.assert_array_equal(got, frames)
            assert source.meta["first_unique_id"] == 100
            assert source.meta["software"] == "EPICS areaDetector"
    tifffile.imwrite(tmp_path / "stack.tiff", frames)
    with open_source(str(tmp_path / "stack.tiff")) as source:
        np.testing.assert_array_equal(next(source.frames(chunk=5))[0], frames)


def test_tiff_series_that_cannot_be_read_are_refused_clearly(tmp_path):
    with pytest.raises(CdistreamError, match="no TIFF files"):
        open_source(f"{tmp_path}/nothing_*.tif")
    _series(tmp_path / "mixed", count=2)
    tifffile.imwrite(tmp_path / "mixed" / "scan_00002.tif", np.zeros((8, 8), np.int32))
    with open_source(str(tmp_path / "mixed")) as source, pytest.raises(CdistreamError, match="8x8"):
        list(source.frames())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.tif").write_bytes(b"II*\x00 truncated")
    with pytest.raises(CdistreamError, match="not a readable TIFF"):
        open_source(str(tmp_path / "broken"))


def test_dark_and_flat_correct_frames_and_mask_what_they_cannot(tmp_path):
    frames = _series(tmp_path / "scan", count=3, shape=(16, 16))
    detector = (64, 64)
    dark = np.full(detector, 2.0, np.float32)
    flat = np.full(detector, 100.0, np.float32)
    flat[8:24, 8:24] = 50.0  # the frames' region: half as sensitive
    flat[10, 11] = 0.0  # dead in the flat field
    tifffile.imwrite(tmp_path / "dark.tif", dark)
    tifffile.imwrite(tmp_path / "flat.tif", flat)
    files = CalibrationFiles(str(tmp_path / "dark.tif"), str(tmp_path / "flat.tif"), (8, 8))
    with open_source(str(tmp_path / "scan"), files) as source:
        block, _ = next(source.frames())
        assert source.dtype == "float32" and source.mask[2, 3] and source.mask.sum() == 1
    median = np.median(flat[flat > 0])
    expected = np.maximum(frames - 2.0, 0) * median / 50.0
    expected[:, 2, 3] = 0
    np.testing.assert_allclose(block, expected, rtol=1e-6)
    no_origin = CalibrationFiles(str(tmp_path / "dark.tif"))
    with pytest.raises(CalibrationError, match="calibration-origin"):
        open_source(str(tmp_path / "scan"), no_origin)
    with pytest.raises(CalibrationError, match="do not lie within"):
        Calibration.build((16, 16), dark, None, (60, 0))


def test_the_replay_sends_what_each_wire_format_carries(tmp_path):
    frames = _series(tmp_path / "scan", count=2, shape=(8, 8))
    assert wire_dtype("eiger-v2", "int32") == "uint32" and wire_dtype("adzmq", "int32") == "int32"
    assert wire_dtype("pva", "float32") == "float32" and wire_dtype("native", "float32") == "uint32"
    count, shape, dtype, mask, meta, images = open_frames(str(tmp_path / "scan"), None, "eiger-v1")
    sent = list(images)
    assert (count, shape, dtype, mask) == (2, (8, 8), "uint32", None)
    assert meta["format"] == "tiff" and sent[0].dtype == np.uint32
    np.testing.assert_array_equal(np.stack(sent), frames)


def _frame_of(extent: float, finely: bool = True, seed: int = 3) -> np.ndarray:
    """A 256 x 256 frame of a crystal ``extent`` pixels across in the window of binning 2 (its
    pattern rendered twice as finely as that window needs: binning 2 of 64 detector pixels
    then sees it ``extent`` across, a crop of 32 half as large); not ``finely``: in the window
    of binning 1."""
    recipe = CrystalRecipe(families=("habit",), min_extent=extent, max_extent=extent * 1.01,
                           max_phase_ptp=0.5)
    obj = crystals(1, seed, recipe)[0].obj
    if finely:
        obj = np.pad(obj, 16)  # a 64-pixel window: the far field sampled twice as finely
    det = DetectorModel(shape=(256, 256), photons=1e6, dark=0.0, hot_pixels=0, gap_rows=0)
    return det.render(obj, 128.3, 127.6, np.random.default_rng(seed))


def test_binning_is_lowered_when_it_would_squeeze_the_crystal_out_of_the_window():
    roi = RoiConfig(size=32, binning=2)
    fits = choose_binning(_frame_of(10.0), roi)  # 10 px in the binned window
    assert (fits.binning, fits.fits, fits.reduced) == (2, True, False)
    assert 2.2 <= fits.oversampling <= 4
    squeezed = choose_binning(_frame_of(21.0), roi)  # 21 px binned: a crop of 32 sees 10.5
    crop = extract(_frame_of(21.0), roi)
    assert oversampling(crop.counts, crop.valid) <= 2
    assert (squeezed.binning, squeezed.fits, squeezed.reduced) == (1, True, True)
    assert squeezed.document()["binning_reduced"] is True
    too_big = choose_binning(_frame_of(22.0, finely=False), RoiConfig(size=32, binning=1))
    assert not too_big.fits and too_big.oversampling <= 2
    nothing = choose_binning(np.zeros((64, 64), np.uint16), roi)
    assert nothing.oversampling is None and nothing.binning == 2

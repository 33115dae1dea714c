"""cdistream in the Bluesky and synchrotron data ecosystem: a light client, NeXus archives that
resolve to their default plot, runs registered in a real Tiled server through TiledWriter,
DECTRIS file-writer data reconstructed offline as the stream would, and the live view."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from cdistream.bluesky import RemoteConsumer
from cdistream.offline import reconstruct_files
from cdistream.physics import compare
from cdistream.roi import RoiConfig
from cdistream.service import Service, ServiceConfig
from sim_detector import DetectorModel, DetectorPublisher, Scenario, scenario_frames

from .conftest import LOOPBACK
from .test_service import start_service

pytestmark = pytest.mark.timeout(240)
DET = DetectorModel(shape=(128, 128), hot_pixels=2, gap_rows=2)


def test_the_client_side_imports_neither_tensorflow_nor_scikit_image():
    code = (
        "import sys\n"
        "import cdistream, cdistream.wire, cdistream.bluesky\n"
        "from cdistream.bluesky import ReconstructionMonitor, ReconstructionCallback\n"
        "from cdistream.wire import unpackb\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'skimage') if m in sys.modules]\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _default_plot(path) -> tuple[str, tuple[int, ...]]:
    """Follow NeXus' ``default`` attributes from the root to the signal dataset."""
    with h5py.File(path, "r") as f:
        group = f
        while "default" in group.attrs:
            group = group[group.attrs["default"]]
        assert group.attrs["NX_class"] == "NXdata"
        signal = group[group.attrs["signal"]]
        return signal.name, signal.shape


def _series(pub, number: int, count: int, seed: int = 0):
    sim = Scenario("operando", seed, count, DET.shape, drift=0.2)
    images = list(scenario_frames(sim, DET, count, seed))
    pub.run_series(number, DET.shape, DET.dtype, iter(images), None, DET.mask(),
                   DET.metadata(), count)
    return images


@pytest.mark.slow
def test_archives_are_nexus_and_tiled_registers_the_run(shipped, context, tiled):
    from bluesky_tiled_plugins import TiledWriter

    client, archive = tiled
    seen: list[tuple[str, dict]] = []
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        config = ServiceConfig(input=pub.address, feedback=LOOPBACK, archive=archive)
        with Service(config, shipped, context) as service:
            writer = TiledWriter(client)
            with RemoteConsumer(service.feedback.address,
                                [lambda n, d: seen.append((n, d)), writer]) as consumer:
                assert service.feedback.wait_for_subscribers(1, 10)
                assert pub.wait_for_subscriber(10)
                _series(pub, 1, 24)
                assert consumer.wait_for_stops(1, timeout=60)
    start = next(d for n, d in seen if n == "start")
    events = [d for n, d in seen if n == "event" and "amplitude" in d["data"]]
    assert _default_plot(start["archive"]) == ("/entry/data/amplitude", (24, 32, 32))
    with h5py.File(start["archive"], "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/reconstruction"].attrs["NX_class"] == "NXprocess"
        assert f["entry/instrument/detector"].attrs["NX_class"] == "NXdetector"
        assert f["entry/reconstruction/program"][()] == b"cdistream"
        assert f["entry/instrument/detector/beam_center_x"][()] == DET.metadata()["beam_center_x"]
    run = client[start["uid"]]
    k = 7
    np.testing.assert_array_equal(run["primary"]["amplitude"][k], events[k]["data"]["amplitude"])
    np.testing.assert_array_equal(run["archive"]["amplitude"][k], events[k]["data"]["amplitude"])
    np.testing.assert_array_equal(run["archive"]["phase"][k], events[k]["data"]["phase"])


def _dectris_files(directory, images: list[np.ndarray]):
    """A master file and two data files as the DECTRIS file writer lays them out, the data
    bitshuffle/LZ4-compressed through the HDF5 filter plugin."""
    import hdf5plugin

    names = []
    for part, chunk in enumerate((images[:10], images[10:])):
        name = f"scan_data_{part + 1:06d}.h5"
        with h5py.File(directory / name, "w") as f:
            f.create_dataset("entry/data/data", data=np.stack(chunk), chunks=(1, *DET.shape),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
        names.append(name)
    master = directory / "scan_master.h5"
    meta = DET.metadata()
    with h5py.File(master, "w") as f:
        for part, name in enumerate(names):
            f[f"entry/data/data_{part + 1:06d}"] = h5py.ExternalLink(name, "entry/data/data")
        det = f.create_group("entry/instrument/detector")
        det["beam_center_x"], det["beam_center_y"] = meta["beam_center_x"], meta["beam_center_y"]
        det["x_pixel_size"] = meta["pixel_size_x"]
        det["detector_distance"] = meta["detector_distance"]
        specific = det.create_group("detectorSpecific")
        specific["pixel_mask"] = DET.mask().astype(np.uint32)
        specific["countrate_correction_count_cutoff"] = meta["saturation_value"]
        f["entry/instrument/beam/incident_wavelength"] = meta["wavelength"]
    return master


@pytest.mark.slow
def test_offline_reconstruction_of_detector_files_matches_the_stream(shipped, context, tmp_path):
    sim = Scenario("operando", 4, 24, DET.shape, drift=0.2)
    images = list(scenario_frames(sim, DET, 24, 4))
    master = _dectris_files(tmp_path, images)
    summary = reconstruct_files([str(master)], tmp_path / "offline.h5", shipped, RoiConfig(),
                                progress=False)
    assert summary.frames == summary.reconstructed == 24 and not summary.rejected
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service, sink = start_service(shipped, context, pub, max_batch=256, max_wait_ms=50)
        try:
            pub.run_series(1, DET.shape, DET.dtype, iter(images), None, DET.mask(),
                           DET.metadata(), 24)
            sink.collect(timeout=60)
        finally:
            service.stop()
    events = sink.events()
    streamed = np.stack([e["data"]["amplitude"] * np.exp(1j * e["data"]["phase"]) for e in events])
    with h5py.File(tmp_path / "offline.h5", "r") as f:
        offline = f["entry/image_1/data"][()]
        chi2 = f["entry/reconstruction/chi2"][()]
        frames = f["entry/data/frame"][()]
    assert list(frames) == [e["data"]["frame"] for e in events] == list(range(24))
    same = compare(offline, streamed)
    assert same.iou.min() > 0.97 and np.median(same.phase_rmse) < 0.02
    np.testing.assert_allclose(chi2, [e["data"]["chi2"] for e in events], rtol=0.05, atol=1e-4)
    # sim_detector --replay reads the same files, frame for frame
    from sim_detector.replay import open_frames

    count, shape, _, mask, _, replayed = open_frames(master)
    assert (count, shape) == (24, DET.shape)
    np.testing.assert_array_equal(mask, DET.mask())
    np.testing.assert_array_equal(np.stack(list(replayed)), np.stack(images))
    # the archive of the offline run re-reconstructs (a newer model on the saved ROIs)
    again = reconstruct_files([str(tmp_path / "offline.h5")], tmp_path / "again.h5", shipped,
                              RoiConfig(), progress=False)
    assert again.reconstructed == 24


@pytest.mark.slow
def test_the_live_view_saves_the_last_frame(shipped, context, tmp_path):
    import threading

    from cdistream.view import run_view

    png = tmp_path / "view.png"
    with DetectorPublisher(LOOPBACK, context=context) as pub:
        service, sink = start_service(shipped, context, pub)
        try:
            holder = {}
            viewer = threading.Thread(target=lambda: holder.update(
                view=run_view(service.feedback.address, png, frames=12, timeout=60)))
            viewer.start()
            assert service.feedback.wait_for_subscribers(2, 10)
            _series(pub, 1, 12)
            viewer.join(90)
            sink.collect(timeout=60)
        finally:
            service.stop()
    view = holder["view"]
    assert png.stat().st_size > 20_000
    assert view.accepted == 12 and view.last["frame"] == 11
    last = sink.events()[-1]["data"]
    np.testing.assert_array_equal(view.last["amplitude"], last["amplitude"])

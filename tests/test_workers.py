"""``cdistream serve --workers 2``: the reconstruction stage in two ``pvapy-hpc-consumer``
processes behind PVAccess (loopback only, see conftest), the detector and the service as
processes, as at a beamline. One Bluesky run per series, events in frame order, nothing missed;
a worker killed mid-series costs its outstanding frames, counted, and nothing else, and is
started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cdistream.service.pva.sequencer import Lost, Sequencer

from .conftest import DocumentSink, free_port, validate
from .test_serve_process import accounted_counts, serve, simulate, stop


def test_the_sequencer_keeps_order_and_gives_up_on_overdue_frames():
    seq = Sequencer(timeout=1.0)
    back: dict[int, str] = {}
    for uid in (1, 2, 3):
        seq.sent(f"frame{uid}", uid)
    seq.control("end")
    def take(uid):
        return back.pop(uid, None)

    back[2] = "r2"
    assert seq.ready(take, now=time.monotonic()) == [], "frame 1 is neither back nor late"
    back[1] = "r1"
    assert seq.ready(take, now=time.monotonic()) == [[("frame1", "r1"), ("frame2", "r2")]]
    out = seq.ready(take, now=time.monotonic() + 5)  # frame 3 never comes
    assert out == [Lost("frame3", 3), "end"] and len(seq) == 0


def test_a_worker_that_keeps_dying_young_is_restarted_ever_more_slowly():
    """The pool's restart policy on real processes that exit at once (a worker whose model
    cannot load): never a tight loop; one that had run a while comes back after a second."""
    from cdistream.service.pva.pool import WorkerPool

    class ExitingWorkers(WorkerPool):
        def _spawn(self, worker: int) -> None:  # a process that exits at once, not a worker
            self.processes[worker] = subprocess.Popen([sys.executable, "-c", "pass"])
            self._started[worker] = time.monotonic()

    pool = ExitingWorkers(f"cdistream:test{free_port()}", 1, {"max_batch": 4}, spawn=False)
    try:
        t0 = time.monotonic()
        pool._spawn(1)
        pool.processes[1].wait(10)
        assert pool.revive(t0 + 1) == [], "seen dead, 1 s after it started: wait 2 s"
        assert pool.revive(t0 + 2.9) == []
        assert pool.revive(t0 + 3.1) == [1]
        pool.processes[1].wait(10)
        assert pool.revive(t0 + 4) == [], "dead young again: wait 4 s"
        assert pool.revive(t0 + 7.9) == []
        assert pool.revive(t0 + 8.1) == [1]
        pool.processes[1].wait(10)
        pool._started[1] = t0 - 100  # it had worked for 100 s before it exited
        assert pool.revive(t0 + 9) == [] and pool.revive(t0 + 10.1) == [1]
    finally:
        pool.close()


def test_a_result_that_comes_after_its_frame_was_settled_is_dropped(monkeypatch):
    """A slow worker's late result, for a frame already counted lost, is not held for ever, nor
    is a result that comes again after it was taken (a monitor can be sent an update twice);
    one that comes in time is taken."""
    from cdistream.service.pva.pool import WorkerPool
    from cdistream.service.pva.worker import RESULT_TYPE, _pv_type, result_fields

    pva = pytest.importorskip("pvaccess")

    def result(uid: int):
        return pva.PvObject(_pv_type(RESULT_TYPE), {
            "uniqueId": uid, "worker": 1, "amplitude": np.ones(4, np.float32),
            "phase": np.zeros(4, np.float32), "chi2": 0.01,
            "peak_offset": np.zeros(2, np.float32), "refined": False})

    pool = WorkerPool(f"cdistream:test{free_port()}", 1, {"max_batch": 4}, spawn=False)
    try:
        assert result_fields(result(7)) is not None
        pool.forget(7)  # given up before its result came
        pool._arrived(result(7))
        pool._arrived(result(8))
        assert pool.take(7) is None and pool._results.keys() == {8}
        assert pool.take(8)["uniqueId"] == 8
        pool._arrived(result(8))  # the same result again, after it was published
        pool._arrived(result(7))  # ... and the late one again
        assert not pool._results and pool.take(8) is None
        pool._arrived(result(9))
        pool.forget(9)  # given up on after it came: dropped at once
        assert not pool._results and list(pool._settled) == [7, 8, 9]
        monkeypatch.setattr("cdistream.service.pva.pool.SETTLED_KEPT", 3)
        pool.forget(10)  # the ids kept are bounded, the oldest let go
        assert list(pool._settled) == [8, 9, 10]
    finally:
        pool.close()


def _worker_pids(prefix: str) -> dict[int, int]:
    """{worker id: pid} of the pvapy-hpc-consumer processes serving ``prefix``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{prefix}:frames".encode() in args and b"--consumer-id" in args:
            found[int(args[args.index(b"--consumer-id") + 1])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_workers_one_run_in_order_and_a_killed_worker_costs_only_its_frames(context):
    prefix = f"cdistream:test{free_port()}"
    feedback = f"tcp://127.0.0.1:{free_port()}"
    detector = f"tcp://127.0.0.1:{free_port()}"
    proc = serve("--input", detector, "--socket", "pull", "--feedback", feedback,
                 "--workers", "2", "--worker-prefix", prefix, "--worker-timeout", "3",
                 "--max-batch", "32")
    try:
        sink = DocumentSink(context, feedback, rcvhwm=0)
        report = simulate(detector, 1, 1000, 200)
        assert report["held_rate"]
        first = list(sink.collect(stops=1, timeout=180))  # a copy: the sink goes on
        workers = _worker_pids(prefix)
        assert sorted(workers) == [1, 2], workers

        # the second series: worker 1 is killed a few seconds in
        import threading

        def kill_worker_one():
            time.sleep(3)
            os.kill(workers[1], signal.SIGKILL)

        killer = threading.Thread(target=kill_worker_one, daemon=True)
        killer.start()
        simulate(detector, 2, 1000, 100)
        killer.join()
        docs = list(sink.collect(stops=2, timeout=180))

        # the service started worker 1 again; a third series is whole
        deadline = time.monotonic() + 60
        while _worker_pids(prefix).get(1) in (None, workers[1]) and time.monotonic() < deadline:
            time.sleep(0.5)
        restarted = _worker_pids(prefix)
        assert sorted(restarted) == [1, 2] and restarted[1] != workers[1], restarted
        simulate(detector, 3, 100, 100)
        third = sink.collect(stops=3, timeout=180)
    finally:
        counts = stop(proc, timeout=120)
    third_stop = [d for n, d in third if n == "stop"][2]["cdistream"]
    assert third_stop["reconstructed"] == third_stop["received"] == 100, third_stop
    assert counts["notices"].get("worker_restarted", 0) >= 1, counts
    validate(docs)
    starts = [d for n, d in docs if n == "start"]
    assert len(starts) == 2, "one run per series"
    run1 = [d for n, d in first if n == "event"]
    assert [e["data"]["frame"] for e in run1] == list(range(1000)), "in frame order, 0 missed"
    first_stop = [d for n, d in first if n == "stop"][0]
    assert first_stop["exit_status"] == "success"
    assert first_stop["cdistream"]["reconstructed"] == 1000
    second_stop = [d for n, d in docs if n == "stop"][1]["cdistream"]
    lost = second_stop["rejected"].get("lost_in_worker", 0)
    assert 0 < lost < 1000, second_stop
    assert second_stop["received"] == 1000 == second_stop["reconstructed"] + lost
    descriptors = {d["uid"]: d["run_start"] for n, d in docs if n == "descriptor"
                   and d["name"] == "primary"}
    run2 = [d for n, d in docs if n == "event" and descriptors.get(d["descriptor"])
            == starts[1]["uid"]]
    frames = np.array([e["data"]["frame"] for e in run2])
    assert np.all(np.diff(frames) > 0), "still in frame order after the worker died"
    assert len(frames) == 1000 - lost
    rejected = [d for n, d in docs if n == "event" and d["data"].get("reason") == "lost_in_worker"]
    assert len(rejected) == lost, "each lost frame is named in the rejected stream"
    assert counts["received"] == accounted_counts(counts) == 2100

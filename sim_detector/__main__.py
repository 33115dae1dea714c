"""python -m sim_detector: stream a simulated (or replayed) detector series over ZeroMQ."""

from __future__ import annotations

import argparse
import itertools
import json
import logging

import zmq

from cdistream.files import CalibrationFiles, add_calibration_args

from .frames import DetectorModel
from .publisher import DetectorPublisher, scenario_frames
from .replay import open_frames
from .scenario import SCENARIOS, Scenario


def _shape(text: str) -> tuple[int, int]:
    rows, cols = (int(v) for v in text.lower().split("x"))
    return rows, cols


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sim_detector", description=__doc__)
    p.add_argument("--bind", default="tcp://127.0.0.1:9999", help="address to bind")
    p.add_argument(
        "--format",
        choices=("native", "eiger-v1", "eiger-v2", "adzmq", "pva"),
        default="native",
        help="wire format (DECTRIS stream V1/V2, areaDetector ADZMQ, cdistream's own, or pva:"
        " NTNDArrays on the PVA channel named by --bind, as areaDetector's NDPluginPva)",
    )
    p.add_argument(
        "--compression",
        choices=("none", "lz4", "bslz4"),
        default="bslz4",
        help="image compression for eiger-v1/eiger-v2 and pva (adzmq and native send raw"
        " arrays)",
    )
    p.add_argument(
        "--socket",
        choices=("pub", "push"),
        default=None,
        help="default: push for the DECTRIS formats (as the detector does), else pub",
    )
    p.add_argument("--frames", type=int, default=100)
    p.add_argument(
        "--rate", type=float, default=None, help="frames/s (default: as fast as possible)"
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="operando")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--series", type=int, default=1)
    p.add_argument("--shape", type=_shape, default=(512, 512), help="ROWSxCOLS, e.g. 514x1030")
    p.add_argument("--dtype", choices=("uint16", "uint32"), default="uint16")
    p.add_argument("--photons", type=float, default=3e4, help="counts in the brightest pixel")
    p.add_argument("--drift", type=float, default=0.5, help="peak drift in pixels per frame")
    p.add_argument("--replay", help="frames to send instead of a simulation: FILE.h5::/dataset,"
                   " a DECTRIS master file, or a TIFF series (folder, quoted glob, file)")
    p.add_argument("--spec", default=None, metavar="FILE:SCAN[:COLUMN]",
                   help="with --replay: the scanned motor's position per frame from a SPEC"
                   " file, sent with the frames (NDAttributes for adzmq and pva)")
    p.add_argument("--first", type=int, default=0, help="with --replay: the first frame sent")
    p.add_argument("--count", type=int, default=None, help="with --replay: how many frames")
    add_calibration_args(p)
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a subscriber")
    p.add_argument(
        "--cycle",
        type=int,
        default=0,
        help="render this many frames once and repeat them (for load tests)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    socket = args.socket or ("push" if args.format.startswith("eiger") else "pub")
    if args.replay:  # opened first: a file that cannot be read ends here, before binding
        calibration = CalibrationFiles(args.dark, args.flat, args.calibration_origin)
        count, shape, dtype, mask, meta, images = open_frames(
            args.replay, calibration, args.format
        )
        meta = {**meta, "source": args.replay}
        positions = None
        if args.spec:
            from cdistream.spec import parse_spec_spec, scan_positions

            scan = scan_positions(*parse_spec_spec(args.spec))
            positions = {scan.motor: scan.positions[args.first:].tolist()}
        stop = count if args.count is None else min(count, args.first + args.count)
        images = itertools.islice(images, args.first, stop)
        count = max(stop - args.first, 0)
    else:
        detector = DetectorModel(args.shape, args.dtype, args.photons, seed=args.seed)
        scenario = Scenario(args.scenario, args.seed, args.frames, args.shape, args.drift)
        count, shape, dtype, mask = args.frames, args.shape, args.dtype, detector.mask()
        images = scenario_frames(scenario, detector, args.frames, args.seed)
        positions = None
        if args.cycle:
            rendered = list(scenario_frames(scenario, detector, args.cycle, args.seed))
            images = (rendered[i % args.cycle] for i in range(args.frames))
        meta = {**detector.metadata(), "scenario": args.scenario, "seed": args.seed}
    if args.format == "pva":
        from .pva_publisher import PvaPublisher

        publisher = PvaPublisher(args.bind, args.compression)
    else:
        publisher = DetectorPublisher(args.bind, socket, None, args.format, args.compression)
    with publisher as pub:
        logging.info("sim_detector on %s (%s, %s)", pub.address, args.format, socket)
        pub.wait_for_subscriber(args.wait)
        report = pub.run_series(args.series, shape, dtype, images, args.rate, mask, meta, count,
                                positions)
    zmq.Context.instance().term()  # returns once queued frames are out (or the linger passed)
    logging.info(
        "series %d: %s",
        args.series,
        json.dumps(
            {
                "sent": report.sent,
                "of": count,
                "seconds": round(report.seconds, 3),
                "rate": round(report.rate, 1),
                "held_rate": report.held_rate,
            }
        ),
    )


if __name__ == "__main__":
    main()

"""The ``cdistream`` command: ``serve`` (the service), ``demo`` (the whole loop on one machine)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from cdistream._version import __version__
from cdistream.adaptation.tuning import TuneSettings
from cdistream.files import add_calibration_args
from cdistream.inference.gate import REFINE_ABOVE, REFINE_ITERATIONS
from cdistream.wire.formats import FORMATS

__all__ = ["main"]


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default="tcp://127.0.0.1:9999", help="detector address to connect to")
    p.add_argument(
        "--format",
        choices=(*FORMATS, "pva"),
        default="native",
        help="detector stream format; auto recognises it from the first message; pva reads"
        " NTNDArrays from the PVA channel named by --input (areaDetector's NDPluginPva)",
    )
    p.add_argument(
        "--socket",
        choices=("sub", "pull"),
        default=None,
        help="default: pull for eiger-v1/eiger-v2 (DECTRIS detectors PUSH), sub otherwise",
    )
    p.add_argument(
        "--channel", default=None, help="eiger-v2 channel to use (default: the first listed)"
    )
    p.add_argument(
        "--feedback",
        default="tcp://127.0.0.1:5577",
        help="address to bind the feedback PUB socket (localhost unless you say otherwise)",
    )
    p.add_argument(
        "--models", type=Path, default=None, help="model file or directory (default: shipped)"
    )
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument(
        "--queue-size", type=int, default=1024, help="frames buffered before dropping the oldest"
    )
    p.add_argument(
        "--archive", type=Path, default=None, help="directory for one HDF5 file per series"
    )
    p.add_argument("--roi-size", type=int, default=32)
    p.add_argument("--binning", type=int, default=1)
    p.add_argument("--min-peak", type=float, default=10.0, help="counts a Bragg peak must reach")
    p.add_argument(
        "--background", type=float, default=0.0, help="dark counts per pixel to subtract"
    )
    p.add_argument(
        "--saturation",
        type=float,
        default=None,
        help="counts at which a pixel is saturated and masked (default: the series' announced"
        " saturation_value)",
    )
    p.add_argument("--status-interval", type=float, default=10.0)
    p.add_argument(
        "--refine-above",
        type=float,
        nargs="?",
        const=REFINE_ABOVE,
        default=None,
        metavar="CHI2",
        help=f"refine frames whose chi2 exceeds CHI2 (default {REFINE_ABOVE}, chosen on the"
        " independent test sets: see models/MODEL_CARD.md); off unless given",
    )
    p.add_argument("--refine-iterations", type=int, default=REFINE_ITERATIONS,
                   help="at most this many iterations a refined frame, each stopped at its noise")
    p.add_argument(
        "--memory-budget",
        type=_bytes,
        default="2GiB",
        help="bytes the service may buffer in all: detector socket, queue, feedback (e.g. 512MiB)",
    )
    p.add_argument(
        "--max-frame-bytes",
        type=_bytes,
        default="8MiB",
        help="the largest detector frame expected: with --memory-budget it sizes the detector"
        " socket's buffer (messages), which cannot change once connected",
    )
    p.add_argument(
        "--metrics",
        default=None,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (host: localhost)",
    )
    p.add_argument(
        "--series-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="--format pva: seconds without a frame that end a series (PVA has no end message)",
    )
    p.add_argument(
        "--adapt",
        action="store_true",
        help="the networks learn each sample while it is measured, in a low-priority process;"
        " a tuned model serves only when it beats the one in service on frames it never saw,"
        " written with its provenance to ARCHIVE/models (docs/adaptation.md)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="reconstruct in N worker processes (pvapy-hpc-consumer, over PVA) instead of this"
        " one; docs/scale-out.md",
    )
    p.add_argument(
        "--workers-elsewhere",
        action="store_true",
        help="do not start the N workers here: wait for them (`cdistream worker` on any host)",
    )
    p.add_argument(
        "--worker-prefix",
        default=None,
        metavar="PREFIX",
        help="PVA channel prefix of the workers (default cdistream:PID)",
    )
    p.add_argument(
        "--worker-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds after which a frame out at a worker is counted lost_in_worker",
    )
    p.add_argument(
        "--pva-output",
        default=None,
        metavar="PREFIX",
        help="also publish the latest reconstruction and the status as PVA channels"
        " PREFIX:amplitude, PREFIX:phase (NTNDArray) and PREFIX:status",
    )
    p.add_argument(
        "--curve-keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="CURVE encryption and authentication (docs/security.md; `cdistream keys DIR`)",
    )


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30}


def _file_input_args(p: argparse.ArgumentParser) -> None:
    """The frames, calibration, networks and ROI of ``reconstruct`` and ``adapt``."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="DECTRIS master file, FILE.h5::/dataset, a cdistream archive, or a TIFF"
                   " series: a folder, a quoted glob ('scan/*.tif') or a multi-page file")
    add_calibration_args(p)
    p.add_argument("--models", type=Path, default=None,
                   help="model file or directory (default: shipped)")
    p.add_argument("--roi-size", type=int, default=32)
    p.add_argument("--binning", type=int, default=1)
    p.add_argument("--min-peak", type=float, default=10.0)
    p.add_argument("--background", type=float, default=0.0)
    p.add_argument("--saturation", type=float, default=None)


def _bytes(text: str) -> int:
    """'2GiB', '512MiB', '1e9' -> bytes."""
    number = text.rstrip("BbKkMmGgIi")
    unit = text[len(number):].upper()
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of bytes, e.g. 2GiB or 512MiB")
    return int(float(number) * _UNITS[unit])


def _refuse(message: str) -> None:
    """One line, exit status 2: an option or file the service cannot use."""
    logging.getLogger("cdistream").error("%s", message)
    raise SystemExit(2)


def serve(args: argparse.Namespace) -> None:
    import zmq

    from cdistream.errors import ConfigError, ModelLoadError
    from cdistream.roi import RoiConfig
    from cdistream.service import Service, ServiceConfig

    config = ServiceConfig(
        input=args.input,
        format=args.format,
        socket=args.socket,
        channel=args.channel,
        feedback=args.feedback,
        models=args.models,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        archive=args.archive,
        status_interval=args.status_interval,
        roi=RoiConfig(
            args.roi_size, args.binning, args.min_peak, args.background, args.saturation
        ),
        refine_above=args.refine_above,
        refine_iterations=args.refine_iterations,
        memory_budget=args.memory_budget,
        max_frame_bytes=args.max_frame_bytes,
        metrics=args.metrics,
        curve_keys=args.curve_keys,
        pva_output=args.pva_output,
        series_timeout=args.series_timeout,
        workers=args.workers,
        adapt=args.adapt,
        spawn_workers=not args.workers_elsewhere,
        worker_prefix=args.worker_prefix,
        worker_timeout=args.worker_timeout,
    )
    try:
        service = Service(config)
    except (ConfigError, ModelLoadError) as exc:
        _refuse(str(exc))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    while not done.wait(0.5):
        if service.failed.is_set() or not all(service.alive.values()):
            break
    log = logging.getLogger("cdistream")
    failed = service.failed.is_set() or not all(service.alive.values())
    if failed:
        log.critical("cdistream cannot go on (threads alive: %s); exiting", service.alive)
    else:
        log.info("shutting down: draining the queue")
    counts = service.stop()
    zmq.Context.instance().term()  # returns once the stop document is out (or linger passed)
    print(json.dumps(counts))  # noqa: T201  (the command's result)
    if failed:
        raise SystemExit(1)


def demo(args: argparse.Namespace) -> None:
    import numpy as np

    from cdistream.demo import run_demo

    result = run_demo(args.out, args.frames, args.rate, args.scenario, args.seed)
    latency = np.array([e["data"]["latency"] for e in result.events]) * 1e3
    counts = result.stop["cdistream"] if result.stop else {}
    lines = [
        "",
        f"frames received {counts.get('received')}, reconstructed {counts.get('reconstructed')}, "
        f"rejected {counts.get('rejected')}, dropped {counts.get('dropped')}, "
        f"gaps {counts.get('gaps')}",
        f"latency frame -> Bluesky: p50 {np.percentile(latency, 50):.1f} ms, "
        f"p99 {np.percentile(latency, 99):.1f} ms, max {latency.max():.1f} ms",
        f"against ground truth: median IoU {np.median(result.iou):.3f}, "
        f"median phase RMSE {np.median(result.phase_rmse):.3f} rad",
        *_model_lines(result),
        f"archive: {result.archive}",
        f"figure:  {result.figure}",
    ]
    print("\n".join(lines))  # noqa: T201  (the command's result)


def _model_lines(result) -> list[str]:
    """Each model update of the demo, and every model's figures on the frames it served,
    beside the shipped model's on the same frames (read back from the archive)."""
    import h5py
    import numpy as np

    from cdistream.adaptation.judge import networks_chi2
    from cdistream.inference import Reconstructor

    lines = [f"model {m['previous']} -> {m['version']} ({m['reason']}): median chi2 on"
             f" {m['judged_frames']} frames it never saw {m['chi2_before']:.4f} ->"
             f" {m['chi2_after']:.4f}" for m in result.models]
    if not result.models:
        lines.append("model: no update (a round needs 32 frames and about 20 s of one core;"
                     " longer series: --frames, --rate)")
        return lines
    with h5py.File(result.archive, "r") as f:
        row = {int(k): i for i, k in enumerate(f["entry/data/frame"][()])}
        counts = f["entry/instrument/detector/data"][()]
        valid = f["entry/instrument/detector/valid"][()].astype(bool)
    frames = np.array([row[e["data"]["frame"]] for e in result.events])
    shipped = networks_chi2(Reconstructor.load(), counts[frames], valid[frames])
    served = np.array([e["data"]["chi2"] for e in result.events])
    versions = np.array([e["data"]["model_version"] for e in result.events])
    for version in dict.fromkeys(versions.tolist()):
        by = versions == version
        lines.append(f"  served by {version}: {by.sum()} frames, median chi2"
                     f" {np.median(served[by]):.4f} (the shipped model on them:"
                     f" {np.median(shipped[by]):.4f}), against ground truth IoU"
                     f" {np.median(result.iou[by]):.3f}, phase RMSE"
                     f" {np.median(result.phase_rmse[by]):.3f} rad")
    return lines


def bench(args: argparse.Namespace) -> None:
    from cdistream.bench import format_table, plot_latency, run_bench, run_scaleout, write_json

    if args.workers:
        results = run_scaleout([int(n) for n in args.workers.split(",")], args.quick, args.models)
        print(json.dumps(results, indent=1, default=str))  # noqa: T201  (the command's result)
        if args.json:
            write_json(results, args.json)
        return
    results = run_bench(args.quick, args.models)
    print(format_table(results))  # noqa: T201  (the command's result)
    if args.json:
        write_json(results, args.json)
    if args.plot:
        plot_latency(results, args.plot)


def _files_input(args: argparse.Namespace):
    """The networks, ROI and calibration that ``reconstruct`` and ``adapt`` read files with."""
    from cdistream.files import CalibrationFiles
    from cdistream.inference import Reconstructor
    from cdistream.roi import RoiConfig
    from cdistream.service.options import roi_for_model

    rec = Reconstructor.load(args.models)
    roi = roi_for_model(
        RoiConfig(args.roi_size, args.binning, args.min_peak, args.background, args.saturation),
        rec.n,
    )
    return rec, roi, CalibrationFiles(args.dark, args.flat, args.calibration_origin)


def reconstruct(args: argparse.Namespace) -> None:
    from cdistream.errors import CdistreamError
    from cdistream.offline import reconstruct_files

    try:
        rec, roi, calibration = _files_input(args)
        positions = None
        if args.spec:
            from cdistream.spec import parse_spec_spec, scan_positions

            positions = scan_positions(*parse_spec_spec(args.spec)).positions
        summary = reconstruct_files(args.inputs, args.output, rec, roi, args.refine,
                                    progress=not args.no_progress, calibration=calibration,
                                    volume=args.volume, positions=positions)
    except CdistreamError as exc:
        _refuse(str(exc))
    print("\n".join(summary.lines()))  # noqa: T201  (the command's result)


def adapt(args: argparse.Namespace) -> None:
    from cdistream.errors import CdistreamError
    from cdistream.offline_adapt import adapt_files

    try:
        rec, roi, calibration = _files_input(args)
        settings = TuneSettings(steps=args.steps, seed=args.seed)
        outcome = adapt_files(args.inputs, args.output, rec, roi, args.frames, settings,
                              calibration)
    except CdistreamError as exc:
        _refuse(str(exc))
    print("\n".join(outcome.lines()))  # noqa: T201  (the command's result)
    if outcome.path is None:
        raise SystemExit(1)


def view(args: argparse.Namespace) -> None:
    from cdistream.view import run_view

    curve = None
    if args.curve_secret is not None:
        from bluesky.callbacks.zmq import ClientCurve

        curve = ClientCurve(args.curve_secret, args.curve_server)
    shown = run_view(args.feedback, args.save, args.frames, args.timeout, curve)
    if args.save is not None:
        print(f"{shown.accepted} reconstructions; wrote {args.save}")  # noqa: T201


def view_3d(args: argparse.Namespace) -> None:
    from cdistream.errors import CdistreamError
    from cdistream.view3d import plot_volume

    save = args.save or args.file.with_suffix(".png")
    try:
        plot_volume(args.file, save, args.level)
    except (OSError, KeyError, CdistreamError) as exc:
        _refuse(f"{args.file}: not a cdistream volume file ({exc})")
    print(f"wrote {save}")  # noqa: T201  (the command's result)


def worker(args: argparse.Namespace) -> None:
    """``pvapy-hpc-consumer`` running cdistream's processor: exec'd, so signals reach it."""
    from cdistream.service.pva.pool import consumer_command

    command = consumer_command(args.prefix, args.id, {
        "models": str(args.models) if args.models else None,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "refine_above": args.refine_above,
        "refine_iterations": args.refine_iterations,
    })
    os.execv(command[0], command)


def keys(args: argparse.Namespace) -> None:
    from cdistream.service.security import create_keys

    where = create_keys(args.directory, tuple(args.client) or ("consumer",))
    print(f"CURVE keys in {where}: server.key(_secret) for cdistream serve --curve-keys;"  # noqa: T201
          f" clients/ holds the public keys admitted; give each client its client_secrets/ pair")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator parses its own options
        from cdistream.simulator import main as simulate

        return simulate(argv[1:])
    parser = argparse.ArgumentParser(prog="cdistream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="TensorFlow's logs too")
    parser.add_argument("--version", action="version", version=f"cdistream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("simulate", help="the simulated detector (cdistream simulate --help)")
    _serve_args(sub.add_parser("serve", help="reconstruct a detector stream, publish documents"))
    d = sub.add_parser("demo", help="simulated detector -> service -> Bluesky, on this machine")
    d.add_argument("--out", type=Path, default=Path("demo_output"))
    d.add_argument("--frames", type=int, default=200)
    d.add_argument("--rate", type=float, default=4.0)
    d.add_argument("--scenario", default="operando")
    d.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench", help="measure speed and memory on this machine")
    b.add_argument("--quick", action="store_true", help="a run under two minutes")
    b.add_argument("--json", type=Path, default=None, help="write the results here")
    b.add_argument("--plot", type=Path, default=None, help="PNG of latency against input rate")
    b.add_argument("--models", type=Path, default=None)
    b.add_argument("--workers", default=None, metavar="N,M",
                   help="only the scale-out: saturated throughput with N, M ... PVA workers")
    r = sub.add_parser("reconstruct", help="reconstruct frames saved in files (HDF5, TIFF)")
    _file_input_args(r)
    r.add_argument("--output", type=Path, required=True, help="the NeXus file to write (new)")
    r.add_argument("--3d", dest="volume", action="store_true",
                   help="also reconstruct the rocking scan in 3D, into OUTPUT_volume.h5")
    r.add_argument("--spec", default=None, metavar="FILE:SCAN[:COLUMN]",
                   help="the rocking motor's positions from a SPEC file (default column: the"
                   " motor the scan moved), for the 3D file's rocking axis")
    r.add_argument("--refine", type=int, default=REFINE_ITERATIONS,
                   help="at most this many refinement iterations per frame, each frame stopped at"
                   " its noise; 0 for the networks alone (default: %(default)s: on the real"
                   " scan the refined frames agree best with its 3D reconstruction,"
                   " MODEL_CARD.md)")
    r.add_argument("--no-progress", action="store_true")
    a = sub.add_parser("adapt", help="tune the networks on frames saved in files (one sample)")
    _file_input_args(a)
    a.add_argument("--output", type=Path, required=True,
                   help="the model file to write (.keras; its provenance beside, .json)")
    a.add_argument("--frames", default="all", metavar="all|even|odd|FIRST:LAST",
                   help="the frames to learn from: 3 of every 4 tune, the 4th judges (default:"
                   " all)")
    a.add_argument("--steps", type=int, default=TuneSettings.steps, help="tuning steps (default:"
                   " %(default)s)")
    a.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("view", help="a live window on the feedback channel")
    v.add_argument("--feedback", default="tcp://127.0.0.1:5577", help="the service's feedback")
    v.add_argument("--save", type=Path, default=None, help="off-screen: write this PNG and exit")
    v.add_argument("--frames", type=int, default=20, help="with --save: after this many")
    v.add_argument("--timeout", type=float, default=60.0, help="with --save: at most seconds")
    v.add_argument("--curve-secret", type=Path, default=None, help="this client's .key_secret")
    v.add_argument("--curve-server", type=Path, default=None, help="the service's server.key")
    v3 = sub.add_parser("view-3d", help="slices and an isosurface of a 3D reconstruction, PNG")
    v3.add_argument("file", type=Path, help="a volume file (reconstruct --3d, serve --archive)")
    v3.add_argument("--save", type=Path, default=None, help="the PNG (default: FILE.png)")
    v3.add_argument("--level", type=float, default=0.3, help="isosurface, share of the maximum")
    w = sub.add_parser("worker", help="one reconstruction worker for `serve --workers` (PVA)")
    w.add_argument("prefix", help="the serving process's --worker-prefix")
    w.add_argument("id", type=int, help="this worker's number, 1 to N")
    w.add_argument("--models", type=Path, default=None)
    w.add_argument("--max-batch", type=int, default=32)
    w.add_argument("--max-wait-ms", type=float, default=5.0)
    w.add_argument("--refine-above", type=float, default=None, metavar="CHI2")
    w.add_argument("--refine-iterations", type=int, default=REFINE_ITERATIONS)
    k = sub.add_parser("keys", help="make CURVE key pairs for --curve-keys")
    k.add_argument("directory", type=Path)
    k.add_argument("--client", action="append", default=[], help="a client to admit (repeat)")
    args = parser.parse_args(argv)
    if args.verbose:  # TensorFlow's own start-up lines too
        os.environ["CDISTREAM_TF_LOGS"] = "1"
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    commands = {"serve": serve, "demo": demo, "bench": bench, "keys": keys,
                "reconstruct": reconstruct, "adapt": adapt, "view": view, "view-3d": view_3d,
                "worker": worker}
    commands[args.command](args)

"""The ``cdistream`` command: ``serve`` (the service), ``demo`` (the whole loop on one machine)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

from cdistream.wire.formats import FORMATS

__all__ = ["main"]


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default="tcp://127.0.0.1:9999", help="detector address to connect to")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="native",
        help="detector stream format; auto recognises it from the first message",
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
    p.add_argument("--status-interval", type=float, default=10.0)


def serve(args: argparse.Namespace) -> None:
    import zmq

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
        roi=RoiConfig(args.roi_size, args.binning, args.min_peak, args.background),
    )
    service = Service(config)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    service.start()
    done.wait()
    logging.getLogger("cdistream").info("shutting down: draining the queue")
    counts = service.stop()
    zmq.Context.instance().term()  # returns once the stop document is out (or linger passed)
    print(json.dumps(counts))  # noqa: T201  (the command's result)


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
        f"archive: {result.archive}",
        f"figure:  {result.figure}",
    ]
    print("\n".join(lines))  # noqa: T201  (the command's result)


def bench(args: argparse.Namespace) -> None:
    from cdistream.bench import format_table, plot_latency, run_bench, write_json

    results = run_bench(args.quick, args.models)
    print(format_table(results))  # noqa: T201  (the command's result)
    if args.json:
        write_json(results, args.json)
    if args.plot:
        plot_latency(results, args.plot)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cdistream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_args(sub.add_parser("serve", help="reconstruct a detector stream, publish documents"))
    d = sub.add_parser("demo", help="simulated detector -> service -> Bluesky, on this machine")
    d.add_argument("--out", type=Path, default=Path("demo_output"))
    d.add_argument("--frames", type=int, default=120)
    d.add_argument("--rate", type=float, default=40.0)
    d.add_argument("--scenario", default="operando")
    d.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench", help="measure speed and memory on this machine")
    b.add_argument("--quick", action="store_true", help="a run under two minutes")
    b.add_argument("--json", type=Path, default=None, help="write the results here")
    b.add_argument("--plot", type=Path, default=None, help="PNG of latency against input rate")
    b.add_argument("--models", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    {"serve": serve, "demo": demo, "bench": bench}[args.command](args)

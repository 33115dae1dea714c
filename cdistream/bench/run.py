"""``cdistream bench``: every speed and memory figure in one run on one machine, so ratios
compare like with like. Prints a table, writes JSON and a latency-against-rate plot."""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
from pathlib import Path

from cdistream.inference import Reconstructor
from cdistream.inference.gate import REFINE_ABOVE

from .compute import baseline_ms, model_throughput, test_patterns
from .pipeline import end_to_end, ingest_capacity, ingest_rate
from .stages import stage_costs

__all__ = ["format_table", "run_bench", "run_scaleout"]

log = logging.getLogger(__name__)


def _memory(rec: Reconstructor) -> dict:
    mem = {"rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if rec.device == "GPU":
        from cdistream.inference.tf import tensorflow

        tf = tensorflow()
        mem["gpu_peak_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return mem


MAX_BATCH, MAX_WAIT = 256, 5.0  # the service settings the pipeline runs use


def _budget(stages: dict[str, float], cpus: int) -> dict[str, float]:
    """Core-microseconds a frame costs outside the networks, and what that leaves: the most
    frames/s this machine could move end to end if nothing else ran, against the networks'."""
    worker = stages["finish"] + stages["registration"] + stages["documents_and_msgpack"]
    outside = stages["roi_512x512_tracked"] + worker  # the service tracks the peak
    model = stages["model_per_pattern_batch_256"] * cpus  # the networks use every core
    return {
        "outside_model_us_per_frame": outside,
        "worker_us_per_frame": stages["model_per_pattern_batch_256"] + worker,
        "end_to_end_ceiling_per_s": 1e6 * cpus / (outside + model),
        "ratio_ceiling": model / (outside + model),
    }


def run_bench(quick: bool = False, models: Path | None = None) -> dict:
    """Measure everything; ``quick`` shrinks every run to finish in under two minutes."""
    rec = Reconstructor.load(models)
    scale = 0.1 if quick else 1.0
    results: dict = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "device": rec.device,
            "model": rec.source,
            "quick": quick,
        },
    }
    log.info("model-only throughput")
    rates = model_throughput(rec, seconds=0.5 if quick else 3.0)
    best_batch = max(rates, key=rates.get)
    results["model"] = {
        "per_batch": rates,
        "best_batch": best_batch,
        "best_per_s": rates[best_batch],
        "best_ms_per_pattern": 1e3 / rates[best_batch],
    }
    log.info("ER/HIO baseline")
    base32 = baseline_ms(test_patterns(16 if quick else 64), singles=3 if quick else 5)
    base64 = baseline_ms(test_patterns(4 if quick else 16, pad=2), singles=2 if quick else 3)
    nn_ms = results["model"]["best_ms_per_pattern"]
    results["baseline"] = {
        "n32": base32,
        "n64_padded": base64,
        "speedup_n32": base32["batched_ms"] / nn_ms,
        "speedup_n64": base64["batched_ms"] / nn_ms,
        "speedup_n32_single": base32["single_ms"] / nn_ms,
    }
    log.info("stage costs")
    stages = stage_costs(rec, calls=100 if quick else 400)
    results["stages_us"] = stages
    results["cpu_budget"] = _budget(stages, results["machine"]["cpus"])
    log.info("end-to-end, saturated")
    saturated = end_to_end(rec, frames=int(3000 * scale) + 200, max_batch=MAX_BATCH)
    capacity = saturated["frames_per_s"]
    saturated["ratio_to_model"] = capacity / results["model"]["best_per_s"]
    results["end_to_end"] = saturated
    results["latency"] = []
    # the bar: p99 <= 2 x (longest a frame waits for its batch + one full batch's compute)
    batch_ms = MAX_BATCH * results["cpu_budget"]["worker_us_per_frame"] / 1e3
    for fraction in (0.1, 0.5, 0.8):
        rate = fraction * capacity
        log.info("latency at %.0f frames/s (%.0f%% of capacity)", rate, 100 * fraction)
        frames = int(max(rate * (2 if quick else 10), 100))
        run = end_to_end(rec, frames=frames, rate=rate, max_batch=MAX_BATCH, max_wait_ms=MAX_WAIT)
        run["fraction"] = fraction
        run["p99_bound_ms"] = 2 * (MAX_WAIT + batch_ms)
        results["latency"].append(run)
    results["adapt"] = None if quick else _adapt_runs(rec, capacity)  # a round needs ~20 s
    results["refine"] = _refine_runs(rec, scale, quick)
    log.info("ingest alone")
    frames, passes = int(5000 * scale) + 500, 1 if quick else 3
    results["ingest"] = {
        "raw_uint16_512": ingest_rate(frames, passes=passes),
        "bslz4_uint16_512": ingest_rate(
            frames, format="eiger-v2", compression="bslz4", passes=passes
        ),
    }
    log.info("ingest capacity: frames waiting in the socket, the receiver alone")
    queued = int(1500 * scale) + 500  # 512 KiB each, held in memory at once
    results["ingest_capacity"] = {
        "raw_uint16_512": ingest_capacity(queued, passes=passes),
        "bslz4_uint16_512": ingest_capacity(
            queued, format="eiger-v2", compression="bslz4", passes=passes
        ),
    }
    results["memory"] = _memory(rec)
    return results


def run_scaleout(workers: list[int], quick: bool = False, models: Path | None = None) -> dict:
    """Saturated end-to-end throughput with the reconstruction in 1, 2 ... worker processes
    over PVA (``serve --workers``), beside the in-process service, on this machine."""
    rec = Reconstructor.load(models)
    frames = 1500 if quick else 6000
    results: dict = {"machine": {"cpus": len(os.sched_getaffinity(0)), "device": rec.device,
                                 "platform": platform.platform(), "quick": quick}}
    log.info("in-process, saturated")
    results["in_process"] = end_to_end(rec, frames=frames, shape=(128, 128), max_batch=64)
    results["workers"] = {}
    for n in workers:
        log.info("%d workers over PVA, saturated", n)
        results["workers"][n] = end_to_end(rec, frames=frames, shape=(128, 128), max_batch=64,
                                           workers=n)
    one = results["workers"].get(1, {}).get("frames_per_s")
    for run in results["workers"].values():
        run["scaling_vs_1"] = run["frames_per_s"] / one if one else None
    return results


def _adapt_runs(rec: Reconstructor, capacity: float) -> dict:
    """At half the capacity: the latency while an adaptation round tunes (``serve --adapt``),
    and that of the same seconds of the same stream without it."""
    rate = 0.5 * capacity
    frames = int(rate * 50)
    log.info("latency at %.0f frames/s while the networks adapt, and without", rate)
    adapting = end_to_end(rec, frames, rate, max_batch=MAX_BATCH, max_wait_ms=MAX_WAIT,
                          adapt=True)
    plain = end_to_end(rec, frames, rate, max_batch=MAX_BATCH, max_wait_ms=MAX_WAIT,
                       window=adapting["tuning_s"])
    rounds = [r for r in adapting.pop("rounds") if r.get("kind") == "round"]
    return {"rate": rate, "adapting": adapting, "plain": plain,
            "p99_ratio": adapting["latency_ms"]["p99"] / plain["latency_ms"]["p99"],
            "round_cpu_s": [r["tune_cpu_seconds"] for r in rounds]}


def _refine_runs(rec: Reconstructor, scale: float, quick: bool) -> dict:
    """``serve --refine-above`` at its default on a straining, drifting crystal: capacity
    saturated, then latency at half of it against the same bar, with its own batch compute."""
    log.info("end-to-end with the trust gate, saturated")
    kw = {"max_batch": MAX_BATCH, "refine_above": REFINE_ABOVE, "scenario": "operando"}
    saturated = end_to_end(rec, frames=int(2000 * scale) + 200, **kw)
    capacity = saturated["frames_per_s"]
    rate = 0.5 * capacity
    log.info("latency with the trust gate at %.0f frames/s (50%% of capacity)", rate)
    run = end_to_end(rec, frames=int(max(rate * (2 if quick else 10), 100)), rate=rate,
                     max_wait_ms=MAX_WAIT, **kw)
    run["fraction"] = 0.5
    run["p99_bound_ms"] = 2 * (MAX_WAIT + 1e3 * MAX_BATCH / capacity)
    return {"threshold": REFINE_ABOVE, "saturated": saturated, "half_capacity": run}


def format_table(r: dict) -> str:
    """The human-readable summary of :func:`run_bench`'s results."""
    m, b, e = r["model"], r["baseline"], r["end_to_end"]
    lines = [
        f"cdistream bench on {r['machine']['cpus']} CPU(s), device {r['machine']['device']}"
        f"{' (quick)' if r['machine']['quick'] else ''}",
        "",
    ]
    lines.append("model only (sCDI+pCDI pair):")
    lines += [f"  batch {k:>4}: {v:9.0f} reconstructions/s" for k, v in m["per_batch"].items()]
    lines += [
        f"  best: {m['best_ms_per_pattern']:.3f} ms/pattern at batch {m['best_batch']}",
        "ER/HIO, 620 iterations with shrink-wrap:",
        f"  32x32: {b['n32']['batched_ms']:.1f} ms/pattern batched,"
        f" {b['n32']['single_ms']:.1f} single"
        f" -> NN is {b['speedup_n32']:.0f}x faster (single: {b['speedup_n32_single']:.0f}x)",
        f"  64x64 (2x padded): {b['n64_padded']['batched_ms']:.1f} ms/pattern batched"
        f" -> NN is {b['speedup_n64']:.0f}x faster",
        "CPU per frame, each stage alone (us): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["stages_us"].items()),
        f"  -> outside the networks {r['cpu_budget']['outside_model_us_per_frame']:.0f} core-us"
        f"/frame; with nothing else running, this machine could reach at most"
        f" {r['cpu_budget']['end_to_end_ceiling_per_s']:.0f} frames/s end to end"
        f" = {r['cpu_budget']['ratio_ceiling']:.2f} x model-only",
        f"end to end, saturated, 512x512 uint16: {e['frames_per_s']:.0f} frames/s"
        f" = {e['ratio_to_model']:.2f} x model-only",
        "latency frame timestamp -> consumer:",
    ]
    for run in r["latency"]:
        lat = run["latency_ms"]
        lines.append(
            f"  {run['fraction']:.0%} of capacity ({run['rate_asked']:.0f}/s): p50 {lat['p50']:.1f}"
            f" ms, p99 {lat['p99']:.1f} ms (bar {run['p99_bound_ms']:.0f}), max {lat['max']:.1f}"
            f" ms, dropped {run['dropped']}"
        )
    g = r["refine"]
    half, lat = g["half_capacity"], g["half_capacity"]["latency_ms"]
    lines += [
        f"with --refine-above {g['threshold']} (operando crystal): saturated"
        f" {g['saturated']['frames_per_s']:.0f} frames/s, {g['saturated']['refined']} of"
        f" {g['saturated']['reconstructed']} refined",
        f"  50% of that ({half['rate_asked']:.0f}/s): p50 {lat['p50']:.1f} ms, p99"
        f" {lat['p99']:.1f} ms (bar {half['p99_bound_ms']:.0f}), {half['refined']} refined,"
        f" {half['above_threshold_unrefined']} above the threshold left unrefined,"
        f" dropped {half['dropped']}",
    ]
    a = r["adapt"]
    on, off = (a["adapting"], a["plain"]) if a else ({}, {})
    span = on.get("tuning_s")
    lines += [] if a is None else [
        f"with --adapt at 50% of capacity ({a['rate']:.0f}/s), while a round tuned"
        + (f" ({span[1] - span[0]:.0f} s)" if span else " (none did: no figure)")
        + f": p99 {on['latency_ms']['p99']:.1f} ms against {off['latency_ms']['p99']:.1f} ms"
        f" in the same seconds without --adapt (x{a['p99_ratio']:.2f}, bar 1.2), dropped"
        f" {on['dropped']} / {off['dropped']}; rounds took"
        f" {', '.join(f'{s:.0f}' for s in a['round_cpu_s']) or 'no'} s of CPU",
    ]
    raw, bslz4 = r["ingest"]["raw_uint16_512"], r["ingest"]["bslz4_uint16_512"]
    lines.append(
        f"ingest (receive+decode+ROI), 512x512 uint16, streamed: raw {raw['frames_per_s']:.0f}"
        f" frames/s, eiger-v2 bslz4 {bslz4['frames_per_s']:.0f} frames/s; per CPU-second of"
        f" the receiver thread: raw {raw['frames_per_cpu_s']:.0f}, bslz4"
        f" {bslz4['frames_per_cpu_s']:.0f}"
    )
    raw, bslz4 = r["ingest_capacity"]["raw_uint16_512"], r["ingest_capacity"]["bslz4_uint16_512"]
    lines.append(
        f"ingest capacity of one core (frames already in the socket): raw"
        f" {raw['frames_per_s']:.0f} frames/s, eiger-v2 bslz4 {bslz4['frames_per_s']:.0f}"
        f" frames/s"
    )
    lines.append(
        f"peak RSS {r['memory']['rss_peak_mb']:.0f} MB"
        + (f", GPU {r['memory']['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r["memory"] else "")
    )
    return "\n".join(lines)


def plot_latency(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = r["latency"]
    rates = [run["rate_asked"] for run in runs]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key in ("p50", "p99", "max"):
        ax.plot(rates, [run["latency_ms"][key] for run in runs], "o-", label=key)
    if "p99_bound_ms" in runs[0]:
        ax.axhline(runs[0]["p99_bound_ms"], ls="--", color="gray", label="p99 bar")
    ax.set_xlabel("input rate (frames/s)")
    ax.set_ylabel("latency frame -> consumer (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_json(r: dict, path: Path) -> Path:
    path.write_text(json.dumps(r, indent=2, default=float))
    return path

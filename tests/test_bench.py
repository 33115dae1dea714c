"""The benchmark runs and writes valid JSON (a smoke test: speed is judged by the bench itself,
never by a timed test)."""

import json

import pytest

from cdistream.bench import compute, pipeline


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_pieces_run_and_report(tiny_reconstructor, tmp_path):
    rates = compute.model_throughput(tiny_reconstructor, seconds=0.05)
    assert set(rates) == {1, 8, 32, 128, 256} and all(r > 0 for r in rates.values())
    base = compute.baseline_ms(compute.test_patterns(2), iterations=20, singles=1)
    assert base["single_ms"] > 0 and base["batched_ms"] > 0
    assert compute.test_patterns(1, pad=2).shape == (1, 64, 64)
    run = pipeline.end_to_end(tiny_reconstructor, frames=60, shape=(128, 128))
    assert run["reconstructed"] == run["received"] == 60 and run["frames_per_s"] > 0
    paced = pipeline.end_to_end(tiny_reconstructor, frames=40, rate=200, shape=(128, 128))
    assert paced["received"] == paced["reconstructed"] + paced["dropped"]
    assert paced["latency_ms"]["p99"] >= paced["latency_ms"]["p50"] > 0
    ingest = pipeline.ingest_rate(200, shape=(128, 128))
    assert ingest["frames_per_s"] > 0 and not ingest["rejected"]
    capacity = pipeline.ingest_capacity(200, shape=(128, 128))
    assert capacity["frames_per_cpu_s"] > 0 and not capacity["rejected"]
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"model": rates, "end_to_end": run, "ingest": ingest}))
    assert json.loads(out.read_text())["end_to_end"]["frames"] == 60


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cdistream_bench_quick_writes_json_and_plot(tmp_path, capsys):
    """The command a user runs, with the shipped models, in its short form (about 20 s)."""
    from cdistream.cli import main

    out, plot = tmp_path / "bench.json", tmp_path / "latency.png"
    main(["bench", "--quick", "--json", str(out), "--plot", str(plot)])
    results = json.loads(out.read_text())
    assert results["machine"]["quick"] and plot.stat().st_size > 1000
    assert results["model"]["best_per_s"] > 0 and results["baseline"]["speedup_n32"] > 0
    assert results["end_to_end"]["reconstructed"] > 0
    assert [run["fraction"] for run in results["latency"]] == [0.1, 0.5, 0.8]
    assert set(results["ingest"]) == {"raw_uint16_512", "bslz4_uint16_512"}
    assert set(results["ingest_capacity"]) == {"raw_uint16_512", "bslz4_uint16_512"}
    assert all(v > 0 for v in results["stages_us"].values())
    assert "x model-only" in capsys.readouterr().out

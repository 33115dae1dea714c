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
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"model": rates, "end_to_end": run, "ingest": ingest}))
    assert json.loads(out.read_text())["end_to_end"]["frames"] == 60

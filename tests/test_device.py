"""The GPU-only code paths, run on a CPU by injection: memory growth on every GPU, bfloat16
only where the device computes it natively, and a batch that runs out of device memory split
in two and retried (the real traced networks, the real TensorFlow error type)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cdistream.inference.device import (
    bf16_native,
    configure_gpus,
    cpu_has_bfloat16,
    run_split_on_oom,
)


def test_memory_growth_is_asked_for_every_gpu_and_a_refusal_is_not_fatal():
    asked = []

    def set_growth(gpu, on):
        asked.append((gpu, on))
        if gpu == "gpu1":
            raise RuntimeError("Physical devices cannot be modified after being initialized")

    assert configure_gpus(["gpu0", "gpu1"], set_growth) == 2
    assert asked == [("gpu0", True), ("gpu1", True)]


@pytest.mark.parametrize(
    "caps, native",
    [([(9, 0)], True), ([(8, 0), (8, 6)], True), ([(7, 0)], False), ([(8, 0), (7, 5)], False),
     ([None], False)],
)
def test_bfloat16_only_from_compute_capability_8(caps, native):
    gpus = [f"gpu{i}" for i in range(len(caps))]
    assert bf16_native(gpus, dict(zip(gpus, caps, strict=True)).get) is native


def test_without_a_gpu_the_cpu_flags_decide():
    assert bf16_native([], cpuinfo="flags : fpu sse avx512f avx512_bf16 amx_tile") is True
    assert bf16_native([], cpuinfo="flags : fpu sse avx2") is False
    assert cpu_has_bfloat16("flags : amx_bf16 ") is True


def _oom_above(limit: int, calls: list[int]):
    def fn(m, v):
        calls.append(len(m))
        if len(m) > limit:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return m.sum(axis=(1, 2)), v.sum(axis=(1, 2))

    return fn


def test_a_batch_that_runs_out_of_memory_is_retried_in_halves():
    m = np.random.default_rng(0).random((100, 4, 4)).astype(np.float32)
    v = np.ones_like(m)
    calls: list[int] = []
    amp, phase = run_split_on_oom(_oom_above(30, calls), m, v)
    np.testing.assert_allclose(amp, m.sum(axis=(1, 2)))
    assert calls[:3] == [100, 50, 25] and max(c for c in calls if c <= 30) == 25
    with pytest.raises(tf.errors.ResourceExhaustedError):
        run_split_on_oom(_oom_above(0, []), m, v)  # one pattern still too big: the error
    with pytest.raises(ValueError):  # anything else is not retried
        run_split_on_oom(lambda *_: (_ for _ in ()).throw(ValueError("bad")), m, v)


def test_the_reconstructor_splits_a_bucket_that_runs_out_of_memory(tiny_reconstructor):
    rec = tiny_reconstructor
    m = np.random.default_rng(1).random((200, rec.n, rec.n)).astype(np.float32) + 0.1
    expected = rec.predict(m)
    real = dict(rec._fns)

    def exhausted(*_):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM on the 256 bucket")

    rec._fns[256] = exhausted  # as a GPU too small for a full batch would answer
    try:
        got = rec.predict(m)
    finally:
        rec._fns.update(real)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)

"""What the accelerator allows, decided once: memory growth on every GPU (the service must not
take a whole shared GPU at start), bfloat16 only where the hardware computes it natively (GPU
compute capability 8.0 and up: Ampere, Hopper; or a CPU with AVX512-BF16/AMX), and a batch that
runs out of device memory split in two and retried before anything is rejected.

Every function takes what it inspects as an argument with the real thing as the default, so
the GPU-only branches are tested on a CPU by injection."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .tf import tensorflow

__all__ = [
    "bf16_native",
    "configure_gpus",
    "cpu_has_bfloat16",
    "run_split_on_oom",
]

log = logging.getLogger(__name__)

MIN_BF16_CAPABILITY = (8, 0)


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """True on a CPU with bfloat16 dot products (AVX512-BF16 or AMX); elsewhere bfloat16 would
    be emulated, and slower than float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return " avx512_bf16" in cpuinfo or " amx_bf16" in cpuinfo


def _gpus() -> list:
    return tensorflow().config.list_physical_devices("GPU")


def _capability(gpu) -> tuple[int, int] | None:
    details = tensorflow().config.experimental.get_device_details(gpu)
    capability = details.get("compute_capability")
    return tuple(capability) if capability else None


def bf16_native(
    gpus: Sequence[Any] | None = None,
    capability: Callable[[Any], tuple[int, int] | None] = _capability,
    cpuinfo: str | None = None,
) -> bool:
    """bfloat16 where it is native: on the GPUs if every one has compute capability >= 8.0
    (older ones emulate it, slower than float32), else on the CPU if it has AVX512-BF16/AMX."""
    gpus = _gpus() if gpus is None else gpus
    if gpus:
        caps = [capability(g) for g in gpus]
        return all(c is not None and c >= MIN_BF16_CAPABILITY for c in caps)
    return cpu_has_bfloat16(cpuinfo)


def configure_gpus(gpus: Sequence[Any] | None = None, set_growth: Callable | None = None) -> int:
    """Memory growth on for every GPU, before TensorFlow initialises them; how many there are.
    Once a GPU is initialised the setting cannot change: that is logged, not fatal."""
    gpus = _gpus() if gpus is None else gpus
    set_growth = set_growth or tensorflow().config.experimental.set_memory_growth
    for gpu in gpus:
        try:
            set_growth(gpu, True)
        except (RuntimeError, ValueError) as exc:  # already initialised
            log.debug("memory growth on %s left as it is: %s", gpu, exc)
    return len(gpus)


def _is_oom(exc: BaseException) -> bool:
    tf = tensorflow()
    return isinstance(exc, tf.errors.ResourceExhaustedError)


def run_split_on_oom(
    fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    magnitudes: np.ndarray,
    valid: np.ndarray,
    is_oom: Callable[[BaseException], bool] = _is_oom,
) -> tuple[np.ndarray, np.ndarray]:
    """``fn(magnitudes, valid)``; if the device runs out of memory, each half on its own
    (recursively, down to one pattern, which then raises as it would have)."""
    try:
        return fn(magnitudes, valid)
    except Exception as exc:
        if not is_oom(exc) or len(magnitudes) < 2:
            raise
        half = len(magnitudes) // 2
        log.warning("out of device memory on %d patterns: retrying in halves", len(magnitudes))
        first = run_split_on_oom(fn, magnitudes[:half], valid[:half], is_oom)
        second = run_split_on_oom(fn, magnitudes[half:], valid[half:], is_oom)
        return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])

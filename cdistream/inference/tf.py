"""TensorFlow, imported and first asked for its devices without the C++ start-up lines it
writes straight to file descriptor 2 (oneDNN notices, CUDA probing, absl's preamble), which
``TF_CPP_MIN_LOG_LEVEL`` no longer silences; memory growth is set on every GPU before anything
initialises them. ``CDISTREAM_TF_LOGS=1`` (``cdistream -v``) keeps
them. Called before the service starts its threads, so no log line of ours is lost."""

from __future__ import annotations

import contextlib
import functools
import os

__all__ = ["tensorflow"]


@contextlib.contextmanager
def _native_stderr_silenced():
    if os.environ.get("CDISTREAM_TF_LOGS"):
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def tensorflow():
    """The ``tensorflow`` module, imported quietly, its devices already listed."""
    with _native_stderr_silenced():
        import tensorflow as tf

        from .device import configure_gpus

        configure_gpus(
            tf.config.list_physical_devices("GPU"), tf.config.experimental.set_memory_growth
        )
    return tf

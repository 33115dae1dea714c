"""Reconstructor: diffraction magnitudes in, amplitude/phase/support/chi2 out.

Loads the sCDI/pCDI network once (Keras safe mode), runs it on the GPU when TensorFlow sees
one and on the CPU otherwise, through one traced function per batch-size bucket so steady
state never retraces, and optionally refines the result by error reduction stopped at the noise.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

from cdistream.errors import InvalidPatternError, ModelLoadError
from cdistream.physics import fit_ramp, refine_cross_validated

from .device import bf16_native, run_split_on_oom
from .result import SUPPORT_THRESHOLD, Reconstruction, finish, normalise_amplitude
from .tf import tensorflow
from .version import digest, version_of

__all__ = ["BUCKETS", "MODEL_FILE", "Reconstructor", "default_model_path"]

log = logging.getLogger(__name__)

BUCKETS = (1, 8, 32, 128, 256)
MODEL_FILE = "cdi_nn.keras"


def default_model_path() -> Path:
    """The shipped model: ``$CDISTREAM_MODELS``, else the copy inside an installed wheel,
    else ``models/`` of the source checkout."""
    if env := os.environ.get("CDISTREAM_MODELS"):
        return Path(env)
    packaged = resources.files("cdistream") / "_models" / MODEL_FILE
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "models" / MODEL_FILE


def validate_magnitudes(magnitudes: np.ndarray, n: int) -> np.ndarray:
    """(N, N) or (k, N, N) finite, non-negative, non-empty patterns -> float32 (k, N, N)."""
    m = np.asarray(magnitudes)
    if m.dtype.kind not in "fiu":
        raise InvalidPatternError(f"magnitudes must be numeric, got dtype {m.dtype}")
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != (n, n):
        raise InvalidPatternError(f"expected shape ({n}, {n}) or (k, {n}, {n}), got {m.shape}")
    m = m.astype(np.float32, copy=False)
    bad = ~np.isfinite(m).all(axis=(1, 2))
    if bad.any():
        raise InvalidPatternError(f"non-finite values in pattern(s) {np.flatnonzero(bad).tolist()}")
    if (m < 0).any():
        raise InvalidPatternError("magnitudes must be non-negative (square root of counts)")
    empty = m.max(axis=(1, 2)) <= 0
    if empty.any():
        raise InvalidPatternError(f"pattern(s) {np.flatnonzero(empty).tolist()} hold no signal")
    return m


_FLOAT32_LAYERS = ("features", "scdi_out", "pcdi_out", "scdi", "pcdi")


def _in_bfloat16(model):
    """The same network computing in bfloat16 (weights stay float32), except the input
    features and the output convolutions (as it was trained, in mixed precision)."""
    import keras

    def clone(layer):
        dtype = "float32" if layer.name in _FLOAT32_LAYERS else "mixed_bfloat16"
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _snap_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest even) onto the bfloat16 grid, still as float32.

    Scaled copies of one pattern, normalised, differ in their last float32 bit; the
    autocorrelation feature would spread such a difference over a whole channel, and bfloat16
    rounding would turn it into visible output differences. On the bfloat16 grid they are
    identical (barring a value within 2^-24 of a rounding midpoint), as the networks see them."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def _float32(tensor):
    tf = tensorflow()
    return tf.cast(tensor, tf.float32)


class Reconstructor:
    """The sCDI/pCDI pair behind one call: ``Reconstructor.load().reconstruct(magnitudes)``.

    ``precision`` "auto" computes in bfloat16 where the hardware does that natively (same
    quality on the test set, about 1.8x faster on an AVX512-BF16 CPU), else in float32.
    """

    def __init__(self, model, source: str = "<in memory>", precision: str = "auto"):
        tf = tensorflow()

        if precision == "auto":
            precision = "bfloat16" if bf16_native() else "float32"
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision {precision!r}: float32, bfloat16 or auto")
        self.precision = precision
        self._source_model = model
        self._model = _in_bfloat16(model) if precision == "bfloat16" else model
        self.version = f"unsaved-{digest(model.get_weights())}"  # load() names it
        self.source = source
        self.n = int(model.inputs[0].shape[1])
        self.trace_count = 0  # grows only while tracing: a test guard against retracing
        self._fns = {}
        for size in BUCKETS:
            spec = [tf.TensorSpec((size, self.n, self.n), tf.float32)] * 2
            # one function object per bucket: each is traced exactly once (warm_up), and TF
            # does not mistake five buckets for one function retracing. XLA only for a single
            # pattern, where fusing ~40 small ops halves TF's per-op dispatch (1.4 -> 0.8 ms on
            # 2 CPU cores); from 8 patterns up plain TF with oneDNN is faster.
            self._fns[size] = tf.function(
                functools.partial(self._forward),
                input_signature=spec,
                reduce_retracing=False,
                jit_compile=size == 1,
            )
        self.device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"

    def _forward(self, magnitudes, valid):
        self.trace_count += 1  # Python side effect: runs once per trace, never per call
        out = self._model({"magnitudes": magnitudes, "valid": valid}, training=False)
        return _float32(out["scdi"]), _float32(out["pcdi"])

    @classmethod
    def load(cls, path: str | Path | None = None, precision: str = "auto") -> Reconstructor:
        """Load a saved model (a ``.keras`` file or a directory holding ``cdi_nn.keras``)."""
        path = Path(path) if path is not None else default_model_path()
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():  # said at once, before TensorFlow takes seconds to load
            raise ModelLoadError(f"no model at {path}; see training/README.md to produce one")
        tensorflow()  # first, quietly: keras imports it
        import keras

        from . import model as _registers_layers  # noqa: F401  (custom layer for safe mode)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # keras raises many types; callers need one
            raise ModelLoadError(f"cannot load {path}: {exc}") from exc
        log.info("loaded %s", path)
        rec = cls(model, str(path), precision)
        rec.version = version_of(path, model.get_weights(), default_model_path())
        return rec

    @property
    def model(self):
        """The keras model as loaded (float32), whatever precision computes."""
        return self._source_model

    def copy(self) -> Reconstructor:
        """Another reconstructor over a copy of these networks (same weights, version and
        precision), whose weights change independently."""
        import keras

        model = keras.models.clone_model(self._source_model)
        model.set_weights(self._source_model.get_weights())
        twin = Reconstructor(model, self.source, self.precision)
        twin.version = self.version
        return twin

    def weights(self) -> list[np.ndarray]:
        """The networks' weights, copied."""
        return [np.array(w) for w in self._source_model.get_weights()]

    def use_weights(self, weights: list[np.ndarray], version: str | None = None) -> None:
        """Compute with ``weights`` (same architecture) from the next call on: assigned to the
        traced functions' own variables, so nothing retraces. Not while another thread
        predicts (the service swaps between micro-batches)."""
        self._source_model.set_weights(weights)
        if self._model is not self._source_model:
            self._model.set_weights(weights)
        if version is not None:
            self.version = version

    def warm_up(self) -> None:
        """Trace and run every bucket once, so the first real frame pays no compile cost."""
        for size, fn in self._fns.items():
            ones = np.ones((size, self.n, self.n), np.float32)
            fn(ones, ones)

    def predict(
        self, magnitudes: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw network outputs (amplitude, phase) for validated (k, N, N) float32 patterns;
        ``valid`` (k, N, N) marks measured pixels (all when None)."""
        amps, phases = [], []
        valid = np.ones_like(magnitudes) if valid is None else valid.astype(np.float32)
        # the scale, divided out here in float64, leaves nothing for bfloat16 rounding to see
        peak = (magnitudes * valid).max(axis=(1, 2), keepdims=True).astype(np.float64)
        magnitudes = (magnitudes / np.maximum(peak, 1e-30)).astype(np.float32)
        if self.precision == "bfloat16":
            magnitudes = _snap_to_bfloat16(magnitudes)
        for start in range(0, len(magnitudes), BUCKETS[-1]):
            chunk = magnitudes[start : start + BUCKETS[-1]]
            mask = valid[start : start + BUCKETS[-1]]
            amp, phase = run_split_on_oom(self._run_bucket, chunk, mask)
            amps.append(amp)
            phases.append(phase)
        return np.concatenate(amps), np.concatenate(phases)

    def _run_bucket(self, chunk: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """At most ``BUCKETS[-1]`` patterns through the traced function of the smallest bucket
        that holds them (padded with ones, cut back after)."""
        k = len(chunk)
        size = next(b for b in BUCKETS if b >= k)
        if size != k:
            pad = np.ones((size - k, self.n, self.n), np.float32)
            chunk = np.concatenate([chunk, pad])
            mask = np.concatenate([mask, pad])
        amp, phase = self._fns[size](chunk, mask)
        return amp.numpy()[:k], phase.numpy()[:k]

    def reconstruct(
        self, magnitudes: np.ndarray, refine: int = 0, valid: np.ndarray | None = None
    ) -> Reconstruction:
        """Invert (N, N) or (k, N, N) magnitudes at any scale, zero frequency at N//2; ``valid``
        (same shape, bool) marks the measured pixels, the others (gaps, dead, saturated) are
        ignored.

        ``refine`` > 0 runs at most that many error-reduction iterations started from the
        networks' output and support (AutoPhaseNN-style), each frame stopped where pixels held
        out of the iterations are predicted best: slower, closer to the data, not its noise.
        """
        m = validate_magnitudes(magnitudes, self.n)
        v = None if valid is None else np.asarray(valid, bool).reshape(m.shape)
        if refine <= 0:
            return finish(m, *self.predict(m, v), v)
        # a pipeline: the networks infer block k+1 (TensorFlow's threads) while numpy refines
        # block k, so inference hides behind the iterations
        step = BUCKETS[-1]
        blocks = [slice(k, k + step) for k in range(0, len(m), step)]
        done = []
        with ThreadPoolExecutor(1, thread_name_prefix="cdistream-infer") as pool:
            part = (lambda sl: None) if v is None else (lambda sl: v[sl])  # noqa: E731
            ahead = pool.submit(self.predict, m[blocks[0]], part(blocks[0]))
            for k, sl in enumerate(blocks):
                amp, phase = ahead.result()
                if k + 1 < len(blocks):
                    ahead = pool.submit(self.predict, m[blocks[k + 1]], part(blocks[k + 1]))
                done.append(refine_result(m[sl], amp, phase, refine, part(sl)))
        return Reconstruction.concatenate(done)


def refine_result(
    measured: np.ndarray,
    amplitude: np.ndarray,
    phase: np.ndarray,
    iterations: int,
    valid: np.ndarray | None = None,
) -> Reconstruction:
    """Polish raw network outputs by at most ``iterations`` of error reduction started from
    them (ramp included: it places the pattern's centre), within their support dilated by a
    pixel, which shrink-wrap may tighten but never grow; masked pixels keep their modulus free.
    Each frame stops where the misfit of pixels held out of the iterations is lowest
    (:func:`cdistream.physics.refine_cross_validated`): past it the image fits the noise.

    Never worse than the networks by the product's own measure: a frame whose refined chi2
    exceeds the networks' keeps the networks' reconstruction."""
    amp = normalise_amplitude(amplitude)
    # dilated by a pixel: a crystal's strained rim, where its phase departs most from the
    # core's, can lie just outside the networks' support (undilated, the refined strain of
    # tests/test_bluesky.py's strain watch comes out low: MODEL_CARD.md, known limits)
    support = binary_dilation(amp > SUPPORT_THRESHOLD, structure=np.ones((1, 3, 3), bool))
    obj, _ = refine_cross_validated(measured, amp * np.exp(1j * phase), support, iterations,
                                    valid)
    out_amp = normalise_amplitude(np.abs(obj))
    ramp = fit_ramp(obj, out_amp * (out_amp > SUPPORT_THRESHOLD))
    refined = finish(measured, out_amp, np.angle(obj), valid, ramp)
    networks = finish(measured, amp, phase, valid)
    worse = refined.chi2 > networks.chi2
    if worse.any():
        refined = refined.replace(np.flatnonzero(worse), networks.select(worse))
    return refined

"""The CDI NN architecture: a convolutional encoder shared by two decoder heads, sCDI
(amplitude) and pCDI (phase). Stock Keras layers plus one registered input layer, so saved
models load in Keras safe mode, on any Keras backend."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

__all__ = ["DiffractionFeatures", "build_cdi_nn"]


@keras.saving.register_keras_serializable(package="cdistream")
class DiffractionFeatures(layers.Layer):
    """Measured magnitudes and their validity mask -> four channels the network reads:

    - the magnitudes over their maximum (absolute counts depend on flux and exposure, so
      after this layer they do not matter), masked pixels 0;
    - a log-compressed copy, which keeps the weak high-q fringes (the shape) visible;
    - the autocorrelation of the object (|inverse FT of the intensity|, zero shift at N//2),
      a real-space image twice the object's extent: it puts where the object is, and how
      large, in the same space as the outputs;
    - the validity mask (1 measured, 0 gap, dead or saturated), so the network can ignore
      masked pixels instead of reading them as zero signal.
    """

    def __init__(self, dynamic_range: float = 1e3, **kwargs):
        super().__init__(**kwargs)
        self.dynamic_range = float(dynamic_range)

    def call(self, magnitudes, valid):
        valid = ops.cast(valid, "float32")
        x = ops.maximum(ops.cast(magnitudes, "float32"), 0.0) * valid
        peak = ops.max(x, axis=(1, 2), keepdims=True)
        x = x / ops.maximum(peak, 1e-30)
        logx = ops.log1p(self.dynamic_range * x) / math.log1p(self.dynamic_range)
        n = x.shape[1]
        intensity = ops.roll(x * x, shift=(-(n // 2), -(n // 2)), axis=(1, 2))
        real, imag = ops.fft2((intensity, ops.zeros_like(intensity)))
        auto = ops.sqrt(real * real + imag * imag)
        auto = ops.roll(auto, shift=(n // 2, n // 2), axis=(1, 2))
        auto = auto / ops.maximum(ops.max(auto, axis=(1, 2), keepdims=True), 1e-30)
        return ops.stack([x, logx, ops.sqrt(auto), valid], axis=-1)

    def compute_output_shape(self, magnitudes_shape, valid_shape=None):
        return (*magnitudes_shape, 4)

    def get_config(self):
        return {**super().get_config(), "dynamic_range": self.dynamic_range}


def _conv(x, filters: int, name: str):
    return layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)


def _block(x, filters: int, name: str):
    return _conv(_conv(x, filters, f"{name}a"), filters, f"{name}b")


def build_cdi_nn(n: int = 32, widths: tuple[int, ...] = (16, 32, 64)) -> keras.Model:
    """{"magnitudes": raw magnitudes (batch, n, n) at any scale, zero frequency at n//2,
    "valid": 1 where measured, 0 where masked} ->
    {"scdi": amplitude in [0, 1], "pcdi": phase in radians}, each (batch, n, n).

    Encoder: two 3 x 3 convolutions and a max pooling per level (the paper's), a bottleneck at
    n / 2^levels. Decoder: per level an upsampling, the encoder's features of that level (U-Net
    skips, except at full resolution, where the encoder's features are still reciprocal-space
    pixels) and two convolutions, ending at full resolution so that small objects get sharp
    edges. Amplitude and phase describe one object, so the decoder is shared and the sCDI and
    pCDI heads are its last convolutions (measured: separate full-resolution decoders per head
    cost 16% more time for no better images). The phase head is linear;
    :func:`cdistream.inference.result.finish` wraps it. Inputs and outputs stay float32 under a
    mixed-precision policy.
    """
    magnitudes = keras.Input(shape=(n, n), name="magnitudes")
    valid = keras.Input(shape=(n, n), name="valid")
    x = DiffractionFeatures(name="features", dtype="float32")(magnitudes, valid)
    skip = []
    for level, width in enumerate(widths):
        x = _block(x, width, f"enc{level}")
        skip.append(x)
        x = layers.MaxPooling2D(name=f"enc_pool{level}")(x)
    x = _block(x, widths[-1], "bottleneck")

    for level in reversed(range(len(widths))):
        x = layers.UpSampling2D(name=f"dec_up{level}")(x)
        if level > 0:
            x = layers.Concatenate(name=f"dec_skip{level}")([x, skip[level]])
        x = _block(x, widths[level], f"dec{level}")
    amp = layers.Conv2D(
        1, 3, padding="same", activation="sigmoid", name="scdi_out", dtype="float32"
    )(x)
    phase = layers.Conv2D(1, 3, padding="same", name="pcdi_out", dtype="float32")(x)
    outputs = {
        "scdi": layers.Reshape((n, n), name="scdi", dtype="float32")(amp),
        "pcdi": layers.Reshape((n, n), name="pcdi", dtype="float32")(phase),
    }
    return keras.Model({"magnitudes": magnitudes, "valid": valid}, outputs, name="cdi_nn")

"""The CDI NN architecture: one convolutional encoder shared by two deconvolutional heads,
sCDI (amplitude) and pCDI (phase). Built from stock Keras layers plus one registered,
scale-normalising input layer, so saved models load in Keras safe mode."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

__all__ = ["ScaleInvariantInput", "build_cdi_nn"]


@keras.saving.register_keras_serializable(package="cdistream")
class ScaleInvariantInput(layers.Layer):
    """Divide each pattern by its maximum and add a log-compressed copy as a second channel.

    Absolute counts depend on flux and exposure; after this layer they do not matter, and
    the log channel keeps the weak high-q fringes (which carry the shape) visible.
    """

    def __init__(self, dynamic_range: float = 1e3, **kwargs):
        super().__init__(**kwargs)
        self.dynamic_range = float(dynamic_range)

    def call(self, x):
        x = ops.maximum(ops.cast(x, "float32"), 0.0)
        peak = ops.max(x, axis=(1, 2), keepdims=True)
        x = x / ops.maximum(peak, 1e-30)
        logx = ops.log1p(self.dynamic_range * x) / math.log1p(self.dynamic_range)
        return ops.stack([x, logx], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape, 2)

    def get_config(self):
        return {**super().get_config(), "dynamic_range": self.dynamic_range}


def _conv(x, filters: int, name: str):
    return layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)


def _decoder(code, widths: tuple[int, ...], head: str):
    x = code
    for level, width in enumerate(reversed(widths)):
        x = _conv(x, width, f"{head}_conv{level}a")
        x = _conv(x, width, f"{head}_conv{level}b")
        x = layers.UpSampling2D(name=f"{head}_up{level}")(x)
    return x


def build_cdi_nn(n: int = 32, widths: tuple[int, ...] = (16, 32, 64)) -> keras.Model:
    """Raw magnitudes (batch, n, n), any scale, zero frequency at n//2 ->
    {"scdi": amplitude in [0, 1], "pcdi": phase in radians}, each (batch, n, n).

    The encoder follows the paper (two 3x3 convolutions per level, max pooling; the paper's
    widths are 32/64/128, the shipped model uses 16/32/64: a quarter of the arithmetic); each
    head mirrors it with upsampling. Sharing the encoder halves its cost and makes both heads
    pick the same one of an object and its twin. The phase head is linear (no tanh to
    saturate); :func:`cdistream.inference.result.finish` centres and wraps it.
    """
    inputs = keras.Input(shape=(n, n), name="magnitudes")
    x = ScaleInvariantInput(name="normalise")(inputs)
    for level, width in enumerate(widths):
        x = _conv(x, width, f"enc_conv{level}a")
        x = _conv(x, width, f"enc_conv{level}b")
        x = layers.MaxPooling2D(name=f"enc_pool{level}")(x)
    amp = _decoder(x, widths, "scdi")
    amp = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="scdi_out")(amp)
    phase = _decoder(x, widths, "pcdi")
    phase = layers.Conv2D(1, 3, padding="same", name="pcdi_out")(phase)
    outputs = {
        "scdi": layers.Reshape((n, n), name="scdi")(amp),
        "pcdi": layers.Reshape((n, n), name="pcdi")(phase),
    }
    return keras.Model(inputs, outputs, name="cdi_nn")

"""Training loss that respects the trivial ambiguities of the inverse problem: the targets are
centred (translation fixed), the phase term ignores a global offset, and each pattern is scored
against whichever of the object and its twin image the network chose."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["cdi_loss", "twin_targets"]

OFFSET_PULL = 0.01


def twin_targets(amplitude: tf.Tensor, phase: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Twin of centred (batch, N, N) targets: inversion about N//2, phase negated."""
    flip = tf.roll(tf.reverse(amplitude, axis=[1, 2]), shift=[1, 1], axis=[1, 2])
    flip_phase = tf.roll(tf.reverse(phase, axis=[1, 2]), shift=[1, 1], axis=[1, 2])
    return flip, -flip_phase


def _branch_loss(amp_true, phase_true, amp_pred, phase_pred, phase_weight: float):
    eps = 1e-6
    p = tf.clip_by_value(amp_pred, eps, 1 - eps)
    bce = -tf.reduce_mean(amp_true * tf.math.log(p) + (1 - amp_true) * tf.math.log(1 - p), [1, 2])
    w = amp_true * tf.cast(amp_true > 0.1, amp_true.dtype)  # phase is defined on the support
    wsum = tf.reduce_sum(w, [1, 2]) + eps
    d = phase_pred - phase_true
    offset = tf.reduce_sum(w * d, [1, 2]) / wsum
    phase_mse = tf.reduce_sum(w * tf.square(d - offset[:, None, None]), [1, 2]) / wsum
    # a global offset is not measurable, but a weak pull keeps the output near the targets
    total = bce + phase_weight * (phase_mse + OFFSET_PULL * tf.square(offset))
    return total, bce, phase_mse


def cdi_loss(amp_true, phase_true, amp_pred, phase_pred, phase_weight: float = 1.0):
    """Per-batch mean of min(loss vs target, loss vs twin target); also returns the
    amplitude BCE and the phase MSE of the chosen branch for logging."""
    direct = _branch_loss(amp_true, phase_true, amp_pred, phase_pred, phase_weight)
    amp_twin, phase_twin = twin_targets(amp_true, phase_true)
    flipped = _branch_loss(amp_twin, phase_twin, amp_pred, phase_pred, phase_weight)
    use_twin = flipped[0] < direct[0]
    pick = [tf.where(use_twin, f, d) for d, f in zip(direct, flipped, strict=True)]
    return tuple(tf.reduce_mean(v) for v in pick)

"""The networks tuned on the frames in front of the beam, with no labels: each pattern's counts
are split at random into two independent Poisson samples (binomial thinning); the networks read
one and are scored on the other (the product's intensity misfit), so no noise they saw can be
fitted. Amplitude outside the starting networks' own support (grown, and its twin's) is
penalised, so that the tuned networks keep the crystal they drew and do not paint the window.
The split's share, a shift of the pattern and an extra masked line augment every batch."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation

from cdistream.inference.reconstructor import validate_magnitudes
from cdistream.inference.result import SUPPORT_THRESHOLD, normalise_amplitude
from cdistream.inference.tf import tensorflow

from .losses import cdi_loss, intensity_misfit

__all__ = ["TuneResult", "TuneSettings", "own_support", "tune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneSettings:
    """How a round of tuning runs (the defaults: MODEL_CARD.md, adaptation)."""

    steps: int = 300
    batch: int = 16
    learning_rate: float = 3e-4
    outside_weight: float = 1.0  # on the mean amplitude outside the starting support
    dose: tuple[float, float] = (0.1, 0.9)  # share of the counts the networks read
    shift: int = 2  # the pattern rolled by up to this many pixels each way
    seed: int = 0
    split: bool = True  # scored on the counts not read (else on all, noise included)
    label_weight: float = 10.0  # on the ambiguity-aware loss against labels, where given
    min_share: float = 0.05  # patterns with fewer counts than this share of the brightest's
    # are left out: off the Bragg condition a frame holds little but noise


@dataclass
class TuneResult:
    model: object  # the tuned keras.Model (a copy; the one tuned from is untouched)
    losses: np.ndarray  # per step
    seconds: float


def own_support(model, magnitudes: np.ndarray, valid: np.ndarray, grow: int = 2) -> np.ndarray:
    """Where the networks ``model`` put the crystal of each pattern (amplitude above the
    product's support threshold), and its twin, grown by ``grow`` pixels: (k, N, N) bool."""
    out = model({"magnitudes": magnitudes, "valid": valid.astype(np.float32)}, training=False)
    amp = normalise_amplitude(np.asarray(out["scdi"]))
    inside = amp > SUPPORT_THRESHOLD
    twin = np.roll(inside[:, ::-1, ::-1], (1, 1), axis=(1, 2))
    return binary_dilation(inside | twin, np.ones((1, 2 * grow + 1, 2 * grow + 1), bool))


def _split(counts: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
           settings: TuneSettings) -> tuple[np.ndarray, ...]:
    """A batch's augmented pair: (magnitudes read, valid read, magnitudes scored, valid scored,
    index of each pattern)."""
    pick = rng.integers(len(counts), size=settings.batch)
    c = np.rint(np.maximum(counts[pick], 0)).astype(np.int64)
    share = rng.uniform(*settings.dose, size=(settings.batch, 1, 1))
    seen = rng.binomial(c, share)
    scored = c - seen if settings.split else c
    v = valid[pick].copy()
    rows = rng.integers(v.shape[1], size=settings.batch)
    hide = rng.random(settings.batch) < 0.5  # half the batch loses a line: a gap, a dead row
    v[np.flatnonzero(hide), rows[hide], :] = False
    shifts = rng.integers(-settings.shift, settings.shift + 1, size=(settings.batch, 2))
    out = [np.empty_like(seen, np.float32) for _ in range(2)] + [np.empty_like(v)]
    for k, (dr, dc) in enumerate(shifts):
        out[0][k] = np.roll(np.sqrt(seen[k]), (dr, dc), axis=(0, 1))
        out[1][k] = np.roll(np.sqrt(scored[k]), (dr, dc), axis=(0, 1))
        out[2][k] = np.roll(v[k], (dr, dc), axis=(0, 1))
    mask = out[2].astype(np.float32)
    return out[0] * mask, mask, out[1], mask, pick


def tune(model, counts: np.ndarray, valid: np.ndarray, settings: TuneSettings = TuneSettings(),
         labels: np.ndarray | None = None) -> TuneResult:
    """A copy of ``model`` tuned on ``counts`` (k, N, N) and their ``valid`` pixels; where
    ``labels`` (k, N, N complex, NaN where a pattern has none) are given, also on those
    objects (images that deserve trust: a rocking scan's 3D slices, refined frames)."""
    tf = tensorflow()
    import keras

    started = time.perf_counter()
    counts = validate_magnitudes(counts, model.inputs[0].shape[1])
    valid = np.asarray(valid, bool).reshape(counts.shape)
    totals = (counts * valid).sum(axis=(1, 2))
    keep = totals >= settings.min_share * totals.max()
    counts, valid = counts[keep], valid[keep]
    if labels is None:
        labels = np.full(counts.shape, np.nan, np.complex64)
    labels = np.asarray(labels, np.complex64)[keep]
    labelled = np.isfinite(labels).all(axis=(1, 2)).astype(np.float32)
    label_amp = np.nan_to_num(np.abs(labels)).astype(np.float32)
    label_amp /= np.maximum(label_amp.max(axis=(1, 2), keepdims=True), 1e-30)
    label_phase = np.nan_to_num(np.angle(labels)).astype(np.float32)
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    support = own_support(model, np.sqrt(counts) * valid, valid).astype(np.float32)
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    weights = tuned.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(seen, seen_valid, scored, scored_valid, inside, amp_true, phase_true, has_label):
        with tf.GradientTape() as tape:
            out = tuned({"magnitudes": seen, "valid": seen_valid}, training=True)
            amp, phase = out["scdi"], out["pcdi"]
            misfit = intensity_misfit(amp, phase, scored, scored_valid)
            outside = tf.reduce_mean(amp * (1.0 - inside), axis=(1, 2))
            loss = tf.reduce_mean(misfit + settings.outside_weight * outside)
            if settings.label_weight:
                supervised = cdi_loss(amp_true, phase_true, amp, phase, per_pattern=True)
                loss += settings.label_weight * tf.reduce_mean(has_label * supervised)
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    rng = np.random.default_rng(settings.seed)
    losses = np.empty(settings.steps, np.float32)
    for k in range(settings.steps):
        seen, seen_valid, scored, scored_valid, pick = _split(counts, valid, rng, settings)
        losses[k] = float(step(seen, seen_valid, scored, scored_valid, support[pick],
                               label_amp[pick], label_phase[pick], labelled[pick]))
    seconds = time.perf_counter() - started
    log.info("tuned on %d patterns: %d steps in %.1f s, loss %.4f -> %.4f", len(counts),
             settings.steps, seconds, losses[:10].mean(), losses[-10:].mean())
    return TuneResult(tuned, losses, seconds)

"""Train the shared-encoder sCDI/pCDI network on a generated dataset.

Adam with cosine decay, the ambiguity-aware loss of :mod:`training.losses`, photon-noise
augmentation on half of every batch, validation each epoch, the best epoch kept.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from cdistream.inference.model import build_cdi_nn
from cdistream.physics import poisson_magnitudes

from .dataset import Dataset
from .losses import cdi_loss

__all__ = ["TrainConfig", "augment", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run; recorded next to the model."""

    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    widths: tuple[int, ...] = (16, 32, 64)
    phase_weight: float = 1.0
    noisy_fraction: float = 0.5  # share of each batch given Poisson noise
    photons: tuple[float, float] = (1e3, 1e6)  # log-uniform range of counts in the brightest pixel
    validation: int = 5000
    seed: int = 0
    history: list[dict] = field(default_factory=list)


def augment(magnitudes: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise on a random ``noisy_fraction`` of the batch at log-uniform photon counts,
    and a random overall scale on every pattern (the network must not care)."""
    out = magnitudes.copy()
    noisy = rng.random(len(out)) < config.noisy_fraction
    if noisy.any():
        lo, hi = np.log10(config.photons[0]), np.log10(config.photons[1])
        photons = 10 ** rng.uniform(lo, hi, noisy.sum())
        out[noisy] = poisson_magnitudes(out[noisy], photons[:, None, None], rng)
    return out * (10 ** rng.uniform(-2, 4, (len(out), 1, 1))).astype(np.float32)


def _make_steps(model: keras.Model, optimizer: keras.optimizers.Optimizer, phase_weight: float):
    @tf.function
    def train_step(x, amp, phase):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            losses = cdi_loss(amp, phase, out["scdi"], out["pcdi"], phase_weight)
        grads = tape.gradient(losses[0], model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return losses

    @tf.function
    def eval_step(x, amp, phase):
        out = model(x, training=False)
        return cdi_loss(amp, phase, out["scdi"], out["pcdi"], phase_weight)

    return train_step, eval_step


def _evaluate(eval_step, data: Dataset, batch: int) -> np.ndarray:
    totals = np.zeros(3)
    for start in range(0, len(data), batch):
        sl = slice(start, start + batch)
        vals = eval_step(data.magnitudes[sl], data.amplitude[sl], data.phase[sl])
        totals += np.array([float(v) for v in vals]) * len(data.magnitudes[sl])
    return totals / len(data)


def train(data: Dataset, out: Path, config: TrainConfig) -> keras.Model:
    """Train on ``data`` (its last ``config.validation`` examples validate), save the best
    epoch to ``out`` (a .keras file) and the config with its history beside it (.json)."""
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train_set, val_set = data.split(config.validation)
    n = data.magnitudes.shape[-1]
    model = build_cdi_nn(n, tuple(config.widths))
    steps_per_epoch = len(train_set) // config.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=0.01
    )
    optimizer = keras.optimizers.Adam(schedule)
    train_step, eval_step = _make_steps(model, optimizer, config.phase_weight)

    best, best_weights = np.inf, None
    started = time.monotonic()
    for epoch in range(config.epochs):
        order = rng.permutation(len(train_set))
        sums = np.zeros(3)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
        for step in bar:
            idx = np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])
            x = augment(train_set.magnitudes[idx], config, rng)
            vals = train_step(x, train_set.amplitude[idx], train_set.phase[idx])
            sums += [float(v) for v in vals]
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sums[0] / (step + 1):.4f}")
        val = _evaluate(eval_step, val_set, 512)
        record = {
            "epoch": epoch + 1,
            "loss": sums[0] / steps_per_epoch,
            "amplitude_bce": sums[1] / steps_per_epoch,
            "phase_mse": sums[2] / steps_per_epoch,
            "val_loss": val[0],
            "val_amplitude_bce": val[1],
            "val_phase_mse": val[2],
            "elapsed_s": time.monotonic() - started,
        }
        config.history.append(record)
        log.info("epoch %d: %s", epoch + 1, json.dumps(record))
        if val[0] < best:
            best, best_weights = val[0], model.get_weights()
    model.set_weights(best_weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    summary = asdict(config) | {
        "best_val_loss": best,
        "train_examples": len(train_set),
        "validation_examples": len(val_set),
        "train_seconds": time.monotonic() - started,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return model

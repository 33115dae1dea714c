"""Train the sCDI/pCDI network on a generated crystal set.

Backend-neutral Keras 3 (``keras.ops`` loss, ``Model.fit``): the same recipe trains on the CPU
with TensorFlow (the shipped models) and on a GPU with JAX (exploration). Mixed bfloat16
precision where the CPU computes it natively (1.8x), AdamW with a warm-up and cosine decay, the
ambiguity-aware loss of :mod:`cdistream.adaptation.losses`, detector conditions drawn afresh
for every batch, validation each epoch, the best epoch kept and saved in float32.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import ops

from cdistream.adaptation.losses import cdi_loss
from cdistream.inference.model import build_cdi_nn
from cdistream.physics import MeasurementRecipe

from .dataset import Batches, CrystalSet

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run; recorded next to the model."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    widths: tuple[int, ...] = (16, 32, 64)
    phase_weight: float = 1.0
    reciprocal_weight: float = 1.0
    support_weight: float = 0.0  # amplitude outside the target's support (losses.outside_support)
    intensity_weight: float = 0.0  # the product's chi2 of the prediction (losses.intensity_misfit)
    amplitude_weight: float = 0.0  # amplitude L1 by the crystal's area (losses.amplitude_misfit)
    precision: str = "mixed_bfloat16"  # "float32" where the CPU has no bfloat16 arithmetic
    validation: int = 5000
    seed: int = 0
    workers: int = 1
    resume_dir: str | None = None  # per-epoch state: a run killed part way resumes from it
    initial: str | None = None  # a .keras file to start from (a second stage); None: random
    measurement: MeasurementRecipe = field(default_factory=MeasurementRecipe)
    history: list[dict] = field(default_factory=list)


class _Trainer(keras.Model):
    """Wraps the network for ``fit`` with the CDI loss; only the network is saved."""

    def __init__(self, net: keras.Model, config: TrainConfig):
        super().__init__(name="cdi_trainer")
        self.net, self.config = net, config

    def call(self, inputs, training=False):
        return self.net(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total, *_ = cdi_loss(
            y[..., 0],
            y[..., 1],
            ops.cast(y_pred["scdi"], "float32"),
            ops.cast(y_pred["pcdi"], "float32"),
            y[..., 2],
            y[..., 3],
            self.config.phase_weight,
            self.config.reciprocal_weight,
            self.config.support_weight,
            self.config.intensity_weight,
            self.config.amplitude_weight,
        )
        return total


class _KeepBest(keras.callbacks.Callback):
    """Log each epoch and remember the network's weights at the lowest validation loss; with a
    ``state`` directory, keep both there too, so that a resumed run carries them on."""

    def __init__(self, net: keras.Model, config: TrainConfig, state: Path | None):
        super().__init__()
        self.net, self.config, self.state = net, config, state
        self.best, self.weights = np.inf, None
        self.started = time.monotonic()
        if state is not None and (state / "best.json").exists():
            saved = json.loads((state / "best.json").read_text())
            self.best, config.history[:] = saved["best"], saved["history"]
            self.started -= config.history[-1]["elapsed_s"] if config.history else 0.0
            spare = keras.models.clone_model(net)
            spare.load_weights(state / "best.weights.h5")
            self.weights = spare.get_weights()
            log.info("resuming after epoch %d (best validation loss %.4f)", len(saved["history"]),
                     self.best)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = {
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", np.nan)),
            "val_loss": float(logs.get("val_loss", np.nan)),
            "elapsed_s": time.monotonic() - self.started,
        }
        self.config.history.append(record)
        log.info("epoch %d: %s", epoch + 1, json.dumps(record))
        if record["val_loss"] < self.best:
            self.best, self.weights = record["val_loss"], self.net.get_weights()
            if self.state is not None:
                self.state.mkdir(parents=True, exist_ok=True)
                self.net.save_weights(self.state / "best.weights.h5")
        if self.state is not None:
            saved = {"best": self.best, "history": self.config.history}
            (self.state / "best.json").write_text(json.dumps(saved))


def train(data: CrystalSet, out: Path, config: TrainConfig) -> keras.Model:
    """Train on ``data`` (its last ``config.validation`` crystals validate), save the best
    epoch to ``out`` (a .keras file) and the config with its history beside it (.json)."""
    keras.utils.set_random_seed(config.seed)
    train_set, val_set = data.split(config.validation)
    n = data.objects.shape[-1]
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        net = build_cdi_nn(n, tuple(config.widths))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if config.initial is not None:
        net.set_weights(keras.models.load_model(config.initial, safe_mode=True).get_weights())
        log.info("starting from %s", config.initial)
    loader = {"workers": config.workers, "use_multiprocessing": False}
    batches = Batches(train_set, config.batch_size, config.measurement, config.seed, **loader)
    validation = Batches(val_set, 500, config.measurement, config.seed + 1, fixed=True)
    steps = len(batches) * config.epochs
    warmup = int(len(batches) * config.warmup_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate / 10,
        decay_steps=max(steps - warmup, 1),
        alpha=0.01,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )
    trainer = _Trainer(net, config)
    trainer.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, clipnorm=1.0),
        jit_compile=False,  # XLA's CPU convolutions are slower than oneDNN's here
    )
    state = Path(config.resume_dir) if config.resume_dir else None
    callbacks: list[keras.callbacks.Callback] = [keep := _KeepBest(net, config, state)]
    if state is not None:
        done = len(config.history)  # epochs already trained by a run this one resumes
        if done:
            batches.epoch = done
            batches.on_epoch_end()  # the data order and draws of the epoch it resumes at
        trainer(batches[0][0])  # built, so that the saved optimizer state can load
        callbacks.append(keras.callbacks.BackupAndRestore(str(state / "backup")))
    trainer.fit(
        batches, epochs=config.epochs, validation_data=validation, callbacks=callbacks, verbose=2
    )
    shipped = build_cdi_nn(n, tuple(config.widths))  # float32 throughout: the file users load
    shipped.set_weights(keep.weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shipped.save(out)
    summary = asdict(config) | {
        "best_val_loss": keep.best,
        "train_examples": len(train_set),
        "validation_examples": len(val_set),
        "data": data.meta,  # the set's seed and recipes, for the card
        "train_seconds": config.history[-1]["elapsed_s"] if config.history else 0.0,
        "backend": keras.backend.backend(),
    }
    first = Path(config.initial).with_suffix(".json") if config.initial else None
    if first is not None and first.exists():  # the stage this one started from, for the card
        summary["initial_summary"] = json.loads(first.read_text())
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    if state is not None:  # done: a later run starts afresh
        for name in ("best.json", "best.weights.h5"):
            (state / name).unlink(missing_ok=True)
    return shipped

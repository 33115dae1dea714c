"""Adapted networks as versioned files: ``cdi_nn-<version>.keras`` beside a JSON of its
provenance (the model it was tuned from, the run and frames, the figures before and after);
``adapted-<k>-<digest>`` (:mod:`cdistream.inference.version`)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cdistream.inference.version import digest

__all__ = ["ModelVersion", "save_version"]

log = logging.getLogger(__name__)


@dataclass
class ModelVersion:
    """One set of networks the service can serve with."""

    version: str
    weights: list[np.ndarray] = field(repr=False)
    path: str | None = None  # the .keras file, once written
    provenance: dict = field(default_factory=dict)

    @classmethod
    def of(cls, weights: list[np.ndarray], kind: str, path: str | None = None,
           provenance: dict | None = None) -> ModelVersion:
        return cls(f"{kind}-{digest(weights)}", weights, path, provenance or {})


def save_version(model, version: ModelVersion, path: Path) -> ModelVersion:
    """Write ``version``'s weights in ``model``'s architecture to ``path`` (a directory:
    ``cdi_nn-<version>.keras`` in it) and its provenance beside, as JSON. ``model`` is only
    used to write: its own weights are put back."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / f"cdi_nn-{version.version}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    own = model.get_weights()
    model.set_weights(version.weights)
    try:
        model.save(path)
    finally:
        model.set_weights(own)
    provenance = {"version": version.version, "file": path.name, **version.provenance}
    path.with_suffix(".json").write_text(json.dumps(provenance, indent=2, default=_plain) + "\n")
    log.info("model %s written to %s", version.version, path)
    return ModelVersion(version.version, version.weights, str(path), provenance)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")

"""The name of a set of networks, as every document of the service gives it: ``shipped-<d>``
for the shipped model, the version its provenance file names for an adapted one, else the
file's stem, each with ``<d>`` the first 8 hex digits of the SHA-256 of the weights, so that one
name always means one set of weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

__all__ = ["digest", "version_of"]


def digest(weights: list[np.ndarray]) -> str:
    """The first 8 hex digits of the SHA-256 of the weights, in order, as float32."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, np.float32).tobytes())
    return h.hexdigest()[:8]


def version_of(path: Path, weights: list[np.ndarray], shipped: Path) -> str:
    """The version of the networks ``weights`` loaded from ``path``."""
    provenance = path.with_suffix(".json")
    if provenance.is_file():
        try:
            named = json.loads(provenance.read_text()).get("version")
        except (OSError, ValueError):
            named = None
        if isinstance(named, str) and named.endswith(digest(weights)):
            return named
    same = path.resolve() == shipped.resolve()
    return f"{'shipped' if same else path.stem}-{digest(weights)}"

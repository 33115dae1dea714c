"""cdistream: real-time coherent diffraction imaging on a live detector stream.

Diffraction frames in, amplitude and phase out in milliseconds (the sCDI/pCDI networks),
fed back to Bluesky so an experiment can steer itself.

The client side (``cdistream.wire`` to decode the feedback channel, ``cdistream.bluesky`` for
callbacks and the ReconstructionMonitor) imports neither TensorFlow nor scikit-image: the
names below that need them load on first use.
"""

from importlib import import_module

from ._version import __version__
from .errors import CdistreamError, ConfigError, InvalidPatternError, ModelLoadError, Rejected

__all__ = [
    "CdistreamError",
    "Comparison",
    "ConfigError",
    "InvalidPatternError",
    "ModelLoadError",
    "Rejected",
    "Reconstruction",
    "Reconstructor",
    "TuneSettings",
    "__version__",
    "adapt_files",
    "compare",
]

_LAZY = {
    "Reconstruction": "cdistream.inference",
    "Reconstructor": "cdistream.inference",
    "Comparison": "cdistream.physics",
    "compare": "cdistream.physics",
    "TuneSettings": "cdistream.adaptation.tuning",
    "adapt_files": "cdistream.offline_adapt",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cdistream' has no attribute {name!r}")

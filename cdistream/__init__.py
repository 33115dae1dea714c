"""cdistream: real-time coherent diffraction imaging on a live detector stream.

Diffraction frames in, amplitude and phase out in milliseconds (the sCDI/pCDI networks),
fed back to Bluesky so an experiment can steer itself.
"""

from .errors import CdistreamError, InvalidPatternError, ModelLoadError, Rejected
from .inference import Reconstruction, Reconstructor
from .physics import Comparison, compare

__all__ = [
    "CdistreamError",
    "Comparison",
    "InvalidPatternError",
    "ModelLoadError",
    "Rejected",
    "Reconstruction",
    "Reconstructor",
    "compare",
]
from ._version import __version__  # noqa: E402, F401  (public, not in __all__)

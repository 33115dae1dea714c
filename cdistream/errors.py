"""The exceptions cdistream raises: one base class, one subclass per kind of failure."""

from __future__ import annotations

__all__ = ["CdistreamError", "InvalidPatternError", "ModelLoadError"]


class CdistreamError(Exception):
    """Base class of every error cdistream raises on purpose."""


class InvalidPatternError(CdistreamError, ValueError):
    """A diffraction pattern that cannot be reconstructed: wrong shape, NaN, negative, empty."""


class ModelLoadError(CdistreamError):
    """The sCDI/pCDI model files are missing or cannot be loaded safely."""

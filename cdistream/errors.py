"""The exceptions cdistream raises: one base class, one subclass per kind of failure."""

from __future__ import annotations

__all__ = ["CdistreamError", "ConfigError", "InvalidPatternError", "ModelLoadError", "Rejected"]


class CdistreamError(Exception):
    """Base class of every error cdistream raises on purpose."""


class InvalidPatternError(CdistreamError, ValueError):
    """A diffraction pattern that cannot be reconstructed: wrong shape, NaN, negative, empty."""


class ModelLoadError(CdistreamError):
    """The sCDI/pCDI model files are missing or cannot be loaded safely."""


class ConfigError(CdistreamError, ValueError):
    """An option the service cannot honour, found before anything starts; the message is one
    line that names the allowed values."""


class Rejected(CdistreamError, ValueError):
    """Input the service refuses; ``reason`` is the short name it is counted and published as."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

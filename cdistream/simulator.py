"""The simulated detector, wherever it is installed: the top-level ``sim_detector`` package of a
source checkout, or ``cdistream._sim_detector`` inside a wheel (which installs no generic
top-level names). ``cdistream simulate`` runs its command line."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

__all__ = ["main", "package"]


def package() -> ModuleType:
    """The simulator's package."""
    try:
        return import_module("sim_detector")
    except ImportError:
        return import_module("cdistream._sim_detector")


def main(argv: list[str] | None = None) -> None:
    """``python -m sim_detector`` (source) or ``cdistream simulate`` (anywhere)."""
    import_module(package().__name__ + ".__main__").main(argv)


def __getattr__(name: str):
    return getattr(package(), name)

"""The trust gate: chi2 (the reconstruction's misfit against its own measured pattern) decides
which frames are refined and which are published as trusted.

The default threshold is chosen on the independent test sets (``models/MODEL_CARD.md``, "Trust
gate"): the largest chi2 that still flags at least 90% of the network's reconstructions whose
support IoU against the truth is below 0.7, pooled over every measured condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .result import Reconstruction, finish

if TYPE_CHECKING:
    from .reconstructor import Reconstructor

__all__ = [
    "REFINE_ABOVE",
    "REFINE_ITERATIONS",
    "GateOutcome",
    "TrustGate",
    "threshold_catching",
]

REFINE_ABOVE = 0.0092  # chi2: the largest threshold that flags 90% of IoU < 0.7 (MODEL_CARD.md)
REFINE_ITERATIONS = 50


def threshold_catching(
    chi2: np.ndarray, iou: np.ndarray, share: float = 0.9, bad_below: float = 0.7
) -> float:
    """The largest chi2 threshold that flags (chi2 > threshold) at least ``share`` of the
    reconstructions with IoU < ``bad_below``."""
    bad = np.sort(np.asarray(chi2)[np.asarray(iou) < bad_below])
    if len(bad) == 0:
        return float(np.max(chi2))
    # just below bad[j] flags bad[j:], len - j of them: j may be at most (1 - share) * len
    j = min(int(np.floor((1 - share) * len(bad))), len(bad) - 1)
    return float(np.nextafter(np.float32(bad[j]), np.float32(-np.inf)))


@dataclass
class GateOutcome:
    """What the gate did to a batch: the (partly refined) reconstructions and, per frame,
    whether it was refined and whether it is trusted (chi2 at or below the threshold)."""

    result: Reconstruction
    refined: np.ndarray  # bool (n,)
    trusted: np.ndarray  # bool (n,)
    skipped: int  # flagged frames left unrefined because the batch's time budget ran out


class TrustGate:
    """Refines, worst chi2 first, the frames whose chi2 exceeds ``threshold``, as many as fit
    in ``budget_s`` seconds per batch (all of them when it is infinite; the cost per frame is
    learnt as it goes)."""

    def __init__(self, threshold: float = REFINE_ABOVE, iterations: int = REFINE_ITERATIONS):
        self.threshold, self.iterations = threshold, iterations
        self._seconds_per_frame = 2e-3  # a first guess, replaced by measurement

    def reconstruct(
        self,
        reconstructor: Reconstructor,
        measured: np.ndarray,
        valid: np.ndarray | None,
        refine: bool,
        budget_s: Callable[[], float] = lambda: float("inf"),
    ) -> GateOutcome:
        """A batch through the networks, finished, and with ``refine`` its frames above the
        threshold refined within ``budget_s()`` seconds, asked once the networks are done."""
        raw = reconstructor.predict(measured, valid)
        result = finish(measured, *raw, valid)
        if not refine:
            trusted = result.chi2 <= self.threshold
            return GateOutcome(result, np.zeros(len(result), bool), trusted, 0)
        return self.apply(measured, valid, raw, result, budget_s())

    def apply(
        self,
        measured: np.ndarray,
        valid: np.ndarray | None,
        raw: tuple[np.ndarray, np.ndarray],
        result: Reconstruction,
        budget_s: float,
    ) -> GateOutcome:
        """``raw``: the networks' (amplitude, phase) the refinement starts from."""
        from .reconstructor import refine_result

        refined = np.zeros(len(result), bool)
        flagged = np.flatnonzero(result.chi2 > self.threshold)
        fits = len(flagged) if budget_s == float("inf") else max(
            int(budget_s / self._seconds_per_frame), 1
        )
        take = flagged[np.argsort(-result.chi2[flagged])][:fits]
        if len(take):
            t0 = time.perf_counter()
            polished = refine_result(
                measured[take],
                raw[0][take],
                raw[1][take],
                self.iterations,
                None if valid is None else valid[take],
            )
            spent = (time.perf_counter() - t0) / len(take)
            self._seconds_per_frame = 0.7 * self._seconds_per_frame + 0.3 * spent
            result = result.replace(take, polished)
            refined[take] = True
        trusted = result.chi2 <= self.threshold
        return GateOutcome(result, refined, trusted, len(flagged) - len(take))

"""Networks judged on frames they were not tuned on, alone (no refinement), by the product's
chi2: a candidate serves only if its median beats the model in service by a margin and is no
worse than the shipped model's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdistream.inference.reconstructor import Reconstructor

__all__ = ["HOLD_OUT_EVERY", "MARGIN", "Verdict", "held_out", "networks_chi2", "verdict"]

MARGIN = 0.05  # a candidate's median chi2 must be this share below the one in service
HOLD_OUT_EVERY = 4  # every 4th frame judges, the others tune


def held_out(count: int) -> np.ndarray:
    """Which of ``count`` frames in time order are judged, never tuned on: every 4th."""
    return np.arange(count) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1


def networks_chi2(reconstructor: Reconstructor, counts: np.ndarray,
                  valid: np.ndarray) -> np.ndarray:
    """The networks' chi2 of each (k, N, N) pattern, alone."""
    return reconstructor.reconstruct(np.sqrt(np.maximum(counts, 0)), 0, valid).chi2


@dataclass(frozen=True)
class Verdict:
    """Median chi2 of each model on the judged frames, and what follows."""

    candidate: float
    serving: float
    shipped: float
    frames: int
    accepted: bool

    def document(self) -> dict:
        return {"chi2_candidate": self.candidate, "chi2_serving": self.serving,
                "chi2_shipped": self.shipped, "judged_frames": self.frames,
                "accepted": self.accepted}


def verdict(candidate: np.ndarray, serving: np.ndarray, shipped: np.ndarray,
            margin: float = MARGIN) -> Verdict:
    """Accept ``candidate`` (per-frame chi2) over ``serving`` when its median is ``margin``
    below it and not above ``shipped``'s."""
    c, s, z = (float(np.median(x)) for x in (candidate, serving, shipped))
    return Verdict(c, s, z, len(candidate), c <= (1 - margin) * s and c <= z)

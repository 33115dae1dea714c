"""Operando feedback plans: the experiment reacts to cdistream's reconstructions while it runs.

Both take the detector(s) and a :class:`cdistream.bluesky.ReconstructionMonitor` (list the
detector first, so the monitor waits for the frame the detector just took).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp

from cdistream.bluesky.monitor import ReconstructionMonitor

__all__ = ["strain_watch", "track_peak"]


def track_peak(
    detectors: Sequence[Any],
    recon: ReconstructionMonitor,
    row_motor: Any,
    col_motor: Any,
    num: int,
    *,
    target: tuple[float, float] | None = None,
    gain: float = 1.0,
    deadband: float = 1.0,
    md: dict | None = None,
) -> Generator:
    """Take ``num`` frames; after each, move the detector motors so the Bragg peak goes back to
    ``target`` (detector pixel; default: where the first frame saw it).

    The peak lands at (nominal position - motor position), so a peak that drifted by d pixels
    is brought back by moving the motor by ``gain * d``. Moves smaller than ``deadband`` pixels
    are skipped. Every frame, the reconstruction and the motor positions are one event.
    """
    readables = [*detectors, recon, row_motor, col_motor]
    md = {
        "plan_name": "track_peak",
        "num_points": num,
        "gain": gain,
        "deadband": deadband,
        **(md or {}),
    }

    @bpp.stage_decorator([*detectors, recon])
    @bpp.run_decorator(md=md)
    def inner():
        goal = target
        for _ in range(num):
            yield from bps.trigger_and_read(readables)
            row, col = recon.peak_row.get(), recon.peak_col.get()
            if goal is None:
                goal = (row, col)
            moves = []
            for motor, error in ((row_motor, row - goal[0]), (col_motor, col - goal[1])):
                if abs(error) > deadband:
                    moves += [motor, motor.position + gain * error]
            if moves:
                yield from bps.mv(*moves)

    return (yield from inner())


def strain_watch(
    detectors: Sequence[Any],
    recon: ReconstructionMonitor,
    control: Any,
    start: float,
    step: float,
    num: int,
    threshold: float,
    *,
    reverse: bool = False,
    md: dict | None = None,
) -> Generator:
    """Step ``control`` (e.g. a temperature) from ``start`` by ``step``, at most ``num`` times,
    taking a frame at each step, until the phase spread inside the support (``phase_std``, a
    strain proxy) exceeds ``threshold`` radians. Then stop (or, with ``reverse``, step back
    once and take a last frame). The stop document's ``reason`` says what happened.

    Returns the control value at which the threshold was crossed, or None.
    """
    readables = [*detectors, recon, control]
    md = {
        "plan_name": "strain_watch",
        "threshold": threshold,
        "start": start,
        "step": step,
        "num_points": num,
        **(md or {}),
    }

    @bpp.stage_decorator([*detectors, recon])
    def inner():
        yield from bps.open_run(md)
        for i in range(num):
            value = start + i * step
            yield from bps.mv(control, value)
            yield from bps.trigger_and_read(readables)
            spread = recon.phase_std.get()
            if spread > threshold:
                reason = (
                    f"phase_std {spread:.3f} rad exceeded {threshold:g} rad at "
                    f"{control.name} = {value:g} (step {i})"
                )
                if reverse and i > 0:
                    yield from bps.mv(control, value - step)
                    yield from bps.trigger_and_read(readables)
                    reason += f"; stepped back to {value - step:g}"
                yield from bps.close_run(exit_status="success", reason=reason)
                return value
        yield from bps.close_run(
            exit_status="success",
            reason=f"phase_std stayed below {threshold:g} rad for {num} steps",
        )
        return None

    return (yield from inner())

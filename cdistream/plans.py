"""Plans that read cdistream's reconstructions into the run that takes the frames: a rocking
scan through the Bragg condition, and operando feedback plans where the experiment reacts to
the reconstructions while it runs.

Each takes the detector(s) and a :class:`cdistream.bluesky.ReconstructionMonitor` (list the
detector first, so the monitor waits for the frame the detector just took).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from concurrent.futures import Future
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp

from cdistream.bluesky.monitor import ReconstructionMonitor

__all__ = ["rocking_scan", "strain_watch", "track_peak", "wait_for_model_update"]


def rocking_scan(
    detectors: Sequence[Any],
    recon: ReconstructionMonitor,
    motor: Any,
    start: float,
    stop: float,
    num: int,
    *,
    md: dict | None = None,
) -> Generator:
    """Step ``motor`` (the sample's rocking angle) from ``start`` to ``stop`` in ``num`` points
    through the Bragg condition; at each, take a frame and read its reconstruction: one event
    per step with the motor's position, the detector's reading and the frame's amplitude,
    phase, chi2, trusted and support area. The series the detector records is the 3D Bragg
    peak, which ``cdistream serve --archive`` reconstructs in 3D when it ends (the volume is in
    the service's run of that series: ``docs/bluesky.md``)."""
    md = {"plan_name": "rocking_scan", "cdistream_rocking": True, **(md or {})}
    return (yield from bp.scan([*detectors, recon], motor, start, stop, num, md=md))


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
    calibration: tuple[float, float] = (-1.0, -1.0),
    max_step: float | None = None,
    md: dict | None = None,
) -> Generator:
    """Take ``num`` frames; after each, move the motors so the Bragg peak goes back to
    ``target`` (detector pixel; default: where the first frame saw it).

    ``calibration`` says, for the row and the column motor, how many detector pixels the peak
    moves per motor unit, sign included (measure it once with a short scan of each motor; the
    default -1 is a detector stage in pixel units: moving it by +1 moves the peak by -1 pixel).
    A peak ``d`` pixels off target is corrected by a move of ``-gain * d / calibration`` motor
    units, clipped to ``max_step`` motor units (no limit when None); errors within
    ``deadband`` pixels are left alone. Every frame, the reconstruction (with the peak's
    sub-pixel offset) and the motor positions are one event.
    """
    if any(c == 0 for c in calibration):
        raise ValueError("calibration: pixels per motor unit, never 0")
    readables = [*detectors, recon, row_motor, col_motor]
    md = {
        "plan_name": "track_peak",
        "num_points": num,
        "gain": gain,
        "deadband": deadband,
        "calibration": list(calibration),
        "max_step": max_step,
        **(md or {}),
    }

    def _pixels(signal):
        reading = yield from bps.rd(signal)
        return float(reading)

    @bpp.stage_decorator([*detectors, recon])
    @bpp.run_decorator(md=md)
    def inner():
        goal = target
        for _ in range(num):
            yield from bps.trigger_and_read(readables)
            row = (yield from _pixels(recon.peak_row)) + (yield from _pixels(recon.peak_offset_row))
            col = (yield from _pixels(recon.peak_col)) + (yield from _pixels(recon.peak_offset_col))
            if goal is None:
                goal = (row, col)
            moves = []
            for motor, error, scale in (
                (row_motor, row - goal[0], calibration[0]),
                (col_motor, col - goal[1], calibration[1]),
            ):
                if abs(error) > deadband:
                    step = -gain * error / scale
                    if max_step is not None:
                        step = max(-max_step, min(max_step, step))
                    position = yield from bps.rd(motor)
                    moves += [motor, position + step]
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
            spread = yield from bps.rd(recon.phase_std)
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


def wait_for_model_update(recon: ReconstructionMonitor, timeout: float = 300.0) -> Generator:
    """Wait, inside a plan, until ``cdistream serve --adapt`` next changes the networks it
    serves with (a round's model accepted, back to the shipped model, a learnt one recognised);
    rounds start by themselves every 32 frames of a series. Returns the change (the ``model``
    event's data: version, reason, chi2 before and after); raises
    :class:`cdistream.bluesky.ReconstructionTimeout` after ``timeout`` seconds."""
    status = recon.model_update(timeout)
    done: Future = Future()
    status.add_callback(lambda st: done.done() or done.set_result(st))
    yield from bps.wait_for([lambda: asyncio.wrap_future(done)])
    if status.exception() is not None:
        raise status.exception()
    return recon.last_model_update

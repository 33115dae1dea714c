"""SimDetector: an ophyd device whose trigger makes the simulated detector emit one frame, so
plans drive the whole loop (detector -> cdistream -> feedback) from a RunEngine.

Optional couplings make feedback plans meaningful: ``offset_row``/``offset_col`` (motors that
move the detector: the Bragg peak lands at scenario peak minus their positions) and
``temperature`` (a signal whose value sets the strain: ``strain_scale = clip((T - T0) / span)``).
"""

from __future__ import annotations

import time

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import Status

from cdistream.wire import Frame, SeriesEnd, SeriesStart

from .frames import DetectorModel
from .publisher import DetectorPublisher
from .scenario import Scenario

__all__ = ["ReplayDetector", "SimDetector"]


class SimDetector(Device):
    """Publishes one frame per trigger on a bound PUB socket in the native format."""

    frame = Cpt(Signal, value=-1, kind=Kind.hinted)  # number of the frame last emitted
    true_peak_row = Cpt(Signal, value=0.0, kind=Kind.normal)
    true_peak_col = Cpt(Signal, value=0.0, kind=Kind.normal)
    strain_scale = Cpt(Signal, value=0.0, kind=Kind.normal)

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:*",
        *,
        scenario: Scenario | None = None,
        detector: DetectorModel | None = None,
        offset_row: Device | None = None,
        offset_col: Device | None = None,
        temperature: Device | None = None,
        temperature_range: tuple[float, float] = (300.0, 400.0),
        series: int = 1,
        seed: int = 0,
        name: str = "simdet",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.model = detector or DetectorModel()
        self.scenario = scenario or Scenario("static", seed, detector_shape=self.model.shape)
        self.publisher = DetectorPublisher(address)
        self.address = self.publisher.address
        self._couplings = (offset_row, offset_col, temperature, temperature_range)
        self._series = series
        self._next = 0
        self._open = False
        self._rng = np.random.default_rng(seed)

    def truth(self, frame: int) -> tuple[np.ndarray, float, float, float]:
        """(object, peak row, peak col, strain scale) of ``frame`` with the couplings applied."""
        offset_row, offset_col, temperature, (t0, t1) = self._couplings
        base = self.scenario.truth(frame)
        row = base.peak_row - (float(offset_row.position) if offset_row else 0.0)
        col = base.peak_col - (float(offset_col.position) if offset_col else 0.0)
        obj, scale = base.obj, base.strain_scale
        if temperature is not None:
            t = float(temperature.read()[temperature.name]["value"])
            scale = float(np.clip((t - t0) / (t1 - t0), 0.0, 1.0))
            obj = self.scenario.truth_at(scale)
        return obj, row, col, scale

    def stage(self):
        self._open_series()
        return super().stage()

    def unstage(self):
        self._close_series()
        return super().unstage()

    def _open_series(self) -> None:
        if not self._open:
            meta = {"scenario": self.scenario.name, "source": "sim_detector.SimDetector"}
            self.publisher.send(
                SeriesStart(
                    self._series, self.model.shape, self.model.dtype, self.model.mask(), meta
                )
            )
            self._open = True

    def _close_series(self) -> None:
        if self._open:
            self.publisher.send(SeriesEnd(self._series, self._next))
            self._open, self._next = False, 0
            self._series += 1

    def _image(self) -> tuple[np.ndarray, dict[str, float]]:
        """The next frame's image and the positions it goes out with."""
        obj, row, col, scale = self.truth(self._next)
        self.true_peak_row.put(row)
        self.true_peak_col.put(col)
        self.strain_scale.put(scale)
        return self.model.render(obj, row, col, self._rng), {}

    def trigger(self) -> Status:
        self._open_series()
        image, positions = self._image()
        self.publisher.send(Frame(self._series, self._next, time.time(), image, positions))
        self.frame.put(self._next)
        self._next += 1
        status = Status(obj=self)
        status.set_finished()
        return status

    def destroy(self) -> None:
        self._close_series()
        self.publisher.close()
        super().destroy()


class ReplayDetector(SimDetector):
    """Frames measured at a beamline, replayed by a motor: each trigger publishes the frame
    taken nearest the ``motor``'s position (``positions``: where each frame was taken, e.g. a
    rocking scan's theta from its SPEC file), with the motor's position as the frame's
    ``motor_name`` attribute. A plan scanning the motor then records the real scan."""

    def __init__(self, address: str, frames: np.ndarray, positions: np.ndarray, motor: Device,
                 *, mask: np.ndarray | None = None, name: str = "replaydet", **kwargs):
        frames = np.asarray(frames)
        shape = tuple(frames.shape[1:])
        dtype = frames.dtype.name if frames.dtype.kind == "u" else "uint32"
        model = DetectorModel(shape=shape, dtype=dtype, hot_pixels=0, gap_rows=0)
        super().__init__(address, detector=model, name=name, **kwargs)
        self._frames = frames.astype(dtype, copy=False)
        self._positions = np.asarray(positions, float)
        self._motor = motor
        self._mask = np.zeros(shape, bool) if mask is None else mask

    def _open_series(self) -> None:
        if not self._open:
            meta = {"source": "sim_detector.ReplayDetector", "motor": self._motor.name}
            self.publisher.send(SeriesStart(self._series, self.model.shape, self.model.dtype,
                                            self._mask, meta))
            self._open = True

    def _image(self) -> tuple[np.ndarray, dict[str, float]]:
        where = float(self._motor.position)
        nearest = int(np.argmin(np.abs(self._positions - where)))
        return self._frames[nearest], {self._motor.name: where}

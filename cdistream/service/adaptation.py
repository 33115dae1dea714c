"""``serve --adapt``: the networks learn the sample in front of the beam while it is measured,
off the hot path. One process at the lowest CPU priority and one thread
(:func:`cdistream.adaptation.rounds.one_quiet_thread`) runs one job at a time, and the service's
worker thread only hands it frames and swaps weights between micro-batches:

- a round: every :data:`ROUND_FRAMES` new frames of a series, the model in service is tuned on
  them, every 4th held out, then judged on those and on the frames that came while it learnt;
  it serves only if it beats the model in service there and is no worse than the shipped one
  (:func:`cdistream.adaptation.judge.verdict`); accepted, it is a versioned file with its
  provenance in the models directory;
- a model belongs to its sample: every series starts on the shipped model; once its first
  :data:`PROBE_FRAMES` frames are in, and every round's worth of frames after while the shipped
  model serves, the models learnt before are tried on the latest frames, and the best serves
  again if it beats the shipped one there; a round that finds the model in service worse than
  the shipped one on its frames sends the service back to the shipped model.

Only frames holding at least ``TuneSettings.min_share`` of the series' brightest frame's counts
are learnt from, judged on and served by a learnt model: off the Bragg condition a frame holds
little but noise, and the shipped model serves it (:class:`RoutedNetworks`). While a learnt
model serves, every :data:`WATCH_FRAMES` new frames (at most every :data:`WATCH_S`) it is tried
against the shipped one on the latest frames with signal, in the same process; where the
shipped one fits them better, the service goes back to it (``no_longer_fits``).

Every change is a :class:`ModelChange` that the service applies and announces."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cdistream._version import __version__
from cdistream.adaptation.judge import MARGIN, held_out, verdict
from cdistream.adaptation.rounds import judge_round, one_quiet_thread, tune_round
from cdistream.adaptation.tuning import TuneSettings
from cdistream.adaptation.versions import ModelVersion
from cdistream.inference import Reconstructor

from .queue import FrameItem

__all__ = ["LEARNT_KEPT", "PROBE_FRAMES", "ROUND_FRAMES", "Adapter", "ModelChange",
           "RoutedNetworks"]

log = logging.getLogger(__name__)

ROUND_FRAMES = 32  # new frames of a series that start a round
PROBE_FRAMES = 8  # a series' first frames, on which the models learnt before are tried
LATER_FRAMES = 16  # at most this many frames that came while a round learnt join its judging
ROUND_CAP = 256  # a round learns from at most the series' latest this many frames
LEARNT_KEPT = 4  # models learnt before that a new series may go back to
JOB_TIMEOUT_S = 600.0  # a job that takes longer is given up (its process stopped)
RETRY_S = 30.0  # after a round could not start, the next try waits this long
WATCH_FRAMES = 16  # while a learnt model serves, it is tried against the shipped one on the
# latest this many frames with signal, every this many new frames but at most every WATCH_S:
WATCH_S = 10.0  # each try hands both models' weights to the process, the service's own time


@dataclass
class ModelChange:
    """The networks the service is to serve with from the next micro-batch on, and why:
    ``adapted`` (a round's candidate won), ``recognised`` (a model learnt before fits the new
    series best), ``new_series`` or ``no_longer_fits`` (back to the shipped model)."""

    version: str
    previous: str
    reason: str
    weights: list[np.ndarray] = field(repr=False)
    figures: dict = field(default_factory=dict)  # median chi2 before, after, of the shipped
    file: str = ""

    def document(self) -> dict:
        """The ``model`` stream's event data."""
        f = self.figures
        return {"version": self.version, "previous": self.previous, "reason": self.reason,
                "chi2_before": float(f.get("chi2_serving", np.nan)),
                "chi2_after": float(f.get("chi2_candidate", np.nan)),
                "chi2_shipped": float(f.get("chi2_shipped", np.nan)),
                "judged_frames": int(f.get("judged_frames", 0)),
                "tuned_frames": int(f.get("tuned_frames", 0)), "file": self.file}


@dataclass
class _Job:
    kind: str  # "tune", "judge" or "probe"
    future: Future
    series: int
    deadline: float
    context: dict


class Adapter:
    """Owned by the service's worker thread: :meth:`series_started`, :meth:`observe` and
    :meth:`poll` each return a :class:`ModelChange` to apply, or None."""

    def __init__(self, reconstructor: Reconstructor, directory: Path,
                 settings: TuneSettings | None = None, round_frames: int = ROUND_FRAMES):
        self.directory = Path(directory)
        self.settings = settings or TuneSettings()
        self.round_frames = round_frames
        self._source = reconstructor.source
        self.shipped = ModelVersion(reconstructor.version, reconstructor.weights())
        self.shipped_networks = reconstructor.copy()  # for the frames a learnt model is not for
        self.serving = self.shipped
        self.learnt: list[ModelVersion] = []  # newest first
        self.rounds: list[dict] = []  # every round's record, accepted or not
        self._series = 0
        self._frames: list[tuple[int, np.ndarray, np.ndarray, float]] = []  # with their counts
        self._brightest = 0.0  # the series' brightest frame's counts so far
        self._last_round = 0  # frames of the series when its last round started
        self._probed_at: int | None = None  # frames of the series at its last probe
        self._job: _Job | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._accepted = 0
        self._open = False  # a series is being measured
        self.failures = 0  # rounds that could not start
        self._retry_at = 0.0
        self._watched_at = 0  # frames of the series at the last watch
        self._watch_due = 0.0  # monotonic time before which no watch starts

    # -- what the service tells it ------------------------------------------------------------
    def series_started(self) -> ModelChange | None:
        """A new series: back to the shipped model until its first frames say otherwise."""
        self._series += 1
        self._frames, self._last_round, self._probed_at, self._brightest = [], 0, None, 0.0
        self._watched_at = 0
        self._open = True
        if self.serving is self.shipped:
            return None
        return self._change(self.shipped, "new_series")

    def series_ended(self) -> None:
        """The series is over: what its rounds still learn is kept for later series to be
        recognised by, but serves no more of this one."""
        self._open = False

    def observe(self, batch: list[FrameItem]) -> None:
        """Frames the service reconstructed: what the rounds learn from and are judged on."""
        for item in batch:
            crop = item.crop
            total = float((crop.counts * crop.valid).sum())
            self._brightest = max(self._brightest, total)
            self._frames.append((item.frame, crop.counts, crop.valid, total))
        if len(self._frames) > 4 * ROUND_CAP:  # bounded: the oldest go
            drop = len(self._frames) - 2 * ROUND_CAP
            del self._frames[:drop]
            self._last_round = max(self._last_round - drop, 0)
            self._watched_at = max(self._watched_at - drop, 0)
            if self._probed_at is not None:
                self._probed_at = max(self._probed_at - drop, 0)

    def poll(self) -> ModelChange | None:
        """Take what a finished job says; start the next job when one is due."""
        change = None
        job = self._job
        if job is not None and job.future.done():
            self._job = None
            try:
                change = self._finished(job, job.future.result())
            except Exception:
                log.exception("an adaptation %s job failed", job.kind)
                self.rounds.append({"series": job.series, "kind": job.kind, "failed": True})
        elif job is not None and time.monotonic() > job.deadline:
            log.warning("an adaptation %s job took over %.0f s: given up", job.kind,
                        JOB_TIMEOUT_S)
            self._job = None
            self._stop_pool()
        if self._job is None and time.monotonic() >= self._retry_at:
            try:
                self._start_next()
            except Exception:  # no round is worth a run: logged, counted, tried again later
                self.failures += 1
                self._retry_at = time.monotonic() + RETRY_S
                self._stop_pool()
                log.exception("an adaptation round could not start (%d so far); next try in"
                              " %.0f s", self.failures, RETRY_S)
                raise
        return change

    def weak(self, batch: list[FrameItem]) -> np.ndarray | None:
        """Which frames of ``batch`` the shipped model serves while a learnt one is in
        service: those holding less than the tuning's share of the series' brightest frame's
        counts (a model learns, and is judged, only where the sample's pattern stands above
        the noise; :class:`RoutedNetworks`). None when the shipped model serves them all
        anyway."""
        if self.serving is self.shipped:
            return None
        totals = np.array([float((i.crop.counts * i.crop.valid).sum()) for i in batch])
        brightest = max(self._brightest, float(totals.max()))
        return totals < self.settings.min_share * brightest

    @property
    def tuning(self) -> bool:
        """A round is tuning the networks now."""
        job = self._job
        return job is not None and job.kind == "tune"

    def close(self) -> None:
        """Stop: a round under way is abandoned (its process stopped), never waited for."""
        self._job = None
        self._stop_pool()

    # -- jobs ---------------------------------------------------------------------------------
    def _submit(self, kind: str, fn, *args, **context) -> None:
        if self._pool is None:  # started on first use: a spawned interpreter, nothing shared
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=one_quiet_thread)
        future = self._pool.submit(fn, self._source, *args)
        self._job = _Job(kind, future, self._series, time.monotonic() + JOB_TIMEOUT_S, context)

    def _stop_pool(self) -> None:
        if self._pool is not None:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _stack(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([self._frames[i][1] for i in rows]).astype(np.float32),
                np.stack([self._frames[i][2] for i in rows]))

    def _with_signal(self, rows: list[int]) -> list[int]:
        """``rows`` whose frames hold at least the tuning's share of the counts of the series'
        brightest frame so far: off the Bragg condition a frame holds little but noise."""
        return [r for r in rows if self._frames[r][3] >= self.settings.min_share * self._brightest]

    def _start_next(self) -> None:
        count = len(self._frames)
        probe_due = (self.learnt and self.serving is self.shipped and count >= PROBE_FRAMES
                     and (self._probed_at is None
                          or count - self._probed_at >= self.round_frames))
        if probe_due:  # the series' first frames, then its latest: has the sample come back?
            self._probed_at = count
            rows = self._with_signal(list(range(max(count - self.round_frames, 0), count)))
            if rows:
                models = {m.version: m.weights for m in self.learnt}
                models[self.shipped.version] = self.shipped.weights
                self._submit("probe", judge_round, models, *self._stack(rows), frames=rows)
                return
        if (self.serving is not self.shipped and count - self._watched_at >= WATCH_FRAMES
                and time.monotonic() >= self._watch_due):
            self._watched_at = count  # does the learnt model still fit the sample better?
            self._watch_due = time.monotonic() + WATCH_S
            rows = self._with_signal(list(range(count)))[-WATCH_FRAMES:]
            if rows:
                models = {"serving": self.serving.weights, "shipped": self.shipped.weights}
                self._submit("watch", judge_round, models, *self._stack(rows), frames=rows,
                             base=self.serving)
                return
        if count - self._last_round < self.round_frames:
            return
        self._last_round = count
        rows = self._with_signal(list(range(max(count - ROUND_CAP, 0), count)))
        hold = held_out(len(rows))
        tune_rows = [r for r, h in zip(rows, hold, strict=True) if not h]
        judge_rows = [r for r, h in zip(rows, hold, strict=True) if h]
        if len(tune_rows) < 4 or not judge_rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        candidate = self.directory / f".candidate-{os.getpid()}-{len(self.rounds)}.keras"
        self._submit("tune", tune_round, self.serving.weights, *self._stack(tune_rows),
                     self.settings, str(candidate), tuned=tune_rows, judge=judge_rows,
                     end=count, candidate=candidate, base=self.serving)

    def _finished(self, job: _Job, result) -> ModelChange | None:
        if job.series != self._series:  # the series it learnt from is over: not this sample's
            if job.kind == "tune":
                job.context["candidate"].unlink(missing_ok=True)
            return None
        if job.kind == "probe":
            return self._probed(job, result) if self._open else None
        if job.kind == "watch":
            return self._watched(job, result) if self._open else None
        if job.kind == "tune":
            later = list(range(job.context["end"], len(self._frames)))[-LATER_FRAMES:]
            judge_rows = job.context["judge"] + self._with_signal(later)
            models = {"candidate": result["weights"], "serving": job.context["base"].weights,
                      "shipped": self.shipped.weights}
            self._submit("judge", judge_round, models, *self._stack(judge_rows),
                         **job.context, tune=result, judged=judge_rows)
            return None
        return self._judged(job, result)

    def _probed(self, job: _Job, chi2: dict[str, list[float]]) -> ModelChange | None:
        medians = {name: float(np.median(v)) for name, v in chi2.items()}
        shipped = medians.pop(self.shipped.version)
        best = min(medians, key=medians.get)
        record = {"series": job.series, "kind": "probe", "chi2": medians,
                  "chi2_shipped": shipped, "frames": len(job.context["frames"])}
        self.rounds.append(record)
        if medians[best] > (1 - MARGIN) * shipped or self.serving is not self.shipped:
            return None
        model = next(m for m in self.learnt if m.version == best)
        figures = {"chi2_serving": shipped, "chi2_candidate": medians[best],
                   "chi2_shipped": shipped, "judged_frames": record["frames"]}
        return self._change(model, "recognised", figures)

    def _watched(self, job: _Job, chi2: dict[str, list[float]]) -> ModelChange | None:
        """Back to the shipped model when it fits the latest frames better than the learnt."""
        serving, shipped = (float(np.median(chi2[k])) for k in ("serving", "shipped"))
        self.rounds.append({"series": job.series, "kind": "watch", "version":
                            job.context["base"].version, "chi2_serving": serving,
                            "chi2_shipped": shipped, "frames": len(job.context["frames"])})
        if serving <= shipped or self.serving is not job.context["base"]:
            return None
        figures = {"chi2_serving": serving, "chi2_candidate": shipped, "chi2_shipped": shipped,
                   "judged_frames": len(job.context["frames"])}
        return self._change(self.shipped, "no_longer_fits", figures)

    def _judged(self, job: _Job, chi2: dict[str, list[float]]) -> ModelChange | None:
        context, tuned = job.context, job.context["tune"]
        judged = verdict(np.array(chi2["candidate"]), np.array(chi2["serving"]),
                         np.array(chi2["shipped"]))
        figures = {**judged.document(), "tuned_frames": len(context["tuned"]),
                   "later_frames": len(context["judged"]) - len(context["judge"])}
        record = {"series": job.series, "kind": "round", **figures,
                  "tune_seconds": tuned["seconds"], "tune_cpu_seconds": tuned["cpu_seconds"],
                  "labelled": tuned["labelled"],
                  "chi2_per_frame": chi2, "base": context["base"].version}
        self.rounds.append(record)
        candidate: Path = context["candidate"]
        if not judged.accepted:
            candidate.unlink(missing_ok=True)
            if judged.serving > judged.shipped and self.serving is not self.shipped:
                return self._change(self.shipped, "no_longer_fits", figures)
            return None
        self._accepted += 1
        model = ModelVersion.of(tuned["weights"], f"adapted-{self._accepted}")
        path = self.directory / f"cdi_nn-{model.version}.keras"
        os.replace(candidate, path)
        model.path = str(path)
        frames = [self._frames[i][0] for i in context["tuned"]]
        model.provenance = {
            "version": model.version, "file": path.name, "tuned_from": context["base"].version,
            "shipped": self.shipped.version, "series": job.series,
            "frames_tuned": frames, "frames_judged": [self._frames[i][0]
                                                      for i in context["judged"]],
            "figures": figures, "record": record, "settings": asdict(self.settings),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "cdistream_version": __version__,
        }
        path.with_suffix(".json").write_text(json.dumps(model.provenance, indent=1) + "\n")
        record["version"] = model.version
        self.learnt = [model, *[m for m in self.learnt if m is not context["base"]]]
        self.learnt = self.learnt[:LEARNT_KEPT]
        if not self._open:  # learnt after its series ended: kept, to be recognised later
            return None
        return self._change(model, "adapted", figures)

    def _change(self, model: ModelVersion, reason: str, figures: dict | None = None
                ) -> ModelChange:
        previous, self.serving = self.serving, model
        self._watched_at = len(self._frames)
        return ModelChange(model.version, previous.version, reason, model.weights,
                           figures or {}, model.path or "")


class RoutedNetworks:
    """The networks of a micro-batch while a learnt model is in service: the learnt networks
    for the frames with signal (``weak`` False, :meth:`Adapter.weak`), the shipped ones for
    the others; what the trust gate calls ``predict`` on."""

    def __init__(self, learnt: Reconstructor, shipped: Reconstructor, weak: np.ndarray):
        self.learnt, self.shipped, self.weak = learnt, shipped, weak

    def predict(self, magnitudes: np.ndarray, valid: np.ndarray | None = None):
        amplitude = np.empty(magnitudes.shape, np.float32)
        phase = np.empty(magnitudes.shape, np.float32)
        for networks, rows in ((self.learnt, ~self.weak), (self.shipped, self.weak)):
            if rows.any():
                part = None if valid is None else valid[rows]
                amplitude[rows], phase[rows] = networks.predict(magnitudes[rows], part)
        return amplitude, phase

    def versions(self) -> list[str]:
        """Which networks made each frame."""
        return [self.shipped.version if w else self.learnt.version for w in self.weak]

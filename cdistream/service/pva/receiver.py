"""The PVAccess detector input: a monitor on an NTNDArray channel (areaDetector's NDPluginPva, or
any NTNDArray producer) feeding :class:`~.ingest.Ingest`.

The monitor asks the server to queue updates (``record[queueSize=...]``: with the default
request PVA keeps only the latest value and drops frames at about 1 kHz); pvapy's callback only
appends to a bounded deque, and this class's thread decodes, so a slow ROI never holds up
the PVA client. Updates the deque cannot hold are counted as ``dropped_input`` rejections, and
frames the server dropped show up as gaps in ``uniqueId``. Three kinds of update are no frame:
the first one of a monitor, which is the channel's value when it connected (the server's empty
record, ``uniqueId`` 0, or the last frame of an acquisition that ended before cdistream
started), skipped; the empty record after frames, which means the server restarted (an IOC
reboot), counted as the notice ``pva_server_restarted``; an update that repeats the last one's
``uniqueId`` and time stamps (a monitor that reconnects is sent the current value again),
counted as the notice ``pva_repeated_update``. A series ends when ``uniqueId`` goes back (a new
acquisition) or after ``idle_s`` seconds without a frame."""

from __future__ import annotations

import logging
import threading
from collections import deque

from cdistream.roi import RoiConfig
from cdistream.wire import DecodeError
from cdistream.wire.ntndarray import Decoder

from ..accounting import Accounting
from ..ingest import DEFAULT_MAX_FRAME_BYTES, Ingest
from ..queue import FrameQueue
from .common import pvaccess

__all__ = ["FIRST_UNIQUE_ID", "PvaReceiver"]

FIRST_UNIQUE_ID = 1  # areaDetector's array counter starts at 1; 0 is a server's empty record

log = logging.getLogger(__name__)


# updates that are no frame but say something, queued by name in the order they came
_NOTICES = {
    "pva_repeated_update": (logging.INFO, "PVA channel %s sent its last update again"),
    "pva_server_restarted": (logging.WARNING, "the PVA server of %s restarted (empty record)"),
}


def _unique_id(pv) -> int | None:
    try:
        return pv["uniqueId"]
    except Exception:
        return None


def _identity(pv, uid: int | None) -> tuple | None:
    """What tells one NTNDArray from the next: its ``uniqueId`` (``uid``, read already) and the
    time stamps. Two frames with one number (a counter reset between single-frame acquisitions)
    differ in time."""
    if uid is None:
        return None
    try:
        return (uid, *(tuple(pv[f].values()) for f in ("dataTimeStamp", "timeStamp")))
    except Exception:
        return None


class PvaReceiver(Ingest):
    """Monitors ``channel``; ``buffer_bytes`` bounds the updates held between the PVA client's
    thread and this one (in frames of ``max_frame_bytes``)."""

    def __init__(
        self,
        channel: str,
        roi: RoiConfig,
        queue: FrameQueue,
        accounting: Accounting,
        buffer_bytes: int = 2**30,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        idle_s: float = 5.0,
        server_queue: int = 100,
    ):
        super().__init__(roi, queue, accounting, FIRST_UNIQUE_ID, max_frame_bytes)
        pva = pvaccess()
        self.channel_name = channel
        self.decoder = Decoder(idle_s)
        self._limit = max(4, buffer_bytes // max(max_frame_bytes, 1))
        self._updates: deque = deque()
        self._ready = threading.Condition()
        self._connected = False  # the first update, the channel's value then, came
        self._last: tuple | None = None  # the identity of the last update taken
        self._overflow = 0
        self._stop = threading.Event()
        self._channel = pva.Channel(channel, pva.PVA)
        self._request = f"record[queueSize={server_queue}]field()"
        self._thread = threading.Thread(target=self._loop, name="cdistream-pva-input", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        self._channel.monitor(self._arrived, self._request)
        log.info("monitoring PVA channel %s", self.channel_name)

    def stop(self, reason: str = "the service stopped before the detector series ended") -> None:
        try:
            self._channel.stopMonitor()
        except Exception:  # never connected
            log.debug("stopMonitor on %s", self.channel_name, exc_info=True)
        self._stop.set()
        with self._ready:
            self._ready.notify()
        self._thread.join()
        self._drain()
        self.close_series(reason)

    def _arrived(self, pv) -> None:
        """pvapy's monitor callback. pvapy hands over one structure that it overwrites with the
        next update, so the update is decoded (and its image copied) here, then handed over."""
        with self._ready:
            uid = _unique_id(pv)
            identity = _identity(pv, uid)
            if not self._connected:  # the channel's value when we connected: no new frame
                self._connected, self._last = True, identity
                if uid:
                    log.info("%s held frame %s when cdistream connected: not taken as a new"
                             " frame", self.channel_name, uid)
                return
            if uid == 0:  # the server's empty record again: it restarted
                self._noted("pva_server_restarted")
                return
            if identity is not None and identity == self._last:  # never a frame, even when full
                self._noted("pva_repeated_update")
                return
            self._last = identity
            if len(self._updates) >= self._limit:
                self._overflow += 1
                return
            try:
                decoded = self.decoder.decode(pv)
            except DecodeError as exc:
                decoded = exc
            except Exception:  # a bug must cost one update, never the client thread
                log.exception("could not decode a PVA update")
                decoded = DecodeError("internal_error", "the decoder failed")
            self._updates.append(decoded)
            self._ready.notify()

    def _noted(self, name: str) -> None:
        """An update that is no frame, for the ingest thread to count (with ``_ready`` held)."""
        self._updates.append(name)
        self._ready.notify()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._ready:
                if not self._updates and not self._overflow:
                    self._ready.wait(0.1)
            self._drain()
            with self._ready:
                ended = self.decoder.idle()
            self._handled(ended)

    def _drain(self) -> None:
        while True:
            with self._ready:
                overflow, self._overflow = self._overflow, 0
                decoded = self._updates.popleft() if self._updates else None
            for _ in range(overflow):
                self._acct.received(self._scope(None))
                self._reject(self._scope(None), "dropped_input", "the PVA input buffer is full")
            if decoded is None:
                return
            self._handled(decoded)

    def _handled(self, decoded) -> None:
        try:
            if isinstance(decoded, str):
                level, text = _NOTICES[decoded]
                log.log(level, text, self.channel_name)
                self._acct.notice(self._run, decoded)
            elif isinstance(decoded, DecodeError):
                self.rejected(decoded)
            else:
                self.messages(decoded)
        except Exception:  # a bug must cost one update, never the service
            self.internal_error()

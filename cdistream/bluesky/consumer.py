"""Run a real ``bluesky.callbacks.zmq.RemoteDispatcher`` on the feedback channel in a thread,
with the msgpack deserializer, so callbacks see cdistream's documents as Bluesky sends them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from bluesky.callbacks.zmq import ClientCurve, RemoteDispatcher

from cdistream.wire import unpackb

__all__ = ["RemoteConsumer"]

log = logging.getLogger(__name__)


class RemoteConsumer:
    """Subscribes ``callbacks`` to the documents published at ``address`` (host:port or a
    tcp:// address); :meth:`wait_for_stops` blocks until that many runs have ended.
    ``curve_config`` (Bluesky's ``ClientCurve``) for a feedback channel behind CURVE."""

    def __init__(
        self,
        address: str,
        callbacks: list[Callable[[str, dict], None]] = (),
        curve_config: ClientCurve | None = None,
    ):
        self.address = address.removeprefix("tcp://")
        self._callbacks = list(callbacks)
        self._curve = curve_config
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stops = 0
        self._stop_seen = threading.Condition()
        self._ready = threading.Event()
        self._dispatcher: RemoteDispatcher | None = None
        self._thread = threading.Thread(target=self._run, name="cdistream-consumer", daemon=True)

    def _count_stops(self, name: str, doc: dict) -> None:
        if name == "stop":
            with self._stop_seen:
                self.stops += 1
                self._stop_seen.notify_all()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._dispatcher = RemoteDispatcher(
            self.address, deserializer=unpackb, loop=self._loop, curve_config=self._curve
        )
        for cb in self._callbacks:
            self._dispatcher.subscribe(cb)
        self._dispatcher.subscribe(self._count_stops)
        self._dispatcher.loop.call_soon(self._ready.set)
        with contextlib.suppress(asyncio.CancelledError):  # how stop() ends it
            self._dispatcher.start()

    def start(self, timeout: float = 5.0) -> RemoteConsumer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"RemoteDispatcher on {self.address} did not start")
        return self

    def wait_for_stops(self, count: int = 1, timeout: float = 60.0) -> bool:
        with self._stop_seen:
            return self._stop_seen.wait_for(lambda: self.stops >= count, timeout)

    def stop(self) -> None:
        """Cancel the dispatcher's polling (public asyncio only), let it close, join."""
        loop = self._loop
        if loop is not None and self._thread.is_alive():

            def cancel_all() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()

            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(cancel_all)
        self._thread.join(timeout=5)

    def __enter__(self) -> RemoteConsumer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

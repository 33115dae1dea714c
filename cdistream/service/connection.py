"""Watch the detector connection through a ZeroMQ socket monitor, so that a detector that
never pairs with us (wrong socket type, not ZeroMQ at all) is an error in the log and a
counted notice instead of a silent absence of frames."""

from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

from .accounting import Accounting

__all__ = ["ConnectionWatch"]

log = logging.getLogger(__name__)

EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_PAIRS = {"sub": "PUB", "pull": "PUSH"}
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class ConnectionWatch:
    """Logs and counts what happens to the data socket's connection; poll :attr:`socket`
    and call :meth:`handle` when it is readable. Create it before the socket connects."""

    def __init__(self, sock: zmq.Socket, kind: str, accounting: Accounting):
        self.socket = sock.get_monitor_socket(EVENTS)
        self._data, self._kind, self._acct = sock, kind, accounting
        self._paired = False

    def handle(self) -> None:
        event = recv_monitor_message(self.socket)
        kind, endpoint = event["event"], event["endpoint"].decode(errors="replace")
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._paired = True
            log.info("connected to the detector at %s", endpoint)
        elif kind == zmq.EVENT_DISCONNECTED:
            if self._paired:
                log.warning("the detector at %s went away; reconnecting", endpoint)
            elif self._failed():  # connected at TCP level, then refused: no ZeroMQ handshake
                log.error(
                    "%s answers but will not pair with our %s socket: is it a %s socket? "
                    "(DECTRIS detectors PUSH: --socket pull; ADZMQ and cdistream PUBlish: "
                    "--socket sub)",
                    endpoint,
                    self._kind.upper(),
                    _PAIRS[self._kind],
                )
            self._paired = False
        elif kind in _HANDSHAKE_FAILED and self._failed():
            log.error("ZeroMQ handshake with %s failed (%s)", endpoint, zmq.Event(kind).name)

    def _failed(self) -> bool:
        """Count a failed handshake; True when it should be logged (1st, 2nd, 4th, 8th ...):
        ZeroMQ retries for ever, and the log must not drown in the same line."""
        self._acct.notice(None, "handshake_failed")
        count = self._acct.total.notices["handshake_failed"]
        return count & (count - 1) == 0

    def close(self) -> None:
        self._data.disable_monitor()
        self.socket.close(linger=0)

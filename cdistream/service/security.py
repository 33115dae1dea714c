"""CURVE encryption and authentication with pyzmq's own key files and ZAP authenticator, laid out
as Bluesky's ``ServerCurve``/``ClientCurve`` expect (``cdistream keys DIR`` makes them)::

    DIR/server.key, DIR/server.key_secret   cdistream's key pair
    DIR/clients/*.key                       public keys of consumers allowed on the feedback
    DIR/detector.key                        the detector's public key (optional: CURVE input)

The feedback socket is a CURVE server that admits only the keys in ``clients/``; the input
socket is a CURVE client of the detector when ``detector.key`` is there. A consumer connects
with ``RemoteDispatcher(..., curve_config=ClientCurve(its.key_secret, DIR/server.key))``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["Curve", "create_keys", "is_loopback"]

log = logging.getLogger(__name__)


def create_keys(directory: str | Path, clients: tuple[str, ...] = ("consumer",)) -> Path:
    """Make the layout above with a server key pair and one key pair per named client (each
    client's secret stays in ``DIR/client_secrets``: hand it to that client only)."""
    directory = Path(directory)
    (directory / "clients").mkdir(parents=True, exist_ok=True)
    (directory / "client_secrets").mkdir(exist_ok=True)
    zmq.auth.create_certificates(directory, "server")
    for name in clients:
        public, _secret = zmq.auth.create_certificates(directory / "client_secrets", name)
        Path(public).replace(directory / "clients" / Path(public).name)
    return directory


def is_loopback(address: str) -> bool:
    """True for tcp addresses on 127.0.0.0/8, ::1 or localhost, and for ipc/inproc."""
    if not address.startswith("tcp://"):
        return True
    host = address[6:].rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class Curve:
    """Keys from a directory; a ZAP authenticator runs while the service does."""

    def __init__(self, directory: str | Path, context: zmq.Context):
        self.directory = Path(directory)
        self.public, self.secret = zmq.auth.load_certificate(self.directory / "server.key_secret")
        detector = self.directory / "detector.key"
        self.detector = zmq.auth.load_certificate(detector)[0] if detector.exists() else None
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self.directory / "clients"))

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (the feedback channel) a CURVE server."""
        sock.curve_secretkey, sock.curve_publickey = self.secret, self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (the detector input) a CURVE client, if the detector's key is known."""
        if self.detector is None:
            key = self.directory / "detector.key"
            log.warning("no %s: the detector stream stays unencrypted", key)
            return
        sock.curve_secretkey, sock.curve_publickey = self.secret, self.public
        sock.curve_serverkey = self.detector

    def close(self) -> None:
        self._auth.stop()

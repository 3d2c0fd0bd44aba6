"""A blocking ATM2 client over TCP: the socket half of the ATM.

It wraps ``common.endpoints.ClientConnection`` with a socket and
timeouts, and nothing else: no retries and no decisions, which belong to
the session logic. The GUI runs it in its worker thread only, with the
typed requests of ``common.messages``; tests and benchmarks use it
directly as a real ATM would, often with plain wire dicts.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from typing import Any

from common.endpoints import ClientConnection, Event, MessageReceived
from common.errors import HandshakeRefusedError, KeyFileError, ProtocolError, WrongKeyError
from common.keys import TerminalKey
from common.messages import Request, encode, request_to_wire

_KEY_HEX = re.compile(r"[0-9a-fA-F]{64}")


class BankError(Exception):
    """Base of everything that can go wrong talking to the bank."""


class BankUnreachable(BankError):
    """No TCP connection could be made."""


class BankWrongKey(BankError):
    """The bank proved a different key: the bank does not hold this ATM's key (or this version of it)."""


class BankRefused(BankError):
    """The bank closed before its ServerHello: this terminal is unknown or revoked, or its key version too old."""


class ConnectionLost(BankError):
    """The connection broke or timed out; a request may or may not have been applied."""


class BankClient:
    """One connection to the bank. Not thread-safe: one thread owns it."""

    def __init__(self, host: str, port: int, terminal_key: TerminalKey, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.terminal_key = terminal_key
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._conn: ClientConnection | None = None
        self._pending: list[str] = []

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Open TCP and complete the handshake."""
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        except OSError as exc:
            raise BankUnreachable(f"no se pudo conectar con {self.host}:{self.port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConnection(self.terminal_key)
        conn.start()
        self._sock, self._conn, self._pending = sock, conn, []
        try:
            self._send(conn.data_to_send())
            self._receive_until(lambda events: bool(events))
        except WrongKeyError:
            self.close()
            raise BankWrongKey("el banco tiene otra llave para este cajero") from None
        except HandshakeRefusedError:
            self.close()
            raise BankRefused("el banco no reconoce este cajero o esta versión de su llave") from None

    def renew_key(self) -> TerminalKey | None:
        """``RENOVAR_LLAVE``: the pending key the bank hands over, or ``None`` if there is none.

        Writing it to the key file (atomically, before using it) is the caller's job.
        """
        response = self.request({"op": "RENOVAR_LLAVE"})
        if not response.get("ok") or "llave" not in response:
            return None
        llave, version = response["llave"], response.get("version")
        try:
            if not isinstance(llave, str) or not _KEY_HEX.fullmatch(llave) or type(version) is not int:
                raise ValueError("not a key")
            key = TerminalKey(self.terminal_key.terminal_id, version, bytes.fromhex(llave))
        except (ValueError, KeyFileError):
            self.close()
            raise ConnectionLost("el banco entregó una llave ilegible") from None
        return key

    def request(self, message: Request | dict[str, Any]) -> dict[str, Any]:
        """Send one request (typed, or already a wire dict) and return the bank's response as a dict."""
        if self._conn is None:
            raise ConnectionLost("no hay conexión con el banco")
        wire = message if isinstance(message, dict) else request_to_wire(message)
        self._conn.send_message(encode(wire))
        self._send(self._conn.data_to_send())
        if not self._pending:
            self._receive_until(lambda _events: bool(self._pending))
        text = self._pending.pop(0)
        try:
            response = json.loads(text)
        except ValueError:
            self.close()
            raise ConnectionLost("el banco respondió algo ilegible") from None
        if not isinstance(response, dict):
            self.close()
            raise ConnectionLost("el banco respondió algo ilegible")
        return response

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._conn = None

    def __enter__(self) -> BankClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- socket plumbing -------------------------------------------------------
    def _send(self, data: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"se perdió la conexión al enviar: {exc}") from None

    def _receive_until(self, done: Callable[[list[Event]], bool]) -> None:
        assert self._sock is not None and self._conn is not None
        while True:
            try:
                data = self._sock.recv(65_536)
            except OSError as exc:  # includes socket.timeout
                self.close()
                raise ConnectionLost(f"se perdió la conexión al recibir: {exc}") from None
            try:
                if not data:
                    self._conn.receive_eof()
                    self.close()
                    raise ConnectionLost("el banco cerró la conexión")
                events = self._conn.receive_data(data)
            except (WrongKeyError, HandshakeRefusedError):
                self.close()
                raise
            except ProtocolError as exc:
                self.close()
                raise ConnectionLost(f"el banco violó el protocolo: {exc}") from None
            self._pending.extend(e.text for e in events if isinstance(e, MessageReceived))
            if done(events):
                return

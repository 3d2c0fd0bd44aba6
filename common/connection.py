"""ATM1 connections as sans-I/O state machines (in the manner of h11).

Feed received bytes to ``receive_data`` and get events back; call
``send_message`` to queue a record; write ``data_to_send()`` to the
socket. The whole state table of a connection is the small ``State``
enum below and the state checks at the top of ``receive_data`` and
``send_message``: a connection is waiting for the hello, open, or
closed, and a protocol error closes it for good (one found after good
records in the same read is raised by ``check()`` once they are answered).

Both ends are here so that tests can wire a client to a server in
memory and exercise every byte without a socket.
"""

from __future__ import annotations

import enum
import hmac
import os
from dataclasses import dataclass

from common.channel import MAGIC, NONCE_SIZE, Random, RecordOpener, RecordSealer, SessionKeys, server_proof
from common.errors import LocalProtocolError, RemoteProtocolError
from common.framing import FrameDecoder, encode_frame

CLIENT_HELLO_SIZE = len(MAGIC) + NONCE_SIZE  # 36
SERVER_HELLO_SIZE = len(MAGIC) + NONCE_SIZE + 32  # 68


class State(enum.Enum):
    AWAIT_HELLO = "esperando saludo"
    OPEN = "abierta"
    CLOSED = "cerrada"


class WrongKeyError(RemoteProtocolError):
    """The server's proof does not match: the two sides hold different keys."""


@dataclass(frozen=True)
class HandshakeComplete:
    """The channel is keyed; records may flow."""


@dataclass(frozen=True)
class MessageReceived:
    """One record's plaintext, already checked and decoded as UTF-8."""

    text: str


Event = HandshakeComplete | MessageReceived


class _Connection:
    def __init__(self, psk: bytes, random: Random) -> None:
        if len(psk) != 32:
            raise LocalProtocolError("the pre-shared key must be 32 bytes")
        self._psk = psk
        self._random = random
        self._decoder = FrameDecoder()
        self._outbox = bytearray()
        self._sealer: RecordSealer | None = None
        self._opener: RecordOpener | None = None
        self._deferred: RemoteProtocolError | None = None
        self.state = State.AWAIT_HELLO

    # -- what callers use -------------------------------------------------
    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        """Process received bytes. Raises ``RemoteProtocolError`` and closes on any violation.

        Good records that arrived in the same read *before* a bad one are
        still returned (each request gets its answer); the violation is
        then raised by ``check()`` or by the next call.
        """
        self.check()
        if self.state is State.CLOSED:
            raise LocalProtocolError("receive_data on a closed connection")
        events: list[Event] = []
        try:
            for payload in self._decoder.feed(data):
                if self.state is State.AWAIT_HELLO:
                    events.append(self._on_hello(payload))
                else:
                    assert self._opener is not None
                    events.append(MessageReceived(_decode_utf8(self._opener.open(payload))))
            self._decoder.check()
        except RemoteProtocolError as exc:
            self.state = State.CLOSED
            if not events:
                raise
            self._deferred = exc
        return events

    def check(self) -> None:
        """Raise the violation found after the events last returned, if any."""
        if self._deferred is not None:
            exc, self._deferred = self._deferred, None
            raise exc

    def receive_eof(self) -> None:
        """The peer closed. Raise if it closed mid-frame (a contract violation)."""
        self.check()
        was_mid_frame = self._decoder.mid_frame
        self.state = State.CLOSED
        if was_mid_frame:
            raise RemoteProtocolError("connection closed in the middle of a frame")

    def send_message(self, text: str) -> None:
        """Seal ``text`` as the next record and queue it."""
        if self.state is not State.OPEN or self._sealer is None:
            raise LocalProtocolError(f"cannot send a record while the connection is {self.state.value}")
        self._outbox += encode_frame(self._sealer.seal(text.encode("utf-8")))

    def close(self) -> None:
        self.state = State.CLOSED

    # -- for subclasses ------------------------------------------------------
    def _on_hello(self, payload: bytes) -> Event:
        raise NotImplementedError

    def _key(self, keys: SessionKeys, *, client: bool) -> None:
        if client:
            self._sealer = RecordSealer(keys.enc_c2s, keys.mac_c2s, self._random)
            self._opener = RecordOpener(keys.enc_s2c, keys.mac_s2c)
        else:
            self._sealer = RecordSealer(keys.enc_s2c, keys.mac_s2c, self._random)
            self._opener = RecordOpener(keys.enc_c2s, keys.mac_c2s)
        self.state = State.OPEN


class ClientConnection(_Connection):
    """The ATM's end. Call ``start()`` once, then send the ClientHello it queued."""

    def __init__(self, psk: bytes, random: Random = os.urandom) -> None:
        super().__init__(psk, random)
        self._nonce_c: bytes | None = None

    def start(self) -> None:
        if self._nonce_c is not None:
            raise LocalProtocolError("the handshake was already started")
        self._nonce_c = self._random(NONCE_SIZE)
        self._outbox += encode_frame(MAGIC + self._nonce_c)

    def _on_hello(self, payload: bytes) -> Event:
        if self._nonce_c is None:
            raise LocalProtocolError("data received before start()")
        if len(payload) != SERVER_HELLO_SIZE or payload[:4] != MAGIC:
            raise RemoteProtocolError("malformed ServerHello")
        nonce_s = payload[4:36]
        keys = SessionKeys.derive(self._psk, self._nonce_c, nonce_s)
        if not hmac.compare_digest(server_proof(keys, self._nonce_c, nonce_s), payload[36:]):
            raise WrongKeyError("the server's proof does not match our key")
        self._key(keys, client=True)
        return HandshakeComplete()


class ServerConnection(_Connection):
    """The bank's end. The ServerHello is queued as soon as the ClientHello arrives."""

    def __init__(self, psk: bytes, random: Random = os.urandom) -> None:
        super().__init__(psk, random)

    def _on_hello(self, payload: bytes) -> Event:
        if len(payload) != CLIENT_HELLO_SIZE or payload[:4] != MAGIC:
            raise RemoteProtocolError("malformed ClientHello")
        nonce_c = payload[4:]
        nonce_s = self._random(NONCE_SIZE)
        keys = SessionKeys.derive(self._psk, nonce_c, nonce_s)
        self._outbox += encode_frame(MAGIC + nonce_s + server_proof(keys, nonce_c, nonce_s))
        self._key(keys, client=False)
        return HandshakeComplete()


def _decode_utf8(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("record plaintext is not UTF-8") from None

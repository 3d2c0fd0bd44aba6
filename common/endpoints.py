"""ATM2 connections as sans-I/O state machines (in the manner of h11).

Feed received bytes to ``receive_data`` and get events back; call
``send_message`` to queue a record; write ``data_to_send()`` to the
socket. Nothing here touches a socket or a clock.

The whole state table (``State``)::

    ATM (ClientConnection)                 bank (ServerConnection)
    IDLE --start()--> AWAIT_HELLO          AWAIT_HELLO --ClientHello--> AWAIT_KEY   [HelloReceived]
    AWAIT_HELLO --ServerHello--> OPEN      AWAIT_KEY --accept(K)--> AWAIT_CONFIRM   (ServerHello queued)
                [HandshakeComplete]        AWAIT_CONFIRM --first good record--> OPEN
                                                        [SessionConfirmed, MessageReceived]

Any state goes to CLOSED on ``close()``, on end of file, or on a protocol
error, and stays there. A violation found after good frames of the same
read is held back: ``receive_data`` returns their events, the caller
answers them, and ``check()`` (or the next call) raises it and closes. The bank refuses a terminal (unknown, revoked,
wrong version) by calling ``close()`` in ``AWAIT_KEY``: nothing is ever
sent. Records flow only in ``OPEN``; the bank cannot speak before the
ATM's first record, which is the contract's "the server never speaks
first" and also "the handshake ends, for the server, when the first
record passes its check" (PROTOCOL.md section 8).

Randomness: each connection takes a ``random(n) -> bytes`` source,
``os.urandom`` unless a test hands in fixed bytes. It is drawn in this
order: the ephemeral X25519 private key (32), the nonce (32), then one IV
(16) per record sent.

Secrets: the ephemeral private key and ``dh`` are dropped as soon as the
session keys are derived (or the handshake fails), and so is ``K``;
Python cannot wipe the bytes, but nothing keeps a reference to them.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Protocol

from common.channel import Random, RecordOpener, RecordSealer, SessionKeys
from common.errors import (
    HandshakeRefusedError,
    IntegrityError,
    LocalProtocolError,
    RemoteProtocolError,
    WrongKeyError,
)
from common.framing import FrameDecoder, encode_frame
from common.handshake import (
    NONCE_SIZE,
    TERMINAL_KEY_SIZE,
    ClientHello,
    EphemeralKey,
    ServerHello,
    derive_session_keys,
    is_valid_terminal_id,
    is_valid_version,
    proof_matches,
    server_proof,
    transcript_hash,
)


class NamedKey(Protocol):
    """A terminal key with its name: ``common.keys.TerminalKey`` or any class of the same shape."""

    @property
    def terminal_id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def key(self) -> bytes: ...


class State(enum.Enum):
    IDLE = "sin iniciar"  # ATM only: before start()
    AWAIT_HELLO = "esperando saludo"
    AWAIT_KEY = "esperando la llave del cajero"  # bank only: the caller must accept() or close()
    AWAIT_CONFIRM = "esperando el primer registro"  # bank only: ServerHello sent
    OPEN = "abierta"
    CLOSED = "cerrada"


@dataclass(frozen=True)
class HandshakeComplete:
    """ATM: the server's proof matched; requests may be sent."""


@dataclass(frozen=True)
class HelloReceived:
    """Bank: a well-formed ClientHello arrived. Look up this terminal's key, then ``accept`` or ``close``."""

    terminal_id: str
    version: int


@dataclass(frozen=True)
class SessionConfirmed:
    """Bank: the first record passed its check, so the ATM holds ``K`` of this version.

    The handshake is over (start the idle clock); a pending key version
    may now become the current one (PROTOCOL.md section 6).
    """

    terminal_id: str
    version: int


@dataclass(frozen=True)
class MessageReceived:
    """One record's plaintext, already checked and decoded as UTF-8."""

    text: str


Event = HandshakeComplete | HelloReceived | SessionConfirmed | MessageReceived


class _Connection:
    def __init__(self, random: Random, state: State) -> None:
        self._random = random
        self._decoder = FrameDecoder()
        self._outbox = bytearray()
        self._sealer: RecordSealer | None = None
        self._opener: RecordOpener | None = None
        self._deferred: RemoteProtocolError | None = None
        self.state = state

    # -- what callers use -------------------------------------------------
    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        data = bytes(self._outbox)
        self._outbox.clear()
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        """Process received bytes. Raises ``RemoteProtocolError`` and closes on any violation.

        Events of frames that arrived in the same read *before* a bad one
        are still returned (each request gets its answer); the violation
        is then raised by ``check()`` or by the next call.
        """
        self.check()
        if self.state is State.CLOSED:
            raise LocalProtocolError("receive_data on a closed connection")
        events: list[Event] = []
        try:
            for payload in self._decoder.feed(data):
                self._on_frame(payload, events)
            self._decoder.check()
        except RemoteProtocolError as exc:
            if not events:
                self._fail()
                raise
            self._deferred = exc  # the connection stays usable until check() raises it
        return events

    def check(self) -> None:
        """Raise (and close) for the violation found after the events last returned, if any.

        Until then the connection still sends, so the requests in those
        events can be answered first.
        """
        if self._deferred is not None:
            exc, self._deferred = self._deferred, None
            self._fail()
            raise exc

    def receive_eof(self) -> None:
        """The peer closed. Raise if it closed mid-frame (a contract violation)."""
        self.check()
        was_mid_frame = self._decoder.mid_frame
        self._fail()
        if was_mid_frame:
            raise RemoteProtocolError("connection closed in the middle of a frame")

    def send_message(self, text: str) -> None:
        """Seal ``text`` as the next record and queue it."""
        if self.state is not State.OPEN or self._sealer is None:
            raise LocalProtocolError(f"cannot send a record while the connection is {self.state.value}")
        self._outbox += encode_frame(self._sealer.seal(text.encode("utf-8")))

    def close(self) -> None:
        """Close for good; whatever was not yet taken by ``data_to_send`` is discarded."""
        self._fail()
        self._outbox.clear()

    # -- for subclasses ------------------------------------------------------
    def _on_frame(self, payload: bytes, events: list[Event]) -> None:
        """Handle one frame, appending its events (before raising, if it raises)."""
        raise NotImplementedError

    def _fail(self) -> None:
        """Enter CLOSED and forget every secret of the handshake."""
        self.state = State.CLOSED

    def _open_record(self, payload: bytes) -> bytes:
        assert self._opener is not None
        return self._opener.open(payload)

    def _key(self, keys: SessionKeys, *, client: bool) -> None:
        if client:
            self._sealer = RecordSealer(keys.enc_c2s, keys.mac_c2s, self._random)
            self._opener = RecordOpener(keys.enc_s2c, keys.mac_s2c)
        else:
            self._sealer = RecordSealer(keys.enc_s2c, keys.mac_s2c, self._random)
            self._opener = RecordOpener(keys.enc_c2s, keys.mac_c2s)


class ClientConnection(_Connection):
    """The ATM's end. Call ``start()`` once, then send the ClientHello it queued.

    ``terminal_key`` is a ``common.keys.TerminalKey`` (from ``load_terminal_key``).

    A proof that does not match raises ``WrongKeyError`` (tell the user
    that this ATM's key is not the bank's); a server that closes before
    its ServerHello makes ``receive_eof`` raise ``HandshakeRefusedError``.
    """

    def __init__(self, terminal_key: NamedKey, random: Random = os.urandom) -> None:
        if not isinstance(terminal_key.key, bytes) or len(terminal_key.key) != TERMINAL_KEY_SIZE:
            raise LocalProtocolError("a terminal key is 32 bytes")
        if not is_valid_terminal_id(terminal_key.terminal_id) or not is_valid_version(terminal_key.version):
            raise LocalProtocolError("the terminal id or key version breaks the contract's grammar")
        super().__init__(random, State.IDLE)
        self.terminal_id = terminal_key.terminal_id
        self.version = terminal_key.version
        self._terminal_key: bytes | None = terminal_key.key
        self._ephemeral: EphemeralKey | None = None
        self._hello: ClientHello | None = None
        self._hello_payload = b""

    def start(self) -> None:
        if self.state is not State.IDLE:
            raise LocalProtocolError("the handshake was already started")
        self._ephemeral = EphemeralKey(self._random)
        hello = ClientHello(self.terminal_id, self.version, self._ephemeral.public, self._random(NONCE_SIZE))
        self._hello, self._hello_payload = hello, hello.encode()
        self._outbox += encode_frame(self._hello_payload)
        self.state = State.AWAIT_HELLO

    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.IDLE:
            raise LocalProtocolError("data received before start()")
        return super().receive_data(data)

    def receive_eof(self) -> None:
        refused = self.state is State.AWAIT_HELLO and not self._decoder.mid_frame and self._deferred is None
        super().receive_eof()
        if refused:
            raise HandshakeRefusedError(
                "the server closed before its ServerHello: it refused this terminal or key version"
            )

    def _on_frame(self, payload: bytes, events: list[Event]) -> None:
        if self.state is State.AWAIT_HELLO:
            events.append(self._on_server_hello(payload))
        else:
            events.append(MessageReceived(_decode_utf8(self._open_record(payload))))

    def _on_server_hello(self, payload: bytes) -> Event:
        assert self._ephemeral is not None and self._hello is not None and self._terminal_key is not None
        hello = ServerHello.parse(payload)
        try:
            dh = self._ephemeral.exchange(hello.e_s)
        finally:
            self._ephemeral = None
        th = transcript_hash(self._hello_payload, hello.e_s, hello.nonce_s)
        keys = derive_session_keys(self._terminal_key, dh, self._hello.nonce_c, hello.nonce_s, th)
        del dh
        self._terminal_key = None
        if not proof_matches(keys, th, hello.proof):
            raise WrongKeyError(
                f"the server's proof does not match: the bank does not hold this ATM's key "
                f"(terminal {self.terminal_id}, version {self.version})"
            )
        self._key(keys, client=True)
        self.state = State.OPEN
        return HandshakeComplete()

    def _fail(self) -> None:
        super()._fail()
        self._ephemeral = None
        self._terminal_key = None


class ServerConnection(_Connection):
    """The bank's end. It needs no key to start: the ClientHello names the terminal.

    ``receive_data`` returns ``HelloReceived(terminal_id, version)``; the
    caller looks the key up and calls ``accept(key)``, which queues the
    ServerHello, or refuses with ``close()``, which sends nothing. The
    first record that passes its check yields ``SessionConfirmed`` before
    its ``MessageReceived``; if that record fails its tag, the error is
    ``WrongKeyError`` (the ATM's key is not this one, or the record was
    altered).
    """

    def __init__(self, random: Random = os.urandom) -> None:
        super().__init__(random, State.AWAIT_HELLO)
        self.hello: ClientHello | None = None
        self._hello_payload = b""
        self._e_s = b""
        self._nonce_s = b""
        self._dh: bytes | None = None

    @property
    def terminal_id(self) -> str | None:
        """The terminal named by the ClientHello (``None`` before it arrives)."""
        return None if self.hello is None else self.hello.terminal_id

    @property
    def version(self) -> int | None:
        return None if self.hello is None else self.hello.version

    def accept(self, key: NamedKey | bytes) -> None:
        """Key the connection with ``K`` of the terminal and version in the hello; queue the ServerHello.

        ``key`` is the 32 bytes of ``K``, or any object with ``terminal_id``,
        ``version`` and ``key`` (``common.keys.TerminalKey`` or the bank's own),
        which is then checked against the hello.
        """
        self.check()
        if self.state is not State.AWAIT_KEY or self.hello is None or self._dh is None:
            raise LocalProtocolError(f"accept() while the connection is {self.state.value}")
        secret = self._key_bytes(key)
        th = transcript_hash(self._hello_payload, self._e_s, self._nonce_s)
        keys = derive_session_keys(secret, self._dh, self.hello.nonce_c, self._nonce_s, th)
        self._dh = None
        self._outbox += encode_frame(ServerHello(self._e_s, self._nonce_s, server_proof(keys, th)).encode())
        self._key(keys, client=False)
        self.state = State.AWAIT_CONFIRM

    def _key_bytes(self, key: NamedKey | bytes) -> bytes:
        assert self.hello is not None
        if not isinstance(key, bytes):
            if (key.terminal_id, key.version) != (self.hello.terminal_id, self.hello.version):
                raise LocalProtocolError(
                    f"accept() with the key of {key.terminal_id} v{key.version} for a hello from "
                    f"{self.hello.terminal_id} v{self.hello.version}"
                )
            key = key.key
        if not isinstance(key, bytes) or len(key) != TERMINAL_KEY_SIZE:
            raise LocalProtocolError("a terminal key is 32 bytes")
        return key

    def _on_frame(self, payload: bytes, events: list[Event]) -> None:
        if self.state is State.AWAIT_HELLO:
            events.append(self._on_client_hello(payload))
        elif self.state is State.AWAIT_KEY:
            raise RemoteProtocolError(f"terminal {self.terminal_id}: a frame arrived before the ServerHello")
        elif self.state is State.AWAIT_CONFIRM:
            self._on_first_record(payload, events)
        else:
            events.append(MessageReceived(_decode_utf8(self._open_record(payload))))

    def _on_client_hello(self, payload: bytes) -> Event:
        hello = ClientHello.parse(payload)
        ephemeral = EphemeralKey(self._random)
        try:
            dh = ephemeral.exchange(hello.e_c)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"terminal {hello.terminal_id}: {exc}") from None
        self.hello, self._hello_payload = hello, payload
        self._e_s, self._nonce_s, self._dh = ephemeral.public, self._random(NONCE_SIZE), dh
        self.state = State.AWAIT_KEY
        return HelloReceived(hello.terminal_id, hello.version)

    def _on_first_record(self, payload: bytes, events: list[Event]) -> None:
        assert self.hello is not None
        try:
            plaintext = self._open_record(payload)
        except IntegrityError:
            raise WrongKeyError(
                f"terminal {self.hello.terminal_id}: the first record failed its check: the ATM does not hold "
                f"key version {self.hello.version} (or the record was altered)"
            ) from None
        self.state = State.OPEN
        # The key is proven even if the plaintext turns out not to be UTF-8: confirm first.
        events.append(SessionConfirmed(self.hello.terminal_id, self.hello.version))
        events.append(MessageReceived(_decode_utf8(plaintext)))

    def _fail(self) -> None:
        super()._fail()
        self._dh = None


def _decode_utf8(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("record plaintext is not UTF-8") from None

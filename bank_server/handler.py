"""A handler process: serves one ATM connection from handshake to close.

It works under every start method. The acceptor hands it one
``HandlerStart``: picklable, so ``spawn`` (Windows) can send it, and the
handler then loads the state from disk; with ``fork`` it also carries the
acceptor's ``Store`` and terminal registry already loaded (cheap:
copy-on-write), whose file handles the handler reopens on first use.

The ATM2 handshake, as the bank sees it (``common.endpoints``): the
ClientHello names a terminal and key version; the registry gives its key
or refuses (unknown, revoked, or a version neither current nor pending:
closed with no ServerHello, one log line). The session is *confirmed*
when the first record passes its check: only then does the 10-second
handshake clock give way to the idle clock, may a pending key version
become current, and does the acceptor stop counting this connection
against its address. A revoked terminal's connection is closed within
2 seconds, after the request in hand is answered.

Stopping: the acceptor sets ``stop`` (a ``StopFlag``: one shared byte with
no lock, so a handler killed while reading it blocks nobody; portable where
signals to children are not). The loop checks it between requests,
so the request in hand always finishes and is answered. Ctrl+C in the
terminal reaches every process of the group; handlers ignore it and wait
for the flag instead, so no request is cut in half by a KeyboardInterrupt.
"""

from __future__ import annotations

import enum
import gc
import logging
import multiprocessing
import select
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from bank_server import faults, paths
from bank_server.card_locks import CardLocks
from bank_server.config import ServerConfig
from bank_server.conversation import Conversation
from bank_server.cpu_slots import CpuSlots
from bank_server.group_commit import SyncBoard, sync_lock_path_for
from bank_server.handshake_board import HandshakeBoard
from bank_server.logs import alert, setup_logging
from bank_server.pin_checks import PinChecker, TerminalGuard
from bank_server.pins import pin_pepper
from bank_server.stop_flag import StopFlag
from bank_server.store import Store, StoreMode, lock_path_for
from bank_server.terminals import TerminalRegistry, TerminalRegistryError
from common.endpoints import Event, HelloReceived, MessageReceived, ServerConnection, SessionConfirmed
from common.errors import RemoteProtocolError
from common.keys import load_bank_key
from common.messages import encode

log = logging.getLogger(__name__)
POLL = 0.25


@dataclass(frozen=True)
class Inheritance:
    """What a handler started by ``fork`` takes from the acceptor's memory instead of loading it."""

    store: Store  # the acceptor's, brought up to date just before the fork
    registry: TerminalRegistry  # the acceptor's, refreshed in its loop
    bank_key: bytes
    to_close: tuple[Any, ...]  # the acceptor's listener, server lock and waiting sockets: not the handler's


@dataclass(frozen=True)
class HandlerStart:
    """Everything a handler process gets from the acceptor (``spawn`` pickles it)."""

    config: ServerConfig
    sock: socket.socket  # the ATM's connection
    peer: str  # "host:port", for the log
    stop: StopFlag  # set by the acceptor when the server stops
    accepted_at: float  # monotonic, system-wide: starts the handshake clock, wait for a slot included
    slot: int  # this handler's byte in the acceptor's ``HandshakeBoard``
    handshake_words: Any  # the board's shared bytes
    sync_words: Any = None  # the group commit's shared words (``SyncBoard``); None: every writer syncs itself
    inherited: Inheritance | None = None  # only under ``fork``


class CloseReason(enum.Enum):
    """Why a handler closed its connection; the value is the log's text."""

    ATM_CLOSED = "cerrada por el cajero"
    SALIR = "SALIR"
    SERVER_STOPPING = "servidor deteniéndose"
    IDLE = "inactividad"
    NO_HELLO = "sin saludo en el plazo"
    REFUSED = "cajero rechazado"
    REVOKED = "cajero dado de baja"
    ACCEPTOR_GONE = "el proceso aceptador terminó"
    NETWORK_ERROR = "error de red"
    PROTOCOL_ERROR = "error de protocolo"


@dataclass(frozen=True)
class Closed:
    """The end of a connection: its reason and, for an error, what the error said."""

    reason: CloseReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


def handler_main(start: HandlerStart) -> None:
    """Entry point of the process."""
    _install_signal_handlers()
    if start.inherited is not None:
        for thing in start.inherited.to_close:
            thing.close()
    setup_logging(
        start.config.log_file, detailed=start.config.detailed_log, lock_dir=paths.locks_dir(start.config.ledger)
    )
    try:
        store, registry, bank_key = _load_bank(start)
        # Everything loaded so far (the accounts above all) lives as long as the process: keep it out of
        # the cyclic GC, whose full passes would walk 100,000 accounts and, under fork, make this process
        # copy every page they sit on (a pass writes each object's GC header).
        gc.freeze()
        if start.sync_words is not None:
            store.sync_board = SyncBoard(start.sync_words, sync_lock_path_for(start.config.ledger))
        serve_connection(start, Bank(store, registry, pin_pepper(bank_key)))
        if store.sync_board is not None:
            board = store.sync_board
            log.debug(
                "%s: fdatasync propios %d, cubiertos por otro %d", start.peer, board.own_syncs, board.shared_syncs
            )
    except Exception:
        log.exception("%s: el manejador falló", start.peer)
    finally:
        start.sock.close()


@dataclass(frozen=True)
class Bank:
    """What a connection works on: the accounts, the terminals and the PIN pepper."""

    store: Store
    registry: TerminalRegistry
    pepper: bytes


def _load_bank(start: HandlerStart) -> tuple[Store, TerminalRegistry, bytes]:
    """The bank's state (handler mode), its terminals and key: inherited under ``fork``, read otherwise."""
    if start.inherited is not None:
        inherited = start.inherited
        return inherited.store.become_handler(), inherited.registry, inherited.bank_key
    config = start.config
    bank_key = load_bank_key(config.key_file)
    registry = TerminalRegistry.for_ledger(config.ledger, bank_key, guess_limit=config.max_wrong_pins_per_terminal)
    return Store.open(config.ledger, mode=StoreMode.HANDLER), registry, bank_key


_terminate = False


def _install_signal_handlers() -> None:
    """Ctrl+C/Ctrl+Break reach the whole process group: ignore them and wait for ``stop``.
    SIGTERM (a service manager stopping everything) ends the loop after the request in hand."""

    def request_stop(_signum: int, _frame: object) -> None:
        global _terminate
        _terminate = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, request_stop)


def serve_connection(start: HandlerStart, bank: Bank) -> None:
    loop = ConnectionLoop(start, bank)
    log.info("%s conectado", start.peer)
    closed = loop.run()
    who = f" cajero {loop.terminal_id}" if loop.terminal_id else ""
    log.info("%s%s desconectado (%s)", start.peer, who, closed)


class ConnectionLoop:
    """One connection's loop: wait for bytes, receive them, answer each request they complete."""

    def __init__(self, start: HandlerStart, bank: Bank) -> None:
        self.sock = start.sock
        self.peer = start.peer
        self.stop = start.stop
        self.config = start.config
        self.bank = bank
        self.board = HandshakeBoard(start.handshake_words)
        self.slot = start.slot
        self.conn = ServerConnection()
        self.conversation: Conversation | None = None  # from the first valid record on
        self.terminal_id: str | None = None
        self.sock.settimeout(start.config.handshake_timeout)  # bounds sendall to a peer that stops reading
        self.deadline = start.accepted_at + start.config.handshake_timeout  # the wait for a free handler counts too
        self.parent = multiprocessing.parent_process()

    def run(self) -> Closed:
        while True:
            if self.stop.is_set() or _terminate:
                return Closed(CloseReason.SERVER_STOPPING)
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return Closed(CloseReason.IDLE if self.conversation else CloseReason.NO_HELLO)
            if self._revoked():
                return Closed(CloseReason.REVOKED)
            if self._wait_for_bytes(min(POLL, remaining)):
                closed = self._receive()
                if closed is not None:
                    return closed
            elif self.parent is not None and not self.parent.is_alive():
                return Closed(CloseReason.ACCEPTOR_GONE)

    def _revoked(self) -> bool:
        """Polled between requests (the registry ``stat``s its file at most every 0.5 s)."""
        if self.conversation is None or self.terminal_id is None:
            return False
        try:
            revoked = self.bank.registry.is_revoked(self.terminal_id)
        except TerminalRegistryError as exc:  # unreadable registry: refuse rather than trust a stale view
            log.error("%s: %s", self.peer, exc)
            return True
        if revoked:
            alert("%s cajero %s: conexión cerrada, el cajero fue dado de baja", self.peer, self.terminal_id)
        return revoked

    def _wait_for_bytes(self, timeout: float) -> bool:
        try:
            readable, _, _ = select.select([self.sock], [], [], timeout)
        except InterruptedError:
            return False
        return bool(readable)

    def _receive(self) -> Closed | None:
        """Read what arrived and answer it; a ``Closed`` if the connection ends here."""
        try:
            data = self.sock.recv(65_536)
        except OSError as exc:
            return Closed(CloseReason.NETWORK_ERROR, str(exc.strerror or exc))
        try:
            if not data:
                self.conn.receive_eof()
                return Closed(CloseReason.ATM_CLOSED)
            return self._answer(self.conn.receive_data(data))
        except RemoteProtocolError as exc:
            if self.conversation is not None:
                alert("%s cajero %s: error de protocolo: %s", self.peer, self.terminal_id, exc)
            else:
                log.warning("%s error de protocolo: %s", self.peer, exc)
            return Closed(CloseReason.PROTOCOL_ERROR, str(exc))
        except OSError as exc:
            return Closed(CloseReason.NETWORK_ERROR, str(exc.strerror or exc))

    def _answer(self, events: list[Event]) -> Closed | None:
        """Handle each event in order: the hello, the confirmation, then one response per request."""
        for event in events:
            match event:
                case HelloReceived(terminal_id=terminal_id, version=version):
                    refusal = self._on_hello(terminal_id, version)
                    if refusal is not None:
                        return refusal
                case SessionConfirmed(terminal_id=terminal_id, version=version):
                    self._on_confirmed(terminal_id, version)
                case MessageReceived(text=text):
                    assert self.conversation is not None
                    response = self.conversation.handle(text)
                    faults.crash_point("antes_de_responder")
                    self.conn.send_message(encode(response))
                    self._send(self.conn.data_to_send())
                    self.deadline = time.monotonic() + self.config.idle_timeout
                    if self.conversation.finished:
                        return Closed(CloseReason.SALIR)  # nothing after it is answered
        self.conn.check()  # a bad record after good ones: they were answered, now close
        return None

    def _on_hello(self, terminal_id: str, version: int) -> Closed | None:
        """Look the key up; refuse (close, nothing sent) an unknown or revoked terminal or a stale version."""
        registry = self.bank.registry
        try:
            key = registry.key_for_hello(terminal_id, version)
        except TerminalRegistryError as exc:
            log.error("%s: %s", self.peer, exc)
            key = None
        if key is None:
            why = _refusal_reason(registry, terminal_id, version)
            log.warning("%s cajero %s versión %d rechazado: %s", self.peer, terminal_id, version, why)
            self.conn.close()
            return Closed(CloseReason.REFUSED, why)
        self.conn.accept(key)
        self._send(self.conn.data_to_send())
        return None

    def _on_confirmed(self, terminal_id: str, version: int) -> None:
        """The ATM proved its key: the handshake is over for the bank (PROTOCOL.md section 8)."""
        registry = self.bank.registry
        if not registry.confirm_version(terminal_id, version):
            raise RemoteProtocolError(f"terminal {terminal_id}: key version {version} is no longer valid")
        registry.seen(terminal_id, self.peer.rpartition(":")[0], time.time())
        self.board.confirm(self.slot)
        self.terminal_id = terminal_id
        guard = TerminalGuard(registry, terminal_id, self.peer)
        locks = lock_path_for(self.config.ledger).parent
        slots = CpuSlots(locks, self.config.ledger.stem)
        cards = CardLocks(locks / f"{self.config.ledger.stem}.tarjetas.lock")
        pins = PinChecker(self.bank.store, self.bank.pepper, slots, cards, guard)
        self.conversation = Conversation(
            self.bank.store, self.config.limits, f"{self.peer} {terminal_id}", terminal_id, registry, pins
        )
        self.deadline = time.monotonic() + self.config.idle_timeout

    def _send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)


def _refusal_reason(registry: TerminalRegistry, terminal_id: str, version: int) -> str:
    """For the log line: why a hello was refused (never anything about the key itself)."""
    try:
        if registry.is_revoked(terminal_id):
            known = terminal_id in {info.terminal_id for info in registry.list()}
            return "dado de baja" if known else "desconocido"
        current = registry.current_version(terminal_id)
    except TerminalRegistryError as exc:
        return f"registro de cajeros ilegible ({exc})"
    return f"versión de llave no válida (la vigente es {current})"

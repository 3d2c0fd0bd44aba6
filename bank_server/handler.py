"""A handler process: serves one ATM connection from handshake to close.

It works under every start method. The acceptor hands it one
``HandlerStart``: picklable, so ``spawn`` (Windows) can send it, and the
handler then loads the state from disk; with ``fork`` it also carries the
acceptor's ``Store`` already loaded (cheap: copy-on-write), whose file
handles the handler reopens on first use.

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

from bank_server import faults
from bank_server.config import ServerConfig
from bank_server.conversation import Conversation
from bank_server.group_commit import SyncBoard, sync_lock_path_for
from bank_server.logs import setup_logging
from bank_server.stop_flag import StopFlag
from bank_server.store import Store, StoreMode
from common.connection import Event, HandshakeComplete, MessageReceived, ServerConnection
from common.errors import RemoteProtocolError
from common.keyfile import load_key
from common.messages import encode

log = logging.getLogger(__name__)
POLL = 0.25


@dataclass(frozen=True)
class Inheritance:
    """What a handler started by ``fork`` takes from the acceptor's memory instead of loading it."""

    store: Store  # the acceptor's, brought up to date just before the fork
    psk: bytes
    to_close: tuple[Any, ...]  # the acceptor's listener, server lock and waiting sockets: not the handler's


@dataclass(frozen=True)
class HandlerStart:
    """Everything a handler process gets from the acceptor (``spawn`` pickles it)."""

    config: ServerConfig
    sock: socket.socket  # the ATM's connection
    peer: str  # "host:port", for the log
    stop: StopFlag  # set by the acceptor when the server stops
    accepted_at: float  # monotonic, system-wide: starts the handshake clock, wait for a slot included
    sync_words: Any = None  # the group commit's shared words (``SyncBoard``); None: every writer syncs itself
    inherited: Inheritance | None = None  # only under ``fork``


class CloseReason(enum.Enum):
    """Why a handler closed its connection; the value is the log's text."""

    ATM_CLOSED = "cerrada por el cajero"
    SALIR = "SALIR"
    SERVER_STOPPING = "servidor deteniéndose"
    IDLE = "inactividad"
    NO_HELLO = "sin saludo en el plazo"
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
    setup_logging(start.config.log_file, detailed=start.config.detailed_log)
    try:
        store, psk = _load_bank(start)
        # Everything loaded so far (the accounts above all) lives as long as the process: keep it out of
        # the cyclic GC, whose full passes would walk 100,000 accounts and, under fork, make this process
        # copy every page they sit on (a pass writes each object's GC header).
        gc.freeze()
        if start.sync_words is not None:
            store.sync_board = SyncBoard(start.sync_words, sync_lock_path_for(start.config.ledger))
        serve_connection(start, store, psk)
        if store.sync_board is not None:
            board = store.sync_board
            log.debug(
                "%s: fdatasync propios %d, cubiertos por otro %d", start.peer, board.own_syncs, board.shared_syncs
            )
    except Exception:
        log.exception("%s: el manejador falló", start.peer)
    finally:
        start.sock.close()


def _load_bank(start: HandlerStart) -> tuple[Store, bytes]:
    """The bank's state, in handler mode, and the key: inherited under ``fork``, read from disk otherwise."""
    if start.inherited is not None:
        return start.inherited.store.become_handler(), start.inherited.psk
    return Store.open(start.config.ledger, mode=StoreMode.HANDLER), load_key(start.config.key_file)


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


def serve_connection(start: HandlerStart, store: Store, psk: bytes) -> None:
    loop = ConnectionLoop(start, store, psk)
    log.info("%s conectado", start.peer)
    closed = loop.run()
    log.info("%s desconectado (%s)", start.peer, closed)


class ConnectionLoop:
    """One connection's loop: wait for bytes, receive them, answer each request they complete."""

    def __init__(self, start: HandlerStart, store: Store, psk: bytes) -> None:
        self.sock = start.sock
        self.peer = start.peer
        self.stop = start.stop
        self.idle_timeout = start.config.idle_timeout
        self.conn = ServerConnection(psk)
        self.conversation = Conversation(store, start.config.limits, start.peer)
        self.sock.settimeout(start.config.handshake_timeout)  # bounds sendall to a peer that stops reading
        self.deadline = start.accepted_at + start.config.handshake_timeout  # the wait for a free handler counts too
        self.handshaken = False
        self.parent = multiprocessing.parent_process()

    def run(self) -> Closed:
        while True:
            if self.stop.is_set() or _terminate:
                return Closed(CloseReason.SERVER_STOPPING)
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return Closed(CloseReason.IDLE if self.handshaken else CloseReason.NO_HELLO)
            if self._wait_for_bytes(min(POLL, remaining)):
                closed = self._receive()
                if closed is not None:
                    return closed
            elif self.parent is not None and not self.parent.is_alive():
                return Closed(CloseReason.ACCEPTOR_GONE)

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
            self._answer(self.conn.receive_data(data))
        except RemoteProtocolError as exc:
            log.warning("%s error de protocolo: %s", self.peer, exc)
            return Closed(CloseReason.PROTOCOL_ERROR, str(exc))
        except OSError as exc:
            return Closed(CloseReason.NETWORK_ERROR, str(exc.strerror or exc))
        return Closed(CloseReason.SALIR) if self.conversation.finished else None

    def _answer(self, events: list[Event]) -> None:
        """Send the handshake's reply, if any, then one response per request, in order."""
        conn = self.conn
        self._send(conn.data_to_send())
        for event in events:
            if isinstance(event, HandshakeComplete):
                self.handshaken = True
            elif isinstance(event, MessageReceived):
                response = self.conversation.handle(event.text)
                faults.crash_point("antes_de_responder")
                conn.send_message(encode(response))
                self._send(conn.data_to_send())
                if self.conversation.finished:
                    return  # SALIR: nothing after it is answered
            self.deadline = time.monotonic() + self.idle_timeout
        conn.check()  # a bad record after good ones: they were answered, now close

    def _send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

"""A handler process: serves one ATM connection from handshake to close.

It works under every start method. With ``fork`` it receives the
acceptor's ``Store`` already loaded (cheap: copy-on-write) and reopens its
file handles; with ``spawn`` (Windows) it loads the state from disk.

Stopping: the acceptor sets ``stop`` (a multiprocessing Event, portable
where signals to children are not). The loop checks it between requests,
so the request in hand always finishes and is answered. Ctrl+C in the
terminal reaches every process of the group; handlers ignore it and wait
for the event instead, so no request is cut in half by a KeyboardInterrupt.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import select
import signal
import socket
import time
from typing import Any

from bank_server import faults
from bank_server.config import ServerConfig
from bank_server.conversation import Session
from bank_server.group_commit import SyncBoard, sync_lock_path_for
from bank_server.logs import setup_logging
from bank_server.store import Store
from common.connection import HandshakeComplete, MessageReceived, ServerConnection
from common.errors import RemoteProtocolError
from common.keyfile import load_key
from common.messages import encode

log = logging.getLogger("bank_server.manejador")
POLL = 0.25


def handler_main(
    config: ServerConfig,
    sock: socket.socket,
    peer: str,
    stop: Any,
    accepted_at: float,
    sync_words: Any = None,
    store: Store | None = None,
    psk: bytes | None = None,
    inherited: tuple[Any, ...] = (),
) -> None:
    """Entry point of the process. ``store``/``psk`` are given only under ``fork``."""
    _install_signal_handlers()
    for thing in inherited:  # fork: the listener, sockets waiting for a slot, the server lock
        thing.close()
    setup_logging(config.log_file, detailed=config.detailed_log)
    try:
        if store is None:
            store = Store.open(config.ledger, recover=False)
        if psk is None:
            psk = load_key(config.key_file)
        store.state.eager = False  # one card per connection: skip decoding the others' records
        # Everything loaded so far (the accounts above all) lives as long as the process: keep it out of
        # the cyclic GC, whose full passes would walk 100,000 accounts and, under fork, make this process
        # copy every page they sit on (a pass writes each object's GC header).
        gc.freeze()
        if sync_words is not None:
            store.sync_board = SyncBoard(sync_words, sync_lock_path_for(config.ledger))
        serve_connection(sock, peer, store, psk, config, stop, accepted_at)
        if store.sync_board is not None:
            board = store.sync_board
            log.debug("%s: fdatasync propios %d, cubiertos por otro %d", peer, board.own_syncs, board.shared_syncs)
    except Exception:
        log.exception("%s: el manejador falló", peer)
    finally:
        sock.close()


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


def serve_connection(
    sock: socket.socket, peer: str, store: Store, psk: bytes, config: ServerConfig, stop: Any, accepted_at: float
) -> None:
    conn = ServerConnection(psk)
    session = Session(store, config.limits, peer)
    sock.settimeout(config.handshake_timeout)  # bounds sendall to a peer that stops reading
    deadline = accepted_at + config.handshake_timeout  # the wait for a free handler counts too
    parent = multiprocessing.parent_process()
    handshaken = False
    log.info("%s conectado", peer)
    reason = "cerrada por el cajero"
    while True:
        if stop.is_set() or _terminate:
            reason = "servidor deteniéndose"
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = "inactividad" if handshaken else "sin saludo en el plazo"
            break
        try:
            readable, _, _ = select.select([sock], [], [], min(POLL, remaining))
        except InterruptedError:
            continue
        if not readable:
            if parent is not None and not parent.is_alive():
                reason = "el proceso aceptador terminó"
                break
            continue
        try:
            data = sock.recv(65_536)
        except OSError as exc:
            reason = f"error de red: {exc.strerror or exc}"
            break
        try:
            if not data:
                conn.receive_eof()
                break
            events = conn.receive_data(data)
            _send(sock, conn.data_to_send())
            for event in events:
                if isinstance(event, HandshakeComplete):
                    handshaken = True
                elif isinstance(event, MessageReceived):
                    response = session.handle(event.text)
                    faults.crash_point("antes_de_responder")
                    conn.send_message(encode(response))
                    _send(sock, conn.data_to_send())
                    if session.finished:
                        break
                deadline = time.monotonic() + config.idle_timeout
            if not session.finished:
                conn.check()  # a bad record after good ones: they were answered, now close
        except RemoteProtocolError as exc:
            reason = f"error de protocolo: {exc}"
            log.warning("%s error de protocolo: %s", peer, exc)
            break
        except OSError as exc:
            reason = f"error de red: {exc.strerror or exc}"
            break
        if session.finished:
            reason = "SALIR"
            break
    log.info("%s desconectado (%s)", peer, reason)


def _send(sock: socket.socket, data: bytes) -> None:
    if data:
        sock.sendall(data)

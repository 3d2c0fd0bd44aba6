"""The acceptor: accepts ATM connections and runs one handler process each.

In the manner of gunicorn's arbiter: signal handlers only set a flag;
the loop accepts, starts handlers, reaps the dead ones and notices the
flag; stopping is graceful (stop accepting, let each handler finish the
request in hand), then a deadline, then kill; last, a checkpoint so
that ``cuenta.txt`` alone shows every applied transaction. The work on
the bank's files (catching up, checkpoints) is ``StorageMaintenance``'s,
called once per turn of the loop.

Beyond ``max_handlers`` live handlers, new connections wait (unread, so
they cost only a socket) for a free slot up to ``QUEUE_WAIT`` seconds,
and are closed after that or when the waiting line is full. An ATM
sees the connection close before the bank's hello and says "the bank is
busy, try again" instead of hanging.

Fairness: one address may hold at most ``unconfirmed_limit``
connections that have not finished their handshake (waiting, or in a
handler that has not yet seen a valid first record; ``HandshakeBoard``
tells which). Its further connections are closed at once, so silent
connections from one address cannot keep other addresses out. Confirmed
sessions are not limited per address: many ATMs may sit behind one NAT.

Files: the server runs with umask 077, so everything it creates (the
journal, checkpoints, logs, locks) is readable by the bank's user alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import portalocker

from bank_server import paths
from bank_server.config import ServerConfig
from bank_server.group_commit import SyncBoard
from bank_server.handler import HandlerStart, Inheritance, handler_main
from bank_server.handshake_board import HandshakeBoard
from bank_server.logs import setup_logging, write_all_summaries, write_due_summaries
from bank_server.maintenance import StorageMaintenance
from bank_server.stop_flag import StopFlag
from bank_server.store import Store, StoreMode
from bank_server.terminals import TerminalRegistry, TerminalRegistryError

log = logging.getLogger(__name__)
QUEUE_WAIT = 5.0
POLL = 0.2


class ServerLockError(Exception):
    """Another server already serves this ledger."""


@dataclass
class Handler:
    """A live handler process, the address it serves and its slot on the ``HandshakeBoard``."""

    process: Any
    host: str
    slot: int


class Acceptor:
    def __init__(self, config: ServerConfig, store: Store, bank_key: bytes, server_lock: BinaryIO) -> None:
        self.config = config
        self.storage = StorageMaintenance(store, config.checkpoint_interval)
        self.bank_key = bank_key
        self.registry = TerminalRegistry.for_ledger(
            config.ledger, bank_key, guess_limit=config.max_wrong_pins_per_terminal
        )
        self.server_lock = server_lock
        self.ctx = multiprocessing.get_context(config.start_method)
        self.stop_flag = StopFlag(self.ctx)
        self.sync_board = SyncBoard.create(self.ctx, config.ledger) if SyncBoard.available() else None
        self.board = HandshakeBoard.create(self.ctx, config.max_handlers)
        self.free_slots = list(range(config.max_handlers - 1, -1, -1))
        self.handlers: list[Handler] = []
        self.waiting: deque[tuple[float, socket.socket, str]] = deque()
        self.stopping = False
        self.listener = socket.create_server((config.host, config.port), backlog=512)
        self.listener.setblocking(False)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    # -- signals: set a flag, nothing else ----------------------------------------
    def install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        if hasattr(signal, "SIGBREAK"):
            signal.signal(signal.SIGBREAK, request_stop)

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            self.reap()
            self.start_waiting()
            try:
                readable, _, _ = select.select([self.listener], [], [], POLL)
            except InterruptedError:
                continue
            if readable:
                self.accept_all()
            self.storage.tick()
            write_due_summaries()  # "N more lines like this" for floods whose window ended
            self._refresh_registry()
        self.shutdown()

    def accept_all(self) -> None:
        while True:
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. too many open files: keep serving the others
                log.warning("no se pudo aceptar una conexión: %s", exc)
                return
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{address[0]}:{address[1]}"
            if self.unconfirmed_from(address[0]) >= self.config.unconfirmed_limit:
                log.warning("%s rechazado: demasiadas conexiones sin saludo desde %s", peer, address[0])
                sock.close()
            elif len(self.handlers) < self.config.max_handlers:
                self.start_handler(sock, peer, time.monotonic())
            elif len(self.waiting) < self.config.max_handlers:
                self.waiting.append((time.monotonic(), sock, peer))
            else:
                log.warning("%s rechazado: %d cajeros atendidos y la fila está llena", peer, len(self.handlers))
                sock.close()

    def unconfirmed_from(self, host: str) -> int:
        """Connections from ``host`` that have not proved a key yet: waiting, or in a handler."""
        waiting = sum(1 for _, _, peer in self.waiting if peer.rpartition(":")[0] == host)
        handling = sum(1 for h in self.handlers if h.host == host and not self.board.confirmed(h.slot))
        return waiting + handling

    def _refresh_registry(self) -> None:
        """Keep the registry view current, so that forked handlers start with it (a throttled ``stat``)."""
        try:
            self.registry.refresh(include_seen=True)
        except TerminalRegistryError as exc:
            log.error("%s", exc)

    def start_waiting(self) -> None:
        now = time.monotonic()
        while self.waiting and len(self.handlers) < self.config.max_handlers:
            accepted_at, sock, peer = self.waiting.popleft()
            self.start_handler(sock, peer, accepted_at)
        while self.waiting and now - self.waiting[0][0] > QUEUE_WAIT:
            _, sock, peer = self.waiting.popleft()
            log.warning("%s rechazado: sin lugar libre tras %.0f s", peer, QUEUE_WAIT)
            sock.close()

    def start_handler(self, sock: socket.socket, peer: str, accepted_at: float) -> None:
        """``accepted_at`` (monotonic, system-wide) starts the 10 s handshake clock, wait for a slot included."""
        inherited = None
        if self.config.start_method == "fork":
            to_close = (self.listener, self.server_lock, *(s for _, s, _ in self.waiting))
            inherited = Inheritance(self.storage.store_for_fork(), self.registry, self.bank_key, to_close)
        slot = self.free_slots.pop()
        self.board.clear(slot)
        start = HandlerStart(
            self.config,
            sock,
            peer,
            self.stop_flag,
            accepted_at,
            slot,
            self.board.words,
            self.sync_board.words if self.sync_board is not None else None,
            inherited,
        )
        process = self.ctx.Process(target=handler_main, args=(start,), name=f"cajero {peer}", daemon=False)
        try:
            process.start()
        except OSError as exc:
            log.error("%s: no se pudo iniciar un manejador: %s", peer, exc)
            self.free_slots.append(slot)
        else:
            self.handlers.append(Handler(process, peer.rpartition(":")[0], slot))
        finally:
            sock.close()  # the child has its own copy

    def reap(self) -> None:
        alive = []
        for handler in self.handlers:
            process = handler.process
            if process.is_alive():
                alive.append(handler)
                continue
            process.join()
            if process.exitcode not in (0, None):
                log.warning("el manejador %d terminó con código %s", process.pid, process.exitcode)
            process.close()
            self.free_slots.append(handler.slot)
        self.handlers = alive

    def shutdown(self) -> None:
        log.info("deteniendo: no se aceptan más conexiones")
        self.listener.close()
        for _, sock, _ in self.waiting:
            sock.close()
        self.waiting.clear()
        self.stop_flag.set()
        deadline = time.monotonic() + self.config.grace
        while self.handlers and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for handler in self.handlers:
            log.warning("el manejador %d no terminó a tiempo: se detiene a la fuerza", handler.process.pid)
            handler.process.kill()
            handler.process.join(5)
        self.handlers = []
        write_all_summaries()
        self.storage.final_checkpoint()


def acquire_server_lock(ledger: Path) -> BinaryIO:
    """One server per ledger: a second one would compete for the same ATMs' journal."""
    path = paths.server_lock_path(ledger)
    handle = open(path, "a+b")  # noqa: SIM115 - held for the server's life
    try:
        portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
    except portalocker.LockException:
        handle.close()
        raise ServerLockError(f"{ledger}: otro servidor ya está usando este archivo de cuentas") from None
    return handle


def serve(config: ServerConfig, bank_key: bytes) -> int:
    """Run the server until Ctrl+C or SIGTERM. Returns the exit status."""
    os.umask(0o077)  # every file the bank creates is its user's alone (attack item 3 of issue 11)
    setup_logging(config.log_file, detailed=config.detailed_log, lock_dir=paths.locks_dir(config.ledger))
    server_lock = acquire_server_lock(config.ledger)
    started = time.perf_counter()
    store = Store.open(config.ledger, mode=StoreMode.RECOVER)
    for notice in store.notices:  # loads, but the operator should know (names with control characters)
        log.warning("%s (python -m bank_server verificar)", notice)
    acceptor = Acceptor(config, store, bank_key, server_lock)
    acceptor.install_signal_handlers()
    host, port = acceptor.address
    log.info(
        "%d cuentas cargadas de %s en %.2f s; inicio de manejadores: %s",
        len(store.state.accounts),
        config.ledger,
        time.perf_counter() - started,
        config.start_method,
    )
    print(f"Banco Cajero listo: escuchando en {host}:{port} (Ctrl+C para detener)", flush=True)
    acceptor.run()
    server_lock.close()
    return 0


def default_start_method() -> str:
    """``fork`` where it exists (2 ms a handler); ``spawn`` elsewhere (Windows, macOS default)."""
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


__all__ = ["Acceptor", "ServerLockError", "default_start_method", "serve"]

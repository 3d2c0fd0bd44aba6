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
"""

from __future__ import annotations

import logging
import multiprocessing
import select
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

import portalocker

from bank_server.config import ServerConfig
from bank_server.group_commit import SyncBoard
from bank_server.handler import HandlerStart, Inheritance, handler_main
from bank_server.logs import setup_logging
from bank_server.maintenance import StorageMaintenance
from bank_server.stop_flag import StopFlag
from bank_server.store import Store, StoreMode

log = logging.getLogger(__name__)
QUEUE_WAIT = 5.0
POLL = 0.2


class ServerLockError(Exception):
    """Another server already serves this ledger."""


class Acceptor:
    def __init__(self, config: ServerConfig, store: Store, psk: bytes, server_lock: BinaryIO) -> None:
        self.config = config
        self.storage = StorageMaintenance(store, config.checkpoint_interval)
        self.psk = psk
        self.server_lock = server_lock
        self.ctx = multiprocessing.get_context(config.start_method)
        self.stop_flag = StopFlag(self.ctx)
        self.sync_board = SyncBoard.create(self.ctx, config.ledger) if SyncBoard.available() else None
        self.handlers: list[Any] = []
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
            if len(self.handlers) < self.config.max_handlers:
                self.start_handler(sock, peer, time.monotonic())
            elif len(self.waiting) < self.config.max_handlers:
                self.waiting.append((time.monotonic(), sock, peer))
            else:
                log.warning("%s rechazado: %d cajeros atendidos y la fila está llena", peer, len(self.handlers))
                sock.close()

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
            inherited = Inheritance(self.storage.store_for_fork(), self.psk, to_close)
        start = HandlerStart(
            self.config,
            sock,
            peer,
            self.stop_flag,
            accepted_at,
            self.sync_board.words if self.sync_board is not None else None,
            inherited,
        )
        process = self.ctx.Process(target=handler_main, args=(start,), name=f"cajero {peer}", daemon=False)
        try:
            process.start()
        except OSError as exc:
            log.error("%s: no se pudo iniciar un manejador: %s", peer, exc)
        else:
            self.handlers.append(process)
        finally:
            sock.close()  # the child has its own copy

    def reap(self) -> None:
        alive = []
        for process in self.handlers:
            if process.is_alive():
                alive.append(process)
                continue
            process.join()
            if process.exitcode not in (0, None):
                log.warning("el manejador %d terminó con código %s", process.pid, process.exitcode)
            process.close()
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
        for process in self.handlers:
            log.warning("el manejador %d no terminó a tiempo: se detiene a la fuerza", process.pid)
            process.kill()
            process.join(5)
        self.handlers = []
        self.storage.final_checkpoint()


def acquire_server_lock(ledger: Path) -> BinaryIO:
    """One server per ledger: a second one would compete for the same ATMs' journal."""
    path = ledger.with_name(ledger.stem + ".servidor.lock")
    handle = open(path, "a+b")  # noqa: SIM115 - held for the server's life
    try:
        portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
    except portalocker.LockException:
        handle.close()
        raise ServerLockError(f"{ledger}: otro servidor ya está usando este archivo de cuentas") from None
    return handle


def serve(config: ServerConfig, psk: bytes) -> int:
    """Run the server until Ctrl+C or SIGTERM. Returns the exit status."""
    setup_logging(config.log_file, detailed=config.detailed_log)
    server_lock = acquire_server_lock(config.ledger)
    started = time.perf_counter()
    store = Store.open(config.ledger, mode=StoreMode.RECOVER)
    acceptor = Acceptor(config, store, psk, server_lock)
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

"""The ATM's worker thread against a small fake bank over real sockets on 127.0.0.1.

The fake speaks real ATM2 through ``common.endpoints.ServerConnection``
and can misbehave on purpose: answer slowly, apply a transaction and
then drop the connection before replying (a lost reply), refuse
connections or terminals, hold another key, rotate the ATM's key, or
suspend its PIN checks.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import stat
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from atm_gui.events import (
    BankStatus,
    CloseSession,
    Connected,
    Disconnected,
    Event,
    OpenSession,
    ReceiptSaved,
    Reconnecting,
    Reply,
    RequestFailed,
    SaveReceipt,
    SendRequest,
)
from atm_gui.key_store import KeyStore
from atm_gui.model import OutageReason
from atm_gui.wording import bank_status
from atm_gui.worker import Worker
from common.endpoints import HelloReceived, MessageReceived, ServerConnection, SessionConfirmed
from common.errors import ProtocolError
from common.keys import TerminalKey, load_terminal_key, write_terminal_key
from common.messages import CambiarPin, Consultar, Depositar, Identificar, Movimientos, Retirar, encode

pytestmark = pytest.mark.timeout(60)

TERMINAL_KEY = TerminalKey("CAJERO-01", 1, bytes(range(32)))
CARD = "1111111111111111"
PIN = "1234"


class FakeBankServer:
    """A threaded ATM2 server with one account, idempotent transactions and its terminals' keys.

    ``keys`` holds every (terminal, version) it accepts; ``pending`` a
    rotation under way, handed over by RENOVAR_LLAVE and made current by
    the first session that proves it (as PROTOCOL.md section 6 says).
    """

    def __init__(self, terminal_key: TerminalKey = TERMINAL_KEY, listen: bool = True) -> None:
        self.terminal_key = terminal_key
        self.keys: dict[tuple[str, int], bytes] = {(terminal_key.terminal_id, terminal_key.version): terminal_key.key}
        self.pending: TerminalKey | None = None
        self.hellos: list[tuple[str, int]] = []
        self.suspended = False
        self.balance = Decimal("1000.00")
        self.pin = PIN
        self.applied: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[int, dict[str, Any]]] = []
        self.delay: dict[str, float] = {}
        self.delay_once: dict[str, float] = {}  # delays the next request of that op only
        self.lose_reply: set[str] = set()  # ops whose next reply is lost after applying
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._connection_no = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        if listen:
            self.listen()

    def rotate(self) -> TerminalKey:
        """``cajero-rotar``: a pending key with the next version, accepted beside the current one."""
        with self._lock:
            current = max(v for (t, v) in self.keys if t == self.terminal_key.terminal_id)
            self.pending = TerminalKey.generate(self.terminal_key.terminal_id, current + 1)
            self.keys[(self.pending.terminal_id, self.pending.version)] = self.pending.key
            return self.pending

    def listen(self) -> None:
        self.sock.listen()
        self.sock.settimeout(0.1)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        with self._lock:
            for c in self._conns:
                c.close()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> FakeBankServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ops(self) -> list[str]:
        return [m["op"] for _, m in self.requests]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connection_no += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, self._connection_no), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, connection_no: int) -> None:
        server = ServerConnection()
        conn.settimeout(0.2)
        identified = False
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                try:
                    events = server.receive_data(data)
                except ProtocolError:
                    return
                for event in events:
                    if isinstance(event, HelloReceived) and not self._accept_hello(server, event):
                        return  # refused: closed before any ServerHello
                    if isinstance(event, SessionConfirmed):
                        self._confirm(event)
                conn.sendall(server.data_to_send())
                for event in events:
                    if isinstance(event, MessageReceived):
                        identified = self._serve_request(conn, server, connection_no, event, identified)
                        if identified is None:
                            return
        except OSError:
            return
        finally:
            conn.close()

    def _accept_hello(self, server: ServerConnection, hello: HelloReceived) -> bool:
        with self._lock:
            self.hellos.append((hello.terminal_id, hello.version))
            key = self.keys.get((hello.terminal_id, hello.version))
        if key is None:
            server.close()
            return False
        server.accept(key)
        return True

    def _confirm(self, event: SessionConfirmed) -> None:
        """The first session under the pending version: it becomes current, the old one is refused."""
        with self._lock:
            if self.pending is not None and event.version == self.pending.version:
                old = [k for k in self.keys if k[0] == event.terminal_id and k[1] != event.version]
                for k in old:
                    del self.keys[k]
                self.pending = None

    def _serve_request(
        self,
        conn: socket.socket,
        server: ServerConnection,
        connection_no: int,
        event: MessageReceived,
        identified: bool,
    ) -> bool | None:
        """Answer one request; ``None`` when the connection must end (SALIR, or a reply lost on purpose)."""
        message = json.loads(event.text)
        op = message.get("op")
        with self._lock:
            self.requests.append((connection_no, message))
            once = self.delay_once.pop(op, 0.0)
        if self.delay.get(op) or once:
            self._stop.wait(self.delay.get(op, 0.0) + once)
        response, identified = self._answer(message, identified)
        if op in self.lose_reply:
            self.lose_reply.discard(op)
            return None  # applied, but the reply never leaves
        server.send_message(encode(response))
        conn.sendall(server.data_to_send())
        return None if op == "SALIR" else identified

    def _answer(self, m: dict[str, Any], identified: bool) -> tuple[dict[str, Any], bool]:
        op = m.get("op")
        with self._lock:
            if op == "SALIR":
                return {"ok": True}, identified
            if op == "RENOVAR_LLAVE":
                if self.pending is not None:
                    return {"ok": True, "version": self.pending.version, "llave": self.pending.key.hex()}, identified
                return {"ok": True, "version": self.terminal_key.version}, identified
            if op == "IDENTIFICAR" and self.suspended:
                return {
                    "ok": False,
                    "error": "CAJERO_SUSPENDIDO",
                    "mensaje": "Este cajero no puede verificar PIN por ahora.",
                }, identified
            if op == "IDENTIFICAR":
                if m.get("pin") != self.pin:
                    return {
                        "ok": False,
                        "error": "PIN_INCORRECTO",
                        "mensaje": "El PIN es incorrecto.",
                        "intentos_restantes": 2,
                    }, identified
                return {"ok": True, "titular": "Gustavo Ali Gómez Trejo"}, True
            if not identified:
                return {"ok": False, "error": "NO_IDENTIFICADO", "mensaje": "Identifíquese."}, identified
            if op == "CONSULTAR":
                return {"ok": True, "titular": "G", "tarjeta": "************1111", "saldo": f"{self.balance:.2f}"}, True
            if op in ("DEPOSITAR", "RETIRAR"):
                earlier = self.applied.get(m["id"])
                if earlier is not None:
                    return {**earlier, "repetida": True}, True
                amount = Decimal(m["monto"])
                self.balance += amount if op == "DEPOSITAR" else -amount
                response = {"ok": True, "id": m["id"], "saldo": f"{self.balance:.2f}"}
                self.applied[m["id"]] = response
                return response, True
            if op == "CAMBIAR_PIN":
                if m.get("pin_actual") != self.pin:
                    return {"ok": False, "error": "PIN_INCORRECTO", "mensaje": "El PIN es incorrecto."}, True
                self.pin = m["pin_nuevo"]
                return {"ok": True}, True
            return {"ok": True, "movimientos": []}, True


def make_worker(port: int, tmp_path: Path, key: TerminalKey = TERMINAL_KEY, **kwargs: Any) -> Worker:
    """A worker whose key file (a real one, in its own folder) holds ``key``."""
    folder = tmp_path / f"cajero-{time.monotonic_ns()}"
    folder.mkdir()
    write_terminal_key(folder / "llave.key", key)
    kwargs.setdefault("retry_every", 0.2)
    kwargs.setdefault("timeout", 3.0)
    return Worker("127.0.0.1", port, KeyStore(folder / "llave.key"), tmp_path / "recibos", **kwargs)


E = TypeVar("E", bound=Event)


def wait_for(worker: Worker, kind: type[E], timeout: float = 10.0, seen: list[Event] | None = None) -> E:
    """The next event of class ``kind``; the events before it go to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind.__name__} event in time")
        try:
            event = worker.events.get(timeout=left)
        except queue.Empty:
            continue
        if isinstance(event, kind):
            return event
        if seen is not None:
            seen.append(event)


@pytest.fixture
def bank():
    with FakeBankServer() as server:
        yield server


@pytest.fixture
def worker_factory(tmp_path):
    workers: list[Worker] = []

    def factory(port: int, **kwargs: Any) -> Worker:
        w = make_worker(port, tmp_path, **kwargs)
        w.start()
        workers.append(w)
        return w

    yield factory
    for w in workers:
        w.stop()
        assert not w.alive


def open_session(worker: Worker, session_no: int = 1) -> None:
    worker.send(OpenSession(session_no))
    assert wait_for(worker, Connected).session_no == session_no
    worker.send(SendRequest(session_no, 1, Identificar(CARD, PIN)))
    assert wait_for(worker, Reply).response["ok"] is True


def test_probe_at_start_reports_online_and_says_salir(bank, worker_factory):
    worker = worker_factory(bank.port)
    status = wait_for(worker, BankStatus)
    assert status.online is True and "En línea" in bank_status(status.online, status.reason, status.destination)
    deadline = time.monotonic() + 5
    while bank.ops() != ["RENOVAR_LLAVE", "SALIR"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bank.ops() == ["RENOVAR_LLAVE", "SALIR"]  # after every handshake: any new key?
    assert bank.hellos == [("CAJERO-01", 1)]


def test_one_connection_per_session_closed_with_salir(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker)
    worker.send(SendRequest(1, 2, Consultar()))
    assert wait_for(worker, Reply).response["saldo"] == "1000.00"
    worker.send(CloseSession(1))
    worker.stop()
    per_connection: dict[int, list[str]] = {}
    for n, m in bank.requests:
        per_connection.setdefault(n, []).append(m["op"])
    assert list(per_connection.values()) == [  # the probe, then the session
        ["RENOVAR_LLAVE", "SALIR"],
        ["RENOVAR_LLAVE", "IDENTIFICAR", "CONSULTAR", "SALIR"],
    ]


def test_lost_deposit_reply_is_retried_with_the_same_id_and_applied_once(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker)
    bank.lose_reply.add("DEPOSITAR")
    worker.send(SendRequest(1, 2, Depositar(Decimal("500.00"), "abc123")))
    assert wait_for(worker, Reconnecting).attempt == 1
    response = wait_for(worker, Reply).response
    assert response == {"ok": True, "id": "abc123", "saldo": "1500.00", "repetida": True}
    assert bank.balance == Decimal("1500.00")
    tail = [(n, m["op"], m.get("id")) for n, m in bank.requests if m["op"] != "RENOVAR_LLAVE"][-4:]
    assert [t[1:] for t in tail] == [
        ("IDENTIFICAR", None),
        ("DEPOSITAR", "abc123"),
        ("IDENTIFICAR", None),
        ("DEPOSITAR", "abc123"),
    ]
    assert tail[0][0] == tail[1][0] != tail[2][0] == tail[3][0]  # the retry is on a new connection


def test_lost_pin_change_reply_is_reported_as_done(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker)
    bank.lose_reply.add("CAMBIAR_PIN")
    worker.send(SendRequest(1, 2, CambiarPin(PIN, "5678")))
    assert wait_for(worker, Reply).response == {"ok": True}
    assert bank.pin == "5678"
    assert bank.ops().count("CAMBIAR_PIN") == 1
    # and the worker now re-identifies with the new PIN
    bank.lose_reply.add("CONSULTAR")
    worker.send(SendRequest(1, 3, Consultar()))
    assert wait_for(worker, Reply).response["ok"] is True


def test_unreachable_bank_then_automatic_reconnection(worker_factory):
    with FakeBankServer(listen=False) as bank:
        worker = worker_factory(bank.port)
        status = wait_for(worker, BankStatus)
        assert status.online is False and status.reason is OutageReason.UNREACHABLE
        worker.send(OpenSession(1))
        assert wait_for(worker, Disconnected) == Disconnected(session_no=1, reason=OutageReason.UNREACHABLE)
        bank.listen()
        assert wait_for(worker, Connected).session_no == 1


def test_bank_going_away_mid_withdrawal_gives_up_with_fallo(worker_factory):
    bank = FakeBankServer()
    try:
        worker = worker_factory(bank.port, retry_for=1.0)
        open_session(worker)
        bank.lose_reply.add("RETIRAR")
        bank.close()
        worker.send(SendRequest(1, 2, Retirar(Decimal("200.00"), "x1")))
        assert wait_for(worker, RequestFailed) == RequestFailed(session_no=1, correlation_id=2)
    finally:
        bank.close()


def test_wrong_key_is_reported_as_not_matching(worker_factory):
    """The bank holds another key for this terminal: its proof does not match ours."""
    with FakeBankServer(TerminalKey("CAJERO-01", 1, bytes(32))) as bank:
        worker = worker_factory(bank.port)
        assert wait_for(worker, BankStatus).reason is OutageReason.WRONG_KEY
        worker.send(OpenSession(1))
        assert wait_for(worker, Disconnected).reason is OutageReason.WRONG_KEY
        assert "no coincide" in bank_status(False, OutageReason.WRONG_KEY, "x")


def test_unknown_or_revoked_terminal_is_reported_as_refused(worker_factory):
    """The bank closes before its ServerHello (unknown id, revoked, old version): refused, not unreachable."""
    with FakeBankServer(TerminalKey("CAJERO-99", 1, bytes(32))) as bank:
        worker = worker_factory(bank.port)
        assert wait_for(worker, BankStatus).reason is OutageReason.REFUSED
        assert bank.hellos and bank.hellos[0] == ("CAJERO-01", 1)
        worker.send(OpenSession(1))
        assert wait_for(worker, Disconnected).reason is OutageReason.REFUSED
        bank.keys[("CAJERO-01", 1)] = TERMINAL_KEY.key  # enrolled meanwhile: the ATM comes back by itself
        assert wait_for(worker, Connected).session_no == 1


def test_revoked_mid_session_ends_the_request_and_says_refused(bank, worker_factory):
    worker = worker_factory(bank.port, retry_for=2.0)
    open_session(worker)
    bank.lose_reply.add("CONSULTAR")  # the connection drops, as a revocation closes it
    bank.keys.clear()  # ... and every new handshake is refused
    worker.send(SendRequest(1, 2, Consultar()))
    seen: list[Event] = []
    assert wait_for(worker, RequestFailed, seen=seen) == RequestFailed(session_no=1, correlation_id=2)
    assert BankStatus(False, OutageReason.REFUSED, worker.destination) in seen


def test_missing_or_foreign_key_file_is_reported_as_no_key_then_picked_up(bank, tmp_path):
    """No key file at start: out of service; the file appears (another terminal's, then ours): online."""
    path = tmp_path / "llave.key"
    worker = Worker("127.0.0.1", bank.port, KeyStore(path, "CAJERO-01"), tmp_path, retry_every=0.2)
    worker.start()
    try:
        assert wait_for(worker, BankStatus).reason is OutageReason.NO_KEY
        write_terminal_key(path, TerminalKey("CAJERO-07", 1, bytes(32)))  # another terminal's key: still no
        time.sleep(0.6)
        assert bank.hellos == []
        write_terminal_key(path, TERMINAL_KEY)
        status = wait_for(worker, BankStatus)
        assert status.online is True and status.terminal_id == "CAJERO-01"
    finally:
        worker.stop()


def test_a_bug_while_connecting_does_not_kill_the_worker(bank, tmp_path):
    """An unexpected error in the probe (say, a module missing from a build): logged, out of service, retried."""

    class Flaky(KeyStore):
        failures = 2

        def load(self) -> TerminalKey:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("falla de prueba")
            return super().load()

    write_terminal_key(tmp_path / "llave.key", TERMINAL_KEY)
    worker = Worker("127.0.0.1", bank.port, Flaky(tmp_path / "llave.key"), tmp_path, retry_every=0.2)
    worker.start()
    try:
        assert wait_for(worker, BankStatus).online is False
        assert wait_for(worker, BankStatus).online is True
        assert worker.alive
    finally:
        worker.stop()


def test_rotation_stores_the_new_key_before_using_it(bank, worker_factory, caplog):
    """RENOVAR_LLAVE hands over a pending key: written to the file, used from the next connection on."""
    caplog.set_level(logging.INFO, logger="cajero")
    worker = worker_factory(bank.port, probe_every=0.3)
    assert wait_for(worker, BankStatus).online is True
    key_file = worker._keys.path
    new_key = bank.rotate()
    deadline = time.monotonic() + 10
    while load_terminal_key(key_file) != new_key and time.monotonic() < deadline:
        time.sleep(0.05)
    assert load_terminal_key(key_file) == new_key
    if os.name != "nt":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    while ("CAJERO-01", 2) not in bank.hellos and time.monotonic() < deadline:
        time.sleep(0.05)
    first_new = bank.hellos.index(("CAJERO-01", 2))
    assert set(bank.hellos[:first_new]) == {("CAJERO-01", 1)}
    assert ("CAJERO-01", 1) not in bank.hellos[first_new:]  # never back to the old key
    open_session(worker)  # and a customer is served under the new one
    assert bank.pending is None and ("CAJERO-01", 1) not in bank.keys
    assert new_key.key.hex() not in caplog.text and "versión 2" in caplog.text


def test_a_key_that_cannot_be_stored_leaves_the_old_one_in_use(bank, worker_factory, caplog):
    """The new key cannot be written: the old one keeps working (the bank accepts both), and the log says why."""
    worker = worker_factory(bank.port, probe_every=0.3)
    assert wait_for(worker, BankStatus).online is True
    key_file = worker._keys.path
    (key_file.parent / (key_file.name + ".tmp")).mkdir()  # the temporary file cannot be made, even by root
    bank.rotate()
    deadline = time.monotonic() + 10
    while "no se pudo guardar la llave nueva" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "no se pudo guardar la llave nueva" in caplog.text
    assert load_terminal_key(key_file) == TERMINAL_KEY
    open_session(worker)
    assert set(bank.hellos) == {("CAJERO-01", 1)}


def test_suspended_terminal_answer_reaches_the_session(bank, worker_factory):
    worker = worker_factory(bank.port)
    bank.suspended = True
    worker.send(OpenSession(1))
    assert wait_for(worker, Connected).session_no == 1
    worker.send(SendRequest(1, 1, Identificar(CARD, PIN)))
    assert wait_for(worker, Reply).response["error"] == "CAJERO_SUSPENDIDO"


def test_receipt_is_saved_as_a_text_file(bank, worker_factory, tmp_path):
    worker = worker_factory(bank.port)
    worker.send(SaveReceipt(1, "../recibo-1.txt", "BANCO\nMonto: $500.00\n"))
    saved = wait_for(worker, ReceiptSaved)
    path = Path(saved.path)
    assert path == tmp_path / "recibos" / "recibo-1.txt"
    assert path.read_text(encoding="utf-8") == "BANCO\nMonto: $500.00\n"
    if os.name != "nt":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a receipt names a card and a balance


def test_stale_session_requests_are_ignored(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker, session_no=1)
    worker.send(CloseSession(1))
    worker.send(SendRequest(1, 2, Consultar()))
    worker.send(OpenSession(2))
    assert wait_for(worker, Connected).session_no == 2
    assert "CONSULTAR" not in bank.ops()


def test_idle_probe_notices_the_bank_going_away_and_coming_back(worker_factory):
    bank = FakeBankServer()
    try:
        worker = worker_factory(bank.port, probe_every=0.3)
        assert wait_for(worker, BankStatus).online is True
        bank.close()
        assert wait_for(worker, BankStatus).online is False
    finally:
        bank.close()


@pytest.mark.timeout(90)
def test_real_bank_closing_an_idle_connection_is_transparent(tmp_path, worker_factory):
    """The real bank drops a connection idle for 1 s; the next deposit reconnects, re-identifies, lands once."""
    from devtools.bank_process import start_bank

    real = start_bank(tmp_path / "banco", extra_args=["--inactividad", "1"])
    try:
        assert real.terminal_key is not None
        worker = worker_factory(real.port, key=real.terminal_key)
        open_session(worker)
        time.sleep(2.0)
        worker.send(SendRequest(1, 2, Depositar(Decimal("100.00"), "idle-1")))
        seen: list[Event] = []
        response = wait_for(worker, Reply, timeout=30, seen=seen).response
        assert response["ok"] is True and response["saldo"] == "234544.00"
        assert any(isinstance(e, Reconnecting) for e in seen)
        worker.send(SendRequest(1, 3, Movimientos(10)))
        movements = wait_for(worker, Reply, timeout=30).response["movimientos"]
        assert [(m["tipo"], m["monto"]) for m in movements] == [("DEPOSITO", "100.00")]
        worker.send(CloseSession(1))
    finally:
        real.stop()


@pytest.mark.timeout(90)
def test_rotation_at_a_real_bank_end_to_end(tmp_path, worker_factory):
    """cajero-rotar while the ATM runs: it takes the key, switches to it, and the old one is refused after."""
    from atm_gui.bank_client import BankClient, BankRefused
    from devtools.bank_process import start_bank

    real = start_bank(tmp_path / "banco")
    try:
        assert real.terminal_key is not None
        worker = worker_factory(real.port, key=real.terminal_key, probe_every=0.3)
        assert wait_for(worker, BankStatus).online is True
        key_file = worker._keys.path
        rotate = _bank_admin(real, "cajero-rotar", "CAJERO-01")
        assert rotate.returncode == 0, rotate.stderr
        deadline = time.monotonic() + 20
        while load_terminal_key(key_file).version == 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        new_key = load_terminal_key(key_file)
        assert new_key.version == 2 and new_key.key != real.terminal_key.key
        open_session(worker)  # a customer under the new key: the bank now holds version 2 as current
        worker.send(SendRequest(1, 2, Consultar()))
        assert wait_for(worker, Reply).response["saldo"] == "234444.00"
        worker.send(CloseSession(1))
        listing = _bank_admin(real, "cajeros").stdout
        assert "CAJERO-01" in listing and new_key.key.hex() not in listing
        old = BankClient("127.0.0.1", real.port, real.terminal_key, timeout=5)
        refused_at = time.monotonic() + 3.0  # a registry change reaches the running bank within 2 s
        while True:  # the old version is refused from now on
            try:
                old.connect()
            except BankRefused:
                break
            old.close()
            assert time.monotonic() < refused_at, "the old key version is still accepted after the switch"
            time.sleep(0.2)
    finally:
        real.stop()


@pytest.mark.timeout(90)
def test_revocation_at_a_real_bank_ends_the_session_and_says_refused(tmp_path, worker_factory):
    from devtools.bank_process import start_bank

    real = start_bank(tmp_path / "banco")
    try:
        assert real.terminal_key is not None
        worker = worker_factory(real.port, key=real.terminal_key, retry_for=5.0)
        open_session(worker)
        revoke = _bank_admin(real, "cajero-baja", "CAJERO-01")
        assert revoke.returncode == 0, revoke.stderr
        time.sleep(3.0)  # the bank closes a revoked terminal's connections within 2 s
        worker.send(SendRequest(1, 2, Consultar()))
        seen: list[Event] = []
        assert wait_for(worker, RequestFailed, timeout=30, seen=seen) == RequestFailed(1, 2)
        assert BankStatus(False, OutageReason.REFUSED, worker.destination) in seen
    finally:
        real.stop()


def _bank_admin(bank: Any, *args: str) -> Any:
    """An administration command as an operator types it, in the bank's folder."""
    import subprocess
    import sys

    from devtools.bank_process import server_env

    return subprocess.run(
        [sys.executable, "-m", "bank_server", *args],
        cwd=bank.folder,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_reply_slower_than_the_time_limit_is_retried_with_the_same_id(bank, worker_factory):
    worker = worker_factory(bank.port, timeout=0.5)
    open_session(worker)
    bank.delay_once["RETIRAR"] = 1.0
    worker.send(SendRequest(1, 2, Retirar(Decimal("200.00"), "lento-1")))
    response = wait_for(worker, Reply).response
    assert response["ok"] is True and response["saldo"] == "800.00" and response["id"] == "lento-1"
    time.sleep(1.0)  # let the slow first attempt finish at the bank too
    assert bank.balance == Decimal("800.00")
    assert [m.get("id") for _, m in bank.requests if m["op"] == "RETIRAR"] == ["lento-1", "lento-1"]

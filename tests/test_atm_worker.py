"""The ATM's worker thread against a small fake bank over real sockets on 127.0.0.1.

The fake speaks real ATM1 through ``common.connection.ServerConnection``
and can misbehave on purpose: answer slowly, apply a transaction and
then drop the connection before replying (a lost reply), refuse
connections, or hold another key.
"""

from __future__ import annotations

import json
import queue
import socket
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
from atm_gui.model import OutageReason
from atm_gui.wording import bank_status
from atm_gui.worker import Worker
from common.connection import MessageReceived, ServerConnection
from common.errors import KeyFileError, ProtocolError
from common.messages import CambiarPin, Consultar, Depositar, Identificar, Movimientos, Retirar, encode

pytestmark = pytest.mark.timeout(60)

PSK = bytes(range(32))
CARD = "1111111111111111"
PIN = "1234"


class FakeBankServer:
    """A threaded ATM1 server with one account and idempotent transactions."""

    def __init__(self, psk: bytes = PSK, listen: bool = True) -> None:
        self.psk = psk
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
        server = ServerConnection(self.psk)
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
                conn.sendall(server.data_to_send())
                for event in events:
                    if not isinstance(event, MessageReceived):
                        continue
                    message = json.loads(event.text)
                    op = message.get("op")
                    with self._lock:
                        self.requests.append((connection_no, message))
                    with self._lock:
                        once = self.delay_once.pop(op, 0.0)
                    if self.delay.get(op) or once:
                        self._stop.wait(self.delay.get(op, 0.0) + once)
                    response, identified = self._answer(message, identified)
                    if op in self.lose_reply:
                        self.lose_reply.discard(op)
                        return  # applied, but the reply never leaves
                    server.send_message(encode(response))
                    conn.sendall(server.data_to_send())
                    if op == "SALIR":
                        return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, m: dict[str, Any], identified: bool) -> tuple[dict[str, Any], bool]:
        op = m.get("op")
        with self._lock:
            if op == "SALIR":
                return {"ok": True}, identified
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


def make_worker(port: int, tmp_path: Path, psk: bytes = PSK, **kwargs: Any) -> Worker:
    def load_key() -> bytes:
        return psk

    kwargs.setdefault("retry_every", 0.2)
    kwargs.setdefault("timeout", 3.0)
    return Worker("127.0.0.1", port, load_key, tmp_path / "recibos", **kwargs)


E = TypeVar("E", bound=Event)


def wait_for(worker: Worker, kind: type[E], timeout: float = 10.0, seen: list[type] | None = None) -> E:
    """The next event of class ``kind``; the classes of earlier events go to ``seen``."""
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
            seen.append(type(event))


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
    while bank.ops() != ["SALIR"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bank.ops() == ["SALIR"]


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
    assert list(per_connection.values()) == [["SALIR"], ["IDENTIFICAR", "CONSULTAR", "SALIR"]]  # probe, session


def test_lost_deposit_reply_is_retried_with_the_same_id_and_applied_once(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker)
    bank.lose_reply.add("DEPOSITAR")
    worker.send(SendRequest(1, 2, Depositar(Decimal("500.00"), "abc123")))
    assert wait_for(worker, Reconnecting).attempt == 1
    response = wait_for(worker, Reply).response
    assert response == {"ok": True, "id": "abc123", "saldo": "1500.00", "repetida": True}
    assert bank.balance == Decimal("1500.00")
    tail = [(n, m["op"], m.get("id")) for n, m in bank.requests][-4:]
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


def test_wrong_key_is_reported_as_llave(worker_factory):
    with FakeBankServer(psk=bytes(32)) as bank:
        worker = worker_factory(bank.port)
        assert wait_for(worker, BankStatus).reason is OutageReason.WRONG_KEY
        worker.send(OpenSession(1))
        assert wait_for(worker, Disconnected).reason is OutageReason.WRONG_KEY


def test_missing_key_file_is_reported_as_llave(bank, tmp_path):
    def no_key() -> bytes:
        raise KeyFileError("llave.key: no existe el archivo de la llave.")

    worker = Worker("127.0.0.1", bank.port, no_key, tmp_path, retry_every=0.2)
    worker.start()
    try:
        assert wait_for(worker, BankStatus).reason is OutageReason.WRONG_KEY
    finally:
        worker.stop()


def test_receipt_is_saved_as_a_text_file(bank, worker_factory, tmp_path):
    worker = worker_factory(bank.port)
    worker.send(SaveReceipt(1, "../recibo-1.txt", "BANCO\nMonto: $500.00\n"))
    saved = wait_for(worker, ReceiptSaved)
    path = Path(saved.path)
    assert path == tmp_path / "recibos" / "recibo-1.txt"
    assert path.read_text(encoding="utf-8") == "BANCO\nMonto: $500.00\n"


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
        worker = worker_factory(real.port)
        open_session(worker)
        time.sleep(2.0)
        worker.send(SendRequest(1, 2, Depositar(Decimal("100.00"), "idle-1")))
        seen: list[type] = []
        response = wait_for(worker, Reply, timeout=30, seen=seen).response
        assert response["ok"] is True and response["saldo"] == "234544.00"
        assert Reconnecting in seen
        worker.send(SendRequest(1, 3, Movimientos(10)))
        movements = wait_for(worker, Reply, timeout=30).response["movimientos"]
        assert [(m["tipo"], m["monto"]) for m in movements] == [("DEPOSITO", "100.00")]
        worker.send(CloseSession(1))
    finally:
        real.stop()


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

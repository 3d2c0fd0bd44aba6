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
from typing import Any

import pytest

from atm_gui.worker import Worker
from common.connection import MessageReceived, ServerConnection
from common.errors import KeyFileError, ProtocolError
from common.messages import encode

pytestmark = pytest.mark.timeout(60)

PSK = bytes(range(32))
CARD = "1111111111111111"
PIN = "1234"


class FakeBankServer:
    """A threaded ATM1 server with one account and idempotent transactions."""

    def __init__(self, psk: bytes = PSK, listen: bool = True) -> None:
        self.psk = psk
        self.saldo = Decimal("1000.00")
        self.pin = PIN
        self.aplicadas: dict[str, dict[str, Any]] = {}
        self.peticiones: list[tuple[int, dict[str, Any]]] = []
        self.demora: dict[str, float] = {}
        self.demora_una_vez: dict[str, float] = {}  # delays the next request of that op only
        self.perder_respuesta: set[str] = set()  # ops whose next reply is lost after applying
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._numero = 0
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
        return [m["op"] for _, m in self.peticiones]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._numero += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, self._numero), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, numero: int) -> None:
        server = ServerConnection(self.psk)
        conn.settimeout(0.2)
        identificado = False
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
                    mensaje = json.loads(event.text)
                    op = mensaje.get("op")
                    with self._lock:
                        self.peticiones.append((numero, mensaje))
                    with self._lock:
                        una_vez = self.demora_una_vez.pop(op, 0.0)
                    if self.demora.get(op) or una_vez:
                        self._stop.wait(self.demora.get(op, 0.0) + una_vez)
                    respuesta, identificado = self._atender(mensaje, identificado)
                    if op in self.perder_respuesta:
                        self.perder_respuesta.discard(op)
                        return  # applied, but the reply never leaves
                    server.send_message(encode(respuesta))
                    conn.sendall(server.data_to_send())
                    if op == "SALIR":
                        return
        except OSError:
            return
        finally:
            conn.close()

    def _atender(self, m: dict[str, Any], identificado: bool) -> tuple[dict[str, Any], bool]:
        op = m.get("op")
        with self._lock:
            if op == "SALIR":
                return {"ok": True}, identificado
            if op == "IDENTIFICAR":
                if m.get("pin") != self.pin:
                    return {
                        "ok": False,
                        "error": "PIN_INCORRECTO",
                        "mensaje": "El PIN es incorrecto.",
                        "intentos_restantes": 2,
                    }, identificado
                return {"ok": True, "titular": "Gustavo Ali Gómez Trejo"}, True
            if not identificado:
                return {"ok": False, "error": "NO_IDENTIFICADO", "mensaje": "Identifíquese."}, identificado
            if op == "CONSULTAR":
                return {"ok": True, "titular": "G", "tarjeta": "************1111", "saldo": f"{self.saldo:.2f}"}, True
            if op in ("DEPOSITAR", "RETIRAR"):
                previa = self.aplicadas.get(m["id"])
                if previa is not None:
                    return {**previa, "repetida": True}, True
                monto = Decimal(m["monto"])
                self.saldo += monto if op == "DEPOSITAR" else -monto
                respuesta = {"ok": True, "id": m["id"], "saldo": f"{self.saldo:.2f}"}
                self.aplicadas[m["id"]] = respuesta
                return respuesta, True
            if op == "CAMBIAR_PIN":
                if m.get("pin_actual") != self.pin:
                    return {"ok": False, "error": "PIN_INCORRECTO", "mensaje": "El PIN es incorrecto."}, True
                self.pin = m["pin_nuevo"]
                return {"ok": True}, True
            return {"ok": True, "movimientos": []}, True


def make_worker(port: int, tmp_path: Path, psk: bytes = PSK, **kwargs: Any) -> Worker:
    def cargar() -> bytes:
        return psk

    kwargs.setdefault("reintento", 0.2)
    kwargs.setdefault("timeout", 3.0)
    return Worker("127.0.0.1", port, cargar, tmp_path / "recibos", **kwargs)


def wait_for(worker: Worker, kind: str, timeout: float = 10.0, seen: list[str] | None = None) -> dict[str, Any]:
    """The next result of ``kind``; the kinds of earlier results go to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        restante = deadline - time.monotonic()
        if restante <= 0:
            raise AssertionError(f"no {kind} result in time")
        try:
            k, payload = worker.resultados.get(timeout=restante)
        except queue.Empty:
            continue
        if k == kind:
            return payload
        if seen is not None:
            seen.append(k)


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
        w.detener()
        assert not w.vivo


def open_session(worker: Worker, sesion: int = 1) -> None:
    worker.enviar("abrir", {"sesion": sesion})
    assert wait_for(worker, "conectado")["sesion"] == sesion
    worker.enviar(
        "pedir", {"sesion": sesion, "op": "IDENTIFICAR", "mensaje": {"op": "IDENTIFICAR", "tarjeta": CARD, "pin": PIN}}
    )
    assert wait_for(worker, "respuesta")["respuesta"]["ok"] is True


def test_probe_at_start_reports_online_and_says_salir(bank, worker_factory):
    worker = worker_factory(bank.port)
    estado = wait_for(worker, "estado")
    assert estado["en_linea"] is True and "En línea" in estado["texto"]
    deadline = time.monotonic() + 5
    while bank.ops() != ["SALIR"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bank.ops() == ["SALIR"]


def test_one_connection_per_session_closed_with_salir(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker)
    worker.enviar("pedir", {"sesion": 1, "op": "CONSULTAR", "mensaje": {"op": "CONSULTAR"}})
    assert wait_for(worker, "respuesta")["respuesta"]["saldo"] == "1000.00"
    worker.enviar("cerrar", {"sesion": 1})
    worker.detener()
    por_conexion: dict[int, list[str]] = {}
    for n, m in bank.peticiones:
        por_conexion.setdefault(n, []).append(m["op"])
    assert list(por_conexion.values()) == [["SALIR"], ["IDENTIFICAR", "CONSULTAR", "SALIR"]]  # probe, session


def test_lost_deposit_reply_is_retried_with_the_same_id_and_applied_once(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker)
    bank.perder_respuesta.add("DEPOSITAR")
    mensaje = {"op": "DEPOSITAR", "monto": "500.00", "id": "abc123"}
    worker.enviar("pedir", {"sesion": 1, "op": "DEPOSITAR", "mensaje": mensaje})
    assert wait_for(worker, "reconectando")["intento"] == 1
    respuesta = wait_for(worker, "respuesta")["respuesta"]
    assert respuesta == {"ok": True, "id": "abc123", "saldo": "1500.00", "repetida": True}
    assert bank.saldo == Decimal("1500.00")
    tail = [(n, m["op"], m.get("id")) for n, m in bank.peticiones][-4:]
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
    bank.perder_respuesta.add("CAMBIAR_PIN")
    mensaje = {"op": "CAMBIAR_PIN", "pin_actual": PIN, "pin_nuevo": "5678"}
    worker.enviar("pedir", {"sesion": 1, "op": "CAMBIAR_PIN", "mensaje": mensaje})
    assert wait_for(worker, "respuesta")["respuesta"] == {"ok": True}
    assert bank.pin == "5678"
    assert bank.ops().count("CAMBIAR_PIN") == 1
    # and the worker now re-identifies with the new PIN
    bank.perder_respuesta.add("CONSULTAR")
    worker.enviar("pedir", {"sesion": 1, "op": "CONSULTAR", "mensaje": {"op": "CONSULTAR"}})
    assert wait_for(worker, "respuesta")["respuesta"]["ok"] is True


def test_unreachable_bank_then_automatic_reconnection(worker_factory):
    with FakeBankServer(listen=False) as bank:
        worker = worker_factory(bank.port)
        estado = wait_for(worker, "estado")
        assert estado["en_linea"] is False and estado["motivo"] == "inalcanzable"
        worker.enviar("abrir", {"sesion": 1})
        assert wait_for(worker, "sin_conexion") == {"sesion": 1, "motivo": "inalcanzable"}
        bank.listen()
        assert wait_for(worker, "conectado")["sesion"] == 1


def test_bank_going_away_mid_withdrawal_gives_up_with_fallo(worker_factory):
    bank = FakeBankServer()
    try:
        worker = worker_factory(bank.port, reintentar_por=1.0)
        open_session(worker)
        bank.perder_respuesta.add("RETIRAR")
        bank.close()
        worker.enviar(
            "pedir", {"sesion": 1, "op": "RETIRAR", "mensaje": {"op": "RETIRAR", "monto": "200.00", "id": "x1"}}
        )
        assert wait_for(worker, "fallo") == {"sesion": 1, "op": "RETIRAR"}
    finally:
        bank.close()


def test_wrong_key_is_reported_as_llave(worker_factory):
    with FakeBankServer(psk=bytes(32)) as bank:
        worker = worker_factory(bank.port)
        assert wait_for(worker, "estado")["motivo"] == "llave"
        worker.enviar("abrir", {"sesion": 1})
        assert wait_for(worker, "sin_conexion")["motivo"] == "llave"


def test_missing_key_file_is_reported_as_llave(bank, tmp_path):
    def sin_llave() -> bytes:
        raise KeyFileError("llave.key: no existe el archivo de la llave.")

    worker = Worker("127.0.0.1", bank.port, sin_llave, tmp_path, reintento=0.2)
    worker.start()
    try:
        assert wait_for(worker, "estado")["motivo"] == "llave"
    finally:
        worker.detener()


def test_receipt_is_saved_as_a_text_file(bank, worker_factory, tmp_path):
    worker = worker_factory(bank.port)
    worker.enviar("recibo", {"sesion": 1, "nombre": "../recibo-1.txt", "texto": "BANCO\nMonto: $500.00\n"})
    guardado = wait_for(worker, "recibo_guardado")
    ruta = Path(guardado["ruta"])
    assert ruta == tmp_path / "recibos" / "recibo-1.txt"
    assert ruta.read_text(encoding="utf-8") == "BANCO\nMonto: $500.00\n"


def test_stale_session_requests_are_ignored(bank, worker_factory):
    worker = worker_factory(bank.port)
    open_session(worker, sesion=1)
    worker.enviar("cerrar", {"sesion": 1})
    worker.enviar("pedir", {"sesion": 1, "op": "CONSULTAR", "mensaje": {"op": "CONSULTAR"}})
    worker.enviar("abrir", {"sesion": 2})
    assert wait_for(worker, "conectado")["sesion"] == 2
    assert "CONSULTAR" not in bank.ops()


def test_idle_probe_notices_the_bank_going_away_and_coming_back(worker_factory):
    bank = FakeBankServer()
    try:
        worker = worker_factory(bank.port, sondeo=0.3)
        assert wait_for(worker, "estado")["en_linea"] is True
        bank.close()
        assert wait_for(worker, "estado")["en_linea"] is False
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
        mensaje = {"op": "DEPOSITAR", "monto": "100.00", "id": "idle-1"}
        worker.enviar("pedir", {"sesion": 1, "op": "DEPOSITAR", "mensaje": mensaje})
        seen: list[str] = []
        respuesta = wait_for(worker, "respuesta", timeout=30, seen=seen)["respuesta"]
        assert respuesta["ok"] is True and respuesta["saldo"] == "234544.00"
        assert "reconectando" in seen
        worker.enviar("pedir", {"sesion": 1, "op": "MOVIMIENTOS", "mensaje": {"op": "MOVIMIENTOS", "n": 10}})
        movimientos = wait_for(worker, "respuesta", timeout=30)["respuesta"]["movimientos"]
        assert [(m["tipo"], m["monto"]) for m in movimientos] == [("DEPOSITO", "100.00")]
        worker.enviar("cerrar", {"sesion": 1})
    finally:
        real.stop()


def test_a_reply_slower_than_the_time_limit_is_retried_with_the_same_id(bank, worker_factory):
    worker = worker_factory(bank.port, timeout=0.5)
    open_session(worker)
    bank.demora_una_vez["RETIRAR"] = 1.0
    mensaje = {"op": "RETIRAR", "monto": "200.00", "id": "lento-1"}
    worker.enviar("pedir", {"sesion": 1, "op": "RETIRAR", "mensaje": mensaje})
    respuesta = wait_for(worker, "respuesta")["respuesta"]
    assert respuesta["ok"] is True and respuesta["saldo"] == "800.00" and respuesta["id"] == "lento-1"
    time.sleep(1.0)  # let the slow first attempt finish at the bank too
    assert bank.saldo == Decimal("800.00")
    assert [m.get("id") for _, m in bank.peticiones if m["op"] == "RETIRAR"] == ["lento-1", "lento-1"]

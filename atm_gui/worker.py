"""The ATM's one worker thread: it owns the bank connection and does every slow thing.

Why a thread of its own: a socket read may wait seconds (a slow bank, a
time-out, a reconnection), and Tk freezes if its thread waits. So the
Tk thread only puts commands on ``comandos`` and drains ``resultados``
with ``after()``; this thread owns the ``BankClient`` and the key, and
puts nothing but ``(kind, payload)`` tuples of plain data back.

What it decides on its own, because only it sees the socket:

* Reconnection. A request whose connection broke is sent again on a new
  connection, after identifying the card again (one card per connection;
  the card and PIN are kept in memory for the session only, never
  logged). DEPOSITAR and RETIRAR keep their ``id``, so the bank's
  idempotency answers the original result (``repetida``) instead of
  applying the money twice: the customer sees the true outcome.
* CAMBIAR_PIN whose answer was lost: the new PIN is tried first, so a
  change that was applied is reported as done and not tried again.
* Being out of service. When the bank cannot be reached (or holds
  another key) it says so and tries again every few seconds, so the
  ATM comes back by itself; between customers it also looks every
  ``sondeo`` seconds (connect, SALIR), so the welcome screen is honest.

Commands (payloads always carry ``sesion``): ``abrir``, ``pedir``
(``op``, ``mensaje``), ``cerrar``, ``recibo`` (``nombre``, ``texto``),
and ``parar``. Results: ``estado``, ``conectado``, ``sin_conexion``,
``reconectando``, ``respuesta``, ``fallo``, ``recibo_guardado``,
``recibo_error``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atm_gui.bank_client import BankClient, BankError, BankWrongKey
from common.errors import KeyFileError

log = logging.getLogger("cajero.atm")

# Requests that may be sent again after a lost reply without changing the outcome.
REINTENTABLES = frozenset({"CONSULTAR", "MOVIMIENTOS", "DEPOSITAR", "RETIRAR", "CAMBIAR_PIN"})

Resultado = tuple[str, dict[str, Any]]


class _SinConexion(Exception):
    """No connection could be made at all; ``motivo`` is ``inalcanzable`` or ``llave``."""

    def __init__(self, motivo: str) -> None:
        super().__init__(motivo)
        self.motivo = motivo


class _Rechazo(Exception):
    """The bank refused the card again on reconnection (blocked meanwhile, PIN changed)."""

    def __init__(self, respuesta: dict[str, Any]) -> None:
        super().__init__(respuesta.get("error"))
        self.respuesta = respuesta


class Worker:
    """Start with ``start()``, feed ``enviar()``, read ``resultados``, end with ``detener()``."""

    def __init__(
        self,
        host: str,
        port: int,
        cargar_llave: Callable[[], bytes],
        recibos: Path,
        *,
        timeout: float = 10.0,
        reintento: float = 5.0,
        reintentar_por: float = 30.0,
        sondeo: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self._cargar_llave = cargar_llave
        self._recibos = recibos
        self._timeout = timeout
        self._reintento = reintento
        self._reintentar_por = reintentar_por
        self._sondeo = sondeo
        self.comandos: queue.Queue[Resultado] = queue.Queue()
        self.resultados: queue.Queue[Resultado] = queue.Queue()
        self._parar = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cajero-banco", daemon=True)
        self._client: BankClient | None = None
        self._sesion: int | None = None
        self._tarjeta: str | None = None
        self._pin: str | None = None
        self._proximo_intento: float | None = None
        self._en_linea: bool | None = None
        self._motivo = "inalcanzable"

    # -- the Tk thread's side ----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def enviar(self, kind: str, payload: dict[str, Any]) -> None:
        self.comandos.put((kind, payload))

    def detener(self, timeout: float = 5.0) -> None:
        """Stop the thread: it says SALIR to the bank if a session is open, then ends."""
        self._parar.set()
        self.comandos.put(("parar", {}))
        self._thread.join(timeout)

    @property
    def vivo(self) -> bool:
        return self._thread.is_alive()

    # -- the worker thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            self._sondear()
            while not self._parar.is_set():
                espera = None
                if self._proximo_intento is not None:
                    espera = max(0.0, self._proximo_intento - time.monotonic())
                try:
                    kind, payload = self.comandos.get(timeout=espera)
                except queue.Empty:
                    self._reintentar()
                    continue
                if kind == "parar":
                    break
                try:
                    getattr(self, f"_cmd_{kind}")(payload)
                except Exception:  # the thread must outlive any bug: the session is told and ends
                    log.exception("error inesperado al atender %s", kind)
                    self._cerrar_cliente()
                    self._emitir("fallo", sesion=payload.get("sesion"), op=payload.get("op"))
        finally:
            self._salir()

    def _emitir(self, kind: str, **payload: Any) -> None:
        self.resultados.put((kind, payload))

    def _estado(self, en_linea: bool, motivo: str = "") -> None:
        if en_linea == self._en_linea and (en_linea or motivo == self._motivo):
            return
        self._en_linea = en_linea
        self._motivo = motivo or self._motivo
        destino = f"{self.host}:{self.port}"
        if en_linea:
            texto = f"En línea con el banco ({destino})"
            log.info("en línea con el banco %s", destino)
        elif motivo == "llave":
            texto = f"Fuera de servicio: la llave no coincide con la del banco ({destino})"
            log.warning("la llave de este cajero no coincide con la del banco %s", destino)
        else:
            texto = f"Fuera de servicio: sin comunicación con el banco ({destino}); reintentando"
            log.warning("sin comunicación con el banco %s", destino)
        self._emitir("estado", en_linea=en_linea, motivo=motivo, texto=texto)

    def _conectar(self) -> None:
        """Open a connection or raise ``_SinConexion``; reads the key each time so a fixed key file is picked up."""
        self._cerrar_cliente()
        try:
            psk = self._cargar_llave()
        except KeyFileError as exc:
            log.error("%s", exc)
            self._estado(False, "llave")
            raise _SinConexion("llave") from None
        client = BankClient(self.host, self.port, psk, timeout=self._timeout)
        try:
            client.connect()
        except BankWrongKey:
            self._estado(False, "llave")
            raise _SinConexion("llave") from None
        except BankError as exc:
            log.info("no se pudo conectar: %s", exc)
            self._estado(False, "inalcanzable")
            raise _SinConexion("inalcanzable") from None
        self._client = client
        self._estado(True)

    def _cerrar_cliente(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _sondear(self) -> None:
        """Between customers: connect, say SALIR, close; only to know whether the bank is there."""
        try:
            self._conectar()
        except _SinConexion:
            self._proximo_intento = time.monotonic() + self._reintento
            return
        # Between customers, look again now and then, so the welcome screen tells the truth.
        self._proximo_intento = time.monotonic() + self._sondeo if self._sondeo > 0 else None
        self._salir()

    def _reintentar(self) -> None:
        self._proximo_intento = None
        if self._sesion is None:
            self._sondear()
            return
        try:
            self._conectar()
            if self._tarjeta is not None:
                self._identificar_de_nuevo()
        except _SinConexion:
            self._proximo_intento = time.monotonic() + self._reintento
            return
        except _Rechazo:
            # Never guess the PIN again (that could block the card): end this session instead.
            self._cerrar_cliente()
            self._tarjeta = self._pin = None
            self._emitir("fallo", sesion=self._sesion, op=None)
            return
        except BankError:
            self._cerrar_cliente()
            self._proximo_intento = time.monotonic() + self._reintento
            return
        self._emitir("conectado", sesion=self._sesion)

    def _salir(self) -> None:
        if self._client is not None:
            with contextlib.suppress(BankError):
                self._client.request({"op": "SALIR"})
        self._cerrar_cliente()

    def _identificar_de_nuevo(self, pin: str | None = None) -> dict[str, Any]:
        assert self._client is not None and self._tarjeta is not None
        respuesta = self._client.request({"op": "IDENTIFICAR", "tarjeta": self._tarjeta, "pin": pin or self._pin})
        if respuesta.get("ok") is not True and pin is None:
            raise _Rechazo(respuesta)
        return respuesta

    # -- commands ---------------------------------------------------------------------
    def _cmd_abrir(self, payload: dict[str, Any]) -> None:
        self._salir()
        self._sesion = payload["sesion"]
        self._tarjeta = self._pin = None
        try:
            self._conectar()
        except _SinConexion as exc:
            self._proximo_intento = time.monotonic() + self._reintento
            self._emitir("sin_conexion", sesion=self._sesion, motivo=exc.motivo)
            return
        self._proximo_intento = None
        self._emitir("conectado", sesion=self._sesion)

    def _cmd_cerrar(self, payload: dict[str, Any]) -> None:
        if payload.get("sesion") != self._sesion:
            return
        self._salir()
        self._sesion = None
        self._tarjeta = self._pin = None
        if not self._en_linea:
            self._proximo_intento = time.monotonic() + self._reintento
        else:
            self._proximo_intento = time.monotonic() + self._sondeo if self._sondeo > 0 else None

    def _cmd_recibo(self, payload: dict[str, Any]) -> None:
        nombre = Path(str(payload["nombre"])).name  # never a path from elsewhere
        try:
            self._recibos.mkdir(parents=True, exist_ok=True)
            ruta = self._recibos / nombre
            with open(ruta, "x", encoding="utf-8", newline="\n") as handle:
                handle.write(str(payload["texto"]))
        except OSError as exc:
            log.error("no se pudo guardar el recibo %s: %s", nombre, exc)
            self._emitir("recibo_error", sesion=payload.get("sesion"), nombre=nombre)
            return
        self._emitir("recibo_guardado", sesion=payload.get("sesion"), nombre=nombre, ruta=str(ruta))

    def _cmd_pedir(self, payload: dict[str, Any]) -> None:
        sesion, op, mensaje = payload["sesion"], payload["op"], payload["mensaje"]
        if sesion != self._sesion:
            return
        if self._client is None and self._tarjeta is None and self._proximo_intento is not None:
            # The session is out of service, waiting for the bank: this request cannot go.
            self._emitir("sin_conexion", sesion=sesion, motivo=self._motivo, op=op)
            return
        try:
            respuesta = self._enviar_con_reintentos(sesion, op, mensaje)
        except _Rechazo as exc:
            respuesta = exc.respuesta
        except _SinConexion as exc:
            self._proximo_intento = time.monotonic() + self._reintento
            if op in REINTENTABLES:
                self._emitir("fallo", sesion=sesion, op=op)
            else:
                self._emitir("sin_conexion", sesion=sesion, motivo=exc.motivo, op=op)
            return
        except BankError as exc:
            log.warning("se perdió la respuesta de %s: %s", op, exc)
            self._cerrar_cliente()
            self._emitir("fallo", sesion=sesion, op=op)
            return
        if respuesta.get("ok") is True:
            if op == "IDENTIFICAR":
                self._tarjeta, self._pin = mensaje["tarjeta"], mensaje["pin"]
            elif op == "CAMBIAR_PIN":
                self._pin = mensaje["pin_nuevo"]
        if respuesta.get("repetida"):
            log.info("%s %s ya estaba aplicada; el banco devolvió el resultado original", op, mensaje.get("id"))
        self._emitir("respuesta", sesion=sesion, op=op, respuesta=respuesta)

    def _enviar_con_reintentos(self, sesion: int, op: str, mensaje: dict[str, Any]) -> dict[str, Any]:
        """Send, and if the reply is lost, reconnect, re-identify and send the same message again."""
        limite = time.monotonic() + self._reintentar_por
        intento = 0
        enviado = False
        while True:
            try:
                if self._client is None:
                    self._conectar()
                    if self._tarjeta is not None:
                        # A PIN change whose reply was lost: if the new PIN works, it was applied.
                        if (
                            op == "CAMBIAR_PIN"
                            and enviado
                            and self._identificar_de_nuevo(mensaje["pin_nuevo"]).get("ok") is True
                        ):
                            return {"ok": True}
                        self._identificar_de_nuevo()
                assert self._client is not None
                enviado = True
                return self._client.request(mensaje)
            except (BankError, _SinConexion) as exc:
                self._cerrar_cliente()
                if op not in REINTENTABLES or self._parar.is_set() or time.monotonic() >= limite:
                    raise
                if isinstance(exc, _SinConexion) and exc.motivo == "llave":
                    raise
                intento += 1
                log.warning("reintentando %s (intento %d) tras: %s", op, intento, exc)
                self._emitir("reconectando", sesion=sesion, op=op, intento=intento)
                self._parar.wait(min(0.2 * 2**intento, 2.0))

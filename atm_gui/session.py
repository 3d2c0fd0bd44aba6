"""The ATM's session logic as a plain state machine: no Tk, no sockets, no clock of its own.

Why a separate, widget-free module: every rule a customer meets (which
key does what on which screen, amounts, PIN entry, time-outs, what a
bank answer shows) lives here, so unit tests drive it with key sequences
and fake bank events in microseconds, and the Tk view stays a thin
painter (the Thonny/IDLE lesson: logic that touches widgets cannot be
tested without a display).

How it talks to the rest:

* ``tecla(k, ahora)`` feeds one key; ``tick(ahora)`` advances time-outs;
  ``evento(kind, payload, ahora)`` feeds one result from the worker.
  ``ahora`` is a monotonic time in seconds handed in by the caller.
* ``tomar_comandos()`` returns the commands for the worker, as
  ``(kind, payload)`` tuples; every payload carries ``sesion``, the
  number of the customer session it belongs to, so a late answer for a
  session that already ended is ignored instead of confusing the next
  customer.
* ``vista(ahora)`` returns the ``Vista`` the view paints.

Money is ``Decimal`` throughout; the keypad has no decimal point, so
amounts are whole pesos.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from atm_gui import screens
from atm_gui.model import (
    ACEPTAR,
    BORRAR,
    CANCELAR,
    CON_INACTIVIDAD,
    DIGITOS,
    LATERALES,
    TECLAS,
    Ajustes,
    Comando,
    Pantalla,
    Vista,
)
from atm_gui.wording import Resultado, intentos, lineas_recibo, pesos, resultado_de
from common.money import format_amount

__all__ = ["ACEPTAR", "BORRAR", "CANCELAR", "DIGITOS", "LATERALES", "TECLAS", "Ajustes", "Pantalla", "Sesion", "Vista"]


class Sesion:
    """One ATM's customer-facing state. Not thread-safe: the Tk thread owns it."""

    def __init__(
        self,
        ajustes: Ajustes | None = None,
        ahora: float = 0.0,
        reloj: Callable[[], datetime] = datetime.now,
        nuevo_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.aj = ajustes or Ajustes()
        self._reloj = reloj
        self._nuevo_id = nuevo_id
        self._comandos: list[Comando] = []
        self.numero = 0
        self.en_linea = True
        self.motivo_fuera = "inalcanzable"
        self.abierta = False
        self.pantalla = Pantalla.BIENVENIDA
        self._limpiar(ahora)

    # -- public API ------------------------------------------------------------
    @property
    def pendiente(self) -> dict[str, Any] | None:
        """The request sent to the bank whose answer has not come yet."""
        return self._pendiente

    def tomar_comandos(self) -> list[Comando]:
        comandos, self._comandos = self._comandos, []
        return comandos

    def tecla(self, k: str, ahora: float) -> None:
        if k not in TECLAS:
            return
        self._ultima = ahora
        if self.pantalla is Pantalla.MAS_TIEMPO:
            if k == CANCELAR or k == "F4":
                self._terminar(ahora)
            else:
                self.pantalla = self._previa
            return
        if self.pantalla is Pantalla.ESPERA and k != CANCELAR:
            # Type-ahead, as a keyboard buffer: keys pressed while the bank answers are
            # replayed on the next screen, so a quick customer (or xdotool) loses nothing.
            if len(self._anticipadas) < 40:
                self._anticipadas.append(k)
            return
        if k == CANCELAR:
            if self.pantalla is Pantalla.BIENVENIDA:
                self._entrada = ""
                self._aviso = ""
            elif self.pantalla is not Pantalla.RETIRE_TARJETA:
                self._terminar(ahora)
            return
        manejador = getattr(self, f"_tecla_{self.pantalla.value}", None)
        if manejador is not None:
            manejador(k, ahora)

    def tick(self, ahora: float) -> None:
        if self.pantalla is Pantalla.RETIRE_TARJETA and ahora >= self._hasta:
            self._limpiar(ahora)
            self.pantalla = Pantalla.BIENVENIDA
        elif self.pantalla is Pantalla.MAS_TIEMPO and ahora >= self._hasta:
            self._terminar(ahora)
        elif self.pantalla in CON_INACTIVIDAD and ahora - self._ultima >= self.aj.inactividad:
            self._previa = self.pantalla
            self.pantalla = Pantalla.MAS_TIEMPO
            self._hasta = ahora + self.aj.cuenta_regresiva
        elif self.pantalla is Pantalla.BIENVENIDA and self._entrada and ahora - self._ultima >= self.aj.inactividad:
            self._entrada = ""
            self._aviso = ""

    def evento(self, kind: str, payload: dict[str, Any], ahora: float) -> None:
        if kind == "estado":
            self.en_linea = bool(payload.get("en_linea", True))
            self.motivo_fuera = str(payload.get("motivo") or "inalcanzable")
            return
        if not self.abierta or payload.get("sesion") != self.numero:
            return  # a late answer for a session that has already ended
        en_pregunta = self.pantalla is Pantalla.MAS_TIEMPO
        if en_pregunta:
            self.pantalla = self._previa
        antes = self.pantalla
        manejador = getattr(self, f"_evento_{kind}", None)
        if manejador is not None:
            manejador(payload, ahora)
        if en_pregunta:
            if self.pantalla is antes:
                self.pantalla = Pantalla.MAS_TIEMPO
            else:
                self._ultima = ahora
        if self.pantalla is not Pantalla.ESPERA and self._anticipadas:
            anticipadas, self._anticipadas = self._anticipadas, []
            for k in anticipadas:
                self.tecla(k, ahora)  # back in ESPERA, the rest is buffered again

    # -- keys, one method per screen ---------------------------------------------
    def _teclear(self, k: str, maximo: int) -> None:
        if k in DIGITOS and len(self._entrada) < maximo:
            self._entrada += k
        elif k == BORRAR:
            self._entrada = self._entrada[:-1]

    def _tecla_bienvenida(self, k: str, ahora: float) -> None:
        if not self.en_linea:
            return
        if k == ACEPTAR:
            if not 12 <= len(self._entrada) <= 19:
                self._aviso = "El número de tarjeta debe tener de 12 a 19 dígitos."
                return
            self.numero += 1
            self.abierta = True
            self._tarjeta = self._entrada
            self._entrada = ""
            self._comando("abrir")
            self.pantalla = Pantalla.PIN
        else:
            self._teclear(k, 19)

    def _tecla_pin(self, k: str, ahora: float) -> None:
        if k == ACEPTAR:
            if not 4 <= len(self._entrada) <= 6:
                self._aviso = "El PIN debe tener de 4 a 6 dígitos."
                return
            pin, self._entrada = self._entrada, ""
            self._pedir({"op": "IDENTIFICAR", "tarjeta": self._tarjeta, "pin": pin}, "Verificando su PIN…")
        else:
            self._teclear(k, 6)

    def _tecla_menu(self, k: str, ahora: float) -> None:
        opcion = {"F1": "1", "F2": "2", "F3": "3", "F4": "4", "F5": "5", "F6": "6"}.get(k, k)
        if opcion == "1":
            self._pedir({"op": "CONSULTAR"}, "Consultando su saldo…")
        elif opcion == "2":
            self._ir(Pantalla.DEPOSITO_MONTO)
        elif opcion == "3":
            self._ir(Pantalla.RETIRO_MONTO)
        elif opcion == "4":
            self._pedir({"op": "MOVIMIENTOS", "n": 10}, "Consultando sus movimientos…")
        elif opcion == "5":
            self._ir(Pantalla.PIN_ACTUAL)
        elif opcion == "6":
            self._terminar(ahora)

    def _tecla_deposito_monto(self, k: str, ahora: float) -> None:
        if k == ACEPTAR:
            monto = Decimal(self._entrada or "0")
            if monto <= 0:
                self._aviso = "Teclee un monto mayor que cero."
                return
            self._monto = monto
            self._ir(Pantalla.DEPOSITO_CONFIRMAR)
        elif k == "F8":
            self._ir(Pantalla.MENU)
        else:
            self._teclear(k, self.aj.digitos_monto)
            self._entrada = self._entrada.lstrip("0")

    def _tecla_retiro_monto(self, k: str, ahora: float) -> None:
        rapidos = self._montos_rapidos()
        if k in LATERALES[:7] and LATERALES.index(k) < len(rapidos):
            self._elegir_retiro(rapidos[LATERALES.index(k)])
        elif k == ACEPTAR:
            self._elegir_retiro(Decimal(self._entrada or "0"))
        elif k == "F8":
            self._ir(Pantalla.MENU)
        else:
            self._teclear(k, self.aj.digitos_monto)
            self._entrada = self._entrada.lstrip("0")

    def _elegir_retiro(self, monto: Decimal) -> None:
        nota = self.aj.billete_minimo
        if monto <= 0:
            self._aviso = "Teclee un monto mayor que cero."
        elif monto % nota != 0:
            self._aviso = f"El monto debe ser múltiplo de {pesos(nota)} (el billete más chico de este cajero)."
            self._entrada = ""
        else:
            self._monto = monto
            self._ir(Pantalla.RETIRO_CONFIRMAR)

    def _tecla_deposito_confirmar(self, k: str, ahora: float) -> None:
        self._confirmar(k, "DEPOSITAR", Pantalla.DEPOSITO_MONTO)

    def _tecla_retiro_confirmar(self, k: str, ahora: float) -> None:
        self._confirmar(k, "RETIRAR", Pantalla.RETIRO_MONTO)

    def _confirmar(self, k: str, op: str, corregir: Pantalla) -> None:
        if k in (ACEPTAR, "F8"):
            assert self._monto is not None
            mensaje = {"op": op, "monto": format_amount(self._monto), "id": self._nuevo_id()}
            self._pedir(mensaje, "Procesando…")
        elif k == "F4":
            self._ir(corregir)

    def _tecla_pin_actual(self, k: str, ahora: float) -> None:
        if k == ACEPTAR:
            if not 4 <= len(self._entrada) <= 6:
                self._aviso = "El PIN debe tener de 4 a 6 dígitos."
                return
            self._pin_actual = self._entrada
            self._ir(Pantalla.PIN_NUEVO)
        else:
            self._teclear(k, 6)

    def _tecla_pin_nuevo(self, k: str, ahora: float) -> None:
        if k == ACEPTAR:
            if not 4 <= len(self._entrada) <= 6:
                self._aviso = "El PIN nuevo debe tener de 4 a 6 dígitos."
                self._entrada = ""
                return
            if self._entrada == self._pin_actual:
                self._aviso = "El PIN nuevo debe ser distinto del actual."
                self._entrada = ""
                return
            self._pin_nuevo = self._entrada
            self._ir(Pantalla.PIN_REPETIR)
        else:
            self._teclear(k, 6)

    def _tecla_pin_repetir(self, k: str, ahora: float) -> None:
        if k == ACEPTAR:
            if self._entrada != self._pin_nuevo:
                self._pin_nuevo = ""
                self._ir(Pantalla.PIN_NUEVO)
                self._aviso = "Los PIN no coinciden. Teclee de nuevo el PIN nuevo."
                return
            mensaje = {"op": "CAMBIAR_PIN", "pin_actual": self._pin_actual, "pin_nuevo": self._pin_nuevo}
            self._pin_actual = self._pin_nuevo = ""
            self._pedir(mensaje, "Cambiando su PIN…")
        else:
            self._teclear(k, 6)

    def _tecla_resultado(self, k: str, ahora: float) -> None:
        if k in (ACEPTAR, "F8"):
            self._ir(Pantalla.MENU)
        elif k == "F4" and self._resultado is not None:
            self._emitir_recibo()
            self._ir(Pantalla.RECIBO)

    def _tecla_recibo(self, k: str, ahora: float) -> None:
        if k in (ACEPTAR, "F8"):
            self._ir(Pantalla.MENU)

    # -- events from the worker --------------------------------------------------
    def _evento_conectado(self, payload: dict[str, Any], ahora: float) -> None:
        if self.pantalla is Pantalla.FUERA_SERVICIO and self._pendiente is None:
            if self._titular:
                self._ir(Pantalla.MENU)
                self._aviso = "Comunicación restablecida."
            else:
                self._ir(Pantalla.PIN)
                self._aviso = "Comunicación restablecida. Teclee su PIN."

    def _evento_sin_conexion(self, payload: dict[str, Any], ahora: float) -> None:
        if payload.get("op") and self._pendiente and payload["op"] == self._pendiente["op"]:
            self._pendiente = None
        self._motivo = str(payload.get("motivo") or "inalcanzable")
        if self._pendiente is None:
            self._ir(Pantalla.FUERA_SERVICIO)

    def _evento_reconectando(self, payload: dict[str, Any], ahora: float) -> None:
        if self.pantalla is Pantalla.ESPERA:
            self._aviso = f"Reconectando con el banco (intento {payload.get('intento', 1)})…"

    def _evento_fallo(self, payload: dict[str, Any], ahora: float) -> None:
        """The worker gave up on a request: its outcome is unknown to the ATM, so say so and end."""
        pendiente, self._pendiente = self._pendiente, None
        if pendiente and pendiente["op"] in ("DEPOSITAR", "RETIRAR"):
            mensaje = "No se pudo confirmar su operación. Consulte su saldo antes de repetirla."
        else:
            mensaje = "Se perdió la comunicación con el banco."
        self._terminar(ahora, mensaje)

    def _evento_recibo_guardado(self, payload: dict[str, Any], ahora: float) -> None:
        self._recibo_estado = f"Recibo guardado: {payload.get('nombre', '')}"

    def _evento_recibo_error(self, payload: dict[str, Any], ahora: float) -> None:
        self._recibo_estado = "No se pudo guardar el recibo."

    def _evento_respuesta(self, payload: dict[str, Any], ahora: float) -> None:
        pendiente = self._pendiente
        respuesta = payload.get("respuesta")
        if pendiente is None or payload.get("op") != pendiente["op"] or not isinstance(respuesta, dict):
            return
        self._pendiente = None
        op = pendiente["op"]
        ok = respuesta.get("ok") is True
        error = str(respuesta.get("error", ""))
        mensaje = str(respuesta.get("mensaje") or "El banco no pudo completar la operación.")
        if not ok and error in ("TARJETA_BLOQUEADA", "TARJETA_INVALIDA", "NO_IDENTIFICADO"):
            self._terminar(ahora, mensaje)
            return
        if op == "IDENTIFICAR":
            if ok:
                self._titular = str(respuesta.get("titular", ""))
                self._ir(Pantalla.MENU)
                self._aviso = f"Bienvenido(a), {self._titular}" if self._titular else ""
            elif error == "PIN_INCORRECTO":
                self._ir(Pantalla.PIN)
                self._aviso = f"PIN incorrecto. {intentos(respuesta.get('intentos_restantes'))}".strip()
            else:
                self._terminar(ahora, mensaje)
            return
        self._resultado = resultado_de(op, pendiente, respuesta, ok, mensaje, self._titular)
        self._ir(Pantalla.RESULTADO)

    # -- helpers ---------------------------------------------------------------------
    def _comando(self, kind: str, **payload: Any) -> None:
        self._comandos.append((kind, {"sesion": self.numero, **payload}))

    def _pedir(self, mensaje: dict[str, Any], texto: str) -> None:
        self._pendiente = {k: v for k, v in mensaje.items() if k not in ("pin", "pin_actual", "pin_nuevo")}
        self._espera = texto
        self._comando("pedir", op=mensaje["op"], mensaje=mensaje)
        self._ir(Pantalla.ESPERA)

    def _ir(self, pantalla: Pantalla) -> None:
        self.pantalla = pantalla
        self._entrada = ""
        self._aviso = ""

    def _montos_rapidos(self) -> list[Decimal]:
        nota = self.aj.billete_minimo
        rapidos = [m for m in self.aj.montos_rapidos if m > 0 and m % nota == 0]
        return (rapidos or [nota * f for f in (1, 2, 5, 10, 20, 50)])[:7]

    def _limpiar(self, ahora: float) -> None:
        """Forget everything about the customer (the card, the PIN being typed, results)."""
        self._ultima = ahora
        self._hasta = ahora
        self._previa = Pantalla.BIENVENIDA
        self._entrada = ""
        self._aviso = ""
        self._tarjeta = ""
        self._titular = ""
        self._pin_actual = ""
        self._pin_nuevo = ""
        self._monto: Decimal | None = None
        self._pendiente: dict[str, Any] | None = None
        self._resultado: Resultado | None = None
        self._recibo: list[str] = []
        self._recibo_estado = ""
        self._espera = ""
        self._motivo = "inalcanzable"
        self._mensaje_final = ""
        self._anticipadas: list[str] = []

    def _terminar(self, ahora: float, mensaje: str = "") -> None:
        """End the session safely from any screen: close the connection, return the card."""
        if self.abierta:
            self._comando("cerrar")
        self.abierta = False
        self._limpiar(ahora)
        self._mensaje_final = mensaje
        self.pantalla = Pantalla.RETIRE_TARJETA
        self._hasta = ahora + self.aj.retire_tarjeta + (3.0 if mensaje else 0.0)

    def _emitir_recibo(self) -> None:
        r = self._resultado
        assert r is not None
        fecha = self._reloj()
        lineas = lineas_recibo(self.aj, fecha, self._tarjeta, r)
        self._recibo = lineas
        self._recibo_estado = "Guardando recibo…"
        nombre = f"recibo-{fecha:%Y%m%d-%H%M%S}-{(r.folio or self._nuevo_id())[:8]}.txt"
        self._comando("recibo", nombre=nombre, texto="\n".join(lineas) + "\n")

    def vista(self, ahora: float) -> Vista:
        """What the screen shows now (``ahora`` drives the countdown)."""
        return screens.construir(self, ahora)

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

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from common.messages import mask_card
from common.money import format_amount, format_for_people

DIGITOS = "0123456789"
ACEPTAR = "ACEPTAR"
CANCELAR = "CANCELAR"
BORRAR = "BORRAR"
LATERALES = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8")
TECLAS = (*DIGITOS, ACEPTAR, CANCELAR, BORRAR, *LATERALES)

Comando = tuple[str, dict[str, Any]]


class Pantalla(enum.Enum):
    BIENVENIDA = "bienvenida"
    PIN = "pin"
    MENU = "menu"
    ESPERA = "espera"
    RESULTADO = "resultado"
    RECIBO = "recibo"
    DEPOSITO_MONTO = "deposito_monto"
    DEPOSITO_CONFIRMAR = "deposito_confirmar"
    RETIRO_MONTO = "retiro_monto"
    RETIRO_CONFIRMAR = "retiro_confirmar"
    PIN_ACTUAL = "pin_actual"
    PIN_NUEVO = "pin_nuevo"
    PIN_REPETIR = "pin_repetir"
    MAS_TIEMPO = "mas_tiempo"
    RETIRE_TARJETA = "retire_tarjeta"
    FUERA_SERVICIO = "fuera_servicio"


# Screens on which a customer who walks away is asked "¿Necesita más tiempo?".
_CON_INACTIVIDAD = frozenset(
    {
        Pantalla.PIN,
        Pantalla.MENU,
        Pantalla.RESULTADO,
        Pantalla.RECIBO,
        Pantalla.DEPOSITO_MONTO,
        Pantalla.DEPOSITO_CONFIRMAR,
        Pantalla.RETIRO_MONTO,
        Pantalla.RETIRO_CONFIRMAR,
        Pantalla.PIN_ACTUAL,
        Pantalla.PIN_NUEVO,
        Pantalla.PIN_REPETIR,
        Pantalla.FUERA_SERVICIO,
    }
)

_PIN_PANTALLAS = frozenset({Pantalla.PIN, Pantalla.PIN_ACTUAL, Pantalla.PIN_NUEVO, Pantalla.PIN_REPETIR})

MENU_OPCIONES = (
    ("1", "Consultar saldo"),
    ("2", "Depositar"),
    ("3", "Retirar"),
    ("4", "Movimientos"),
    ("5", "Cambiar PIN"),
    ("6", "Salir"),
)

MOTIVOS = {
    "inalcanzable": ("No hay comunicación con el banco.", "Reintentando automáticamente…"),
    "perdida": ("Se perdió la comunicación con el banco.", "Reintentando automáticamente…"),
    "llave": ("Este cajero no tiene la llave del banco.", "Avise al personal del banco."),
}


@dataclass(frozen=True)
class Ajustes:
    """What a bank may configure per ATM (read from ``atm.ini`` by ``config``)."""

    banco: str = "Banco del Sur"
    cajero_id: str = "CAJERO-01"
    billete_minimo: Decimal = Decimal(100)
    montos_rapidos: tuple[Decimal, ...] = tuple(Decimal(x) for x in (100, 200, 500, 1000, 2000, 5000))
    inactividad: float = 30.0
    cuenta_regresiva: float = 15.0
    retire_tarjeta: float = 4.0
    digitos_monto: int = 7


@dataclass(frozen=True)
class Vista:
    """Everything the screen shows, as plain data: the view only paints it."""

    pantalla: str
    titulo: str
    subtitulo: str = ""
    lineas: tuple[str, ...] = ()
    izquierda: tuple[str, str, str, str] = ("", "", "", "")
    derecha: tuple[str, str, str, str] = ("", "", "", "")
    etiqueta: str = ""
    entrada: str | None = None
    aviso: str = ""
    ayuda: str = ""
    tabla: bool = False  # monospaced lines (movements, receipts)


@dataclass
class _Resultado:
    """The outcome of one operation, kept for the receipt."""

    titulo: str
    lineas: list[str]
    operacion: str
    monto: Decimal | None = None
    saldo: Decimal | None = None
    folio: str = ""
    extra: list[str] = field(default_factory=list)


def _intentos(n: Any) -> str:
    if isinstance(n, int) and not isinstance(n, bool):
        return "Le queda 1 intento." if n == 1 else f"Le quedan {n} intentos."
    return ""


def _decimal(text: Any) -> Decimal | None:
    try:
        return Decimal(str(text))
    except (ArithmeticError, ValueError):
        return None


def _pesos(value: Decimal | None) -> str:
    return format_for_people(value) if value is not None else "—"


def _agrupar_tarjeta(digitos: str) -> str:
    return " ".join(digitos[i : i + 4] for i in range(0, len(digitos), 4))


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
        elif self.pantalla in _CON_INACTIVIDAD and ahora - self._ultima >= self.aj.inactividad:
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
            self._aviso = f"El monto debe ser múltiplo de {_pesos(nota)} (el billete más chico de este cajero)."
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
                self._aviso = f"PIN incorrecto. {_intentos(respuesta.get('intentos_restantes'))}".strip()
            else:
                self._terminar(ahora, mensaje)
            return
        self._resultado = self._resultado_de(op, pendiente, respuesta, ok, mensaje)
        self._ir(Pantalla.RESULTADO)

    def _resultado_de(
        self, op: str, pendiente: dict[str, Any], respuesta: dict[str, Any], ok: bool, mensaje: str
    ) -> _Resultado:
        saldo = _decimal(respuesta.get("saldo")) if ok else None
        if op == "CONSULTAR":
            if not ok:
                return _Resultado("Consulta no realizada", [mensaje], "Consulta de saldo")
            return _Resultado(
                "Consulta de saldo",
                [str(respuesta.get("titular", self._titular)), f"Saldo disponible: {_pesos(saldo)}"],
                "Consulta de saldo",
                saldo=saldo,
            )
        if op in ("DEPOSITAR", "RETIRAR"):
            nombre = "Depósito" if op == "DEPOSITAR" else "Retiro"
            monto = _decimal(pendiente["monto"])
            folio = str(pendiente["id"])
            if not ok:
                return _Resultado(f"{nombre} no realizado", [mensaje], nombre, monto=monto, folio=folio)
            lineas = [f"Monto: {_pesos(monto)}", f"Nuevo saldo: {_pesos(saldo)}"]
            if op == "RETIRAR":
                lineas.insert(0, "Tome su efectivo.")
            return _Resultado(f"{nombre} realizado", lineas, nombre, monto=monto, saldo=saldo, folio=folio)
        if op == "MOVIMIENTOS":
            if not ok:
                return _Resultado("Movimientos no disponibles", [mensaje], "Movimientos")
            movs = respuesta.get("movimientos")
            filas = [_fila_movimiento(m) for m in movs if isinstance(m, dict)] if isinstance(movs, list) else []
            if not filas:
                filas = ["No hay movimientos registrados."]
            return _Resultado("Últimos movimientos", filas[:10], "Movimientos")
        # CAMBIAR_PIN
        if ok:
            lineas = ["Su PIN fue cambiado.", "Use el PIN nuevo a partir de ahora."]
            return _Resultado("PIN cambiado", lineas, "Cambio de PIN")
        extra = _intentos(respuesta.get("intentos_restantes")) if error_es(respuesta, "PIN_INCORRECTO") else ""
        return _Resultado("PIN no cambiado", [m for m in (mensaje, extra) if m], "Cambio de PIN")

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
        self._resultado: _Resultado | None = None
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
        lineas = [
            self.aj.banco.upper().center(34),
            "",
            f"Fecha:     {fecha:%d/%m/%Y}",
            f"Hora:      {fecha:%H:%M:%S}",
            f"Cajero:    {self.aj.cajero_id}",
            f"Tarjeta:   {mask_card(self._tarjeta)}",
            f"Operación: {r.operacion}",
        ]
        if r.monto is not None:
            lineas.append(f"Monto:     {_pesos(r.monto)}")
        if r.saldo is not None:
            lineas.append(f"Saldo:     {_pesos(r.saldo)}")
        if r.folio:
            lineas.append(f"Folio:     {r.folio}")
        if r.titulo.endswith("no realizado") or r.operacion in ("Movimientos", "Cambio de PIN"):
            lineas += ["", *r.lineas]
        lineas += ["", "Gracias por su preferencia.".center(34)]
        self._recibo = lineas
        self._recibo_estado = "Guardando recibo…"
        nombre = f"recibo-{fecha:%Y%m%d-%H%M%S}-{(r.folio or self._nuevo_id())[:8]}.txt"
        self._comando("recibo", nombre=nombre, texto="\n".join(lineas) + "\n")

    # -- what the screen shows ------------------------------------------------------
    def vista(self, ahora: float) -> Vista:
        p = self.pantalla
        banco = self.aj.banco
        aviso = self._aviso
        if p is Pantalla.BIENVENIDA:
            if not self.en_linea:
                linea1, linea2 = MOTIVOS.get(self.motivo_fuera, MOTIVOS["inalcanzable"])
                return Vista(p.value, "Fuera de servicio", banco, (linea1, linea2, "Disculpe las molestias."))
            return Vista(
                p.value,
                banco,
                "Inserte su tarjeta",
                ("Teclee el número de su tarjeta", "y oprima ACEPTAR."),
                etiqueta="Tarjeta:",
                entrada=_agrupar_tarjeta(self._entrada),
                aviso=aviso,
                ayuda="ACEPTAR continuar · BORRAR corregir",
            )
        if p is Pantalla.PIN:
            return Vista(
                p.value,
                banco,
                "Teclee su PIN",
                ("Cubra el teclado al teclear su PIN.",),
                etiqueta="PIN:",
                entrada="●" * len(self._entrada),
                aviso=aviso,
                ayuda="ACEPTAR continuar · CANCELAR salir",
            )
        if p is Pantalla.MENU:
            e = [f"{n} · {t}" for n, t in MENU_OPCIONES[:4]]
            d = [f"{t} · {n}" for n, t in MENU_OPCIONES[4:]]
            return Vista(
                p.value,
                banco,
                "Seleccione una operación",
                (),
                (e[0], e[1], e[2], e[3]),
                (d[0], d[1], "", ""),
                aviso=aviso,
                ayuda="Oprima la tecla lateral o el número",
            )
        if p is Pantalla.ESPERA:
            return Vista(p.value, self._espera or "Procesando…", "Por favor espere", ("",), aviso=aviso)
        if p is Pantalla.DEPOSITO_MONTO:
            return Vista(
                p.value,
                "Depósito",
                "Teclee el monto a depositar",
                ("Solo pesos completos.",),
                derecha=("", "", "", "Regresar"),
                etiqueta="Monto:",
                entrada=_pesos(Decimal(self._entrada or "0")),
                aviso=aviso,
                ayuda="ACEPTAR continuar · BORRAR corregir",
            )
        if p is Pantalla.RETIRO_MONTO:
            rapidos = [_pesos(m) for m in self._montos_rapidos()] + [""] * 8
            return Vista(
                p.value,
                "Retiro",
                "Elija o teclee el monto",
                (f"Múltiplos de {_pesos(self.aj.billete_minimo)}",),
                (rapidos[0], rapidos[1], rapidos[2], rapidos[3]),
                (rapidos[4], rapidos[5], rapidos[6], "Regresar"),
                etiqueta="Monto:",
                entrada=_pesos(Decimal(self._entrada or "0")),
                aviso=aviso,
                ayuda="ACEPTAR continuar · BORRAR corregir",
            )
        if p in (Pantalla.DEPOSITO_CONFIRMAR, Pantalla.RETIRO_CONFIRMAR):
            nombre = "depósito" if p is Pantalla.DEPOSITO_CONFIRMAR else "retiro"
            return Vista(
                p.value,
                f"Confirme su {nombre}",
                "",
                (f"Monto: {_pesos(self._monto)}", "", "¿Es correcto?"),
                ("", "", "", "Corregir"),
                ("", "", "", "Confirmar"),
                aviso=aviso,
                ayuda="ACEPTAR confirmar · CANCELAR salir",
            )
        if p in _PIN_PANTALLAS:
            subtitulos = {
                Pantalla.PIN_ACTUAL: "Teclee su PIN actual",
                Pantalla.PIN_NUEVO: "Teclee su PIN nuevo (4 a 6 dígitos)",
                Pantalla.PIN_REPETIR: "Teclee otra vez su PIN nuevo",
            }
            return Vista(
                p.value,
                "Cambio de PIN",
                subtitulos[p],
                (),
                etiqueta="PIN:",
                entrada="●" * len(self._entrada),
                aviso=aviso,
                ayuda="ACEPTAR continuar · CANCELAR salir",
            )
        if p is Pantalla.RESULTADO:
            r = self._resultado
            assert r is not None
            return Vista(
                p.value,
                r.titulo,
                "",
                tuple(r.lineas),
                ("", "", "", "Recibo"),
                ("", "", "", "Menú"),
                aviso=aviso,
                ayuda="ACEPTAR menú · CANCELAR terminar",
                tabla=r.operacion == "Movimientos",
            )
        if p is Pantalla.RECIBO:
            return Vista(
                p.value,
                "Su recibo",
                self._recibo_estado,
                tuple(self._recibo),
                derecha=("", "", "", "Menú"),
                ayuda="ACEPTAR menú · CANCELAR terminar",
                tabla=True,
            )
        if p is Pantalla.MAS_TIEMPO:
            restante = max(0, int(self._hasta - ahora + 0.999))
            return Vista(
                p.value,
                "¿Necesita más tiempo?",
                "",
                (f"Su sesión terminará en {restante} s.",),
                ("", "", "", "No"),
                ("", "", "", "Sí"),
                ayuda="ACEPTAR sí · CANCELAR no",
            )
        if p is Pantalla.RETIRE_TARJETA:
            lineas = (self._mensaje_final,) if self._mensaje_final else ()
            return Vista(p.value, "Retire su tarjeta", "Gracias por usar " + banco, (*lineas, "", "Hasta pronto."))
        # FUERA_SERVICIO during a session
        linea1, linea2 = MOTIVOS.get(self._motivo, MOTIVOS["inalcanzable"])
        return Vista(p.value, "Fuera de servicio", banco, (linea1, linea2), ayuda="CANCELAR terminar")


def error_es(respuesta: dict[str, Any], code: str) -> bool:
    return respuesta.get("ok") is False and respuesta.get("error") == code


def _fila_movimiento(m: dict[str, Any]) -> str:
    """One movement as a fixed-width row: date, kind, signed amount, balance after."""
    fecha_txt = str(m.get("fecha", ""))
    try:
        # Python 3.10 does not parse a trailing "Z".
        fecha = datetime.fromisoformat(fecha_txt.replace("Z", "+00:00")).strftime("%d/%m/%y %H:%M")
    except ValueError:
        fecha = fecha_txt[:14]
    deposito = m.get("tipo") == "DEPOSITO"
    tipo = "Depósito" if deposito else "Retiro"
    monto = _decimal(m.get("monto"))
    signo = "+" if deposito else "-"
    importe = f"{signo}{_pesos(monto)}"
    return f"{fecha:<14} {tipo:<8} {importe:>13} {_pesos(_decimal(m.get('saldo'))):>14}"

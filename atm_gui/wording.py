"""What the customer reads: menu labels, messages, amounts, movement rows, receipts.

Why apart from the state machine: these are pure functions of data, and
every Spanish sentence sits in one place where it can be read and
corrected without touching the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from atm_gui.model import Ajustes
from common.messages import mask_card
from common.money import format_for_people

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


@dataclass
class Resultado:
    """The outcome of one operation, kept for the receipt."""

    titulo: str
    lineas: list[str]
    operacion: str
    monto: Decimal | None = None
    saldo: Decimal | None = None
    folio: str = ""
    extra: list[str] = field(default_factory=list)


def intentos(n: Any) -> str:
    if isinstance(n, int) and not isinstance(n, bool):
        return "Le queda 1 intento." if n == 1 else f"Le quedan {n} intentos."
    return ""


def decimal_o_nada(text: Any) -> Decimal | None:
    try:
        return Decimal(str(text))
    except (ArithmeticError, ValueError):
        return None


def pesos(value: Decimal | None) -> str:
    return format_for_people(value) if value is not None else "—"


def agrupar_tarjeta(digitos: str) -> str:
    return " ".join(digitos[i : i + 4] for i in range(0, len(digitos), 4))


def resultado_de(
    op: str, pendiente: dict[str, Any], respuesta: dict[str, Any], ok: bool, mensaje: str, titular: str
) -> Resultado:
    """What a result screen (and its receipt) says about one answer from the bank."""
    saldo = decimal_o_nada(respuesta.get("saldo")) if ok else None
    if op == "CONSULTAR":
        if not ok:
            return Resultado("Consulta no realizada", [mensaje], "Consulta de saldo")
        return Resultado(
            "Consulta de saldo",
            [str(respuesta.get("titular", titular)), f"Saldo disponible: {pesos(saldo)}"],
            "Consulta de saldo",
            saldo=saldo,
        )
    if op in ("DEPOSITAR", "RETIRAR"):
        nombre = "Depósito" if op == "DEPOSITAR" else "Retiro"
        monto = decimal_o_nada(pendiente["monto"])
        folio = str(pendiente["id"])
        if not ok:
            return Resultado(f"{nombre} no realizado", [mensaje], nombre, monto=monto, folio=folio)
        lineas = [f"Monto: {pesos(monto)}", f"Nuevo saldo: {pesos(saldo)}"]
        if op == "RETIRAR":
            lineas.insert(0, "Tome su efectivo.")
        return Resultado(f"{nombre} realizado", lineas, nombre, monto=monto, saldo=saldo, folio=folio)
    if op == "MOVIMIENTOS":
        if not ok:
            return Resultado("Movimientos no disponibles", [mensaje], "Movimientos")
        movs = respuesta.get("movimientos")
        filas = [fila_movimiento(m) for m in movs if isinstance(m, dict)] if isinstance(movs, list) else []
        if not filas:
            filas = ["No hay movimientos registrados."]
        return Resultado("Últimos movimientos", filas[:10], "Movimientos")
    # CAMBIAR_PIN
    if ok:
        lineas = ["Su PIN fue cambiado.", "Use el PIN nuevo a partir de ahora."]
        return Resultado("PIN cambiado", lineas, "Cambio de PIN")
    extra = intentos(respuesta.get("intentos_restantes")) if error_es(respuesta, "PIN_INCORRECTO") else ""
    return Resultado("PIN no cambiado", [m for m in (mensaje, extra) if m], "Cambio de PIN")


def lineas_recibo(aj: Ajustes, fecha: datetime, tarjeta: str, r: Resultado) -> list[str]:
    """The receipt as a real ATM prints it: never the full card number, never the PIN."""
    lineas = [
        aj.banco.upper().center(34),
        "",
        f"Fecha:     {fecha:%d/%m/%Y}",
        f"Hora:      {fecha:%H:%M:%S}",
        f"Cajero:    {aj.cajero_id}",
        f"Tarjeta:   {mask_card(tarjeta)}",
        f"Operación: {r.operacion}",
    ]
    if r.monto is not None:
        lineas.append(f"Monto:     {pesos(r.monto)}")
    if r.saldo is not None:
        lineas.append(f"Saldo:     {pesos(r.saldo)}")
    if r.folio:
        lineas.append(f"Folio:     {r.folio}")
    if r.titulo.endswith("no realizado") or r.operacion in ("Movimientos", "Cambio de PIN"):
        lineas += ["", *r.lineas]
    lineas += ["", "Gracias por su preferencia.".center(34)]
    return lineas


def error_es(respuesta: dict[str, Any], code: str) -> bool:
    return respuesta.get("ok") is False and respuesta.get("error") == code


def fila_movimiento(m: dict[str, Any]) -> str:
    """One movement as a fixed-width row: date, kind, signed amount, balance after."""
    fecha_txt = str(m.get("fecha", ""))
    try:
        # Python 3.10 does not parse a trailing "Z".
        fecha = datetime.fromisoformat(fecha_txt.replace("Z", "+00:00")).strftime("%d/%m/%y %H:%M")
    except ValueError:
        fecha = fecha_txt[:14]
    deposito = m.get("tipo") == "DEPOSITO"
    tipo = "Depósito" if deposito else "Retiro"
    monto = decimal_o_nada(m.get("monto"))
    signo = "+" if deposito else "-"
    importe = f"{signo}{pesos(monto)}"
    return f"{fecha:<14} {tipo:<8} {importe:>13} {pesos(decimal_o_nada(m.get('saldo'))):>14}"

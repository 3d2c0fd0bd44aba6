"""The ATM's plain data types: keys, screens, settings and the view model.

Why a module of its own: the state machine (``session``), the screens it
shows (``pantallas``) and the Tk painter (``view``) all speak in these
types, and none of them should have to import the others to do so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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
CON_INACTIVIDAD = frozenset(
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

PIN_PANTALLAS = frozenset({Pantalla.PIN, Pantalla.PIN_ACTUAL, Pantalla.PIN_NUEVO, Pantalla.PIN_REPETIR})


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

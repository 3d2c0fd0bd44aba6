"""ATM2 messages: JSON text <-> typed requests and response dicts.

The server parses in two steps so that it can answer ``NO_IDENTIFICADO``
before looking at the fields of an account request: ``decode_object``
and ``request_op`` first, then ``parse_request``. Every refusal is a
``RequestError`` carrying the contract's code; ``error_response`` turns
it into the dict that goes on the wire, with the Spanish sentence the
customer reads.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common.money import AmountError, format_amount, parse_request_amount

IDENTIFICAR = "IDENTIFICAR"
CONSULTAR = "CONSULTAR"
DEPOSITAR = "DEPOSITAR"
RETIRAR = "RETIRAR"
MOVIMIENTOS = "MOVIMIENTOS"
CAMBIAR_PIN = "CAMBIAR_PIN"
SALIR = "SALIR"
RENOVAR_LLAVE = "RENOVAR_LLAVE"

# TRANSFERIR, REVERSAR and TOTALES (PROTOCOL.md section 5) come with the cash issue; until then they are
# unknown ops, answered PETICION_INVALIDA.
OPS = frozenset({IDENTIFICAR, CONSULTAR, DEPOSITAR, RETIRAR, MOVIMIENTOS, CAMBIAR_PIN, SALIR, RENOVAR_LLAVE})
ACCOUNT_OPS = frozenset({CONSULTAR, DEPOSITAR, RETIRAR, MOVIMIENTOS, CAMBIAR_PIN})

# The sentence each error code shows the customer.
MENSAJES: dict[str, str] = {
    "PETICION_INVALIDA": "La solicitud no es válida.",
    "NO_IDENTIFICADO": "Primero identifíquese con su tarjeta y su PIN.",
    "TARJETA_INVALIDA": "La tarjeta no es válida.",
    "PIN_INCORRECTO": "El PIN es incorrecto.",
    "TARJETA_BLOQUEADA": "Su tarjeta está bloqueada. Acuda a su sucursal.",
    "MONTO_INVALIDO": "El monto no es válido.",
    "FONDOS_INSUFICIENTES": "Fondos insuficientes para este retiro.",
    "LIMITE_DIARIO": "Este retiro supera su límite diario.",
    "ID_REPETIDO": "La operación ya fue registrada con otros datos.",
    "PIN_INVALIDO": "El PIN nuevo debe tener de 4 a 6 dígitos y no ser fácil de adivinar (como 1111 o 1234).",
    "CAJERO_SUSPENDIDO": "Este cajero no puede verificar PIN por ahora. Use otro cajero o intente más tarde.",
    "ERROR_INTERNO": "El banco no pudo completar la operación. No se aplicó ningún cambio.",
}

CARD_RE = re.compile(r"[0-9]{12,19}")
PIN_RE = re.compile(r"[0-9]{4,6}")
TX_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_MOVIMIENTOS = 50
DEFAULT_MOVIMIENTOS = 10


class RequestError(Exception):
    """A request the server refuses, with the contract's error code."""

    def __init__(self, code: str, detail: str = "", **extra: Any) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.extra = extra


@dataclass(frozen=True)
class Identificar:
    tarjeta: str
    pin: str


@dataclass(frozen=True)
class Consultar:
    pass


@dataclass(frozen=True)
class Depositar:
    monto: Decimal
    id: str


@dataclass(frozen=True)
class Retirar:
    monto: Decimal
    id: str


@dataclass(frozen=True)
class Movimientos:
    n: int


@dataclass(frozen=True)
class CambiarPin:
    pin_actual: str
    pin_nuevo: str


@dataclass(frozen=True)
class Salir:
    pass


@dataclass(frozen=True)
class RenovarLlave:
    pass


Request = Identificar | Consultar | Depositar | Retirar | Movimientos | CambiarPin | Salir | RenovarLlave


def encode(message: dict[str, Any]) -> str:
    """Compact JSON with real UTF-8 (as the contract's vectors are written)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``{"op":"CONSULTAR","op":"SALIR"}`` means different things to different parsers: refuse it."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return result


def decode_object(text: str) -> dict[str, Any]:
    """Parse a JSON object or raise ``PETICION_INVALIDA``."""
    try:
        value = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        raise RequestError("PETICION_INVALIDA", "not JSON") from None
    if not isinstance(value, dict):
        raise RequestError("PETICION_INVALIDA", "not a JSON object")
    return value


def request_op(message: dict[str, Any]) -> str:
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise RequestError("PETICION_INVALIDA", "unknown op")
    return op


def _string(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise RequestError("PETICION_INVALIDA", f"{field} missing or not a string")
    return value


def _amount(message: dict[str, Any]) -> Decimal:
    value = message.get("monto")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise RequestError("MONTO_INVALIDO", "amount sent as a JSON number")
    try:
        return parse_request_amount(_string(message, "monto"))
    except AmountError as exc:
        raise RequestError("MONTO_INVALIDO", str(exc)) from None


def _tx_id(message: dict[str, Any]) -> str:
    tx_id = _string(message, "id")
    if not TX_ID_RE.fullmatch(tx_id):
        raise RequestError("PETICION_INVALIDA", "id must be 1-64 of [A-Za-z0-9_-]")
    return tx_id


def parse_request(message: dict[str, Any]) -> Request:
    """Check the fields of a request whose op is known; return it typed."""
    op = request_op(message)
    if op == IDENTIFICAR:
        tarjeta = _string(message, "tarjeta")
        pin = _string(message, "pin")
        if not CARD_RE.fullmatch(tarjeta):
            raise RequestError("TARJETA_INVALIDA", "card is not 12-19 digits")
        if not PIN_RE.fullmatch(pin):
            raise RequestError("PETICION_INVALIDA", "pin is not 4-6 digits")
        return Identificar(tarjeta, pin)
    if op == CONSULTAR:
        return Consultar()
    if op in (DEPOSITAR, RETIRAR):
        tx_id = _tx_id(message)
        monto = _amount(message)
        return Depositar(monto, tx_id) if op == DEPOSITAR else Retirar(monto, tx_id)
    if op == MOVIMIENTOS:
        n = message.get("n", DEFAULT_MOVIMIENTOS)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_MOVIMIENTOS:
            raise RequestError("PETICION_INVALIDA", f"n must be an integer from 1 to {MAX_MOVIMIENTOS}")
        return Movimientos(n)
    if op == CAMBIAR_PIN:
        pin_actual = _string(message, "pin_actual")
        pin_nuevo = message.get("pin_nuevo")
        if not isinstance(pin_nuevo, str) or not PIN_RE.fullmatch(pin_nuevo):
            raise RequestError("PIN_INVALIDO", "new pin is not 4-6 digits")
        if is_trivial_pin(pin_nuevo):
            raise RequestError("PIN_INVALIDO", "new pin is too easy to guess")
        return CambiarPin(pin_actual, pin_nuevo)
    if op == RENOVAR_LLAVE:
        return RenovarLlave()
    return Salir()


def is_trivial_pin(pin: str) -> bool:
    """All digits the same, or an ascending or descending run (PROTOCOL.md: ``1111``, ``1234``, ``98765``).

    ``1212`` is not a run. The contract's runs do not wrap: ``8901`` is not one."""
    steps = {int(b) - int(a) for a, b in itertools.pairwise(pin)}
    return len(steps) == 1 and steps <= {-1, 0, 1}


def ok_response(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def error_response(error: RequestError) -> dict[str, Any]:
    return {"ok": False, "error": error.code, "mensaje": MENSAJES[error.code], **error.extra}


def mask_card(tarjeta: str) -> str:
    """All but the last four digits as ``*`` (the contract's masking)."""
    return "*" * (len(tarjeta) - 4) + tarjeta[-4:]


# -- the client's side: typed request -> wire ------------------------------------
# Added for the ATM, which builds typed requests and encodes them only when they
# leave for the bank; ``parse_request(request_to_wire(r)) == r`` for every valid r.

_OP_NAMES: dict[type, str] = {
    Identificar: IDENTIFICAR,
    Consultar: CONSULTAR,
    Depositar: DEPOSITAR,
    Retirar: RETIRAR,
    Movimientos: MOVIMIENTOS,
    CambiarPin: CAMBIAR_PIN,
    Salir: SALIR,
    RenovarLlave: RENOVAR_LLAVE,
}


def request_op_name(request: Request) -> str:
    """The wire ``op`` of a typed request (for logs and for matching on the op)."""
    return _OP_NAMES[type(request)]


def request_to_wire(request: Request) -> dict[str, Any]:
    """The dict that goes on the wire for a typed request; amounts become two-decimal strings here, and only here."""
    match request:
        case Identificar(tarjeta=tarjeta, pin=pin):
            return {"op": IDENTIFICAR, "tarjeta": tarjeta, "pin": pin}
        case Depositar(monto=monto, id=tx_id) | Retirar(monto=monto, id=tx_id):
            return {"op": request_op_name(request), "monto": format_amount(monto), "id": tx_id}
        case Movimientos(n=n):
            return {"op": MOVIMIENTOS, "n": n}
        case CambiarPin(pin_actual=pin_actual, pin_nuevo=pin_nuevo):
            return {"op": CAMBIAR_PIN, "pin_actual": pin_actual, "pin_nuevo": pin_nuevo}
        case _:
            return {"op": request_op_name(request)}

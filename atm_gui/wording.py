"""Every word the customer reads: screens, notices, key labels, the status bar, movements, receipts.

Why one module: the rules (``session``), the screen layouts
(``screens``) and the painter (``window``) refer to these names and
contain no Spanish of their own, so the wording can be read and
corrected in one place, and later swapped for gettext catalogues
without touching any rule. Everything here is a constant or a pure
function of data.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from atm_gui.model import (
    ACCEPT,
    CANCEL,
    CLEAR,
    AtmSettings,
    Operation,
    OperationResult,
    OutageReason,
    PendingRequest,
    Screen,
)
from common.messages import CONSULTAR, DEPOSITAR, MOVIMIENTOS, RETIRAR, mask_card
from common.money import format_for_people

# -- the cabinet: window title, brand, keys, status bar ------------------------------------
KEY_LABELS = {CANCEL: "CANCELAR", CLEAR: "BORRAR", ACCEPT: "ACEPTAR"}
NO_BANK = "Sin banco"


NO_TERMINAL_ID = "sin llave"  # the terminal id comes from the key file; before one is read, there is none


def window_title(settings: AtmSettings) -> str:
    return f"Cajero · {settings.bank_name} · {settings.atm_id or NO_TERMINAL_ID}"


def brand_subtitle(settings: AtmSettings) -> str:
    return f"   Cajero automático · {settings.atm_id or NO_TERMINAL_ID}"


def connecting(destination: str) -> str:
    return f"Conectando con el banco ({destination})…"


def bank_status(online: bool, reason: OutageReason | None, destination: str) -> str:
    """The status bar's line about the bank (read by the customer and by the staff)."""
    if online:
        return f"En línea con el banco ({destination})"
    if reason is OutageReason.WRONG_KEY:
        return f"Fuera de servicio: la llave de este cajero no coincide con la del banco ({destination})"
    if reason is OutageReason.REFUSED:
        return f"Fuera de servicio: el banco no autoriza a este cajero ({destination})"
    if reason is OutageReason.NO_KEY:
        return "Fuera de servicio: falta la llave de este cajero o no es válida (vea el registro)"
    return f"Fuera de servicio: sin comunicación con el banco ({destination}); reintentando"


# -- screen titles, prompts, side-key labels, help lines -------------------------------------
MENU_OPTIONS = (
    ("1", "Consultar saldo"),
    ("2", "Depositar"),
    ("3", "Retirar"),
    ("4", "Movimientos"),
    ("5", "Cambiar PIN"),
    ("6", "Salir"),
)

TELL_THE_STAFF = "Avise al personal del banco."
NOT_AUTHORISED = "Este cajero no está autorizado por el banco:"
# What the screen says for each outage: the customer reads the first line, the staff the rest.
OUTAGE_LINES: dict[OutageReason, tuple[str, ...]] = {
    OutageReason.UNREACHABLE: ("No hay comunicación con el banco.", "Reintentando automáticamente…"),
    OutageReason.WRONG_KEY: (NOT_AUTHORISED, "su llave no coincide con la del banco.", TELL_THE_STAFF),
    OutageReason.REFUSED: (
        NOT_AUTHORISED,
        "el banco no lo reconoce, lo dio de baja",
        "o su llave ya no es válida.",
        TELL_THE_STAFF,
    ),
    OutageReason.NO_KEY: ("Este cajero no tiene una llave válida:", "falta su archivo o está dañado.", TELL_THE_STAFF),
}
OUT_OF_SERVICE = "Fuera de servicio"
SORRY = "Disculpe las molestias."
# The bank stopped checking PINs at this ATM (too many wrong ones here): the card comes back.
SUSPENDED_TITLE = "Cajero suspendido"
SUSPENDED_LINES = (
    "Por seguridad, este cajero no puede",
    "verificar su PIN por ahora.",
    "",
    "Retire su tarjeta y use otro cajero",
    "o intente más tarde.",
)

INSERT_CARD = "Inserte su tarjeta"
INSERT_CARD_LINES = ("Teclee el número de su tarjeta", "y oprima ACEPTAR.")
CARD_LABEL = "Tarjeta:"
ENTER_PIN = "Teclee su PIN"
COVER_THE_KEYPAD = ("Cubra el teclado al teclear su PIN.",)
PIN_LABEL = "PIN:"
CHOOSE_OPERATION = "Seleccione una operación"
PROCESSING = "Procesando…"
PLEASE_WAIT = "Por favor espere"
DEPOSIT = "Depósito"
DEPOSIT_PROMPT = "Teclee el monto a depositar"
WHOLE_PESOS_ONLY = ("Solo pesos completos.",)
WITHDRAWAL = "Retiro"
WITHDRAWAL_PROMPT = "Elija o teclee el monto"
AMOUNT_LABEL = "Monto:"
IS_IT_RIGHT = "¿Es correcto?"
PIN_CHANGE = "Cambio de PIN"
PIN_CHANGE_PROMPTS = {
    Screen.PIN_CURRENT: "Teclee su PIN actual",
    Screen.PIN_NEW: "Teclee su PIN nuevo (4 a 6 dígitos)",
    Screen.PIN_REPEAT: "Teclee otra vez su PIN nuevo",
}
YOUR_RECEIPT = "Su recibo"
MORE_TIME = "¿Necesita más tiempo?"
TAKE_YOUR_CARD = "Retire su tarjeta"
GOODBYE = "Hasta pronto."

BACK = "Regresar"
CORRECT = "Corregir"
CONFIRM = "Confirmar"
RECEIPT = "Recibo"
MENU = "Menú"
NO = "No"
YES = "Sí"

HELP_CONTINUE_OR_CLEAR = "ACEPTAR continuar · BORRAR corregir"
HELP_CONTINUE_OR_LEAVE = "ACEPTAR continuar · CANCELAR salir"
HELP_MENU = "Oprima la tecla lateral o el número"
HELP_CONFIRM = "ACEPTAR confirmar · CANCELAR salir"
HELP_AFTER_RESULT = "ACEPTAR menú · CANCELAR terminar"
HELP_MORE_TIME = "ACEPTAR sí · CANCELAR no"
HELP_END = "CANCELAR terminar"


def multiples_of(note: Decimal) -> str:
    return f"Múltiplos de {money(note)}"


def confirm_your(screen: Screen) -> str:
    return f"Confirme su {'depósito' if screen is Screen.DEPOSIT_CONFIRM else 'retiro'}"


def amount_line(amount: Decimal | None) -> str:
    return f"Monto: {money(amount)}"


def session_ends_in(seconds: int) -> str:
    return f"Su sesión terminará en {seconds} s."


def thanks_for_using(bank_name: str) -> str:
    return "Gracias por usar " + bank_name


# -- notices: what the session says about a key or an answer ------------------------------------
CARD_LENGTH = "El número de tarjeta debe tener de 12 a 19 dígitos."
PIN_LENGTH = "El PIN debe tener de 4 a 6 dígitos."
NEW_PIN_LENGTH = "El PIN nuevo debe tener de 4 a 6 dígitos."
NEW_PIN_SAME_AS_CURRENT = "El PIN nuevo debe ser distinto del actual."
PINS_DIFFER = "Los PIN no coinciden. Teclee de nuevo el PIN nuevo."
AMOUNT_ABOVE_ZERO = "Teclee un monto mayor que cero."
CHECKING_PIN = "Verificando su PIN…"
CHECKING_BALANCE = "Consultando su saldo…"
CHECKING_MOVEMENTS = "Consultando sus movimientos…"
CHANGING_PIN = "Cambiando su PIN…"
CONNECTION_RESTORED = "Comunicación restablecida."
CONNECTION_RESTORED_ENTER_PIN = "Comunicación restablecida. Teclee su PIN."
OUTCOME_UNKNOWN = "No se pudo confirmar su operación. Consulte su saldo antes de repetirla."
CONNECTION_LOST = "Se perdió la comunicación con el banco."
BANK_COULD_NOT = "El banco no pudo completar la operación."
SAVING_RECEIPT = "Guardando recibo…"
RECEIPT_NOT_SAVED = "No se pudo guardar el recibo."


def not_a_multiple(note: Decimal) -> str:
    return f"El monto debe ser múltiplo de {money(note)} (el billete más chico de este cajero)."


def reconnecting(attempt: int) -> str:
    return f"Reconectando con el banco (intento {attempt})…"


def welcome_holder(holder: str) -> str:
    return f"Bienvenido(a), {holder}" if holder else ""


def wrong_pin(attempts_left: Any) -> str:
    return f"PIN incorrecto. {attempts(attempts_left)}".strip()


def receipt_saved(file_name: str) -> str:
    return f"Recibo guardado: {file_name}"


def receipt_file_name(when: datetime, reference: str) -> str:
    """The receipt's file name: the customer may be handed it, so it is wording too."""
    return f"recibo-{when:%Y%m%d-%H%M%S}-{reference[:8]}.txt"


def attempts(n: Any) -> str:
    """How many PIN attempts are left, from the bank's ``intentos_restantes`` (anything else says nothing)."""
    if isinstance(n, int) and not isinstance(n, bool):
        return "Le queda 1 intento." if n == 1 else f"Le quedan {n} intentos."
    return ""


# -- amounts, cards, movements ---------------------------------------------------------------


def money(value: Decimal | None) -> str:
    return format_for_people(value) if value is not None else "—"


def group_card(digits: str) -> str:
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def decimal_or_none(text: Any) -> Decimal | None:
    """An amount from the bank's answer (a string on the wire), or ``None`` if it is not one."""
    try:
        return Decimal(str(text))
    except (ArithmeticError, ValueError):
        return None


def movement_row(m: dict[str, Any]) -> str:
    """One movement as a fixed-width row: date, kind, signed amount, balance after."""
    date_text = str(m.get("fecha", ""))
    try:
        # Python 3.10 does not parse a trailing "Z".
        date = datetime.fromisoformat(date_text.replace("Z", "+00:00")).strftime("%d/%m/%y %H:%M")
    except ValueError:
        date = date_text[:14]
    deposit = m.get("tipo") == "DEPOSITO"
    kind = "Depósito" if deposit else "Retiro"
    sign = "+" if deposit else "-"
    signed = f"{sign}{money(decimal_or_none(m.get('monto')))}"
    return f"{date:<14} {kind:<8} {signed:>13} {money(decimal_or_none(m.get('saldo'))):>14}"


# -- results and receipts ---------------------------------------------------------------------
OPERATION_NAMES = {
    Operation.BALANCE: "Consulta de saldo",
    Operation.DEPOSIT: "Depósito",
    Operation.WITHDRAWAL: "Retiro",
    Operation.MOVEMENTS: "Movimientos",
    Operation.PIN_CHANGE: "Cambio de PIN",
}
MOVEMENTS_SHOWN = 10


def describe_result(
    pending: PendingRequest, response: dict[str, Any], ok: bool, message: str, holder: str
) -> OperationResult:
    """What a result screen (and its receipt) says about one answer from the bank.

    ``message`` is the bank's own sentence for a refusal; the request's
    amount and id come from ``pending`` (still a ``Decimal``), the
    balance from the answer.
    """
    if pending.op == CONSULTAR:
        return _balance_result(response, ok, message, holder)
    if pending.op in (DEPOSITAR, RETIRAR):
        return _money_result(pending, response, ok, message)
    if pending.op == MOVIMIENTOS:
        return _movements_result(response, ok, message)
    return _pin_change_result(response, ok, message)


def _balance_result(response: dict[str, Any], ok: bool, message: str, holder: str) -> OperationResult:
    if not ok:
        return OperationResult(Operation.BALANCE, False, "Consulta no realizada", (message,))
    balance = decimal_or_none(response.get("saldo"))
    lines = (str(response.get("titular", holder)), f"Saldo disponible: {money(balance)}")
    return OperationResult(Operation.BALANCE, True, "Consulta de saldo", lines, balance=balance)


def _money_result(pending: PendingRequest, response: dict[str, Any], ok: bool, message: str) -> OperationResult:
    operation = Operation.DEPOSIT if pending.op == DEPOSITAR else Operation.WITHDRAWAL
    name = OPERATION_NAMES[operation]
    if not ok:
        return OperationResult(
            operation, False, f"{name} no realizado", (message,), amount=pending.amount, tx_id=pending.tx_id
        )
    balance = decimal_or_none(response.get("saldo"))
    lines = (f"Monto: {money(pending.amount)}", f"Nuevo saldo: {money(balance)}")
    if operation is Operation.WITHDRAWAL:
        lines = ("Tome su efectivo.", *lines)
    return OperationResult(
        operation, True, f"{name} realizado", lines, amount=pending.amount, balance=balance, tx_id=pending.tx_id
    )


def _movements_result(response: dict[str, Any], ok: bool, message: str) -> OperationResult:
    if not ok:
        return OperationResult(Operation.MOVEMENTS, False, "Movimientos no disponibles", (message,))
    movements = response.get("movimientos")
    rows = [movement_row(m) for m in movements if isinstance(m, dict)] if isinstance(movements, list) else []
    if not rows:
        rows = ["No hay movimientos registrados."]
    return OperationResult(Operation.MOVEMENTS, True, "Últimos movimientos", tuple(rows[:MOVEMENTS_SHOWN]))


def _pin_change_result(response: dict[str, Any], ok: bool, message: str) -> OperationResult:
    if ok:
        lines = ("Su PIN fue cambiado.", "Use el PIN nuevo a partir de ahora.")
        return OperationResult(Operation.PIN_CHANGE, True, "PIN cambiado", lines)
    wrong_pin = response.get("ok") is False and response.get("error") == "PIN_INCORRECTO"
    extra = attempts(response.get("intentos_restantes")) if wrong_pin else ""
    return OperationResult(Operation.PIN_CHANGE, False, "PIN no cambiado", tuple(m for m in (message, extra) if m))


RECEIPT_WIDTH = 34


def receipt_lines(settings: AtmSettings, when: datetime, card: str, r: OperationResult) -> tuple[str, ...]:
    """The receipt as a real ATM prints it: never the full card number, never the PIN."""
    lines = [
        settings.bank_name.upper().center(RECEIPT_WIDTH),
        "",
        f"Fecha:     {when:%d/%m/%Y}",
        f"Hora:      {when:%H:%M:%S}",
        f"Cajero:    {settings.atm_id}",
        f"Tarjeta:   {mask_card(card)}",
        f"Operación: {OPERATION_NAMES[r.operation]}",
    ]
    if r.amount is not None:
        lines.append(f"Monto:     {money(r.amount)}")
    if r.balance is not None:
        lines.append(f"Saldo:     {money(r.balance)}")
    if r.tx_id:
        lines.append(f"Folio:     {r.tx_id}")
    # A refused deposit or withdrawal, movements and PIN changes print what the screen said.
    refused_money = not r.ok and r.operation in (Operation.DEPOSIT, Operation.WITHDRAWAL)
    if refused_money or r.operation in (Operation.MOVEMENTS, Operation.PIN_CHANGE):
        lines += ["", *r.lines]
    lines += ["", "Gracias por su preferencia.".center(RECEIPT_WIDTH)]
    return tuple(lines)

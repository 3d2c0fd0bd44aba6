"""The bank's rules, as pure functions of the state.

Each ``decide_*`` looks at a ``BankState`` already brought up to date
under the ledger lock and either raises ``RequestError`` (refused,
nothing changes), returns an ``Applied`` (an idempotent repeat: answer
the original result), or returns the ``Record`` to commit. No I/O, no
clock of their own: the caller passes ``fecha``. That keeps them fast
inside the lock and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bank_server.journal import Record
from bank_server.ledger import Account
from bank_server.state import Applied, BankState
from common.messages import RequestError
from common.money import add, subtract


@dataclass(frozen=True)
class Limits:
    """Per-operation maximum and per-card daily withdrawal limit (contract minimums as defaults)."""

    max_per_operation: Decimal = Decimal("10000.00")
    daily_limit: Decimal = Decimal("20000.00")


def account_for(state: BankState, card: str) -> Account:
    account = state.account(card)
    if account is None:
        raise RequestError("TARJETA_INVALIDA")
    if account.blocked:
        raise RequestError("TARJETA_BLOQUEADA")
    return account


def _repeat(state: BankState, tipo: str, card: str, monto: Decimal, tx_id: str) -> Applied | None:
    owner = state.owner_of(tx_id)
    if owner is None:
        return None
    if owner != card:  # another card's transaction (maybe never decoded here)
        raise RequestError("ID_REPETIDO")
    state.account(card)  # decodes the card's records set aside, so the id is in ``applied``
    previous = state.applied.get(tx_id)
    if previous is None:  # forgotten (older than the id memory): a new transaction
        return None
    if (previous.tipo, previous.tarjeta, previous.monto) != (tipo, card, monto):
        raise RequestError("ID_REPETIDO")
    return previous


def decide_movement(
    state: BankState, tipo: str, card: str, monto: Decimal, tx_id: str, fecha: str, limits: Limits
) -> Record | Applied:
    """DEPOSITO or RETIRO: the record to commit, or the earlier result of the same id."""
    # The id first: a retry answers the original result even if the limits changed since.
    if (previous := _repeat(state, tipo, card, monto, tx_id)) is not None:
        return previous
    if monto > limits.max_per_operation:
        raise RequestError("MONTO_INVALIDO", "above the per-operation maximum")
    account = account_for(state, card)
    if tipo == "DEPOSITO":
        saldo = add(account.saldo, monto)
    else:
        if monto > account.saldo:
            raise RequestError("FONDOS_INSUFICIENTES")
        if add(state.withdrawn_on(card, fecha[:10]), monto) > limits.daily_limit:
            raise RequestError("LIMITE_DIARIO")
        saldo = subtract(account.saldo, monto)
    return Record(state.last_n + 1, fecha, tipo, account._replace(saldo=saldo), tx_id, monto)


def decide_pin_admission(state: BankState, card: str, fecha: str) -> Record:
    """Count a PIN attempt *before* it is checked: the record that raises the card's ``intentos`` by one.

    Committed (and synced) before the scrypt check, under the ledger lock,
    so that simultaneous guesses on one card are admitted one at a time
    against the true count: once three are in flight or failed, the card
    is blocked and the next one is refused without checking any PIN. A
    handler killed before the check leaves the attempt counted: the safe side.
    """
    account = account_for(state, card)
    return Record(state.last_n + 1, fecha, "INTENTOS", account._replace(intentos=account.intentos + 1))


def decide_pin_success(
    state: BankState, card: str, checked_field: str, new_field: str | None, fecha: str
) -> Record | None:
    """After a right PIN: the record that resets ``intentos`` (and stores ``new_field``, an upgraded hash).

    ``None`` if the PIN was changed since it was checked: the check was
    against an old PIN, so it counts as wrong (the safe side). A card that
    reached three while this right attempt was in flight is unblocked by
    it: it was admitted before the count reached three.
    """
    account = state.account(card)
    if account is None or account.pin != checked_field:
        return None
    tipo = "PIN" if new_field is not None else "INTENTOS"
    return Record(state.last_n + 1, fecha, tipo, account._replace(pin=new_field or account.pin, intentos=0))


def decide_pin_change(state: BankState, card: str, new_field: str, fecha: str) -> Record:
    account = account_for(state, card)
    return Record(state.last_n + 1, fecha, "PIN", account._replace(pin=new_field, intentos=0))

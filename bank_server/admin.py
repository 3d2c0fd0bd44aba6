"""Administration of the ledger: the same lock and journal as the server.

Every change goes through the journal (so a running server's handlers
see it at their next transaction) and is then checkpointed into
``cuenta.txt`` (so the file alone is always current after a command).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bank_server.clock import now_iso
from bank_server.journal import Record
from bank_server.ledger import Account, parse_account
from bank_server.pins import hash_pin
from bank_server.store import Store, StoreMode
from common.messages import mask_card
from common.money import format_amount, format_for_people


class AdminError(Exception):
    """A refused administration command; the message is for the administrator, in Spanish."""


def create_account(ledger: Path, tarjeta: str, titular: str, saldo: Decimal, pin: str) -> None:
    pin_field = hash_pin(pin)
    account, problem = parse_account([tarjeta, titular, format_amount(saldo), pin_field, "0"])
    if account is None:
        raise AdminError(problem or "cuenta no válida")
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        with store.locked() as state:
            if tarjeta in state.accounts:
                raise AdminError(f"la tarjeta {mask_card(tarjeta)} ya existe")
            store.commit(Record(state.last_n + 1, now_iso(), "ALTA", account))
        store.checkpoint()
    finally:
        store.close()


def _change(ledger: Path, tarjeta: str, tipo: str, change: dict[str, object]) -> Account:
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        with store.locked() as state:
            account = state.accounts.get(tarjeta)
            if account is None:
                raise AdminError(f"no existe la tarjeta {mask_card(tarjeta)}")
            updated = account._replace(**change)
            store.commit(Record(state.last_n + 1, now_iso(), tipo, updated))
        store.checkpoint()
        return updated
    finally:
        store.close()


def unblock(ledger: Path, tarjeta: str) -> None:
    _change(ledger, tarjeta, "DESBLOQUEO", {"intentos": 0})


def reset_pin(ledger: Path, tarjeta: str, pin: str) -> None:
    _change(ledger, tarjeta, "PIN", {"pin": hash_pin(pin), "intentos": 0})


def list_accounts(ledger: Path) -> list[str]:
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        with store.locked() as state:
            accounts = list(state.accounts.values())
    finally:
        store.close()
    rows = [f"{'TARJETA':<20} {'TITULAR':<32} {'SALDO':>18}  ESTADO"]
    for a in accounts:
        status = "BLOQUEADA" if a.blocked else (f"activa ({a.intentos} PIN errados)" if a.intentos else "activa")
        rows.append(f"{mask_card(a.tarjeta):<20} {a.titular[:32]:<32} {format_for_people(a.saldo):>18}  {status}")
    return rows

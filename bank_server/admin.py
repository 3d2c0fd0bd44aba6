"""Administration of the bank: accounts through the ledger's lock and journal, terminals through their registry.

Every account change goes through the journal (so a running server's
handlers see it at their next transaction) and is then checkpointed into
``cuenta.txt`` (so the file alone is always current after a command).
Every terminal change goes through ``TerminalRegistry`` (its own lock and
atomic file), which running handlers re-read within 2 seconds. So each
command here is safe while the server runs.

Messages are for the administrator, in Spanish; none holds a key, a PIN
or a full card number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from bank_server.clock import now_iso
from bank_server.journal import Record
from bank_server.ledger import Account, escape_unsafe, parse_account, titular_warning
from bank_server.pins import hash_pin, pin_pepper
from bank_server.store import Store, StoreMode
from bank_server.terminals import DEFAULT_GUESS_LIMIT, TerminalInfo, TerminalRegistry
from common.keys import TerminalKey
from common.messages import mask_card
from common.money import format_amount, format_for_people


class AdminError(Exception):
    """A refused administration command; the message is for the administrator, in Spanish."""


# -- accounts ---------------------------------------------------------------------------------------


def require_ledger(ledger: Path) -> None:
    """Refuse a ledger path that is not a file, before any lock or journal is created beside it.

    A command run in the wrong folder must leave nothing behind there.
    """
    if not ledger.is_file():
        raise AdminError(
            f"{ledger}: no existe el archivo de cuentas; ejecute el comando en la carpeta del banco "
            "o indique el archivo con --cuenta. No se cambió nada."
        )


def check_new_titular(titular: str) -> None:
    """Refuse a holder name ``crear`` must not write: empty, or holding characters that attack a reader.

    The ledger itself still loads such names (LEDGER.md allows them);
    only new ones are refused, here, before anything is written.
    """
    if not titular.strip():
        raise AdminError("el nombre del titular no puede quedar vacío")
    if warning := titular_warning(titular):
        raise AdminError(f"{warning}; escríbalo sin ellos")


def create_account(ledger: Path, tarjeta: str, titular: str, saldo: Decimal, pin: str, bank_key: bytes) -> None:
    """``crear``: a new account whose PIN hash is peppered with the bank key (the only form the bank writes)."""
    check_new_titular(titular)
    pin_field = hash_pin(pin, pin_pepper(bank_key))
    account, problem = parse_account([tarjeta, titular, format_amount(saldo), pin_field, "0"])
    if account is None:
        raise AdminError(problem or "cuenta no válida")
    require_ledger(ledger)
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        with store.locked() as state:
            if tarjeta in state.accounts:
                raise AdminError(f"la tarjeta {mask_card(tarjeta)} ya existe en {ledger}; no se cambió nada")
            store.commit(Record(state.last_n + 1, now_iso(), "ALTA", account))
        store.checkpoint()
    finally:
        store.close()


def _change(ledger: Path, tarjeta: str, tipo: str, change: dict[str, object]) -> Account:
    require_ledger(ledger)
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        with store.locked() as state:
            account = state.accounts.get(tarjeta)
            if account is None:
                raise AdminError(f"no existe la tarjeta {mask_card(tarjeta)} en {ledger}; vea las cuentas con: listar")
            updated = account._replace(**change)
            store.commit(Record(state.last_n + 1, now_iso(), tipo, updated))
        store.checkpoint()
        return updated
    finally:
        store.close()


def unblock(ledger: Path, tarjeta: str) -> None:
    _change(ledger, tarjeta, "DESBLOQUEO", {"intentos": 0})


def reset_pin(ledger: Path, tarjeta: str, pin: str, bank_key: bytes) -> None:
    """``cambiar-pin``: a peppered hash of the new PIN, and the card unblocked (also upgrades an old ``scrypt$``)."""
    _change(ledger, tarjeta, "PIN", {"pin": hash_pin(pin, pin_pepper(bank_key)), "intentos": 0})


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns with an ellipsis, so one long name cannot break the table."""
    return text if len(text) <= width else text[: width - 1] + "…"


def list_accounts(ledger: Path) -> list[str]:
    """``listar``: one row per account; holder names escaped (attack item 6), cards masked."""
    require_ledger(ledger)
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        with store.locked() as state:
            accounts = list(state.accounts.values())
    finally:
        store.close()
    rows = [f"{'TARJETA':<20} {'TITULAR':<32} {'SALDO':>18}  ESTADO"]
    for a in accounts:
        status = "BLOQUEADA" if a.blocked else (f"activa ({a.intentos} PIN errados)" if a.intentos else "activa")
        titular = _fit(escape_unsafe(a.titular), 32)
        rows.append(f"{mask_card(a.tarjeta):<20} {titular:<32} {format_for_people(a.saldo):>18}  {status}")
    return rows


# -- terminals --------------------------------------------------------------------------------------


def registry_for(ledger: Path, bank_key: bytes, guess_limit: int = DEFAULT_GUESS_LIMIT) -> TerminalRegistry:
    """The terminal registry beside ``ledger``; the ledger must exist.

    A terminal command run in the wrong folder would otherwise create a
    registry nobody serves, and a key file that works nowhere.
    """
    require_ledger(ledger)
    return TerminalRegistry.for_ledger(ledger, bank_key, guess_limit=guess_limit)


def enrol_terminal(ledger: Path, bank_key: bytes, terminal_id: str, key_file: Path) -> TerminalKey:
    """``cajero-alta``: the registry makes the key and writes ``key_file`` (0600, never overwritten)."""
    return registry_for(ledger, bank_key).enrol(terminal_id, key_file)


@dataclass(frozen=True)
class Rotation:
    version: int
    already_pending: bool


def rotate_terminal(ledger: Path, bank_key: bytes, terminal_id: str) -> Rotation:
    """``cajero-rotar``: a pending key; asked again before the ATM takes it, the same one."""
    registry = registry_for(ledger, bank_key)
    before = {info.terminal_id: info for info in registry.list()}.get(terminal_id)
    version = registry.rotate(terminal_id)
    return Rotation(version, before is not None and before.pending_version == version)


def revoke_terminal(ledger: Path, bank_key: bytes, terminal_id: str) -> bool:
    """``cajero-baja``; False if it already was revoked."""
    return registry_for(ledger, bank_key).revoke(terminal_id)


def reactivate_terminal(ledger: Path, bank_key: bytes, terminal_id: str) -> bool:
    """``cajero-reactivar``; False if the terminal had no recent wrong PINs to forget."""
    return registry_for(ledger, bank_key).reactivate(terminal_id)


def backup_terminals(ledger: Path, bank_key: bytes, destination: Path) -> None:
    """``cajeros --respaldo``: a consistent copy of ``cuenta.cajeros`` (keys still wrapped) in a new 0600 file."""
    registry_for(ledger, bank_key).backup(destination)


def list_terminals(ledger: Path, bank_key: bytes, guess_limit: int, now: float | None = None) -> list[TerminalInfo]:
    return registry_for(ledger, bank_key, guess_limit).list(time.time() if now is None else now)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _suspension(info: TerminalInfo) -> str:
    if not info.active:
        return "-"
    if info.suspended:
        return f"sí ({info.wrong_pins_last_hour} PIN errados en 1 h)"
    return f"no ({info.wrong_pins_last_hour} PIN errados en 1 h)" if info.wrong_pins_last_hour else "no"


def terminal_rows(infos: list[TerminalInfo]) -> list[str]:
    """The ``cajeros`` table: state only, never a key (``TerminalInfo`` holds none)."""
    table = [("CAJERO", "VERSIÓN", "PENDIENTE", "ESTADO", "SUSPENDIDO", "VISTO", "DIRECCIÓN")]
    for info in infos:
        table.append(
            (
                info.terminal_id,
                str(info.current_version) if info.current_version is not None else "-",
                str(info.pending_version) if info.pending_version is not None else "-",
                "activo" if info.active else "dado de baja",
                _suspension(info),
                _when(info.last_seen),
                _fit(escape_unsafe(info.last_address), 46) if info.last_address else "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]

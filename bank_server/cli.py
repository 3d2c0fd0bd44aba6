"""``python -m bank_server``: serve ATMs, or administer the bank. Help and messages in Spanish.

``python -m bank_server 8000`` serves (the original project's command);
the other commands are sub-commands, whose names other tools depend on
(issue 11): ``genkey``, ``crear``, ``listar``, ``desbloquear``,
``cambiar-pin``, ``verificar``, ``cajero-alta``, ``cajero-rotar``,
``cajero-baja``, ``cajero-reactivar``, ``cajeros``.

Every command takes ``--cuenta`` (the ledger, default ``cuenta.txt``) and
``--llave`` (the bank key, default ``banco.key``), like the server. Bad
input is one line on stderr naming the file or argument and what to do,
exit status 2, and nothing changed; never a traceback. No output ever
holds a key, a PIN or a full card number.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bank_server import admin
from bank_server.cli_parser import COMMANDS, HELP_FLAGS, build_parser
from bank_server.config import ServerConfig
from bank_server.ledger import Account, escape_unsafe, load_ledger, titular_warning
from bank_server.pins import needs_rehash
from bank_server.rules import Limits
from bank_server.server import ServerLockError, serve
from bank_server.store import LedgerLoadError, Store, StoreMode, journal_path_for
from bank_server.terminals import (
    DamagedRegistryError,
    TerminalRegistry,
    TerminalRegistryError,
    WrongBankKeyError,
    registry_path_for,
)
from common.errors import KeyFileError
from common.keys import create_bank_key, load_bank_key
from common.messages import CARD_RE, PIN_RE, is_trivial_pin, mask_card


def _load_bank_key(path: Path) -> bytes:
    """The bank key, or a ``KeyFileError`` that also says what to do (never quoting the file)."""
    try:
        return load_bank_key(path)
    except KeyFileError as exc:
        if path.exists():
            hint = (
                f"Restaure {path} de su respaldo; si el banco es nuevo (ningún PIN ni cajero creado con ella), "
                "bórrelo y cree otra con: python -m bank_server genkey"
            )
        else:
            hint = (
                "Si el banco es nuevo, créela con: python -m bank_server genkey; si no, restaure la llave de su "
                "respaldo o indique dónde está con --llave (sin ella no sirven los PIN ni las llaves de los cajeros)"
            )
        raise KeyFileError(f"{exc} {hint}.") from None


def _bank_key_for(ledger: Path, key_path: Path) -> bytes:
    """The bank key, checked against the terminal registry when there is one.

    A PIN hashed under the wrong bank key would never match again, and a
    server started with one could serve no terminal; the registry's
    control tag is the one place that can tell, so use it before writing.
    A registry damaged in some other way is not this command's business:
    the terminal commands and the server report it.
    """
    bank_key = _load_bank_key(key_path)
    if registry_path_for(ledger).exists():
        try:
            TerminalRegistry.for_ledger(ledger, bank_key).refresh(force=True)
        except WrongBankKeyError:
            raise
        except TerminalRegistryError:
            pass
    return bank_key


def _ask_pin(given: str | None) -> str:
    pin = given if given is not None else getpass.getpass("PIN nuevo: ")
    if not PIN_RE.fullmatch(pin):
        raise admin.AdminError("el PIN debe tener de 4 a 6 dígitos; no se cambió nada")
    if is_trivial_pin(pin):
        raise admin.AdminError(
            "ese PIN es muy fácil de adivinar (todos los dígitos iguales o seguidos, como 1111 o 1234); elija otro"
        )
    if given is None and getpass.getpass("Repita el PIN: ") != pin:
        raise admin.AdminError("los dos PIN no coinciden; no se cambió nada")
    return pin


def _check_card(tarjeta: str) -> None:
    if not CARD_RE.fullmatch(tarjeta):
        raise admin.AdminError(
            f"la tarjeta {escape_unsafe(tarjeta)[:24]!r} debe tener de 12 a 19 dígitos, sin espacios ni guiones"
        )


# -- commands ----------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    bank_key = _bank_key_for(args.cuenta, args.llave)
    config = ServerConfig(
        host=args.host,
        port=args.puerto,
        ledger=args.cuenta,
        key_file=args.llave,
        log_file=args.registro,
        detailed_log=args.detallado,
        max_handlers=args.max_cajeros,
        idle_timeout=args.inactividad,
        start_method=args.inicio,
        checkpoint_interval=args.punto_de_control,
        limits=Limits(max_per_operation=args.max_operacion, daily_limit=args.limite_diario),
        max_wrong_pins_per_terminal=args.max_pin_fallidos_cajero,
        max_unconfirmed_per_address=args.max_por_direccion,
    )
    return serve(config, bank_key)


def _genkey(args: argparse.Namespace) -> int:
    """Make the bank key, unless that would orphan a bank already bound to another one.

    ``create_bank_key`` never overwrites the file. But with the file gone
    (moved, lost) a new key would silently break every peppered PIN and
    every terminal key, so a ledger, journal or registry made under some
    bank key stops it: the right move then is to restore the old key.
    """
    path: Path = args.llave
    if not path.exists():
        registry = registry_path_for(args.cuenta)
        if registry.exists():
            raise admin.AdminError(
                f"{registry} ya existe y sus llaves están cifradas con la llave del banco anterior: una llave nueva "
                f"dejaría sin servicio a todos los cajeros. Restaure {path} de su respaldo (o indique dónde está con "
                "--llave). No se creó nada."
            )
        for used in (args.cuenta, journal_path_for(args.cuenta)):
            if _has_peppered_hashes(used):
                raise admin.AdminError(
                    f"{used} tiene PIN cifrados con la llave del banco anterior (scrypt-p$): con una llave nueva "
                    f"ninguno serviría. Restaure {path} de su respaldo (o indique dónde está con --llave). "
                    "No se creó nada."
                )
    create_bank_key(path)
    print(
        f"Llave del banco creada en {path} (solo este usuario puede leerla). Guarde una copia en un lugar seguro, "
        "separada de las copias de cuenta.txt: sin ella no sirven los PIN ni las llaves de los cajeros."
    )
    return 0


def _has_peppered_hashes(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return any(b"scrypt-p$" in chunk for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return False


def _create(args: argparse.Namespace) -> int:
    _check_card(args.tarjeta)
    admin.check_new_titular(args.titular)
    bank_key = _bank_key_for(args.cuenta, args.llave)
    admin.create_account(args.cuenta, args.tarjeta, args.titular, args.saldo, _ask_pin(args.pin), bank_key)
    print(f"Cuenta {mask_card(args.tarjeta)} creada.")
    return 0


def _list(args: argparse.Namespace) -> int:
    print("\n".join(admin.list_accounts(args.cuenta)))
    return 0


def _unblock(args: argparse.Namespace) -> int:
    _check_card(args.tarjeta)
    admin.unblock(args.cuenta, args.tarjeta)
    print(f"Tarjeta {mask_card(args.tarjeta)} desbloqueada.")
    return 0


def _change_pin(args: argparse.Namespace) -> int:
    _check_card(args.tarjeta)
    bank_key = _bank_key_for(args.cuenta, args.llave)
    admin.reset_pin(args.cuenta, args.tarjeta, _ask_pin(args.pin), bank_key)
    print(f"PIN de la tarjeta {mask_card(args.tarjeta)} cambiado; la tarjeta queda desbloqueada.")
    return 0


def _ledger_report(ledger_path: Path) -> tuple[list[str], dict[str, Account]]:
    """Problems of the ledger and its journal (as the server's start-up sees them), then risky holder names.

    Returns the accounts as the server would load them, for the notes.
    """
    ledger, errors = load_ledger(ledger_path)
    if errors:
        return [str(e) for e in errors], {}
    problems = [str(notice) for notice in ledger.notices]
    accounts: dict[str, Account] = dict(ledger.accounts)
    journal = journal_path_for(ledger_path)
    if not journal.exists():
        return problems, accounts
    try:
        store = Store.open(ledger_path, mode=StoreMode.VERIFY)
    except LedgerLoadError as exc:
        return problems + exc.problems, accounts
    try:
        accounts = dict(store.state.accounts)
    finally:
        store.close()
    for card, account in accounts.items():  # names that so far live only in the journal
        in_file = ledger.accounts.get(card)
        if (in_file is None or in_file.titular != account.titular) and (warning := titular_warning(account.titular)):
            problems.append(
                f"{journal}: cuenta {mask_card(card)}, aún solo en el diario: {warning}; cuando el banco la pase a "
                f"{ledger_path}, corríjala allí con el banco detenido"
            )
    return problems, accounts


def _registry_report(ledger_path: Path, key_path: Path) -> tuple[list[str], list[str]]:
    """Problems and notes about the bank key and the terminal registry (each wrapped key is checked)."""
    try:
        bank_key = _load_bank_key(key_path)
    except KeyFileError as exc:
        return [str(exc)], []
    path = registry_path_for(ledger_path)
    if not path.exists():
        return [], [f"{path}: no existe: no hay cajeros dados de alta (para dar de alta uno: cajero-alta ID)."]
    registry = TerminalRegistry(path, bank_key)
    try:
        infos = registry.list()
        for info in infos:
            for version in (info.current_version, info.pending_version):
                if version is not None:
                    registry.key_for_hello(info.terminal_id, version)
    except DamagedRegistryError as exc:
        return list(exc.problems), []
    except WrongBankKeyError as exc:
        return [f"{exc} (se usó la llave {key_path})"], []
    except TerminalRegistryError as exc:
        return [str(exc)], []
    active = sum(1 for info in infos if info.active)
    return [], [f"{path}: {len(infos)} cajeros, {active} activos; sus llaves corresponden a {key_path}."]


def _verify(args: argparse.Namespace) -> int:
    problems, accounts = _ledger_report(args.cuenta)
    registry_problems, notes = _registry_report(args.cuenta, args.llave)
    problems += registry_problems
    old = sum(1 for account in accounts.values() if needs_rehash(account.pin))
    if old:
        notes.append(
            f"{args.cuenta}: {old} cuentas tienen el PIN en el formato antiguo (scrypt$, sin la llave del banco); "
            "el banco lo reescribe en el siguiente IDENTIFICAR correcto o cambio de PIN de cada una."
        )
    for note in notes:
        print(note)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.cuenta}: correcto.")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    bank_key = _load_bank_key(args.llave)
    key_file = args.salida if args.salida is not None else Path(f"{args.id}.key")
    key = admin.enrol_terminal(args.cuenta, bank_key, args.id, key_file)
    print(
        f"Cajero {key.terminal_id} dado de alta, con la versión {key.version} de su llave.\n"
        f"Su archivo de llave es {key_file} (solo este usuario puede leerlo): llévelo al cajero por un medio "
        "seguro, guárdelo allí como llave.key y bórrelo de este equipo (el banco guarda su propia copia, cifrada, "
        f"en {registry_path_for(args.cuenta)})."
    )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    rotation = admin.rotate_terminal(args.cuenta, _load_bank_key(args.llave), args.id)
    if rotation.already_pending:
        print(
            f"El cajero {args.id} ya tenía una llave pendiente (versión {rotation.version}), que se mantiene: "
            "todavía no la ha usado. Vea el avance con: cajeros"
        )
    else:
        print(
            f"Cajero {args.id}: llave nueva pendiente, versión {rotation.version}. El cajero la recoge solo en su "
            "próxima conexión; hasta que la use vale también la actual. Vea el avance con: cajeros"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if admin.revoke_terminal(args.cuenta, _load_bank_key(args.llave), args.id):
        print(
            f"Cajero {args.id} dado de baja: el banco rechaza sus conexiones y cierra las abiertas en menos de "
            f"2 segundos. Sus llaves se borraron; para volver a usarlo: cajero-alta {args.id} (recibe una llave nueva)."
        )
    else:
        print(f"El cajero {args.id} ya estaba dado de baja; no se cambió nada.")
    return 0


def _reactivate(args: argparse.Namespace) -> int:
    if admin.reactivate_terminal(args.cuenta, _load_bank_key(args.llave), args.id):
        print(f"Cajero {args.id}: se olvidaron sus PIN errados recientes; puede volver a identificar tarjetas.")
    else:
        print(f"El cajero {args.id} no tenía PIN errados recientes; no se cambió nada.")
    return 0


def _terminals(args: argparse.Namespace) -> int:
    bank_key = _load_bank_key(args.llave)
    if args.respaldo is not None:
        admin.backup_terminals(args.cuenta, bank_key, args.respaldo)
        print(
            f"Copia de {registry_path_for(args.cuenta)} guardada en {args.respaldo} (solo este usuario puede leerla). "
            f"Las llaves de los cajeros van cifradas con {args.llave}: guarde esa llave aparte, en otro lugar "
            "seguro; sin ella la copia no sirve."
        )
        return 0
    infos = admin.list_terminals(args.cuenta, bank_key, args.max_pin_fallidos_cajero)
    if not infos:
        print("No hay cajeros dados de alta. Para dar de alta uno: python -m bank_server cajero-alta ID")
        return 0
    print("\n".join(admin.terminal_rows(infos)))
    return 0


_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "servir": _serve,
    "genkey": _genkey,
    "crear": _create,
    "listar": _list,
    "desbloquear": _unblock,
    "cambiar-pin": _change_pin,
    "verificar": _verify,
    "cajero-alta": _enrol,
    "cajero-rotar": _rotate,
    "cajero-baja": _revoke,
    "cajero-reactivar": _reactivate,
    "cajeros": _terminals,
}


def _with_default_command(argv: list[str]) -> list[str]:
    """``python -m bank_server 8000`` (and ``--host ... 8000``) means ``servir``: the original command."""
    first = argv[0] if argv else ""
    if first not in COMMANDS and first not in HELP_FLAGS and (first.isdigit() or first.startswith("-")):
        return ["servir", *argv]
    return argv


def run(argv: Sequence[str]) -> int:
    # Every file a command creates (journal, lock, checkpoint, registry) is the bank user's alone,
    # whoever runs it and whatever their umask (issue 11, attack item 3); key files are 0600 anyway.
    os.umask(0o077)
    args = build_parser().parse_args(_with_default_command(list(argv)))
    try:
        return _run(args)
    except (
        KeyFileError,
        LedgerLoadError,
        ServerLockError,
        admin.AdminError,
        TerminalRegistryError,
    ) as exc:
        used = f" (se usó la llave {args.llave})" if isinstance(exc, WrongBankKeyError) else ""
        print(f"Error: {exc}{used}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the command could not use; never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"Error: {where}{exc.strerror or exc}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command is None:
        build_parser().print_help()
        return 2
    return _HANDLERS[args.command](args)

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
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

from bank_server import admin
from bank_server.config import ServerConfig
from bank_server.ledger import Account, escape_unsafe, load_ledger, titular_warning
from bank_server.pins import needs_rehash
from bank_server.rules import Limits
from bank_server.server import ServerLockError, default_start_method, serve
from bank_server.store import LedgerLoadError, Store, StoreMode, journal_path_for
from bank_server.terminals import (
    DamagedRegistryError,
    TerminalRegistry,
    TerminalRegistryError,
    WrongBankKeyError,
    check_terminal_id,
    registry_path_for,
)
from common.errors import KeyFileError
from common.keys import create_bank_key, load_bank_key
from common.messages import CARD_RE, PIN_RE, is_trivial_pin, mask_card
from common.money import AmountError, parse_ledger_amount, parse_request_amount

COMMANDS = (
    "servir",
    "genkey",
    "crear",
    "listar",
    "desbloquear",
    "cambiar-pin",
    "verificar",
    "cajero-alta",
    "cajero-rotar",
    "cajero-baja",
    "cajero-reactivar",
    "cajeros",
)
DEFAULT_LEDGER = Path("cuenta.txt")
DEFAULT_BANK_KEY = Path("banco.key")
_HELP_FLAGS = ("-h", "--ayuda", "--help")

BACKUP_ADVICE = (
    "Respaldo: las llaves de los cajeros viven en cuenta.cajeros (junto a cuenta.txt), cifradas con la\n"
    "llave del banco. Copie ese archivo con 'python -m bank_server cajeros --respaldo ARCHIVO' (una copia\n"
    "coherente aunque el banco esté en marcha) y guarde banco.key aparte, en otro lugar seguro: sin\n"
    "banco.key la copia no sirve, y banco.key junto a cuenta.txt permite probar los PIN. Para restaurar:\n"
    "detenga el banco y copie el respaldo como cuenta.cajeros. Un cajero cuya llave cambió después de esa\n"
    "copia (cajero-rotar, cajero-alta) no podrá conectarse: dele una nueva con cajero-baja y cajero-alta."
)


# -- argparse, in Spanish ----------------------------------------------------------------------------

# argparse's own messages (Python 3.11 wording), so that a mistyped command is answered in Spanish.
_ARGPARSE_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), spanish)
    for pattern, spanish in (
        (r"the following arguments are required: (.*)", r"faltan argumentos: \1"),
        (r"unrecognized arguments: (.*)", r"argumentos no reconocidos: \1"),
        (r"invalid choice: (.*) \(choose from (.*)\)", r"valor no válido: \1 (elija entre \2)"),
        (r"invalid \S+ value: (.*)", r"valor no válido: \1"),
        (r"expected one argument", r"falta su valor"),
        (r"expected at most one argument", r"admite un valor como máximo"),
        (r"expected at least one argument", r"necesita al menos un valor"),
        (r"ambiguous option: (\S+) could match (.*)", r"opción ambigua: \1 puede ser \2"),
        (r"not allowed with argument (.*)", r"no se puede usar junto con \1"),
        (r"one of the arguments (.*) is required", r"falta uno de los argumentos \1"),
        (r"ignored explicit argument (.*)", r"esta opción no lleva valor: \1"),
    )
)
_ARGUMENT = re.compile(r"argument (\S+): (.*)", re.DOTALL)


def spanish_argparse_message(message: str) -> str:
    """argparse's English error text in Spanish; escaped, since it may quote raw command-line text."""
    if match := _ARGUMENT.fullmatch(message):
        return f"argumento {match[1]}: {spanish_argparse_message(match[2])}"
    for pattern, spanish in _ARGPARSE_MESSAGES:
        if pattern.fullmatch(message):
            return escape_unsafe(pattern.sub(spanish, message))
    return escape_unsafe(message)


class SpanishArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one Spanish line, exit status 2 (sub-commands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {spanish_argparse_message(message)}. Vea la ayuda: {self.prog} --ayuda\n")


class SpanishFormatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):  # type: ignore[no-untyped-def]
        return super().add_usage(usage, actions, groups, "uso: " if prefix is None else prefix)


def _parser(
    prog: str, description: str, subparsers: argparse._SubParsersAction | None = None, epilog: str | None = None
) -> argparse.ArgumentParser:
    kwargs = dict(description=description, epilog=epilog, formatter_class=SpanishFormatter, add_help=False)
    parser = (
        subparsers.add_parser(prog, help=description.split("\n")[0], **kwargs)
        if subparsers
        else SpanishArgumentParser(prog=prog, **kwargs)
    )
    parser._positionals.title = "argumentos"
    parser._optionals.title = "opciones"
    parser.add_argument("-h", "--ayuda", "--help", action="help", help="muestra esta ayuda y termina")
    return parser


def _common_options(parser: argparse.ArgumentParser, key_help: str) -> None:
    """``--cuenta`` and ``--llave``: every command takes both, like the server."""
    parser.add_argument(
        "--cuenta", type=Path, default=DEFAULT_LEDGER, help="archivo de cuentas (por omisión: cuenta.txt)"
    )
    parser.add_argument("--llave", type=Path, default=DEFAULT_BANK_KEY, help=key_help)


_KEY_USED = "la llave del banco (por omisión: banco.key)"
_KEY_UNUSED = "la llave del banco (por omisión: banco.key; este comando no la usa)"


def _amount(text: str) -> Decimal:
    try:
        return parse_request_amount(text) if text not in ("0", "0.00") else parse_ledger_amount("0.00")
    except AmountError:
        raise argparse.ArgumentTypeError(f"monto no válido: {text!r} (use por ejemplo 1500.00)") from None


def _positive(kind: type) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} no es un número válido") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} debe ser mayor que cero")
        return value

    return parse


def _terminal_id(text: str) -> str:
    try:
        return check_terminal_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_server(sub: argparse._SubParsersAction) -> None:
    s = _parser("servir", "atiende cajeros (también: python -m bank_server PUERTO)", sub)
    s.add_argument("puerto", type=int, help="puerto TCP (0: uno libre, que se muestra al arrancar)")
    s.add_argument(
        "--host", default="0.0.0.0", help="interfaz donde escuchar (por omisión: todas; 127.0.0.1: solo este equipo)"
    )
    _common_options(s, "la llave del banco (por omisión: banco.key; créela con genkey)")
    s.add_argument(
        "--registro", type=Path, default=Path("banco.log"), help="archivo de registro rotativo (por omisión: banco.log)"
    )
    s.add_argument(
        "--detallado",
        action="store_true",
        help="registra también cada consulta, depósito y retiro aceptados (el diario ya guarda cada movimiento)",
    )
    s.add_argument(
        "--max-cajeros", type=_positive(int), default=100, help="cajeros atendidos a la vez (por omisión: 100)"
    )
    s.add_argument(
        "--inactividad",
        type=_positive(float),
        default=120.0,
        help="segundos sin peticiones antes de cerrar (por omisión: 120)",
    )
    s.add_argument(
        "--max-pin-fallidos-cajero",
        type=_positive(int),
        default=ServerConfig.max_wrong_pins_per_terminal,
        metavar="N",
        help="un cajero con más de N PIN errados en una hora, sumando todas las tarjetas, queda suspendido para "
        "PIN hasta que pase la hora o se use cajero-reactivar (por omisión: %(default)s)",
    )
    per_address = ServerConfig.max_unconfirmed_per_address
    s.add_argument(
        "--max-por-direccion",
        type=_positive(int),
        default=per_address,
        metavar="N",
        help="conexiones que una misma dirección puede tener antes de terminar su saludo; las demás se cierran "
        "al instante, para que una inundación no deje fuera a otros cajeros (por omisión: "
        + ("la cuarta parte de --max-cajeros, al menos 2)" if per_address is None else f"{per_address})"),
    )
    s.add_argument(
        "--max-operacion",
        type=_amount,
        default=Limits().max_per_operation,
        help="monto máximo por depósito o retiro (por omisión: 10000.00)",
    )
    s.add_argument(
        "--limite-diario",
        type=_amount,
        default=Limits().daily_limit,
        help="retiro máximo por tarjeta y día (por omisión: 20000.00)",
    )
    s.add_argument(
        "--punto-de-control",
        type=_positive(float),
        default=30.0,
        help="cada cuántos segundos se reescribe cuenta.txt con lo aplicado, si hubo cambios (por omisión: 30)",
    )
    s.add_argument(
        "--inicio",
        choices=multiprocessing.get_all_start_methods(),
        default=default_start_method(),
        help="cómo se inician los procesos manejadores (por omisión: %(default)s)",
    )


def _add_accounts(sub: argparse._SubParsersAction) -> None:
    g = _parser(
        "genkey",
        "crea la llave del banco (banco.key): 64 dígitos hexadecimales, solo legible por este usuario; "
        "nunca sobrescribe un archivo",
        sub,
    )
    _common_options(g, "archivo a crear (por omisión: banco.key)")

    c = _parser("crear", "da de alta una cuenta", sub)
    c.add_argument("tarjeta", help="número de tarjeta, de 12 a 19 dígitos")
    c.add_argument("titular", help="nombre del titular (entre comillas si lleva espacios; sin caracteres de control)")
    c.add_argument("--saldo", type=_amount, default=Decimal("0.00"), help="saldo inicial (por omisión: 0.00)")
    c.add_argument("--pin", help="PIN de 4 a 6 dígitos (si falta, se pide sin mostrarlo; úselo solo en scripts)")
    _common_options(c, _KEY_USED + "; el PIN se guarda cifrado con ella")

    _common_options(
        _parser("listar", "lista las cuentas (tarjeta enmascarada, titular, saldo, estado)", sub), _KEY_UNUSED
    )
    d = _parser("desbloquear", "desbloquea una tarjeta bloqueada por PIN errados", sub)
    d.add_argument("tarjeta", help="número de tarjeta")
    _common_options(d, _KEY_UNUSED)
    p = _parser("cambiar-pin", "asigna un PIN nuevo a una tarjeta (y la desbloquea)", sub)
    p.add_argument("tarjeta", help="número de tarjeta")
    p.add_argument("--pin", help="PIN nuevo (si falta, se pide sin mostrarlo)")
    _common_options(p, _KEY_USED + "; el PIN se guarda cifrado con ella")
    _common_options(
        _parser(
            "verificar",
            "revisa el archivo de cuentas, su diario, la llave del banco y los cajeros; termina con error (1) si hay "
            "problemas",
            sub,
        ),
        _KEY_USED,
    )


def _add_terminals(sub: argparse._SubParsersAction) -> None:
    a = _parser(
        "cajero-alta",
        "da de alta un cajero: una llave nueva y aleatoria, escrita en el archivo de llave que se lleva al cajero\n"
        "(solo legible por este usuario; nunca sobrescribe). Un cajero dado de baja vuelve con la versión siguiente.",
        sub,
    )
    a.add_argument("id", metavar="ID", type=_terminal_id, help="identificador: 1 a 32 de A-Z, 0-9 y '-'")
    a.add_argument("--salida", type=Path, metavar="ARCHIVO", help="archivo de llave a crear (por omisión: ID.key)")
    _common_options(a, _KEY_USED)
    r = _parser(
        "cajero-rotar",
        "prepara una llave nueva (pendiente) para un cajero; el cajero la recoge solo en su próxima conexión",
        sub,
    )
    r.add_argument("id", metavar="ID", type=_terminal_id, help="identificador del cajero")
    _common_options(r, _KEY_USED)
    b = _parser(
        "cajero-baja",
        "da de baja un cajero: se rechazan sus conexiones y las abiertas se cierran en menos de 2 segundos",
        sub,
    )
    b.add_argument("id", metavar="ID", type=_terminal_id, help="identificador del cajero")
    _common_options(b, _KEY_USED)
    x = _parser("cajero-reactivar", "levanta la suspensión de un cajero por demasiados PIN errados", sub)
    x.add_argument("id", metavar="ID", type=_terminal_id, help="identificador del cajero")
    _common_options(x, _KEY_USED)
    t = _parser(
        "cajeros",
        "lista los cajeros: versión de su llave (actual y pendiente), alta o baja, suspensión, cuándo y desde\n"
        "dónde se vieron por última vez. Nunca muestra una llave.",
        sub,
        epilog=BACKUP_ADVICE,
    )
    t.add_argument(
        "--respaldo",
        type=Path,
        metavar="ARCHIVO",
        help="en vez de listar, copia cuenta.cajeros a ARCHIVO (nuevo, solo legible por este usuario)",
    )
    t.add_argument(
        "--max-pin-fallidos-cajero",
        type=_positive(int),
        default=ServerConfig.max_wrong_pins_per_terminal,
        metavar="N",
        help="el mismo valor con que arrancó el servidor, para decir quién está suspendido (por omisión: %(default)s)",
    )
    _common_options(t, _KEY_USED)


def build_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "python -m bank_server",
        "Servidor del banco Cajero y administración de cuentas y cajeros.\n\n"
        "  python -m bank_server genkey               crea la llave del banco banco.key (una sola vez)\n"
        "  python -m bank_server cajero-alta ID       da de alta un cajero y crea su archivo de llave ID.key\n"
        "  python -m bank_server 8000                 atiende cajeros en el puerto 8000\n"
        "  python -m bank_server COMANDO --ayuda      ayuda de cada comando\n\n"
        "Todos los comandos toman --cuenta (por omisión cuenta.txt) y --llave (por omisión banco.key) y se\n"
        "pueden usar con el banco en marcha.",
        epilog=BACKUP_ADVICE,
    )
    sub = parser.add_subparsers(dest="command", title="comandos", metavar="COMANDO")
    _add_server(sub)
    _add_accounts(sub)
    _add_terminals(sub)
    return parser


# -- shared steps ------------------------------------------------------------------------------------


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
    if first not in COMMANDS and first not in _HELP_FLAGS and (first.isdigit() or first.startswith("-")):
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

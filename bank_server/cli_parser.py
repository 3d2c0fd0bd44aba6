"""The command line of ``python -m bank_server``: every command, flag and help text, in Spanish.

Apart from ``cli.py`` (what each command does) so that either can be read
at once; the names of commands and flags are fixed (other tools depend on
them, issue 11). argparse's own messages are translated here too, so a
mistyped flag is one Spanish line, never English or a traceback.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

from bank_server.config import ServerConfig
from bank_server.ledger import escape_unsafe
from bank_server.rules import Limits
from bank_server.server import default_start_method
from bank_server.terminals import (
    check_terminal_id,
)
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
HELP_FLAGS = ("-h", "--ayuda", "--help")

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

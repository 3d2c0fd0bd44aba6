"""``python -m bank_server``: serve ATMs, or administer the ledger. Help in Spanish.

``python -m bank_server 8000`` serves (the original project's command);
the other commands are sub-commands: ``genkey``, ``crear``, ``listar``,
``desbloquear``, ``cambiar-pin``, ``verificar``.
"""

from __future__ import annotations

import argparse
import getpass
import multiprocessing
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from bank_server import admin
from bank_server.config import ServerConfig
from bank_server.rules import Limits
from bank_server.server import ServerLockError, default_start_method, serve
from bank_server.store import LedgerLoadError, ledger_problems
from common.errors import KeyFileError
from common.keyfile import DEFAULT_KEY_FILE, load_key, write_new_key
from common.messages import CARD_RE, PIN_RE
from common.money import AmountError, parse_ledger_amount, parse_request_amount

COMMANDS = ("servir", "genkey", "crear", "listar", "desbloquear", "cambiar-pin", "verificar")


class SpanishFormatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):  # type: ignore[no-untyped-def]
        return super().add_usage(usage, actions, groups, "uso: " if prefix is None else prefix)


def _parser(
    prog: str, description: str, subparsers: argparse._SubParsersAction | None = None
) -> argparse.ArgumentParser:
    kwargs = dict(description=description, formatter_class=SpanishFormatter, add_help=False)
    parser = (
        subparsers.add_parser(prog, help=description, **kwargs)
        if subparsers
        else argparse.ArgumentParser(prog=prog, **kwargs)
    )
    parser._positionals.title = "argumentos"
    parser._optionals.title = "opciones"
    parser.add_argument("-h", "--ayuda", "--help", action="help", help="muestra esta ayuda y termina")
    return parser


def _amount(text: str) -> Decimal:
    try:
        return parse_request_amount(text) if text not in ("0", "0.00") else parse_ledger_amount("0.00")
    except AmountError:
        raise argparse.ArgumentTypeError(f"monto no válido: {text!r} (use por ejemplo 1500.00)") from None


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} no es un número válido") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} debe ser mayor que cero")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _parser(
        "python -m bank_server",
        "Servidor del banco Cajero y administración del archivo de cuentas.\n\n"
        "  python -m bank_server 8000          atiende cajeros en el puerto 8000\n"
        "  python -m bank_server genkey        crea la llave compartida llave.key\n"
        "  python -m bank_server COMANDO -h    ayuda de cada comando",
    )
    sub = parser.add_subparsers(dest="command", title="comandos", metavar="COMANDO")

    def ledger_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--cuenta", type=Path, default=Path("cuenta.txt"), help="archivo de cuentas (por omisión: cuenta.txt)"
        )

    s = _parser("servir", "atiende cajeros (también: python -m bank_server PUERTO)", sub)
    s.add_argument("puerto", type=int, help="puerto TCP (0: uno libre, que se muestra al arrancar)")
    s.add_argument(
        "--host", default="0.0.0.0", help="interfaz donde escuchar (por omisión: todas; 127.0.0.1: solo este equipo)"
    )
    ledger_option(s)
    s.add_argument(
        "--llave", type=Path, default=Path(DEFAULT_KEY_FILE), help="archivo de la llave (por omisión: llave.key)"
    )
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

    g = _parser("genkey", "crea una llave nueva y aleatoria (nunca sobrescribe un archivo)", sub)
    g.add_argument(
        "--llave", type=Path, default=Path(DEFAULT_KEY_FILE), help="archivo a crear (por omisión: llave.key)"
    )

    c = _parser("crear", "da de alta una cuenta", sub)
    c.add_argument("tarjeta", help="número de tarjeta, de 12 a 19 dígitos")
    c.add_argument("titular", help="nombre del titular (entre comillas si lleva espacios)")
    c.add_argument("--saldo", type=_amount, default=Decimal("0.00"), help="saldo inicial (por omisión: 0.00)")
    c.add_argument("--pin", help="PIN de 4 a 6 dígitos (si falta, se pide sin mostrarlo; úselo solo en scripts)")
    ledger_option(c)

    ledger_option(_parser("listar", "lista las cuentas (tarjeta enmascarada, titular, saldo, estado)", sub))
    d = _parser("desbloquear", "desbloquea una tarjeta bloqueada por PIN errados", sub)
    d.add_argument("tarjeta", help="número de tarjeta")
    ledger_option(d)
    p = _parser("cambiar-pin", "asigna un PIN nuevo a una tarjeta (y la desbloquea)", sub)
    p.add_argument("tarjeta", help="número de tarjeta")
    p.add_argument("--pin", help="PIN nuevo (si falta, se pide sin mostrarlo)")
    ledger_option(p)
    ledger_option(
        _parser("verificar", "revisa el archivo de cuentas y su diario; termina con error si hay problemas", sub)
    )
    return parser


def _ask_pin(given: str | None) -> str:
    pin = given if given is not None else getpass.getpass("PIN nuevo: ")
    if not PIN_RE.fullmatch(pin):
        raise admin.AdminError("el PIN debe tener de 4 a 6 dígitos")
    if given is None and getpass.getpass("Repita el PIN: ") != pin:
        raise admin.AdminError("los dos PIN no coinciden")
    return pin


def _check_card(tarjeta: str) -> None:
    if not CARD_RE.fullmatch(tarjeta):
        raise admin.AdminError("la tarjeta debe tener de 12 a 19 dígitos")


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "servir")  # python -m bank_server 8000
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (KeyFileError, LedgerLoadError, ServerLockError, admin.AdminError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command is None:
        build_parser().print_help()
        return 2
    if args.command == "servir":
        psk = load_key(args.llave)
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
        )
        return serve(config, psk)
    if args.command == "genkey":
        write_new_key(args.llave)
        print(f"Llave nueva creada en {args.llave}. Cópiela a cada cajero por un medio seguro.")
        return 0
    if args.command == "crear":
        _check_card(args.tarjeta)
        admin.create_account(args.cuenta, args.tarjeta, args.titular, args.saldo, _ask_pin(args.pin))
        print("Cuenta creada.")
        return 0
    if args.command == "listar":
        print("\n".join(admin.list_accounts(args.cuenta)))
        return 0
    if args.command == "desbloquear":
        admin.unblock(args.cuenta, args.tarjeta)
        print("Tarjeta desbloqueada.")
        return 0
    if args.command == "cambiar-pin":
        admin.reset_pin(args.cuenta, args.tarjeta, _ask_pin(args.pin))
        print("PIN cambiado; la tarjeta queda desbloqueada.")
        return 0
    problems = ledger_problems(args.cuenta)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.cuenta}: correcto.")
    return 0

"""Where the ATM finds its bank, key, settings and folders: command line, ``atm.ini``, defaults.

Why one module: the same rules must hold whether the ATM runs from the
source tree (``python -m atm_gui``) or frozen by PyInstaller, where
"beside the program" means beside the executable
(``Path(sys.executable).parent``), never the temporary unpack folder.
Everything is resolved here once, so the rest of the code receives
plain paths and never asks where it is running.

Order of precedence:

* bank: ``HOST PORT`` arguments, else ``atm.ini`` beside the program or
  in the current folder, else ``localhost:8000``;
* key: ``--llave``, else ``llave = …`` in ``atm.ini``, else ``llave.key``
  in the current folder, else beside the program;
* receipts and the log: ``recibos/`` and ``cajero_atm.log`` in the
  current folder (frozen: beside the executable) when writable, else in
  the user's data folder.
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from atm_gui.session import Ajustes
from common.keyfile import DEFAULT_KEY_FILE

INI = "atm.ini"
HOST_POR_OMISION = "localhost"
PUERTO_POR_OMISION = 8000
SECCION = "cajero"


class ErrorConfig(Exception):
    """A setting that cannot be used; the message is Spanish and names the file or argument."""


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    llave: Path
    ajustes: Ajustes
    recibos: Path
    registro: Path
    ini: Path | None


def congelado() -> bool:
    return bool(getattr(sys, "frozen", False))


def carpeta_programa() -> Path:
    """The folder "beside the program": the executable's when frozen, else the one holding ``atm_gui``."""
    if congelado():
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parent.parent


def carpeta_usuario() -> Path:
    """The per-user data folder, for when the program's own folder is read-only."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "Cajero"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Cajero"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "cajero"


def escribible(carpeta: Path) -> bool:
    try:
        carpeta.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=carpeta):
            return True
    except OSError:
        return False


def carpeta_de_datos(cwd: Path) -> Path:
    preferida = carpeta_programa() if congelado() else cwd
    return preferida if escribible(preferida) else carpeta_usuario()


class _Parser(argparse.ArgumentParser):
    """argparse with Spanish headings and a Spanish error line."""

    def __init__(self) -> None:
        super().__init__(
            prog="python -m atm_gui",
            description="Cajero automático del Banco del Sur: se conecta al banco con el protocolo ATM1.",
            epilog=(
                "Sin HOST ni PUERTO lee atm.ini (junto al programa o en la carpeta actual); "
                "si no existe, usa localhost:8000."
            ),
            add_help=False,
        )
        self._positionals.title = "argumentos"
        self._optionals.title = "opciones"

    def format_usage(self) -> str:
        return super().format_usage().replace("usage:", "uso:", 1)

    def format_help(self) -> str:
        return super().format_help().replace("usage:", "uso:", 1)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: argumentos no válidos ({message}). Use --ayuda para ver las opciones.\n")


def _parser() -> _Parser:
    p = _Parser()
    p.add_argument("host", nargs="?", metavar="HOST", help="nombre o dirección del banco")
    p.add_argument("port", nargs="?", metavar="PUERTO", help="puerto del banco")
    p.add_argument("-h", "--ayuda", action="help", help="muestra esta ayuda y termina")
    p.add_argument("--llave", metavar="ARCHIVO", help="archivo de la llave del banco (por omisión llave.key)")
    p.add_argument("--config", metavar="ARCHIVO", help="archivo de configuración (por omisión atm.ini)")
    p.add_argument("--id", metavar="ID", help="identificador de este cajero en los recibos")
    p.add_argument("--recibos", metavar="CARPETA", help="carpeta donde se guardan los recibos")
    return p


def _puerto(texto: str, origen: str) -> int:
    try:
        puerto = int(texto)
    except ValueError:
        raise ErrorConfig(f"{origen}: el puerto debe ser un número, no {texto!r}.") from None
    if not 1 <= puerto <= 65535:
        raise ErrorConfig(f"{origen}: el puerto debe estar entre 1 y 65535.")
    return puerto


def _buscar_ini(explicito: str | None, cwd: Path) -> Path | None:
    if explicito:
        ruta = Path(explicito)
        if not ruta.is_file():
            raise ErrorConfig(f"{ruta}: no existe el archivo de configuración.")
        return ruta
    for carpeta in (carpeta_programa(), cwd):
        if (carpeta / INI).is_file():
            return carpeta / INI
    return None


def _leer_ini(ruta: Path | None) -> configparser.SectionProxy | None:
    if ruta is None:
        return None
    parser = configparser.ConfigParser()
    try:
        with open(ruta, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ErrorConfig(f"{ruta}: no se pudo leer la configuración ({exc}).") from None
    if not parser.has_section(SECCION):
        raise ErrorConfig(f"{ruta}: falta la sección [{SECCION}].")
    return parser[SECCION]


def _decimal(texto: str, origen: str) -> Decimal:
    try:
        valor = Decimal(texto.strip())
    except InvalidOperation:
        raise ErrorConfig(f"{origen}: {texto!r} no es un número.") from None
    if valor <= 0 or valor != valor.to_integral_value():
        raise ErrorConfig(f"{origen}: debe ser un número entero mayor que cero.")
    return valor


def _ajustes(sec: configparser.SectionProxy | None, ruta: Path | None, cajero_id: str | None) -> Ajustes:
    base = Ajustes()
    if sec is None:
        return Ajustes(cajero_id=cajero_id) if cajero_id else base
    billete = _decimal(sec["billete_minimo"], f"{ruta}, billete_minimo") if "billete_minimo" in sec else None
    rapidos = base.montos_rapidos
    if "montos_rapidos" in sec:
        rapidos = tuple(_decimal(x, f"{ruta}, montos_rapidos") for x in sec["montos_rapidos"].split(",") if x.strip())
    try:
        inactividad = sec.getfloat("inactividad", base.inactividad)
    except ValueError:
        raise ErrorConfig(f"{ruta}, inactividad: debe ser un número de segundos.") from None
    return Ajustes(
        banco=sec.get("banco", base.banco),
        cajero_id=cajero_id or sec.get("id", base.cajero_id),
        billete_minimo=billete or base.billete_minimo,
        montos_rapidos=rapidos,
        inactividad=inactividad,
    )


def buscar_llave(explicita: str | None, desde_ini: Path | None, cwd: Path) -> Path:
    """Flag, then atm.ini, then ``llave.key`` here, then beside the program; the first that exists."""
    if explicita:
        return Path(explicita)
    if desde_ini is not None:
        return desde_ini
    for carpeta in (cwd, carpeta_programa()):
        if (carpeta / DEFAULT_KEY_FILE).is_file():
            return carpeta / DEFAULT_KEY_FILE
    return cwd / DEFAULT_KEY_FILE  # does not exist: the ATM says so on screen


def cargar(argv: list[str] | None = None, cwd: Path | None = None) -> Config:
    """Build the configuration; raises ``ErrorConfig`` (Spanish) and exits on ``--ayuda``."""
    cwd = cwd or Path.cwd()
    args = _parser().parse_args(argv)
    ruta_ini = _buscar_ini(args.config, cwd)
    sec = _leer_ini(ruta_ini)
    carpeta_ini = ruta_ini.parent if ruta_ini else cwd

    host = args.host or (sec.get("host") if sec else None) or HOST_POR_OMISION
    if args.port is not None:
        port = _puerto(args.port, "PUERTO")
    elif sec is not None and "puerto" in sec:
        port = _puerto(sec["puerto"], f"{ruta_ini}, puerto")
    else:
        port = PUERTO_POR_OMISION

    llave_ini = carpeta_ini / sec["llave"] if sec is not None and sec.get("llave") else None
    llave = buscar_llave(args.llave, llave_ini, cwd)

    datos = carpeta_de_datos(cwd)
    if args.recibos:
        recibos = Path(args.recibos)
    elif sec is not None and sec.get("recibos"):
        recibos = carpeta_ini / sec["recibos"]
    else:
        recibos = datos / "recibos"
    return Config(
        host=host,
        port=port,
        llave=llave,
        ajustes=_ajustes(sec, ruta_ini, args.id),
        recibos=recibos,
        registro=datos / "cajero_atm.log",
        ini=ruta_ini,
    )

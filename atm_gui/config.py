"""Where the ATM finds its bank, key, settings and folders: command line, ``atm.ini``, defaults.

Why one module: the same rules must hold whether the ATM runs from the
source tree (``python -m atm_gui``) or frozen by PyInstaller, where
"beside the program" means beside the executable
(``Path(sys.executable).parent``), never the temporary unpack folder;
from source it is the folder holding ``atm_gui/`` (the project's root,
where ``demo.py`` is). Everything is resolved here once, so the rest of
the code receives plain paths and never asks where it is running.

Order of precedence:

* ``atm.ini``: ``--config ARCHIVO``, else ``atm.ini`` beside the program.
  Never the current folder: whoever can write a file where the ATM is
  started from must not be able to point it at another bank (and
  another key), which a planted ``atm.ini`` would do;
* bank: ``HOST PORT`` arguments, else ``atm.ini``, else ``localhost:8000``;
* key: ``--llave``, else ``llave = …`` in ``atm.ini``, else ``llave.key``
  beside the program, else ``llave.key`` in the current folder, but only
  when the bank was named on the command line (someone typed the
  command in that folder; a double-click never reads it);
* terminal id (printed on receipts): the key file's; an ``id`` in
  ``atm.ini`` that names another terminal stops the ATM at start-up;
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

from atm_gui.model import AtmSettings
from common.errors import KeyFileError
from common.keys import DEFAULT_KEY_FILE, load_terminal_key

# File names, the ini section and its keys are the file format's, hence Spanish.
INI_NAME = "atm.ini"
INI_SECTION = "cajero"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8000
LOG_NAME = "cajero_atm.log"
RECEIPTS_DIR_NAME = "recibos"


class ConfigError(Exception):
    """A setting that cannot be used; the message is Spanish and names the file or argument."""


@dataclass(frozen=True)
class AtmConfig:
    host: str
    port: int
    key_file: Path
    settings: AtmSettings  # ``atm_id``: the key file's terminal id ("" while no key file can be read)
    receipts_dir: Path
    log_file: Path
    ini_file: Path | None
    terminal_id: str | None = None  # the id this ATM must run as, if known at start-up (key file, else atm.ini)


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def program_dir() -> Path:
    """The folder "beside the program": the executable's when frozen, else the one holding ``atm_gui``."""
    if is_frozen():
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parent.parent


def user_data_dir() -> Path:
    """The per-user data folder, for when the program's own folder is read-only."""
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "Cajero"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Cajero"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "cajero"


def is_writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def data_dir(cwd: Path) -> Path:
    """Where receipts and the log go: here (frozen: beside the executable) if writable, else the user's folder."""
    preferred = program_dir() if is_frozen() else cwd
    return preferred if is_writable(preferred) else user_data_dir()


class _Parser(argparse.ArgumentParser):
    """argparse with Spanish headings and a Spanish error line."""

    def __init__(self) -> None:
        super().__init__(
            prog="python -m atm_gui",
            description="Cajero automático del Banco del Sur: se conecta al banco con el protocolo ATM2.",
            epilog=(
                "Sin HOST ni PUERTO usa el atm.ini que está junto al programa (o el de --config); "
                "si no hay, localhost:8000. Nunca lee atm.ini de la carpeta actual."
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
    p.add_argument(
        "--llave",
        dest="key_file",
        metavar="ARCHIVO",
        help="archivo de la llave de este cajero, el que dio el banco con cajero-alta (por omisión llave.key)",
    )
    p.add_argument(
        "--config",
        dest="ini_file",
        metavar="ARCHIVO",
        help="archivo de configuración (por omisión atm.ini junto al programa)",
    )
    p.add_argument("--recibos", dest="receipts_dir", metavar="CARPETA", help="carpeta donde se guardan los recibos")
    return p


def _port(text: str, source: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{source}: el puerto debe ser un número, no {text!r}.") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{source}: el puerto debe estar entre 1 y 65535.")
    return port


def _find_ini(explicit: str | None, cwd: Path) -> Path | None:
    """``--config``, else ``atm.ini`` beside the program; never one from the current folder (see above)."""
    if explicit:
        path = cwd / explicit
        if not path.is_file():
            raise ConfigError(f"{path}: no existe el archivo de configuración.")
        return path
    beside = program_dir() / INI_NAME
    return beside if beside.is_file() else None


def _read_ini(path: Path | None) -> configparser.SectionProxy | None:
    if path is None:
        return None
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"{path}: no se pudo leer la configuración ({exc}).") from None
    if not parser.has_section(INI_SECTION):
        raise ConfigError(f"{path}: falta la sección [{INI_SECTION}].")
    return parser[INI_SECTION]


def _whole_amount(text: str, source: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"{source}: {text!r} no es un número.") from None
    if value <= 0 or value != value.to_integral_value():
        raise ConfigError(f"{source}: debe ser un número entero mayor que cero.")
    return value


def _settings(sec: configparser.SectionProxy | None, path: Path | None, terminal_id: str) -> AtmSettings:
    base = AtmSettings()
    if sec is None:
        return AtmSettings(atm_id=terminal_id)
    note = _whole_amount(sec["billete_minimo"], f"{path}, billete_minimo") if "billete_minimo" in sec else None
    quick = base.quick_amounts
    if "montos_rapidos" in sec:
        quick = tuple(
            _whole_amount(x, f"{path}, montos_rapidos") for x in sec["montos_rapidos"].split(",") if x.strip()
        )
    try:
        inactivity = sec.getfloat("inactividad", base.inactivity)
    except ValueError:
        raise ConfigError(f"{path}, inactividad: debe ser un número de segundos.") from None
    return AtmSettings(
        bank_name=sec.get("banco", base.bank_name),
        atm_id=terminal_id,
        smallest_note=note or base.smallest_note,
        quick_amounts=quick,
        inactivity=inactivity,
    )


def terminal_identity(key_file: Path, ini_id: str | None, ini_file: Path | None) -> str | None:
    """The terminal id this ATM runs as: the key file's; ``atm.ini``'s ``id`` may only repeat it.

    A key file that cannot be read is not a start-up error: the ATM opens
    and says so on screen (and reads the file again before every
    connection); then ``atm.ini``'s ``id``, if any, is the id the key
    file must name once it is fixed.
    """
    try:
        key_id: str | None = load_terminal_key(key_file).terminal_id
    except KeyFileError:
        key_id = None
    if ini_id is not None and key_id is not None and ini_id != key_id:
        raise ConfigError(
            f"{ini_file}, id: dice {ini_id!r}, pero la llave {key_file} es del cajero {key_id}. "
            f"El identificador del cajero lo da su llave: borre la línea id o ponga id = {key_id}."
        )
    return key_id or ini_id


def find_key(explicit: str | None, from_ini: Path | None, cwd: Path, bank_on_command_line: bool) -> Path:
    """Flag, then atm.ini, then ``llave.key`` beside the program, then here if the bank was typed; see above."""
    if explicit:
        return cwd / explicit
    if from_ini is not None:
        return from_ini
    beside = program_dir() / DEFAULT_KEY_FILE
    if not beside.is_file() and bank_on_command_line and (cwd / DEFAULT_KEY_FILE).is_file():
        return cwd / DEFAULT_KEY_FILE
    return beside  # perhaps missing: the ATM says so on screen


def load(argv: list[str] | None = None, cwd: Path | None = None) -> AtmConfig:
    """Build the configuration; raises ``ConfigError`` (Spanish) and exits on ``--ayuda``."""
    cwd = cwd or Path.cwd()
    args = _parser().parse_args(argv)
    ini_file = _find_ini(args.ini_file, cwd)
    sec = _read_ini(ini_file)
    ini_dir = ini_file.parent if ini_file else cwd

    host = args.host or (sec.get("host") if sec else None) or DEFAULT_HOST
    if args.port is not None:
        port = _port(args.port, "PUERTO")
    elif sec is not None and "puerto" in sec:
        port = _port(sec["puerto"], f"{ini_file}, puerto")
    else:
        port = DEFAULT_PORT

    key_from_ini = ini_dir / sec["llave"] if sec is not None and sec.get("llave") else None
    key_file = find_key(args.key_file, key_from_ini, cwd, bank_on_command_line=args.host is not None)
    ini_id = sec.get("id", "").strip() if sec is not None else ""
    terminal_id = terminal_identity(key_file, ini_id or None, ini_file)

    data = data_dir(cwd)
    if args.receipts_dir:
        receipts_dir = Path(args.receipts_dir)
    elif sec is not None and sec.get("recibos"):
        receipts_dir = ini_dir / sec["recibos"]
    else:
        receipts_dir = data / RECEIPTS_DIR_NAME
    return AtmConfig(
        host=host,
        port=port,
        key_file=key_file,
        settings=_settings(sec, ini_file, terminal_id or ""),
        receipts_dir=receipts_dir,
        log_file=data / LOG_NAME,
        ini_file=ini_file,
        terminal_id=terminal_id,
    )

"""Key files of ATM2: the ATM's terminal key (``llave.key``) and the bank key.

The ATM's file (PROTOCOL.md section 2) is UTF-8 text; lines starting
with ``#`` and blank lines are ignored; the first other line is

    ATM2 <terminal id> <version in decimal> <64 hexadecimal digits>

with single spaces between the four fields and nothing else. The bank
key file (LEDGER.md) has the same comments, and its first other line is
exactly 64 hexadecimal digits.

Errors are ``KeyFileError`` in Spanish (an operator reads them at
start-up); they name the file and the line and say which field is wrong,
but never echo the line, since it may hold a key. Two readings go beyond
the letter of the contract and are harmless: a UTF-8 byte order mark at
the start of the file is skipped (some Windows editors write one), and a
comment may be indented.

Writing: ``write_terminal_key`` replaces the ATM's file atomically (for
rotation: the old file or the new one, never half of either);
``create_bank_key`` makes a new bank key and never overwrites one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import KeyFileError
from common.files import create_new, replace_atomically
from common.handshake import MAGIC, MAX_VERSION, TERMINAL_KEY_SIZE, is_valid_terminal_id, is_valid_version

DEFAULT_KEY_FILE = "llave.key"
KEY_FILE_MODE = 0o600
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[0-9]{1,10}")

ATM_KEY_LINE = "ATM2 <identificador del cajero> <versión> <64 dígitos hexadecimales>"
ASK_THE_BANK = "Pida al banco el archivo de llave de este cajero."


@dataclass(frozen=True)
class TerminalKey:
    """A terminal's key ``K`` with its terminal id and version. ``repr``/``str`` never show ``key``."""

    terminal_id: str
    version: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not is_valid_terminal_id(self.terminal_id):
            raise ValueError(f"terminal id {self.terminal_id!r} is not 1 to 32 characters of [A-Z0-9-]")
        if not is_valid_version(self.version):
            raise ValueError(f"key version {self.version!r} is outside 1..{MAX_VERSION}")
        if not isinstance(self.key, bytes) or len(self.key) != TERMINAL_KEY_SIZE:
            raise ValueError("a terminal key is 32 bytes")

    @classmethod
    def generate(cls, terminal_id: str, version: int) -> TerminalKey:
        """A fresh random key from the OS's CSPRNG (for the bank: a new terminal, or a rotation)."""
        return cls(terminal_id, version, secrets.token_bytes(TERMINAL_KEY_SIZE))

    def file_line(self) -> str:
        """The key file's line ``ATM2 <id> <version> <hex>``: it holds the key, handle it as such."""
        return f"{MAGIC.decode()} {self.terminal_id} {self.version} {self.key.hex()}"

    def __str__(self) -> str:
        return f"llave del cajero {self.terminal_id}, versión {self.version}"


# -- the ATM's key file ---------------------------------------------------------------------------


def _content_lines(text: str) -> list[tuple[int, str]]:
    """(number, line) of every line that is neither blank nor a comment."""
    text = text.removeprefix("\ufeff")
    return [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _field_problem(fields: list[str]) -> str | None:
    """What is wrong with the four fields of the key line, in Spanish, without quoting them."""
    magic, terminal_id, version, key_hex = fields
    if magic != MAGIC.decode():
        if _HEX64.fullmatch(magic):
            return "es una llave del protocolo anterior (ATM1), que ya no se acepta"
        return "la línea debe empezar con ATM2"
    if not is_valid_terminal_id(terminal_id):
        return "el identificador del cajero debe tener de 1 a 32 caracteres entre A-Z, 0-9 y '-'"
    if not _DECIMAL.fullmatch(version) or not 1 <= int(version) <= MAX_VERSION:
        return f"la versión debe ser un número decimal de 1 a {MAX_VERSION}"
    if not _HEX64.fullmatch(key_hex):
        return "la llave debe ser exactamente 64 dígitos hexadecimales (0-9, a-f)"
    return None


def parse_terminal_key(text: str, source: str) -> TerminalKey:
    """The terminal key held in ``text``; ``source`` names the file in errors."""
    lines = _content_lines(text)
    if not lines:
        raise KeyFileError(f"{source}: el archivo no contiene ninguna llave. {ASK_THE_BANK}")
    number, line = lines[0]
    fields = line.split(" ")
    if len(fields) != 4:
        problem = (
            "es una llave del protocolo anterior (ATM1), que ya no se acepta"
            if _HEX64.fullmatch(line.strip())
            else "debe tener cuatro campos separados por un solo espacio, sin espacios al principio ni al final"
        )
    else:
        problem = _field_problem(fields)
    if problem is not None:
        raise KeyFileError(f"{source}, línea {number}: {problem}. Formato: {ATM_KEY_LINE}. {ASK_THE_BANK}")
    return TerminalKey(fields[1], int(fields[2]), bytes.fromhex(fields[3]))


def _read_text(path: Path, what: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no existe el archivo de {what}.") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: no se pudo leer el archivo de {what} ({exc.strerror}).") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: el archivo de {what} no es texto UTF-8.") from None


def load_terminal_key(path: Path) -> TerminalKey:
    """Read the ATM's key file or raise ``KeyFileError`` naming it."""
    return parse_terminal_key(_read_text(Path(path), "la llave del cajero"), str(path))


def format_terminal_key_file(key: TerminalKey) -> str:
    """The whole text of an ATM's key file (a comment line, then the key line)."""
    return (
        f"# Llave del cajero {key.terminal_id}, versión {key.version}. Secreta: no la copie ni la publique.\n"
        f"{key.file_line()}\n"
    )


def write_terminal_key(path: Path, key: TerminalKey) -> None:
    """Replace the ATM's key file with ``key``, atomically and durably.

    A temporary file in the same folder (mode 0600) is written and
    synced, then ``os.replace`` puts it in place (atomic on POSIX and on
    Windows' NTFS), then the folder is synced where the OS allows it, so
    that the rename itself survives a power cut. A crash at any moment
    leaves the old file or the new one, and perhaps a stray temporary file
    that the next write removes.
    """
    path = Path(path)
    try:
        replace_atomically(path, format_terminal_key_file(key).encode("utf-8"), mode=KEY_FILE_MODE)
    except OSError as exc:
        raise KeyFileError(
            f"{path}: no se pudo guardar la llave nueva ({exc.strerror}); se sigue usando la anterior."
        ) from None


# -- the bank key -----------------------------------------------------------------------------------


def parse_bank_key(text: str, source: str) -> bytes:
    """The 32-byte bank key held in ``text``; ``source`` names the file in errors."""
    lines = _content_lines(text)
    if not lines:
        raise KeyFileError(f"{source}: el archivo no contiene ninguna llave del banco.")
    number, line = lines[0]
    if not _HEX64.fullmatch(line):
        raise KeyFileError(
            f"{source}, línea {number}: la llave del banco debe ser exactamente 64 dígitos "
            f"hexadecimales (0-9, a-f) y nada más en esa línea."
        )
    return bytes.fromhex(line)


def load_bank_key(path: Path) -> bytes:
    """Read the bank key or raise ``KeyFileError`` naming the file."""
    return parse_bank_key(_read_text(Path(path), "la llave del banco"), str(path))


def create_bank_key(path: Path) -> bytes:
    """Create ``path`` holding a fresh random bank key (mode 0600) and return the key.

    It never overwrites: ``O_EXCL`` makes the "does it exist?" check and
    the creation one step, so a second run cannot replace the key that
    every peppered PIN hash depends on.
    """
    path = Path(path)
    key = secrets.token_bytes(32)
    content = (
        "# Llave del banco: de ella dependen los PIN de cuenta.txt. Secreta: nunca junto a las copias del libro.\n"
        f"{key.hex()}\n"
    )
    try:
        create_new(path, content.encode("utf-8"), KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path}: ya existe; no se sobrescribe la llave del banco.") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: no se pudo crear la llave del banco ({exc.strerror}).") from None
    return key

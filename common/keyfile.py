"""The pre-shared key file (``llave.key``): read it, or make a new one.

Format (PROTOCOL.md section 2): ``#`` comment lines and blank lines are
ignored; the first other line is exactly 64 hex digits. Errors name the
file and the line but never echo the line, since it may hold most of a key.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from common.errors import KeyFileError
from common.files import create_new

DEFAULT_KEY_FILE = "llave.key"
KEY_BYTES = 32
_HEX = set("0123456789abcdefABCDEF")

HOW_TO_MAKE_ONE = "Cree una llave nueva con: python -m bank_server genkey (y copie el mismo archivo a cada cajero)."


def parse_key_text(text: str, source: str) -> bytes:
    """Return the 32-byte key held in ``text``; ``source`` names it in errors."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) != 2 * KEY_BYTES or not set(line) <= _HEX:
            raise KeyFileError(
                f"{source}, línea {number}: la llave debe ser exactamente 64 dígitos "
                f"hexadecimales (0-9, a-f) y nada más en esa línea. {HOW_TO_MAKE_ONE}"
            )
        return bytes.fromhex(line)
    raise KeyFileError(f"{source}: el archivo no contiene ninguna llave. {HOW_TO_MAKE_ONE}")


def load_key(path: Path) -> bytes:
    """Read the PSK from ``path`` or raise ``KeyFileError`` naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no existe el archivo de la llave. {HOW_TO_MAKE_ONE}") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: no se pudo leer la llave ({exc.strerror}).") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: el archivo no es texto UTF-8. {HOW_TO_MAKE_ONE}") from None
    return parse_key_text(text, str(path))


def write_new_key(path: Path) -> None:
    """Create ``path`` holding a fresh random key; never overwrite a file.

    ``O_EXCL`` makes the "does it exist?" check and the creation one step,
    so two administrators cannot race each other into different keys.
    """
    key_hex = secrets.token_bytes(KEY_BYTES).hex()
    content = f"# Llave compartida del banco Cajero: cópiela a cada cajero y no la publique.\n{key_hex}\n"
    try:
        create_new(path, content.encode("utf-8"))
    except FileExistsError:
        raise KeyFileError(
            f"{path}: ya existe; no se sobrescribe una llave. Bórrela a mano si de verdad quiere otra."
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: no se pudo crear la llave ({exc.strerror}).") from None

"""PIN hashes in the ledger's format: ``scrypt$N$r$p$SALT$HASH``.

``hashlib.scrypt`` is the standard library's binding of OpenSSL's
scrypt; the format is fixed by LEDGER.md. Verification costs about
30 ms at N=2^14, so callers must never hold the ledger lock around it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
_FIELD = re.compile(r"scrypt\$([0-9]+)\$([0-9]+)\$([0-9]+)\$((?:[0-9a-fA-F]{2}){16,})\$((?:[0-9a-fA-F]{2}){32})")


class PinFieldError(ValueError):
    """A ``pin`` field that is not in the ledger's scrypt format."""


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode("ascii"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)


def check_field(field: str) -> None:
    """Raise ``PinFieldError`` (in Spanish, for the administrator) unless ``field`` is well formed."""
    match = _FIELD.fullmatch(field)
    if not match:
        raise PinFieldError(
            "el PIN debe ser scrypt$N$r$p$SAL$HASH (sal de 16 bytes o más y hash de 32 bytes, en hexadecimal)"
        )
    n, r, p = (int(x) for x in match.group(1, 2, 3))
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or n > 2**20 or r * p >= 2**30:
        raise PinFieldError("los parámetros de scrypt no son válidos (N potencia de 2, r y p positivos)")


def hash_pin(pin: str, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${n}${r}${p}${salt.hex()}${_scrypt(pin, salt, n, r, p).hex()}"


def verify_pin(pin: str, field: str) -> bool:
    """Constant-time check of ``pin`` against a stored field. A PIN that is not ASCII never matches."""
    match = _FIELD.fullmatch(field)
    if not match or not pin.isascii():
        return False
    n, r, p = (int(x) for x in match.group(1, 2, 3))
    salt = bytes.fromhex(match.group(4))
    expected = bytes.fromhex(match.group(5))
    return hmac.compare_digest(_scrypt(pin, salt, n, r, p), expected)

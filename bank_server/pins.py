"""Peppered PIN hashes of LEDGER.md (ATM2): ``scrypt-p$N$r$p$SALT$HASH``.

    pepper = HMAC-SHA256(key = bank key, msg = "ATM2 PIN pepper")
    HASH   = scrypt(password = HMAC-SHA256(key = pepper, msg = PIN as ASCII digits),
                    salt = SALT, n = N, r = r, p = p, dklen = 32)

The older ``scrypt$N$r$p$SALT$HASH`` (no pepper: the password is the PIN
itself) is still read, and ``needs_rehash`` says when a field should be
rewritten in the peppered form (at the next successful IDENTIFICAR or PIN
change).

``hashlib.scrypt`` is OpenSSL's scrypt; a check costs about 30 ms at
N=2^14, so callers must never hold the ledger lock around it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
PEPPER_LABEL = b"ATM2 PIN pepper"
PEPPERED = "scrypt-p"
UNPEPPERED = "scrypt"
_FIELD = re.compile(
    r"(scrypt-p|scrypt)\$([0-9]{1,8})\$([0-9]{1,8})\$([0-9]{1,8})\$((?:[0-9a-fA-F]{2}){16,})\$((?:[0-9a-fA-F]{2}){32})"
)
_MAXMEM = 256 * 1024 * 1024


class PinFieldError(ValueError):
    """A ``pin`` field that is in neither scrypt format of the ledger (message in Spanish)."""


@dataclass(frozen=True)
class PinField:
    kind: str  # "scrypt-p" or "scrypt"
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @property
    def peppered(self) -> bool:
        return self.kind == PEPPERED


def pin_pepper(bank_key: bytes) -> bytes:
    """``HMAC-SHA256(key = bank key, msg = "ATM2 PIN pepper")``: derive it once at start-up."""
    if len(bank_key) != 32:
        raise ValueError("the bank key is 32 bytes")
    return hmac.digest(bank_key, PEPPER_LABEL, "sha256")


def _password(pin: str, pepper: bytes | None) -> bytes:
    digits = pin.encode("ascii")
    return digits if pepper is None else hmac.digest(pepper, digits, "sha256")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=_MAXMEM)


def parse_field(field: str) -> PinField:
    """Split a ``pin`` field, or raise ``PinFieldError`` saying what is wrong (for the administrator)."""
    match = _FIELD.fullmatch(field)
    if not match:
        raise PinFieldError(
            "el PIN debe ser scrypt-p$N$r$p$SAL$HASH (o el antiguo scrypt$N$r$p$SAL$HASH), "
            "con sal de 16 bytes o más y hash de 32 bytes, en hexadecimal"
        )
    n, r, p = (int(x) for x in match.group(2, 3, 4))
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or n > 2**20 or r * p >= 2**30:
        raise PinFieldError("los parámetros de scrypt no son válidos (N potencia de 2, r y p positivos)")
    return PinField(match.group(1), n, r, p, bytes.fromhex(match.group(5)), bytes.fromhex(match.group(6)))


def check_field(field: str) -> None:
    """Raise ``PinFieldError`` (in Spanish, for the administrator) unless ``field`` is well formed."""
    parse_field(field)


def hash_pin(
    pin: str, pepper: bytes, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P, salt: bytes | None = None
) -> str:
    """A new peppered field for ``pin`` (the only form the bank writes). ``salt`` is for tests only."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    if len(salt) < SALT_BYTES:
        raise ValueError("the salt is at least 16 bytes")
    digest = _scrypt(_password(pin, pepper), salt, n, r, p)
    return f"{PEPPERED}${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, field: str, pepper: bytes) -> bool:
    """Constant-time check of ``pin`` against either form. A malformed field or non-ASCII PIN never matches."""
    try:
        parsed = parse_field(field)
    except PinFieldError:
        return False
    if not pin.isascii():
        return False
    password = _password(pin, pepper if parsed.peppered else None)
    return hmac.compare_digest(_scrypt(password, parsed.salt, parsed.n, parsed.r, parsed.p), parsed.digest)


def needs_rehash(field: str) -> bool:
    """True for an unpeppered ``scrypt$`` field: rewrite it after the next successful check."""
    return field.startswith(UNPEPPERED + "$")

"""Amounts: exact decimals in, exact two-decimal strings out.

The contract's request grammar is ``^[0-9]{1,12}(\\.[0-9]{1,2})?$`` with a
value above zero. ``[0-9]`` (not ``\\d``) on purpose: Python's ``\\d``
also matches Arabic-Indic and other digits, which the contract does not.
"""

from __future__ import annotations

import re
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow

CENT = Decimal("0.01")
MAX_LEDGER_DIGITS = 40  # integer digits of a stored balance; far beyond any real one
# Arithmetic on money uses this context: 60 significant digits hold any stored
# balance plus any amount exactly, and the traps turn a rounding that should
# never happen into an error instead of a silently wrong cent.
EXACT = Context(prec=60, traps=[Inexact, InvalidOperation, Overflow])
REQUEST_AMOUNT_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_LEDGER_AMOUNT = re.compile(rf"[0-9]{{1,{MAX_LEDGER_DIGITS}}}\.[0-9]{{2}}")


class AmountError(ValueError):
    """Text that is not an amount the contract allows."""


def parse_request_amount(text: str) -> Decimal:
    """Parse an amount from a request: the grammar, and above zero."""
    if not REQUEST_AMOUNT_RE.fullmatch(text):
        raise AmountError(f"{text!r} is not 1-12 digits with up to 2 decimals")
    value = Decimal(text)
    if value <= 0:
        raise AmountError("the amount must be above zero")
    return value.quantize(CENT, context=EXACT)


def add(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.add(a, b)


def subtract(a: Decimal, b: Decimal) -> Decimal:
    return EXACT.subtract(a, b)


def parse_ledger_amount(text: str) -> Decimal:
    """Parse a balance as stored: digits, a point, exactly two decimals."""
    if not _LEDGER_AMOUNT.fullmatch(text):
        raise AmountError(
            f"debe ser un número con exactamente dos decimales y a lo más {MAX_LEDGER_DIGITS} cifras enteras, "
            "por ejemplo 1500.00"
        )
    return Decimal(text)


def format_amount(value: Decimal) -> str:
    """Exactly two decimals, no exponent, no thousands separator: ``"234444.00"``."""
    return f"{value.quantize(CENT, context=EXACT):f}"


def format_for_people(value: Decimal) -> str:
    """``$234,444.00`` as a screen or a receipt shows it."""
    return f"${value.quantize(CENT, context=EXACT):,.2f}"

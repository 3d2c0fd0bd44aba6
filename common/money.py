"""Amounts: exact decimals in, exact two-decimal strings out.

The contract's request grammar is ``^[0-9]{1,12}(\\.[0-9]{1,2})?$`` with a
value above zero. ``[0-9]`` (not ``\\d``) on purpose: Python's ``\\d``
also matches Arabic-Indic and other digits, which the contract does not.
"""

from __future__ import annotations

import re
from decimal import Decimal

CENT = Decimal("0.01")
REQUEST_AMOUNT_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_LEDGER_AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")


class AmountError(ValueError):
    """Text that is not an amount the contract allows."""


def parse_request_amount(text: str) -> Decimal:
    """Parse an amount from a request: the grammar, and above zero."""
    if not REQUEST_AMOUNT_RE.fullmatch(text):
        raise AmountError(f"{text!r} is not 1-12 digits with up to 2 decimals")
    value = Decimal(text)
    if value <= 0:
        raise AmountError("the amount must be above zero")
    return value.quantize(CENT)


def parse_ledger_amount(text: str) -> Decimal:
    """Parse a balance as stored: digits, a point, exactly two decimals."""
    if not _LEDGER_AMOUNT.fullmatch(text):
        raise AmountError("debe ser un número con exactamente dos decimales, por ejemplo 1500.00")
    return Decimal(text)


def format_amount(value: Decimal) -> str:
    """Exactly two decimals, no exponent, no thousands separator: ``"234444.00"``."""
    return f"{value.quantize(CENT):f}"


def format_for_people(value: Decimal) -> str:
    """``$234,444.00`` as a screen or a receipt shows it."""
    return f"${value.quantize(CENT):,.2f}"

"""The ledger file ``cuenta.txt``: parse it, and print it back.

Format (LEDGER.md): one account per line, ``tarjeta|titular|saldo|pin|intentos``,
``#`` comments and blank lines ignored, spaces around fields ignored.

As in beancount's loader, parsing never stops at the first problem: it
returns every error with the file and line, so that ``verificar`` can list
them all and the server can refuse to start on a half-readable file.
Printing keeps the administrator's comments and the order of the
accounts, so that parse and print round-trip.

One comment line is ours: ``# cajero: libro=<uuid> diario=<n>``. It ties
the file to its journal (see ``journal.py``): ``diario`` is the number of
the last journal record already folded into this file. Other tools read
it as the comment it is.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from bank_server.pins import PinFieldError, check_field
from common.messages import CARD_RE
from common.money import MAX_LEDGER_DIGITS, AmountError, format_amount, parse_ledger_amount

MAX_PIN_ATTEMPTS = 3
_CHECKPOINT = re.compile(r"#\s*cajero:\s*libro=([0-9a-f]{32})\s+diario=([0-9]+)\s*")
_FIELD_SPACE = " \t"


class Account(NamedTuple):
    """One account line. A tuple: cheap to build 100,000 of at start-up, and immutable."""

    tarjeta: str
    titular: str
    saldo: Decimal
    pin: str
    intentos: int

    @property
    def blocked(self) -> bool:
        return self.intentos >= MAX_PIN_ATTEMPTS

    def to_line(self) -> str:
        return f"{self.tarjeta}|{self.titular}|{format_amount(self.saldo)}|{self.pin}|{self.intentos}"

    def to_json(self) -> dict[str, str | int]:
        return {
            "tarjeta": self.tarjeta,
            "titular": self.titular,
            "saldo": format_amount(self.saldo),
            "pin": self.pin,
            "intentos": self.intentos,
        }


@dataclass(frozen=True)
class LedgerError:
    """One problem in a ledger file, located for the administrator."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}, línea {self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


@dataclass
class Ledger:
    """A parsed ledger: its accounts plus what is needed to print it back."""

    accounts: dict[str, Account] = field(default_factory=dict)
    # The file's lines in order: comment/blank text kept verbatim, account lines by card.
    layout: list[tuple[str, str]] = field(default_factory=list)
    libro: str | None = None
    diario: int = 0
    # Lines that load but that an administrator should fix (``verificar`` reports them): today, holder
    # names with control characters. Kept apart from the errors so the bank still starts on them.
    notices: list[LedgerError] = field(default_factory=list)


def _validate_titular(titular: str) -> str | None:
    if "\r" in titular or "\n" in titular or "|" in titular:
        return "el titular no puede contener |, CR ni LF"
    return None


# -- holder names that attack whoever reads them (issue 11, attack item 6) ----------------------------
#
# LEDGER.md lets a holder name be "any text without |, CR or LF", so the bank must go on loading a
# ledger whose names hold control characters: refusing to start would let one bad name stop every
# ATM. But such a name printed raw can drive the administrator's terminal (ESC starts ANSI and OSC
# sequences: colours, cursor moves, a rewritten window title or clipboard) or reverse what follows it
# (U+202E RIGHT-TO-LEFT OVERRIDE, the "Trojan Source" trick). So: ``crear`` refuses them,
# ``verificar`` reports them with file and line, and ``listar`` and ``cajeros`` print them escaped.
#
# Refused: every Unicode control (Cc: C0, DEL, C1, tab included), every format character (Cf: bidi
# embeddings, overrides and isolates, LRM/RLM, invisible spaces and operators, tags, BOM), the line
# and paragraph separators (Zl, Zp), and lone surrogates (Cs: what a command-line argument that is not
# UTF-8 becomes). Kept: ZWNJ and ZWJ (U+200C, U+200D), which some scripts need inside names.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_ALLOWED_FORMAT = frozenset("\u200c\u200d")
_MAX_LISTED_CODES = 5


def is_unsafe_char(char: str) -> bool:
    """True for one character that may alter a terminal or the order of the text shown after it."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _ALLOWED_FORMAT


def unsafe_characters(text: str) -> list[str]:
    """The characters of ``text`` that ``is_unsafe_char`` refuses, in order (empty for almost every name).

    ``str.isprintable`` is one C loop and true for ordinary names, accents included: the per-character
    look-up runs only for the rare text that is not, so checking 100,000 names at start-up costs little.
    """
    if text.isprintable():
        return []
    return [char for char in text if is_unsafe_char(char)]


def escape_unsafe(text: str) -> str:
    """``text`` with each unsafe character written as a Python-style escape (``\\x1b``, ``\\u202e``).

    For every listing an administrator reads in a terminal: the name is shown, but cannot act.
    """
    if not unsafe_characters(text):
        return text
    out = []
    for char in text:
        if not is_unsafe_char(char):
            out.append(char)
        elif (code := ord(char)) < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def titular_warning(titular: str) -> str | None:
    """Why ``titular`` should not be used (Spanish, naming the characters, never echoing them raw); else None."""
    unsafe = unsafe_characters(titular)
    if not unsafe:
        return None
    codes = list(dict.fromkeys(f"U+{ord(c):04X}" for c in unsafe))
    listed = ", ".join(codes[:_MAX_LISTED_CODES]) + (", …" if len(codes) > _MAX_LISTED_CODES else "")
    return (
        f'el titular "{escape_unsafe(titular)[:80]}" tiene caracteres de control o invisibles ({listed}), '
        "que al mostrarlo pueden alterar la terminal o invertir el orden del texto"
    )


# One pattern for a whole well-formed line: the fast path that keeps start-up with
# 100,000 accounts well under a second. Anything it rejects goes through
# ``parse_account``, which says exactly what is wrong.
_SP = "[ \t]*"
_LINE = re.compile(
    rf"{_SP}([0-9]{{12,19}}){_SP}\|([^|\r\n]*)\|{_SP}([0-9]{{1,{MAX_LEDGER_DIGITS}}}\.[0-9]{{2}}){_SP}\|"
    rf"{_SP}(scrypt(?:-p)?\$([0-9]+\$[0-9]+\$[0-9]+)\$(?:[0-9a-fA-F]{{2}}){{16,}}\$[0-9a-fA-F]{{64}}){_SP}\|{_SP}([0-3]){_SP}"
)
_GOOD_PARAMS: set[str] = set()


def fast_account(line: str) -> Account | None:
    """A well-formed account line in one regex match; None sends the caller to ``parse_account``."""
    match = _LINE.fullmatch(line)
    if match is None:
        return None
    tarjeta, titular, saldo, pin, params, intentos = match.groups()
    if params not in _GOOD_PARAMS:
        try:
            check_field(pin)
        except PinFieldError:
            return None
        _GOOD_PARAMS.add(params)
    return Account(tarjeta, titular.strip(_FIELD_SPACE), Decimal(saldo), pin, int(intentos))


def parse_account(fields: list[str]) -> tuple[Account | None, str | None]:
    """Parse the five fields of one account line; return the account or the reason it is wrong."""
    if len(fields) != 5:
        return None, f"se esperaban 5 campos separados por | (tarjeta|titular|saldo|pin|intentos) y hay {len(fields)}"
    tarjeta, titular, saldo_text, pin, intentos_text = (f.strip(_FIELD_SPACE) for f in fields)
    if not CARD_RE.fullmatch(tarjeta):
        return None, f"la tarjeta {tarjeta[:24]!r} debe tener de 12 a 19 dígitos"
    if problem := _validate_titular(titular):
        return None, problem
    try:
        saldo = parse_ledger_amount(saldo_text)
    except AmountError as exc:
        return None, f"el saldo {saldo_text[:24]!r} no es válido: {exc}"
    try:
        check_field(pin)
    except PinFieldError as exc:
        return None, str(exc)
    if intentos_text not in {"0", "1", "2", "3"}:
        return None, f"intentos {intentos_text[:8]!r} debe ser un número de 0 a 3"
    return Account(tarjeta, titular, saldo, pin, int(intentos_text)), None


def parse_ledger(data: bytes, path: str) -> tuple[Ledger, list[LedgerError]]:
    """Parse ledger bytes. The ledger is usable only if the error list is empty."""
    errors: list[LedgerError] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return Ledger(), [LedgerError(path, line, "el archivo no es texto UTF-8 válido")]
    ledger = Ledger()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if match := _CHECKPOINT.fullmatch(stripped):
                ledger.libro, ledger.diario = match.group(1), int(match.group(2))
                continue
            ledger.layout.append(("text", line))
            continue
        account = fast_account(line)
        problem = None
        if account is None:
            account, problem = parse_account(line.split("|"))
        if account is None:
            errors.append(LedgerError(path, number, problem or "línea no válida"))
            continue
        if account.tarjeta in ledger.accounts:
            errors.append(LedgerError(path, number, f"la tarjeta {account.tarjeta} está repetida"))
            continue
        ledger.accounts[account.tarjeta] = account
        ledger.layout.append(("account", account.tarjeta))
        if warning := titular_warning(account.titular):
            ledger.notices.append(
                LedgerError(path, number, warning + "; corríjalo en el archivo con el banco detenido")
            )
    return ledger, errors


class LazyAccounts(dict):  # type: ignore[type-arg]
    """Accounts parsed on first use, for a handler started by ``spawn``.

    Such a handler serves one card; parsing the 100,000 lines it will
    never read would cost it a second on every connection. The server
    validated the whole file when it started, and since then only its own
    checkpoints have replaced it.
    """

    def __init__(self, lines: dict[str, str]) -> None:
        super().__init__()
        self._lines = lines

    def _parse(self, card: str) -> None:
        line = self._lines.pop(card, None)
        if line is not None and not dict.__contains__(self, card):
            account = fast_account(line) or parse_account(line.split("|"))[0]
            if account is None:
                raise ValueError(f"la cuenta {card[-4:]} del archivo de cuentas no se puede leer")
            dict.__setitem__(self, card, account)

    def get(self, card: str, default: Account | None = None) -> Account | None:  # type: ignore[override]
        self._parse(card)
        return dict.get(self, card, default)

    def __getitem__(self, card: str) -> Account:
        self._parse(card)
        return dict.__getitem__(self, card)

    def __setitem__(self, card: str, account: Account) -> None:
        self._lines.pop(card, None)
        dict.__setitem__(self, card, account)

    def __contains__(self, card: object) -> bool:
        return dict.__contains__(self, card) or card in self._lines

    # Anything that walks every account parses them all first, so the mapping is never seen half-filled.
    def parse_all(self) -> None:
        for card in list(self._lines):
            self._parse(card)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.parse_all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        return dict.__len__(self) + len(self._lines)

    def items(self):  # type: ignore[no-untyped-def]
        self.parse_all()
        return dict.items(self)

    def values(self):  # type: ignore[no-untyped-def]
        self.parse_all()
        return dict.values(self)

    def keys(self):  # type: ignore[no-untyped-def]
        self.parse_all()
        return dict.keys(self)


def index_ledger(data: bytes) -> Ledger:
    """The ledger's lines by card, unparsed (see ``LazyAccounts``); the checkpoint mark parsed."""
    ledger = Ledger()
    lines: dict[str, str] = {}
    for raw in data.decode("utf-8-sig").split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if match := _CHECKPOINT.fullmatch(stripped):
                ledger.libro, ledger.diario = match.group(1), int(match.group(2))
            continue
        lines[line.split("|", 1)[0].strip(_FIELD_SPACE)] = line
    ledger.accounts = LazyAccounts(lines)
    return ledger


def load_ledger(path: Path) -> tuple[Ledger, list[LedgerError]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Ledger(), [LedgerError(str(path), 0, "no existe el archivo de cuentas")]
    except OSError as exc:
        return Ledger(), [LedgerError(str(path), 0, f"no se pudo leer ({exc.strerror})")]
    return parse_ledger(data, str(path))


def render_ledger(ledger: Ledger, accounts: dict[str, Account], libro: str, diario: int) -> str:
    """Print ``accounts`` in the layout of ``ledger``; new accounts go at the end."""
    out = [f"# cajero: libro={libro} diario={diario}"]
    seen: set[str] = set()
    for kind, value in ledger.layout:
        if kind == "text":
            out.append(value)
        elif value in accounts:
            out.append(accounts[value].to_line())
            seen.add(value)
    out.extend(account.to_line() for card, account in accounts.items() if card not in seen)
    return "\n".join(out) + "\n"

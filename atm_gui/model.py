"""The ATM's plain data types: keys, screens, settings, the session snapshot and the screen view.

Why a module of its own: the state machine (``session``), the screens it
shows (``screens``), the words (``wording``) and the Tk painter
(``window``) all speak in these types, and none of them should have to
import the others to do so. Nothing here has behaviour beyond a few
derived facts; everything is frozen, so a snapshot handed to the painter
can never change under it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

# -- keys ----------------------------------------------------------------------------
# Key identifiers are code; what is printed on the keys is in ``wording.KEY_LABELS``.
DIGITS = "0123456789"
ACCEPT = "ACCEPT"
CANCEL = "CANCEL"
CLEAR = "CLEAR"
SIDE_KEYS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8")
KEYS = (*DIGITS, ACCEPT, CANCEL, CLEAR, *SIDE_KEYS)
# The bottom side keys, which several screens use for the same kind of thing:
# left is "back out" (Corregir, Recibo, No), right is "go on" (Confirmar, Menú, Sí, Regresar).
LEFT_BOTTOM = "F4"
RIGHT_BOTTOM = "F8"


class Screen(enum.Enum):
    """Every screen the customer can see; the session is always on exactly one."""

    WELCOME = "welcome"
    PIN = "pin"
    MENU = "menu"
    WAIT = "wait"
    RESULT = "result"
    RECEIPT = "receipt"
    DEPOSIT_AMOUNT = "deposit_amount"
    DEPOSIT_CONFIRM = "deposit_confirm"
    WITHDRAWAL_AMOUNT = "withdrawal_amount"
    WITHDRAWAL_CONFIRM = "withdrawal_confirm"
    PIN_CURRENT = "pin_current"
    PIN_NEW = "pin_new"
    PIN_REPEAT = "pin_repeat"
    MORE_TIME = "more_time"
    TAKE_CARD = "take_card"
    TERMINAL_SUSPENDED = "terminal_suspended"  # the bank stopped checking PINs here: card returned
    OUT_OF_SERVICE = "out_of_service"


# Screens on which a customer who walks away is asked "¿Necesita más tiempo?".
IDLE_TIMEOUT_SCREENS = frozenset(
    {
        Screen.PIN,
        Screen.MENU,
        Screen.RESULT,
        Screen.RECEIPT,
        Screen.DEPOSIT_AMOUNT,
        Screen.DEPOSIT_CONFIRM,
        Screen.WITHDRAWAL_AMOUNT,
        Screen.WITHDRAWAL_CONFIRM,
        Screen.PIN_CURRENT,
        Screen.PIN_NEW,
        Screen.PIN_REPEAT,
        Screen.OUT_OF_SERVICE,
    }
)

# Screens whose typed entry is a PIN: it never leaves the session, only its length does.
SECRET_ENTRY_SCREENS = frozenset({Screen.PIN, Screen.PIN_CURRENT, Screen.PIN_NEW, Screen.PIN_REPEAT})


class OutageReason(enum.Enum):
    """Why the ATM cannot talk to the bank; each has its own words on screen."""

    UNREACHABLE = "unreachable"  # no TCP connection, or it broke and cannot be remade
    WRONG_KEY = "wrong_key"  # the bank proved another key: it does not hold this ATM's key (or this version)
    REFUSED = "refused"  # the bank closed before its ServerHello: terminal unknown or revoked, or key version too old
    NO_KEY = "no_key"  # this ATM's key file is missing, unreadable, malformed or another terminal's


# Outages that trying again at once cannot end: someone at the bank or at the ATM must act
# (the ATM still looks again every few seconds, so it comes back by itself once they have).
STAFF_OUTAGES = frozenset({OutageReason.WRONG_KEY, OutageReason.REFUSED, OutageReason.NO_KEY})


class Operation(enum.Enum):
    """What a result screen (and its receipt) is about."""

    BALANCE = "balance"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    MOVEMENTS = "movements"
    PIN_CHANGE = "pin_change"


@dataclass(frozen=True)
class AtmSettings:
    """What a bank may configure per ATM (read from ``atm.ini`` by ``config``)."""

    bank_name: str = "Banco del Sur"
    atm_id: str = "CAJERO-01"
    smallest_note: Decimal = Decimal(100)
    quick_amounts: tuple[Decimal, ...] = tuple(Decimal(x) for x in (100, 200, 500, 1000, 2000, 5000))
    inactivity: float = 30.0  # seconds without a key before "¿Necesita más tiempo?"
    countdown: float = 15.0  # seconds that question waits for an answer
    take_card_seconds: float = 4.0  # how long "Retire su tarjeta" stays
    amount_digits: int = 7


@dataclass(frozen=True)
class PendingRequest:
    """The request awaiting the bank's answer, without its secrets (no card number, no PIN).

    Why not the typed request itself: ``Identificar`` and ``CambiarPin``
    carry PINs, and this object is kept for a while, compared and shown
    in reprs; the answer only needs the op, the amount and the id.
    """

    correlation_id: int
    op: str  # the wire op, e.g. "DEPOSITAR"
    amount: Decimal | None = None
    tx_id: str = ""


@dataclass(frozen=True)
class OperationResult:
    """The outcome of one operation as the customer reads it, kept for the receipt."""

    operation: Operation
    ok: bool
    title: str
    lines: tuple[str, ...]
    amount: Decimal | None = None
    balance: Decimal | None = None
    tx_id: str = ""


@dataclass(frozen=True)
class SessionSnapshot:
    """The public facts of the session at one moment: all that ``screens`` needs to draw it.

    Why a snapshot rather than the session itself: the render functions
    cannot reach into the state machine, and the state machine cannot
    depend on how it is drawn. It never holds a PIN (only its length) nor
    the card number being checked by the bank.
    """

    screen: Screen
    bank_name: str
    online: bool = True
    outage: OutageReason = OutageReason.UNREACHABLE
    entry: str = ""  # digits typed on a non-secret screen (card, amount)
    pin_length: int = 0  # digits typed on a secret screen
    notice: str = ""
    wait_text: str = ""
    amount: Decimal | None = None
    smallest_note: Decimal = Decimal(100)
    quick_amounts: tuple[Decimal, ...] = ()
    result: OperationResult | None = None
    receipt_lines: tuple[str, ...] = ()
    receipt_status: str = ""
    countdown_end: float = 0.0  # monotonic time at which "¿Necesita más tiempo?" gives up
    farewell: str = ""  # why the session ended, on "Retire su tarjeta"


@dataclass(frozen=True)
class ScreenView:
    """Everything the screen shows, as plain data: the window only paints it."""

    screen: Screen
    title: str
    subtitle: str = ""
    lines: tuple[str, ...] = ()
    left: tuple[str, str, str, str] = ("", "", "", "")
    right: tuple[str, str, str, str] = ("", "", "", "")
    label: str = ""
    entry: str | None = None
    notice: str = ""
    help: str = ""
    table: bool = False  # monospaced lines (movements, receipts)

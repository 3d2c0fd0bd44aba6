"""What crosses between the Tk thread and the worker thread: typed commands and events (h11 style).

Why frozen dataclasses rather than ``(kind, payload)`` tuples: a typo
in a kind or a key is a ``NameError`` or a type error at the call site,
not a message silently ignored at the other end; ``match`` on the class
replaces string dispatch; and nothing mutable is shared between threads.

Commands go from the session to the worker (``AtmSession.take_commands``
then ``Worker.send``); events come back on ``Worker.events`` and are fed
to ``AtmSession.handle_event`` (the window also shows ``BankStatus``).

Every command and event of a customer session carries ``session_no``,
the number of that session, so that a late answer for a customer who has
already left is ignored instead of confusing the next one. A request and
every event about it also carry ``correlation_id``, chosen by the
session, so an answer is matched to the request it answers, never to
another request of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atm_gui.model import OutageReason
from common.messages import Request

# -- commands: session -> worker ---------------------------------------------------


@dataclass(frozen=True)
class OpenSession:
    """A card was entered: open the one connection this customer session will use."""

    session_no: int


@dataclass(frozen=True)
class SendRequest:
    """Send one typed request to the bank (retrying it on a new connection when that is safe)."""

    session_no: int
    correlation_id: int
    request: Request


@dataclass(frozen=True)
class CloseSession:
    """The customer is done: say SALIR and close the connection."""

    session_no: int


@dataclass(frozen=True)
class SaveReceipt:
    """Write a receipt as a text file in the receipts folder (``file_name`` only; never a path)."""

    session_no: int
    file_name: str
    text: str


@dataclass(frozen=True)
class Stop:
    """End the worker thread (after SALIR if a session is open)."""


Command = OpenSession | SendRequest | CloseSession | SaveReceipt | Stop

# -- events: worker -> session and window ---------------------------------------------


@dataclass(frozen=True)
class BankStatus:
    """Whether the bank can be reached now; sent when that changes, session or not."""

    online: bool
    reason: OutageReason | None = None  # why not, when offline
    destination: str = ""  # "host:port", for the status bar
    terminal_id: str = ""  # when online: the terminal the bank just accepted, from the key file (for receipts)


@dataclass(frozen=True)
class Connected:
    """The session's connection is (again) open and, if the card was identified, identified again."""

    session_no: int


@dataclass(frozen=True)
class Disconnected:
    """No connection could be made for the session; ``correlation_id`` names the request that could not go."""

    session_no: int
    reason: OutageReason
    correlation_id: int | None = None


@dataclass(frozen=True)
class Reconnecting:
    """The reply to a request was lost; the worker is trying again (attempt ``attempt``)."""

    session_no: int
    correlation_id: int
    attempt: int


@dataclass(frozen=True)
class Reply:
    """The bank's answer to a request, as the wire dict (its keys are the contract's)."""

    session_no: int
    correlation_id: int
    response: dict[str, Any]


@dataclass(frozen=True)
class RequestFailed:
    """The worker gave up: the outcome of the request (if any) is unknown, and the session must end."""

    session_no: int
    correlation_id: int | None = None


@dataclass(frozen=True)
class ReceiptSaved:
    session_no: int
    file_name: str
    path: Path


@dataclass(frozen=True)
class ReceiptFailed:
    session_no: int
    file_name: str


SessionEvent = Connected | Disconnected | Reconnecting | Reply | RequestFailed | ReceiptSaved | ReceiptFailed
Event = BankStatus | SessionEvent

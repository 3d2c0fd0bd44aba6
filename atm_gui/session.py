"""The ATM's session logic as a plain state machine: no Tk, no sockets, no clock of its own.

Why a separate, widget-free module: every rule a customer meets (which
key does what on which screen, amounts, PIN entry, time-outs, what a
bank answer shows) lives here, so unit tests drive it with key sequences
and fake bank events in microseconds, and the Tk window stays a thin
painter (the Thonny/IDLE lesson: logic that touches widgets cannot be
tested without a display).

How it talks to the rest:

* ``press_key(key, now)`` feeds one key; ``tick(now)`` advances
  time-outs; ``handle_event(event, now)`` feeds one event from the
  worker (``atm_gui.events``). ``now`` is a monotonic time in seconds
  handed in by the caller.
* ``take_commands()`` returns the commands for the worker
  (``atm_gui.events``): bank requests are the typed requests of
  ``common.messages``, each with a fresh ``correlation_id`` that its
  answer carries back.
* ``snapshot()`` returns the frozen ``SessionSnapshot`` of what to show;
  ``screens.render`` lays it out.

Money is ``Decimal`` throughout, from the keypad to the request (it is
turned into text only on the wire and on screen); the keypad has no
decimal point, so amounts are whole pesos.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from atm_gui import wording
from atm_gui.events import (
    BankStatus,
    CloseSession,
    Command,
    Connected,
    Disconnected,
    Event,
    OpenSession,
    ReceiptFailed,
    ReceiptSaved,
    Reconnecting,
    Reply,
    RequestFailed,
    SaveReceipt,
    SendRequest,
    SessionEvent,
)
from atm_gui.model import (
    ACCEPT,
    CANCEL,
    CLEAR,
    DIGITS,
    IDLE_TIMEOUT_SCREENS,
    KEYS,
    LEFT_BOTTOM,
    RIGHT_BOTTOM,
    SECRET_ENTRY_SCREENS,
    SIDE_KEYS,
    AtmSettings,
    OperationResult,
    OutageReason,
    PendingRequest,
    Screen,
    SessionSnapshot,
)
from common.messages import (
    DEPOSITAR,
    IDENTIFICAR,
    RETIRAR,
    CambiarPin,
    Consultar,
    Depositar,
    Identificar,
    Movimientos,
    Request,
    Retirar,
    request_op_name,
)

CARD_DIGITS = (12, 19)
PIN_DIGITS = (4, 6)
MOVEMENTS_ASKED = 10
TYPE_AHEAD_LIMIT = 40
FAREWELL_EXTRA_SECONDS = 3.0  # "Retire su tarjeta" stays longer when it says why the session ended
# Answers after which the card is returned at once, whatever the operation.
CARD_REFUSED = frozenset({"TARJETA_BLOQUEADA", "TARJETA_INVALIDA", "NO_IDENTIFICADO"})
# Screens shown while the card comes back; after a moment they give way to the welcome screen.
CARD_RETURNED_SCREENS = frozenset({Screen.TAKE_CARD, Screen.TERMINAL_SUSPENDED})
# On the menu the side keys F1-F6 mean the digits 1-6 shown beside them.
MENU_SIDE_KEYS = {key: str(i) for i, key in enumerate(SIDE_KEYS[:6], start=1)}
QUICK_AMOUNT_KEYS = SIDE_KEYS[:7]  # F8 is "Regresar"
FALLBACK_QUICK_MULTIPLES = (1, 2, 5, 10, 20, 50)  # of the smallest note, when no configured amount fits it

KeyHandler = Callable[[str, float], None]


def _pending(correlation_id: int, request: Request) -> PendingRequest:
    """What is remembered about a request while its answer is awaited: never its PIN."""
    if isinstance(request, Depositar | Retirar):
        return PendingRequest(correlation_id, request_op_name(request), request.monto, request.id)
    return PendingRequest(correlation_id, request_op_name(request))


class AtmSession:
    """One ATM's customer-facing state. Not thread-safe: the Tk thread owns it."""

    def __init__(
        self,
        settings: AtmSettings | None = None,
        now: float = 0.0,
        clock: Callable[[], datetime] = datetime.now,
        new_tx_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.settings = settings or AtmSettings()
        self._clock = clock
        self._new_tx_id = new_tx_id
        self._commands: list[Command] = []
        self._last_correlation_id = 0
        self.session_no = 0
        self.online = True
        self.bank_outage = OutageReason.UNREACHABLE
        self.is_open = False
        self.screen = Screen.WELCOME
        # One key handler per screen. WAIT, MORE_TIME and CANCEL are handled in press_key;
        # TAKE_CARD, TERMINAL_SUSPENDED and OUT_OF_SERVICE take no key but CANCEL.
        self._key_handlers: dict[Screen, KeyHandler] = {
            Screen.WELCOME: self._key_welcome,
            Screen.PIN: self._key_pin,
            Screen.MENU: self._key_menu,
            Screen.DEPOSIT_AMOUNT: self._key_deposit_amount,
            Screen.WITHDRAWAL_AMOUNT: self._key_withdrawal_amount,
            Screen.DEPOSIT_CONFIRM: self._key_deposit_confirm,
            Screen.WITHDRAWAL_CONFIRM: self._key_withdrawal_confirm,
            Screen.PIN_CURRENT: self._key_pin_current,
            Screen.PIN_NEW: self._key_pin_new,
            Screen.PIN_REPEAT: self._key_pin_repeat,
            Screen.RESULT: self._key_result,
            Screen.RECEIPT: self._key_receipt,
        }
        self._forget_customer(now)

    # -- public API ------------------------------------------------------------
    @property
    def pending(self) -> PendingRequest | None:
        """The request sent to the bank whose answer has not come yet (without its secrets)."""
        return self._pending

    def take_commands(self) -> list[Command]:
        commands, self._commands = self._commands, []
        return commands

    def press_key(self, key: str, now: float) -> None:
        if key not in KEYS:
            return
        self._last_key_at = now
        if self.screen is Screen.MORE_TIME:
            self._answer_more_time(key, now)
        elif self.screen is Screen.WAIT and key != CANCEL:
            # Type-ahead, as a keyboard buffer: keys pressed while the bank answers are
            # replayed on the next screen, so a quick customer (or xdotool) loses nothing.
            if len(self._type_ahead) < TYPE_AHEAD_LIMIT:
                self._type_ahead.append(key)
        elif key == CANCEL:
            self._cancel(now)
        elif handler := self._key_handlers.get(self.screen):
            handler(key, now)

    def tick(self, now: float) -> None:
        if self.screen in CARD_RETURNED_SCREENS and now >= self._deadline:
            self._forget_customer(now)
            self.screen = Screen.WELCOME
        elif self.screen is Screen.MORE_TIME and now >= self._deadline:
            self._end(now)
        elif self.screen in IDLE_TIMEOUT_SCREENS and now - self._last_key_at >= self.settings.inactivity:
            self._screen_before_question = self.screen
            self.screen = Screen.MORE_TIME
            self._deadline = now + self.settings.countdown
        elif self.screen is Screen.WELCOME and self._entry and now - self._last_key_at >= self.settings.inactivity:
            self._entry = ""
            self._notice = ""

    def handle_event(self, event: Event, now: float) -> None:
        if isinstance(event, BankStatus):
            self.online = event.online
            self.bank_outage = event.reason or OutageReason.UNREACHABLE
            if event.terminal_id and event.terminal_id != self.settings.atm_id:
                # The key file names the terminal; receipts print what the bank accepted.
                self.settings = replace(self.settings, atm_id=event.terminal_id)
            return
        if not self.is_open or event.session_no != self.session_no:
            return  # a late answer for a session that has already ended
        # An answer that arrives during "¿Necesita más tiempo?" is applied to the screen
        # the question interrupted; the question stays unless the answer moved on.
        asking = self.screen is Screen.MORE_TIME
        if asking:
            self.screen = self._screen_before_question
        before = self.screen
        self._apply(event, now)
        if asking:
            if self.screen is before:
                self.screen = Screen.MORE_TIME
            else:
                self._last_key_at = now
        if self.screen is not Screen.WAIT and self._type_ahead:
            keys, self._type_ahead = self._type_ahead, []
            for key in keys:
                self.press_key(key, now)  # back in WAIT, the rest is buffered again

    def snapshot(self) -> SessionSnapshot:
        """The public facts of this moment, for ``screens.render`` (no PIN, only its length)."""
        secret = self.screen in SECRET_ENTRY_SCREENS
        return SessionSnapshot(
            screen=self.screen,
            bank_name=self.settings.bank_name,
            online=self.online,
            outage=self._outage if self.screen is Screen.OUT_OF_SERVICE else self.bank_outage,
            entry="" if secret else self._entry,
            pin_length=len(self._entry) if secret else 0,
            notice=self._notice,
            wait_text=self._wait_text,
            amount=self._amount,
            smallest_note=self.settings.smallest_note,
            quick_amounts=self._quick_amounts(),
            result=self._result,
            receipt_lines=self._receipt,
            receipt_status=self._receipt_status,
            countdown_end=self._deadline,
            farewell=self._farewell,
        )

    # -- keys, one handler per screen ---------------------------------------------
    def _answer_more_time(self, key: str, now: float) -> None:
        if key in (CANCEL, LEFT_BOTTOM):
            self._end(now)
        else:
            self.screen = self._screen_before_question

    def _cancel(self, now: float) -> None:
        if self.screen is Screen.WELCOME:
            self._entry = ""
            self._notice = ""
        elif self.screen not in CARD_RETURNED_SCREENS:
            self._end(now)

    def _type(self, key: str, max_digits: int) -> None:
        if key in DIGITS and len(self._entry) < max_digits:
            self._entry += key
        elif key == CLEAR:
            self._entry = self._entry[:-1]

    def _type_amount(self, key: str) -> None:
        self._type(key, self.settings.amount_digits)
        self._entry = self._entry.lstrip("0")

    def _pin_typed(self) -> bool:
        return PIN_DIGITS[0] <= len(self._entry) <= PIN_DIGITS[1]

    def _key_welcome(self, key: str, now: float) -> None:
        if not self.online:
            return
        if key != ACCEPT:
            self._type(key, CARD_DIGITS[1])
        elif not CARD_DIGITS[0] <= len(self._entry) <= CARD_DIGITS[1]:
            self._notice = wording.CARD_LENGTH
        else:
            self.session_no += 1
            self.is_open = True
            self._card = self._entry
            self._entry = ""
            self._commands.append(OpenSession(self.session_no))
            self.screen = Screen.PIN

    def _key_pin(self, key: str, now: float) -> None:
        if key != ACCEPT:
            self._type(key, PIN_DIGITS[1])
        elif not self._pin_typed():
            self._notice = wording.PIN_LENGTH
        else:
            pin, self._entry = self._entry, ""
            self._request(Identificar(self._card, pin), wording.CHECKING_PIN)

    def _key_menu(self, key: str, now: float) -> None:
        match MENU_SIDE_KEYS.get(key, key):
            case "1":
                self._request(Consultar(), wording.CHECKING_BALANCE)
            case "2":
                self._go(Screen.DEPOSIT_AMOUNT)
            case "3":
                self._go(Screen.WITHDRAWAL_AMOUNT)
            case "4":
                self._request(Movimientos(MOVEMENTS_ASKED), wording.CHECKING_MOVEMENTS)
            case "5":
                self._go(Screen.PIN_CURRENT)
            case "6":
                self._end(now)

    def _key_deposit_amount(self, key: str, now: float) -> None:
        if key == ACCEPT:
            amount = Decimal(self._entry or "0")
            if amount <= 0:
                self._notice = wording.AMOUNT_ABOVE_ZERO
                return
            self._amount = amount
            self._go(Screen.DEPOSIT_CONFIRM)
        elif key == RIGHT_BOTTOM:
            self._go(Screen.MENU)
        else:
            self._type_amount(key)

    def _key_withdrawal_amount(self, key: str, now: float) -> None:
        quick = self._quick_amounts()
        if key in QUICK_AMOUNT_KEYS and QUICK_AMOUNT_KEYS.index(key) < len(quick):
            self._choose_withdrawal(quick[QUICK_AMOUNT_KEYS.index(key)])
        elif key == ACCEPT:
            self._choose_withdrawal(Decimal(self._entry or "0"))
        elif key == RIGHT_BOTTOM:
            self._go(Screen.MENU)
        else:
            self._type_amount(key)

    def _choose_withdrawal(self, amount: Decimal) -> None:
        note = self.settings.smallest_note
        if amount <= 0:
            self._notice = wording.AMOUNT_ABOVE_ZERO
        elif amount % note != 0:
            self._notice = wording.not_a_multiple(note)
            self._entry = ""
        else:
            self._amount = amount
            self._go(Screen.WITHDRAWAL_CONFIRM)

    def _key_deposit_confirm(self, key: str, now: float) -> None:
        self._confirm(key, Depositar, Screen.DEPOSIT_AMOUNT)

    def _key_withdrawal_confirm(self, key: str, now: float) -> None:
        self._confirm(key, Retirar, Screen.WITHDRAWAL_AMOUNT)

    def _confirm(self, key: str, make: type[Depositar] | type[Retirar], correct: Screen) -> None:
        if key in (ACCEPT, RIGHT_BOTTOM):
            assert self._amount is not None, "a confirmation screen always has an amount"
            self._request(make(self._amount, self._new_tx_id()), wording.PROCESSING)
        elif key == LEFT_BOTTOM:
            self._go(correct)

    def _key_pin_current(self, key: str, now: float) -> None:
        if key != ACCEPT:
            self._type(key, PIN_DIGITS[1])
        elif not self._pin_typed():
            self._notice = wording.PIN_LENGTH
        else:
            self._current_pin = self._entry
            self._go(Screen.PIN_NEW)

    def _key_pin_new(self, key: str, now: float) -> None:
        if key != ACCEPT:
            self._type(key, PIN_DIGITS[1])
            return
        if not self._pin_typed():
            self._notice = wording.NEW_PIN_LENGTH
        elif self._entry == self._current_pin:
            self._notice = wording.NEW_PIN_SAME_AS_CURRENT
        else:
            self._new_pin = self._entry
            self._go(Screen.PIN_REPEAT)
            return
        self._entry = ""

    def _key_pin_repeat(self, key: str, now: float) -> None:
        if key != ACCEPT:
            self._type(key, PIN_DIGITS[1])
        elif self._entry != self._new_pin:
            self._new_pin = ""
            self._go(Screen.PIN_NEW)
            self._notice = wording.PINS_DIFFER
        else:
            request = CambiarPin(self._current_pin, self._new_pin)
            self._current_pin = self._new_pin = ""
            self._request(request, wording.CHANGING_PIN)

    def _key_result(self, key: str, now: float) -> None:
        if key in (ACCEPT, RIGHT_BOTTOM):
            self._go(Screen.MENU)
        elif key == LEFT_BOTTOM and self._result is not None:
            self._issue_receipt()
            self._go(Screen.RECEIPT)

    def _key_receipt(self, key: str, now: float) -> None:
        if key in (ACCEPT, RIGHT_BOTTOM):
            self._go(Screen.MENU)

    # -- events from the worker --------------------------------------------------
    def _apply(self, event: SessionEvent, now: float) -> None:
        match event:
            case Connected():
                self._on_connected()
            case Disconnected(reason=reason, correlation_id=correlation_id):
                self._on_disconnected(reason, correlation_id)
            case Reconnecting(attempt=attempt):
                if self.screen is Screen.WAIT:
                    self._notice = wording.reconnecting(attempt)
            case RequestFailed():
                self._on_request_failed(now)
            case ReceiptSaved(file_name=file_name):
                self._receipt_status = wording.receipt_saved(file_name)
            case ReceiptFailed():
                self._receipt_status = wording.RECEIPT_NOT_SAVED
            case Reply():
                self._on_reply(event, now)

    def _on_connected(self) -> None:
        if self.screen is Screen.OUT_OF_SERVICE and self._pending is None:
            if self._holder:
                self._go(Screen.MENU)
                self._notice = wording.CONNECTION_RESTORED
            else:
                self._go(Screen.PIN)
                self._notice = wording.CONNECTION_RESTORED_ENTER_PIN

    def _on_disconnected(self, reason: OutageReason, correlation_id: int | None) -> None:
        if correlation_id is not None and self._pending and correlation_id == self._pending.correlation_id:
            self._pending = None  # that request never left: nothing to wait for
        self._outage = reason
        if self._pending is None:
            self._go(Screen.OUT_OF_SERVICE)

    def _on_request_failed(self, now: float) -> None:
        """The worker gave up on a request: its outcome is unknown to the ATM, so say so and end."""
        pending, self._pending = self._pending, None
        if pending and pending.op in (DEPOSITAR, RETIRAR):
            self._end(now, wording.OUTCOME_UNKNOWN)
        else:
            self._end(now, wording.CONNECTION_LOST)

    def _on_reply(self, event: Reply, now: float) -> None:
        pending = self._pending
        if pending is None or event.correlation_id != pending.correlation_id:
            return
        self._pending = None
        response = event.response
        ok = response.get("ok") is True
        error = str(response.get("error", ""))
        message = str(response.get("mensaje") or wording.BANK_COULD_NOT)
        if not ok and error in CARD_REFUSED:
            self._end(now, message)
        elif pending.op == IDENTIFICAR:
            self._on_identified(response, ok, error, message, now)
        else:
            self._result = wording.describe_result(pending, response, ok, message, self._holder)
            self._go(Screen.RESULT)

    def _on_identified(self, response: dict[str, Any], ok: bool, error: str, message: str, now: float) -> None:
        if ok:
            self._holder = str(response.get("titular", ""))
            self._go(Screen.MENU)
            self._notice = wording.welcome_holder(self._holder)
        elif error == "PIN_INCORRECTO":
            self._go(Screen.PIN)
            self._notice = wording.wrong_pin(response.get("intentos_restantes"))
        elif error == "CAJERO_SUSPENDIDO":
            # Not the customer's doing: this ATM made too many wrong-PIN attempts. Its own screen.
            self._end(now, screen=Screen.TERMINAL_SUSPENDED)
        else:
            self._end(now, message)

    # -- helpers ---------------------------------------------------------------------
    def _request(self, request: Request, wait_text: str) -> None:
        self._last_correlation_id += 1
        self._pending = _pending(self._last_correlation_id, request)
        self._wait_text = wait_text
        self._commands.append(SendRequest(self.session_no, self._last_correlation_id, request))
        self._go(Screen.WAIT)

    def _go(self, screen: Screen) -> None:
        self.screen = screen
        self._entry = ""
        self._notice = ""

    def _quick_amounts(self) -> tuple[Decimal, ...]:
        note = self.settings.smallest_note
        fitting = [m for m in self.settings.quick_amounts if m > 0 and m % note == 0]
        return tuple(fitting or [note * f for f in FALLBACK_QUICK_MULTIPLES])[: len(QUICK_AMOUNT_KEYS)]

    def _forget_customer(self, now: float) -> None:
        """Forget everything about the customer (the card, the PIN being typed, results)."""
        self._last_key_at = now
        self._deadline = now
        self._screen_before_question = Screen.WELCOME
        self._entry = ""
        self._notice = ""
        self._card = ""
        self._holder = ""
        self._current_pin = ""
        self._new_pin = ""
        self._amount: Decimal | None = None
        self._pending: PendingRequest | None = None
        self._result: OperationResult | None = None
        self._receipt: tuple[str, ...] = ()
        self._receipt_status = ""
        self._wait_text = ""
        self._outage = OutageReason.UNREACHABLE
        self._farewell = ""
        self._type_ahead: list[str] = []

    def _end(self, now: float, farewell: str = "", screen: Screen = Screen.TAKE_CARD) -> None:
        """End the session safely from any screen: close the connection, return the card.

        ``screen`` is one of ``CARD_RETURNED_SCREENS``; a screen that says why
        the session ended stays a little longer, so it can be read.
        """
        if self.is_open:
            self._commands.append(CloseSession(self.session_no))
        self.is_open = False
        self._forget_customer(now)
        self._farewell = farewell
        self.screen = screen
        explained = bool(farewell) or screen is not Screen.TAKE_CARD
        self._deadline = now + self.settings.take_card_seconds + (FAREWELL_EXTRA_SECONDS if explained else 0.0)

    def _issue_receipt(self) -> None:
        result = self._result
        assert result is not None, "a receipt is offered only after a result"
        when = self._clock()
        lines = wording.receipt_lines(self.settings, when, self._card, result)
        self._receipt = lines
        self._receipt_status = wording.SAVING_RECEIPT
        file_name = wording.receipt_file_name(when, result.tx_id or self._new_tx_id())
        self._commands.append(SaveReceipt(self.session_no, file_name, "\n".join(lines) + "\n"))

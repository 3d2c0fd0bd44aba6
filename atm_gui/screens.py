"""Each screen of the ATM as a ``ScreenView``: titles, lines, side-key labels, the input field.

Why render functions of a ``SessionSnapshot`` rather than part of the
session: the rules (``session``) decide which screen is current and
publish its facts in one frozen snapshot; this module only lays those
facts out (with the words of ``wording``), so layout changes without
touching the state machine, and the state machine never depends on how
it is drawn. There is one function per screen, chosen by ``RENDERERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from atm_gui import wording
from atm_gui.model import Operation, Screen, ScreenView, SessionSnapshot

MASK = "●"  # one per PIN digit typed
PULSE_ON, PULSE_OFF = "●", "○"
PULSE_DOTS = 3  # the waiting pulse lights 0, 1, 2, 3 of them in turn
PULSE_PER_SECOND = 2  # a slow pulse, so a long wait visibly is not a frozen screen
QUICK_AMOUNT_KEYS = 7  # F1-F7; F8 is "Regresar"

Renderer = Callable[[SessionSnapshot, float], ScreenView]


def render(snapshot: SessionSnapshot, now: float) -> ScreenView:
    """What the screen shows for this snapshot (``now`` drives the countdown and the waiting pulse)."""
    return RENDERERS[snapshot.screen](snapshot, now)


def _typed_amount(s: SessionSnapshot) -> str:
    return wording.money(Decimal(s.entry or "0"))


def _welcome(s: SessionSnapshot, now: float) -> ScreenView:
    if not s.online:
        return ScreenView(
            s.screen, wording.OUT_OF_SERVICE, s.bank_name, (*wording.OUTAGE_LINES[s.outage], wording.SORRY)
        )
    return ScreenView(
        s.screen,
        s.bank_name,
        wording.INSERT_CARD,
        wording.INSERT_CARD_LINES,
        label=wording.CARD_LABEL,
        entry=wording.group_card(s.entry),
        notice=s.notice,
        help=wording.HELP_CONTINUE_OR_CLEAR,
    )


def _pin(s: SessionSnapshot, now: float) -> ScreenView:
    return ScreenView(
        s.screen,
        s.bank_name,
        wording.ENTER_PIN,
        wording.COVER_THE_KEYPAD,
        label=wording.PIN_LABEL,
        entry=MASK * s.pin_length,
        notice=s.notice,
        help=wording.HELP_CONTINUE_OR_LEAVE,
    )


def _menu(s: SessionSnapshot, now: float) -> ScreenView:
    left = [f"{n} · {t}" for n, t in wording.MENU_OPTIONS[:4]]
    right = [f"{t} · {n}" for n, t in wording.MENU_OPTIONS[4:]]
    return ScreenView(
        s.screen,
        s.bank_name,
        wording.CHOOSE_OPERATION,
        (),
        (left[0], left[1], left[2], left[3]),
        (right[0], right[1], "", ""),
        notice=s.notice,
        help=wording.HELP_MENU,
    )


def _wait(s: SessionSnapshot, now: float) -> ScreenView:
    lit = int(now * PULSE_PER_SECOND) % (PULSE_DOTS + 1)
    dots = " ".join(PULSE_ON if i < lit else PULSE_OFF for i in range(PULSE_DOTS))
    return ScreenView(s.screen, s.wait_text or wording.PROCESSING, wording.PLEASE_WAIT, (dots,), notice=s.notice)


def _deposit_amount(s: SessionSnapshot, now: float) -> ScreenView:
    return ScreenView(
        s.screen,
        wording.DEPOSIT,
        wording.DEPOSIT_PROMPT,
        wording.WHOLE_PESOS_ONLY,
        right=("", "", "", wording.BACK),
        label=wording.AMOUNT_LABEL,
        entry=_typed_amount(s),
        notice=s.notice,
        help=wording.HELP_CONTINUE_OR_CLEAR,
    )


def _withdrawal_amount(s: SessionSnapshot, now: float) -> ScreenView:
    quick = [wording.money(m) for m in s.quick_amounts] + [""] * (QUICK_AMOUNT_KEYS + 1)
    return ScreenView(
        s.screen,
        wording.WITHDRAWAL,
        wording.WITHDRAWAL_PROMPT,
        (wording.multiples_of(s.smallest_note),),
        (quick[0], quick[1], quick[2], quick[3]),
        (quick[4], quick[5], quick[6], wording.BACK),
        label=wording.AMOUNT_LABEL,
        entry=_typed_amount(s),
        notice=s.notice,
        help=wording.HELP_CONTINUE_OR_CLEAR,
    )


def _confirm(s: SessionSnapshot, now: float) -> ScreenView:
    return ScreenView(
        s.screen,
        wording.confirm_your(s.screen),
        "",
        (wording.amount_line(s.amount), "", wording.IS_IT_RIGHT),
        ("", "", "", wording.CORRECT),
        ("", "", "", wording.CONFIRM),
        notice=s.notice,
        help=wording.HELP_CONFIRM,
    )


def _pin_change(s: SessionSnapshot, now: float) -> ScreenView:
    return ScreenView(
        s.screen,
        wording.PIN_CHANGE,
        wording.PIN_CHANGE_PROMPTS[s.screen],
        (),
        label=wording.PIN_LABEL,
        entry=MASK * s.pin_length,
        notice=s.notice,
        help=wording.HELP_CONTINUE_OR_LEAVE,
    )


def _result(s: SessionSnapshot, now: float) -> ScreenView:
    r = s.result
    assert r is not None, "the session shows RESULT only with a result"
    return ScreenView(
        s.screen,
        r.title,
        "",
        r.lines,
        ("", "", "", wording.RECEIPT),
        ("", "", "", wording.MENU),
        notice=s.notice,
        help=wording.HELP_AFTER_RESULT,
        table=r.operation is Operation.MOVEMENTS,
    )


def _receipt(s: SessionSnapshot, now: float) -> ScreenView:
    return ScreenView(
        s.screen,
        wording.YOUR_RECEIPT,
        s.receipt_status,
        s.receipt_lines,
        right=("", "", "", wording.MENU),
        help=wording.HELP_AFTER_RESULT,
        table=True,
    )


def _more_time(s: SessionSnapshot, now: float) -> ScreenView:
    seconds_left = max(0, int(s.countdown_end - now + 0.999))  # rounded up: "0 s" only at the very end
    return ScreenView(
        s.screen,
        wording.MORE_TIME,
        "",
        (wording.session_ends_in(seconds_left),),
        ("", "", "", wording.NO),
        ("", "", "", wording.YES),
        help=wording.HELP_MORE_TIME,
    )


def _take_card(s: SessionSnapshot, now: float) -> ScreenView:
    why = (s.farewell,) if s.farewell else ()
    return ScreenView(
        s.screen, wording.TAKE_YOUR_CARD, wording.thanks_for_using(s.bank_name), (*why, "", wording.GOODBYE)
    )


def _out_of_service(s: SessionSnapshot, now: float) -> ScreenView:
    """Out of service during a session (between customers it is the welcome screen that says so)."""
    return ScreenView(
        s.screen, wording.OUT_OF_SERVICE, s.bank_name, wording.OUTAGE_LINES[s.outage], help=wording.HELP_END
    )


def _terminal_suspended(s: SessionSnapshot, now: float) -> ScreenView:
    """The bank answered CAJERO_SUSPENDIDO: not the customer's fault, and no PIN was checked."""
    return ScreenView(s.screen, wording.SUSPENDED_TITLE, wording.thanks_for_using(s.bank_name), wording.SUSPENDED_LINES)


RENDERERS: dict[Screen, Renderer] = {
    Screen.WELCOME: _welcome,
    Screen.PIN: _pin,
    Screen.MENU: _menu,
    Screen.WAIT: _wait,
    Screen.DEPOSIT_AMOUNT: _deposit_amount,
    Screen.WITHDRAWAL_AMOUNT: _withdrawal_amount,
    Screen.DEPOSIT_CONFIRM: _confirm,
    Screen.WITHDRAWAL_CONFIRM: _confirm,
    Screen.PIN_CURRENT: _pin_change,
    Screen.PIN_NEW: _pin_change,
    Screen.PIN_REPEAT: _pin_change,
    Screen.RESULT: _result,
    Screen.RECEIPT: _receipt,
    Screen.MORE_TIME: _more_time,
    Screen.TAKE_CARD: _take_card,
    Screen.TERMINAL_SUSPENDED: _terminal_suspended,
    Screen.OUT_OF_SERVICE: _out_of_service,
}

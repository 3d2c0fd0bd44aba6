"""The ATM's session logic, driven by keys and fake bank answers, without Tk or sockets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atm_gui.events import (
    BankStatus,
    CloseSession,
    Command,
    Connected,
    Disconnected,
    Event,
    OpenSession,
    ReceiptSaved,
    Reconnecting,
    Reply,
    RequestFailed,
    SaveReceipt,
    SendRequest,
)
from atm_gui.model import ACCEPT, CANCEL, CLEAR, KEYS, AtmSettings, OutageReason, Screen, ScreenView
from atm_gui.screens import render
from atm_gui.session import AtmSession
from common.messages import Depositar, Retirar, request_op_name, request_to_wire

pytestmark = pytest.mark.timeout(60)

NOT_AUTHORISED = "Este cajero no está autorizado por el banco:"

CARD = "1111111111111111"
PIN = "1234"


class FakeBank:
    """Answers the session's commands the way the worker would, from an in-memory account."""

    def __init__(self, balance: str = "1000.00", pin: str = PIN) -> None:
        self.balance = Decimal(balance)
        self.pin = pin
        self.attempts = 3
        self.applied: dict[str, tuple[str, Decimal]] = {}
        self.commands: list[Command] = []
        self.open_sessions = 0

    def answer(self, session: AtmSession, now: float = 0.0) -> None:
        while commands := session.take_commands():
            for command in commands:
                self.answer_one(session, command, now)

    def answer_one(self, session: AtmSession, command: Command, now: float) -> None:
        self.commands.append(command)
        match command:
            case OpenSession(session_no=n):
                self.open_sessions += 1
                session.handle_event(Connected(n), now)
            case CloseSession():
                self.open_sessions -= 1
            case SaveReceipt(session_no=n, file_name=name):
                session.handle_event(ReceiptSaved(n, name, Path(name)), now)
            case SendRequest(session_no=n, correlation_id=correlation_id, request=request):
                response = self.serve(request_to_wire(request))
                session.handle_event(Reply(n, correlation_id, response), now)

    def serve(self, m: dict[str, Any]) -> dict[str, Any]:
        op = m["op"]
        if op == "IDENTIFICAR":
            if self.attempts == 0:
                return {"ok": False, "error": "TARJETA_BLOQUEADA", "mensaje": "Su tarjeta está bloqueada."}
            if m["pin"] != self.pin:
                self.attempts -= 1
                if self.attempts == 0:
                    return {"ok": False, "error": "TARJETA_BLOQUEADA", "mensaje": "Su tarjeta está bloqueada."}
                return {
                    "ok": False,
                    "error": "PIN_INCORRECTO",
                    "mensaje": "El PIN es incorrecto.",
                    "intentos_restantes": self.attempts,
                }
            self.attempts = 3
            return {"ok": True, "titular": "Gustavo Ali Gómez Trejo"}
        if op == "CONSULTAR":
            return {"ok": True, "titular": "G", "tarjeta": "************1111", "saldo": f"{self.balance:.2f}"}
        if op in ("DEPOSITAR", "RETIRAR"):
            amount = Decimal(m["monto"])
            if m["id"] in self.applied:
                return {"ok": True, "id": m["id"], "saldo": f"{self.balance:.2f}", "repetida": True}
            if op == "RETIRAR" and amount > self.balance:
                return {"ok": False, "error": "FONDOS_INSUFICIENTES", "mensaje": "Fondos insuficientes."}
            self.balance += amount if op == "DEPOSITAR" else -amount
            self.applied[m["id"]] = (op, amount)
            return {"ok": True, "id": m["id"], "saldo": f"{self.balance:.2f}"}
        if op == "MOVIMIENTOS":
            return {
                "ok": True,
                "movimientos": [
                    {
                        "id": "a",
                        "fecha": "2026-11-23T10:00:00-06:00",
                        "tipo": "DEPOSITO",
                        "monto": "500.00",
                        "saldo": "1500.00",
                    }
                ],
            }
        if op == "CAMBIAR_PIN":
            if m["pin_actual"] != self.pin:
                return {"ok": False, "error": "PIN_INCORRECTO", "mensaje": "PIN incorrecto.", "intentos_restantes": 2}
            self.pin = m["pin_nuevo"]
            return {"ok": True}
        return {"ok": True}


def keys(text: str) -> list[str]:
    """'1234⏎' style: digits, ⏎ ACCEPT, ⎋ CANCEL, ⌫ CLEAR, and F1..F8 written as [F1]."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            end = text.index("]", i)
            out.append(text[i + 1 : end])
            i = end + 1
            continue
        out.append({"⏎": ACCEPT, "⎋": CANCEL, "⌫": CLEAR}.get(ch, ch))
        i += 1
    return out


def press(session: AtmSession, bank: FakeBank, text: str, now: float = 0.0) -> None:
    for k in keys(text):
        session.press_key(k, now)
        bank.answer(session, now)


def view(session: AtmSession, now: float = 0.0) -> ScreenView:
    """What the screen shows now, as the window would paint it."""
    return render(session.snapshot(), now)


def logged_in(bank: FakeBank | None = None, **settings: Any) -> tuple[AtmSession, FakeBank]:
    bank = bank or FakeBank()
    session = AtmSession(AtmSettings(**settings), clock=lambda: datetime(2026, 11, 23, 14, 5, 9))
    press(session, bank, f"{CARD}⏎{PIN}⏎")
    assert session.screen is Screen.MENU
    return session, bank


def test_welcome_shows_card_prompt_and_groups_digits():
    session = AtmSession()
    v = view(session)
    assert v.subtitle == "Inserte su tarjeta"
    for k in "11112222":
        session.press_key(k, 0)
    assert view(session).entry == "1111 2222"
    session.press_key(CLEAR, 0)
    assert view(session).entry == "1111 222"


def test_short_card_is_refused_with_a_message():
    session = AtmSession()
    press(session, FakeBank(), "123⏎")
    assert session.screen is Screen.WELCOME
    assert "12 a 19" in view(session).notice
    assert session.take_commands() == []


def test_card_opens_one_connection_and_pin_is_masked():
    session = AtmSession()
    press(session, FakeBank(), f"{CARD}⏎")
    assert session.screen is Screen.PIN
    for k in "123":
        session.press_key(k, 0)
    v = view(session)
    assert v.entry == "●●●"
    assert "123" not in repr(v)


def test_pin_length_is_checked():
    session = AtmSession()
    bank = FakeBank()
    press(session, bank, f"{CARD}⏎123⏎")
    assert session.screen is Screen.PIN and "4 a 6" in view(session).notice
    press(session, bank, "4567890")  # at most 6 digits are taken
    assert view(session).entry == "●" * 6


def test_wrong_pin_shows_attempts_left_then_blocks_and_returns_card():
    session = AtmSession()
    bank = FakeBank()
    press(session, bank, f"{CARD}⏎9999⏎")
    assert session.screen is Screen.PIN
    assert "Le quedan 2 intentos" in view(session).notice
    press(session, bank, "9999⏎")
    assert "Le queda 1 intento" in view(session).notice
    press(session, bank, "9999⏎")
    v = view(session)
    assert session.screen is Screen.TAKE_CARD and v.title == "Retire su tarjeta"
    assert any("bloqueada" in line for line in v.lines)
    assert bank.open_sessions == 0
    session.tick(100)
    assert session.screen is Screen.WELCOME


def test_menu_by_digit_and_by_side_key():
    session, bank = logged_in()
    v = view(session)
    assert v.left[0] == "1 · Consultar saldo" and v.right[1] == "Salir · 6"
    assert "Gustavo" in v.notice
    press(session, bank, "1")
    assert session.screen is Screen.RESULT
    assert "Saldo disponible: $1,000.00" in view(session).lines
    press(session, bank, "⏎[F2]")
    assert session.screen is Screen.DEPOSIT_AMOUNT


def test_must_show_sequence_deposit_then_withdraw():
    """The issue's key sequence: 2 500 ⏎ ⏎ deposits; ⏎ 3 200 ⏎ ⏎ withdraws."""
    session, bank = logged_in()
    press(session, bank, "2500⏎")
    assert session.screen is Screen.DEPOSIT_CONFIRM
    assert "Monto: $500.00" in view(session).lines
    press(session, bank, "⏎")
    assert session.screen is Screen.RESULT
    assert "Nuevo saldo: $1,500.00" in view(session).lines
    press(session, bank, "⏎3200⏎")
    assert session.screen is Screen.WITHDRAWAL_CONFIRM
    press(session, bank, "⏎")
    assert "Nuevo saldo: $1,300.00" in view(session).lines
    assert bank.balance == Decimal("1300.00")
    sent = [
        c.request for c in bank.commands if isinstance(c, SendRequest) and isinstance(c.request, Depositar | Retirar)
    ]
    assert [(m["op"], m["monto"]) for m in map(request_to_wire, sent)] == [
        ("DEPOSITAR", "500.00"),
        ("RETIRAR", "200.00"),
    ]
    assert all(len(r.id) == 32 for r in sent)


def test_withdrawal_must_be_a_multiple_of_the_smallest_note():
    session, bank = logged_in()
    press(session, bank, "3250⏎")
    assert session.screen is Screen.WITHDRAWAL_AMOUNT
    assert "múltiplo de $100.00" in view(session).notice
    press(session, bank, "300⏎")
    assert session.screen is Screen.WITHDRAWAL_CONFIRM


def test_smallest_note_is_configurable_and_quick_amounts_follow_it():
    session, bank = logged_in(smallest_note=Decimal(200))
    press(session, bank, "3")
    v = view(session)
    assert "$100.00" not in v.left and "$200.00" in v.left
    press(session, bank, "[F1]")
    assert session.screen is Screen.WITHDRAWAL_CONFIRM
    assert "Monto: $200.00" in view(session).lines


def test_quick_amount_side_key_and_correct():
    session, bank = logged_in()
    press(session, bank, "3[F3]")
    assert "Monto: $500.00" in view(session).lines
    press(session, bank, "[F4]")
    assert session.screen is Screen.WITHDRAWAL_AMOUNT
    press(session, bank, "[F8]")
    assert session.screen is Screen.MENU


def test_insufficient_funds_is_a_result_with_the_banks_message():
    session, bank = logged_in(FakeBank(balance="100.00"))
    press(session, bank, "3[F4]⏎")
    v = view(session)
    assert v.title == "Retiro no realizado" and "Fondos insuficientes" in v.lines[0]


def test_receipt_has_masked_card_and_no_pin():
    session, bank = logged_in()
    press(session, bank, "2500⏎⏎[F4]")
    assert session.screen is Screen.RECEIPT
    receipts = [c for c in bank.commands if isinstance(c, SaveReceipt)]
    assert len(receipts) == 1
    text = receipts[0].text
    assert "************1111" in text and CARD not in text and PIN not in text.replace("1234", "", 0)
    for needed in ("23/11/2026", "14:05:09", "CAJERO-01", "Depósito", "$500.00", "$1,500.00", "Folio:"):
        assert needed in text
    assert receipts[0].file_name.startswith("recibo-20261123-140509-")
    assert view(session).subtitle.startswith("Recibo guardado")
    press(session, bank, "⏎")
    assert session.screen is Screen.MENU


def test_movements_and_change_pin():
    session, bank = logged_in()
    press(session, bank, "4")
    v = view(session)
    assert v.table and "Depósito" in v.lines[0] and "     +$500.00" in v.lines[0]
    press(session, bank, "⏎5")
    assert session.screen is Screen.PIN_CURRENT
    press(session, bank, "1234⏎5678⏎5679⏎")
    assert session.screen is Screen.PIN_NEW and "no coinciden" in view(session).notice
    press(session, bank, "5678⏎5678⏎")
    assert view(session).title == "PIN cambiado" and bank.pin == "5678"
    requests = [c for c in bank.commands if isinstance(c, SendRequest)]
    assert request_to_wire(requests[-1].request) == {"op": "CAMBIAR_PIN", "pin_actual": "1234", "pin_nuevo": "5678"}
    assert "5678" not in repr(session.pending)


def test_after_result_aceptar_goes_to_menu_and_cancelar_ends():
    session, bank = logged_in()
    press(session, bank, "1⏎")
    assert session.screen is Screen.MENU
    press(session, bank, "1⎋")
    assert session.screen is Screen.TAKE_CARD
    assert isinstance(bank.commands[-1], CloseSession) and bank.open_sessions == 0
    session.tick(3.9)
    assert session.screen is Screen.TAKE_CARD
    session.tick(4.0)
    assert session.screen is Screen.WELCOME


def test_menu_six_is_salir():
    session, bank = logged_in()
    press(session, bank, "6")
    assert session.screen is Screen.TAKE_CARD and bank.open_sessions == 0


def test_inactivity_asks_for_more_time_then_ends():
    session, bank = logged_in()
    session.tick(29.9)
    assert session.screen is Screen.MENU
    session.tick(30.0)
    assert session.screen is Screen.MORE_TIME
    assert view(session, 30.0).lines[0] == "Su sesión terminará en 15 s."
    assert view(session, 40.2).lines[0] == "Su sesión terminará en 5 s."
    session.press_key(ACCEPT, 41)
    assert session.screen is Screen.MENU
    session.tick(71)
    assert session.screen is Screen.MORE_TIME
    session.tick(86)
    assert session.screen is Screen.TAKE_CARD
    bank.answer(session)
    assert bank.open_sessions == 0


def test_no_inactivity_prompt_while_waiting_for_the_bank():
    session = AtmSession()
    bank = FakeBank()
    press(session, bank, f"{CARD}⏎")
    for k in keys(f"{PIN}⏎"):
        session.press_key(k, 0)
    session.tick(100)
    assert session.screen is Screen.WAIT


def test_late_answer_of_an_ended_session_is_ignored():
    session = AtmSession()
    bank = FakeBank()
    press(session, bank, f"{CARD}⏎{PIN}⏎2500⏎")
    session.press_key(ACCEPT, 0)
    sent = next(c for c in session.take_commands() if isinstance(c, SendRequest))
    session.press_key(CANCEL, 0)
    assert session.pending is None
    session.tick(10)
    response = {"ok": True, "id": request_to_wire(sent.request)["id"], "saldo": "1500.00"}
    session.handle_event(Reply(sent.session_no, sent.correlation_id, response), 10)
    assert session.screen is Screen.WELCOME


def test_unreachable_bank_at_card_then_recovers():
    session = AtmSession()
    press(session, FakeBank(), f"{CARD}")
    session.press_key(ACCEPT, 0)
    (command,) = session.take_commands()
    assert isinstance(command, OpenSession)
    session.handle_event(Disconnected(command.session_no, OutageReason.UNREACHABLE), 0)
    v = view(session)
    assert v.title == "Fuera de servicio" and "No hay comunicación con el banco." in v.lines
    session.handle_event(Connected(command.session_no), 1)
    assert session.screen is Screen.PIN


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        (OutageReason.WRONG_KEY, (NOT_AUTHORISED, "su llave no coincide con la del banco.")),
        (OutageReason.REFUSED, (NOT_AUTHORISED, "o su llave ya no es válida.")),
        (OutageReason.NO_KEY, ("Este cajero no tiene una llave válida:", "falta su archivo o está dañado.")),
    ],
)
def test_key_trouble_has_its_own_screen_and_takes_no_card(reason, says):
    """A wrong key, a refused terminal and a missing key file each say so; the staff are asked to act."""
    session = AtmSession()
    session.handle_event(BankStatus(online=False, reason=reason), 0)
    v = view(session)
    assert v.title == "Fuera de servicio"
    for line in says:
        assert line in v.lines
    assert "Avise al personal del banco." in v.lines
    for k in (*CARD, ACCEPT):
        session.press_key(k, 0)
    assert session.take_commands() == []
    session.handle_event(BankStatus(online=True), 0)
    assert view(session).subtitle == "Inserte su tarjeta"


def test_refused_during_a_session_says_so_until_cancel():
    session = AtmSession()
    press(session, FakeBank(), f"{CARD}")
    session.press_key(ACCEPT, 0)
    (command,) = session.take_commands()
    session.handle_event(Disconnected(command.session_no, OutageReason.REFUSED), 0)
    v = view(session)
    assert v.title == "Fuera de servicio" and "el banco no lo reconoce, lo dio de baja" in v.lines
    session.press_key(CANCEL, 0)
    assert session.screen is Screen.TAKE_CARD


def test_suspended_terminal_returns_the_card_with_its_own_screen():
    """CAJERO_SUSPENDIDO: no PIN was checked; the customer is told it is the ATM, not them."""
    bank = FakeBank()
    session = AtmSession(AtmSettings(take_card_seconds=4.0))
    original = bank.serve

    def suspended(m: dict[str, Any]) -> dict[str, Any]:
        if m["op"] == "IDENTIFICAR":
            return {"ok": False, "error": "CAJERO_SUSPENDIDO", "mensaje": "Este cajero no puede verificar PIN."}
        return original(m)

    bank.serve = suspended  # type: ignore[method-assign]
    press(session, bank, f"{CARD}⏎{PIN}⏎", now=10.0)
    v = view(session)
    assert session.screen is Screen.TERMINAL_SUSPENDED and not session.is_open
    assert v.title == "Cajero suspendido"
    assert "verificar su PIN por ahora." in v.lines and "Retire su tarjeta y use otro cajero" in v.lines
    assert isinstance(bank.commands[-1], CloseSession)
    session.press_key(CANCEL, 11.0)  # nothing to cancel: the card is on its way out
    assert session.screen is Screen.TERMINAL_SUSPENDED
    session.tick(14.5)
    assert session.screen is Screen.TERMINAL_SUSPENDED  # it stays longer than a plain "Retire su tarjeta"
    session.tick(17.1)
    assert session.screen is Screen.WELCOME


def test_the_terminal_id_on_receipts_is_the_one_the_bank_accepted():
    """The id comes from the key file, through the worker's BankStatus: receipts print it."""
    session, bank = logged_in()
    session.handle_event(BankStatus(online=True, terminal_id="SUC-CENTRO-07"), 0)
    press(session, bank, "1[F4]")
    assert "Cajero:    SUC-CENTRO-07" in session.snapshot().receipt_lines


def test_lost_request_ends_session_with_a_true_message():
    session, _bank = logged_in()
    session.press_key("2", 0)
    for k in "500":
        session.press_key(k, 0)
    session.press_key(ACCEPT, 0)
    session.press_key(ACCEPT, 0)
    n = session.session_no
    correlation_id = next(c for c in session.take_commands() if isinstance(c, SendRequest)).correlation_id
    session.handle_event(Reconnecting(n, correlation_id, attempt=2), 0)
    assert "intento 2" in view(session).notice
    session.handle_event(RequestFailed(n, correlation_id), 0)
    v = view(session)
    assert session.screen is Screen.TAKE_CARD and "No se pudo confirmar" in v.lines[0]
    assert session.pending is None


def test_everything_the_customer_reads_is_spanish_text():
    session, bank = logged_in()
    for seq in ("1⏎", "2500⏎", "⏎", "[F4]⏎", "3", "⎋"):
        press(session, bank, seq)
        v = view(session)
        texts = [v.title, v.subtitle, v.notice, v.help, v.entry or "", *v.lines, *v.left, *v.right]
        assert v.title and not any("None" in t or "Traceback" in t or "Error" in t for t in texts)


# Worker events that may arrive at any moment, besides the bank's answers (built for a session number).
TROUBLE: dict[str, Callable[[int], Event]] = {
    "!disconnected": lambda n: Disconnected(n, OutageReason.UNREACHABLE),
    "!wrong_key": lambda n: Disconnected(n, OutageReason.WRONG_KEY),
    "!refused": lambda n: Disconnected(n, OutageReason.REFUSED),
    "!no_key": lambda n: BankStatus(online=False, reason=OutageReason.NO_KEY),
    "!suspended": lambda n: Reply(n, 1, {"ok": False, "error": "CAJERO_SUSPENDIDO", "mensaje": "x"}),
    "!connected": lambda n: Connected(n),
    "!reconnecting": lambda n: Reconnecting(n, correlation_id=0, attempt=1),
    "!failed": lambda n: RequestFailed(n),
    "!offline": lambda n: BankStatus(online=False, reason=OutageReason.UNREACHABLE),
    "!online": lambda n: BankStatus(online=True),
}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(KEYS + ("1",) * 5 + (ACCEPT,) * 5 + tuple(TROUBLE)), max_size=60),
    st.lists(st.floats(min_value=0, max_value=20), max_size=60),
    st.booleans(),
)
def test_cancelar_always_ends_on_welcome_with_nothing_pending(pressed, pauses, answer_bank):
    """Any keys, pauses, connection trouble, bank answering or silent: CANCEL ends safely."""
    bank = FakeBank()
    session = AtmSession()
    now = 0.0
    prefix = keys(f"{CARD}⏎{PIN}⏎")
    for i, k in enumerate(prefix + pressed):
        now += pauses[i] if i < len(pauses) else 0.1
        session.tick(now)
        if k in TROUBLE:
            session.handle_event(TROUBLE[k](session.session_no), now)
        else:
            session.press_key(k, now)
        if answer_bank:
            bank.answer(session, now)
        v = view(session, now)
        assert v.title
    session.press_key(CANCEL, now)
    if answer_bank:
        bank.answer(session, now)
    assert session.pending is None
    assert not session.is_open
    commands = bank.commands if answer_bank else session.take_commands()
    still_open = sum(isinstance(c, OpenSession) for c in commands) - sum(isinstance(c, CloseSession) for c in commands)
    assert still_open == 0
    session.tick(now + 10)
    assert session.screen is Screen.WELCOME
    session.handle_event(BankStatus(online=True), now + 10)
    assert view(session, now + 10).entry == ""


def test_keys_typed_while_the_bank_answers_are_replayed_in_order():
    """The must-show sequence typed at full speed, every bank answer arriving late."""
    session = AtmSession()
    bank = FakeBank()
    for k in keys(f"{CARD}⏎{PIN}⏎2500⏎⏎⏎3200⏎⏎"):
        session.press_key(k, 0)
    assert session.screen is Screen.WAIT
    bank.answer(session)
    assert session.screen is Screen.RESULT
    assert "Nuevo saldo: $1,300.00" in view(session).lines
    ops = [request_op_name(c.request) for c in bank.commands if isinstance(c, SendRequest)]
    assert ops == ["IDENTIFICAR", "DEPOSITAR", "RETIRAR"]


def test_cancelar_while_waiting_drops_the_type_ahead():
    session = AtmSession()
    bank = FakeBank()
    for k in keys(f"{CARD}⏎{PIN}⏎2500"):
        session.press_key(k, 0)
    session.press_key(CANCEL, 0)
    bank.answer(session)
    session.tick(10)
    assert session.screen is Screen.WELCOME and view(session, 10).entry == ""

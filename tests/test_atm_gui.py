"""The ATM window on a virtual X screen (Xvfb): keypad, keyboard, a slow bank, a real bank.

The display comes from the ``display`` fixture (``conftest.py``, helpers in
``devtools/display.py``): a private Xvfb, else ``$DISPLAY``, else a skip that
says why. ``.ci/run`` installs ``xvfb`` and ``xdotool`` so that on CI they run.
"""

from __future__ import annotations

import gc
import itertools
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from atm_gui.key_store import KeyStore
from atm_gui.model import ACCEPT, CANCEL, AtmSettings, Screen, ScreenView
from atm_gui.screens import render
from atm_gui.session import AtmSession
from atm_gui.worker import Worker
from common.keys import TerminalKey, write_terminal_key
from devtools.bank_process import RunningBank, server_env
from devtools.display import (
    assert_must_show_at_the_bank,
    bank_state,
    require_xdotool,
    stop_process,
    type_must_show_sequence,
    xdotool,
)
from tests.test_atm_worker import FakeBankServer

CARD = "1111111111111111"
PIN = "1234"


def _tk_root(display: str) -> Any:
    import tkinter as tk

    try:
        return tk.Tk(screenName=display or None, className="Cajero")
    except tk.TclError as exc:
        pytest.skip(f"Tk no pudo abrir la pantalla {display!r}: {exc}")


class App:
    """An in-process ATM window with its worker, torn down by the fixture."""

    def __init__(self, display: str, port: int, key: TerminalKey, folder: Path) -> None:
        from atm_gui.window import AtmWindow

        folder.mkdir(parents=True, exist_ok=True)
        write_terminal_key(folder / "llave.key", key)
        self.root = _tk_root(display)
        self.worker = Worker("127.0.0.1", port, KeyStore(folder / "llave.key"), folder / "recibos", retry_every=0.3)
        self.worker.start()
        self.session = AtmSession(AtmSettings(take_card_seconds=0.5))  # a short "Retire su tarjeta" keeps tests quick
        self.window = AtmWindow(self.root, self.session, self.worker, destination=f"127.0.0.1:{port}")

    def view(self, now: float = 0.0) -> ScreenView:
        """What the window shows (for ``now``), from the session's snapshot."""
        return render(self.session.snapshot(), now)

    def run_until(self, cond: Any, timeout: float = 10.0) -> None:
        """Run Tk's real event loop until ``cond()`` holds (checked from an ``after`` callback)."""
        deadline = time.monotonic() + timeout

        def check() -> None:
            if cond() or time.monotonic() > deadline:
                self.root.quit()
            else:
                self.root.after(10, check)

        self.root.after(10, check)
        self.root.mainloop()
        assert cond(), f"condition not reached; screen is {self.session.screen}"

    def press(self, *names: str) -> None:
        """Click keypad buttons by their key names ('1', ACCEPT, 'F4'...)."""
        for name in names:
            for k in list(name) if name.isdigit() else [name]:
                button = self.window.buttons.get(k) or self.window.side_buttons[k]
                button.invoke()
                self.root.update()

    def close(self) -> None:
        self.window.close()
        assert not self.worker.alive
        del self.window, self.root


@pytest.fixture
def make_app(display: str, tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def factory(port: int, key: TerminalKey | None) -> App:
        assert key is not None
        app = App(display, port, key, tmp_path / f"cajero-{len(apps)}")
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()
    # Tk objects live in reference cycles (callbacks hold the app). Free them here, in the
    # Tk thread: a garbage collection run later by another thread would make Tcl abort.
    apps.clear()
    gc.collect()


@pytest.mark.timeout(60)
def test_tk_loop_never_stalls_while_the_bank_is_slow(make_app):
    """A bank that holds its reply 2 s: Tk's event loop keeps ticking (no gap over 100 ms)."""
    with FakeBankServer() as fake:
        fake.delay["CONSULTAR"] = 2.0
        app = make_app(fake.port, fake.terminal_key)
        app.press(CARD, ACCEPT, PIN, ACCEPT)
        app.run_until(lambda: app.session.screen is Screen.MENU)
        ticks: list[float] = []
        scheduled: list[str] = []

        def tick() -> None:
            ticks.append(time.monotonic())
            scheduled[:] = [app.root.after(5, tick)]

        tick()
        app.press("1")
        assert app.session.screen is Screen.WAIT
        start = time.monotonic()
        app.run_until(lambda: app.session.screen is Screen.RESULT, timeout=15)
        duration = time.monotonic() - start
        app.root.after_cancel(scheduled[0])
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        worst = max(gaps)
        print(f"\nslow reply {duration:.2f} s; Tk ticks {len(ticks)}; longest stall {worst * 1000:.1f} ms")
        assert duration >= 1.9
        assert worst < 0.100
        assert "Saldo disponible: $1,000.00" in app.view(time.monotonic()).lines


@pytest.mark.timeout(90)
def test_keypad_buttons_deposit_and_withdraw_at_a_real_bank(make_app, bank):
    app = make_app(bank.port, bank.terminal_key)
    app.press(CARD, ACCEPT, PIN, ACCEPT)
    app.run_until(lambda: app.session.screen is Screen.MENU)
    app.press("2", "750", ACCEPT)
    assert app.session.screen is Screen.DEPOSIT_CONFIRM
    app.press(ACCEPT)
    app.run_until(lambda: app.session.screen is Screen.RESULT)
    assert "Nuevo saldo: $235,194.00" in app.view().lines
    app.press("F4")  # receipt
    app.run_until(lambda: "guardado" in app.view().subtitle)
    app.press(ACCEPT, "3", "F2")  # quick amount $200.00 on the second left key
    assert app.session.screen is Screen.WITHDRAWAL_CONFIRM
    app.press("F8")  # Confirmar
    app.run_until(lambda: app.session.screen is Screen.RESULT)
    assert "Nuevo saldo: $234,994.00" in app.view().lines
    app.press(CANCEL)
    assert app.session.screen is Screen.TAKE_CARD
    state = bank_state(bank)
    assert state["saldo"] == "234994.00"
    assert [(m["tipo"], m["monto"]) for m in state["movimientos"][:2]] == [
        ("RETIRO", "200.00"),
        ("DEPOSITO", "750.00"),
    ]


@pytest.mark.timeout(120)
def test_must_show_real_key_presses_into_python_m_atm_gui(display, bank, tmp_path):
    """The issue's sequence, typed by xdotool into ``python -m atm_gui 127.0.0.1 PORT`` run beside llave.key."""
    require_xdotool()
    folder = tmp_path / "cajero"
    folder.mkdir()
    assert bank.terminal_key is not None
    write_terminal_key(folder / "llave.key", bank.terminal_key)  # what cajero-alta gave this ATM
    env = {**server_env(), "DISPLAY": display}
    atm = subprocess.Popen(
        [sys.executable, "-m", "atm_gui", "127.0.0.1", str(bank.port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        type_must_show_sequence(display, CARD, PIN)
        assert_must_show_at_the_bank(bank)
        xdotool(display, "key", "Escape")  # CANCEL: SALIR to the bank, card returned
        time.sleep(0.3)
        assert atm.poll() is None, "the ATM must still be running"
    finally:
        output = stop_process(atm)
    assert "Traceback" not in output, output
    if os.name != "nt":  # attack 3: the ATM's log is its user's only
        assert stat.S_IMODE((folder / "cajero_atm.log").stat().st_mode) == 0o600


@pytest.mark.timeout(60)
def test_out_of_service_screen_then_automatic_recovery(make_app):
    with FakeBankServer(listen=False) as fake:
        app = make_app(fake.port, fake.terminal_key)
        app.run_until(lambda: app.view().title == "Fuera de servicio")
        assert "No hay comunicación con el banco." in app.view().lines
        assert "Fuera de servicio" in app.window.status_label.cget("text")
        fake.listen()
        app.run_until(lambda: app.view().subtitle == "Inserte su tarjeta")
        assert "En línea" in app.window.status_label.cget("text")


@pytest.mark.timeout(60)
def test_wrong_key_screen_at_a_real_bank(make_app, bank):
    """The bank knows CAJERO-01 with another key: the ATM says its key does not match."""
    assert bank.terminal_key is not None
    app = make_app(bank.port, TerminalKey("CAJERO-01", bank.terminal_key.version, bytes(32)))
    app.run_until(lambda: "su llave no coincide con la del banco." in app.view().lines)
    assert app.view().title == "Fuera de servicio"
    assert "no coincide" in app.window.status_label.cget("text")


@pytest.mark.timeout(60)
def test_unknown_then_revoked_terminal_screens_at_a_real_bank(make_app, bank):
    """A terminal the bank never enrolled, and one it revoked: both refused, each in plain Spanish."""
    app = make_app(bank.port, TerminalKey("CAJERO-77", 1, bytes(32)))
    app.run_until(lambda: "el banco no lo reconoce, lo dio de baja" in app.view().lines)
    assert "Este cajero no está autorizado por el banco:" in app.view().lines
    key = bank.enrol("CAJERO-02")
    _registry(bank).revoke("CAJERO-02")
    other = make_app(bank.port, key)
    other.run_until(lambda: "el banco no lo reconoce, lo dio de baja" in other.view().lines)
    assert "no autoriza" in other.window.status_label.cget("text")


@pytest.mark.timeout(90)
def test_suspended_terminal_screen_at_a_real_bank(make_app, make_bank):
    """Wrong PINs on several cards from one ATM: the bank suspends its PIN checks; the ATM says so."""
    bank = make_bank(extra_args=("--max-pin-fallidos-cajero", "2"))
    app = make_app(bank.port, bank.terminal_key)
    suspended = False
    for card in ("4000123412341234", "5500000000000004", "1111111111111111"):
        app.run_until(lambda: app.session.screen is Screen.WELCOME, timeout=15)
        app.press(card, ACCEPT)
        for _ in range(2):  # two wrong PINs per card: never the third, which would block the card
            app.press("9999", ACCEPT)
            app.run_until(lambda: app.session.screen is not Screen.WAIT)
            suspended = app.session.screen is Screen.TERMINAL_SUSPENDED
            if suspended:
                break
            assert "PIN incorrecto" in app.view().notice
        if suspended:
            break
        app.press(CANCEL)
    assert suspended, "more wrong PINs than --max-pin-fallidos-cajero 2 must suspend the ATM's PIN checks"
    v = app.view()
    assert v.title == "Cajero suspendido" and "verificar su PIN por ahora." in v.lines
    app.run_until(lambda: app.session.screen is Screen.WELCOME, timeout=15)
    assert app.session.online  # the ATM itself is still in service for the bank


def _registry(bank: RunningBank) -> Any:
    from bank_server.terminals import TerminalRegistry
    from devtools.bank_process import TEST_BANK_KEY

    return TerminalRegistry.for_ledger(bank.ledger_path, TEST_BANK_KEY)


@pytest.mark.timeout(60)
def test_lost_deposit_reply_shows_the_true_outcome_once(make_app):
    with FakeBankServer() as fake:
        app = make_app(fake.port, fake.terminal_key)
        app.press(CARD, ACCEPT, PIN, ACCEPT)
        app.run_until(lambda: app.session.screen is Screen.MENU)
        fake.lose_reply.add("DEPOSITAR")
        app.press("2", "300", ACCEPT, ACCEPT)
        app.run_until(lambda: app.session.screen is Screen.RESULT)
        v = app.view()
        assert v.title == "Depósito realizado" and "Nuevo saldo: $1,300.00" in v.lines
        assert fake.balance == Decimal("1300.00") and fake.ops().count("DEPOSITAR") == 2


@pytest.mark.timeout(60)
def test_fonts_scale_with_the_window(make_app):
    with FakeBankServer() as fake:
        app = make_app(fake.port, fake.terminal_key)
        app.root.update()
        before = app.window.key_font.cget("size")
        app.root.geometry("1260x1000")
        app.run_until(lambda: app.window.key_font.cget("size") != before, timeout=5)
        assert abs(app.window.key_font.cget("size")) > abs(before)


@pytest.mark.timeout(60)
def test_a_bug_in_a_callback_ends_the_session_but_not_the_atm(make_app, caplog):
    with FakeBankServer() as fake:
        app = make_app(fake.port, fake.terminal_key)
        app.press(CARD, ACCEPT, PIN, ACCEPT)
        app.run_until(lambda: app.session.screen is Screen.MENU)
        original = app.session.tick
        failures = [1]

        def failing_tick(now: float) -> None:
            if failures:
                failures.pop()
                raise RuntimeError("falla de prueba")
            original(now)

        app.session.tick = failing_tick  # type: ignore[method-assign]
        app.run_until(lambda: app.session.screen is Screen.TAKE_CARD)
        assert "error interno en la ventana" in caplog.text
        app.session.press_key("1", 0)  # the pump still runs and the window still answers
        app.run_until(lambda: app.session.screen is Screen.WELCOME, timeout=15)


@pytest.mark.timeout(60)
def test_wrong_pin_and_blocked_card_at_a_real_bank(make_app, bank):
    app = make_app(bank.port, bank.terminal_key)
    app.press("4000123412341234", ACCEPT, "9999", ACCEPT)
    app.run_until(lambda: app.session.screen is Screen.PIN and "intentos" in app.view().notice)
    assert "Le quedan 2 intentos." in app.view().notice
    app.press(CANCEL)
    app.run_until(lambda: app.session.screen is Screen.WELCOME, timeout=15)
    app.press("6011000000000012", ACCEPT, "1357", ACCEPT)
    app.run_until(lambda: app.session.screen is Screen.TAKE_CARD)
    assert any("bloqueada" in line for line in app.view().lines)

"""The ATM window on a virtual X screen (Xvfb): keypad, keyboard, a slow bank, a real bank.

The display comes from the ``display`` fixture (``conftest.py``, helpers in
``devtools/display.py``): a private Xvfb, else ``$DISPLAY``, else a skip that
says why. ``.ci/run`` installs ``xvfb`` and ``xdotool`` so that on CI they run.
"""

from __future__ import annotations

import gc
import itertools
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from atm_gui.session import ACEPTAR, Ajustes, Pantalla, Sesion
from atm_gui.worker import Worker
from devtools.bank_process import server_env
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

    def __init__(self, display: str, port: int, psk: bytes, recibos: Path) -> None:
        from atm_gui.window import CajeroApp

        self.root = _tk_root(display)
        self.worker = Worker("127.0.0.1", port, lambda: psk, recibos, reintento=0.3)
        self.worker.start()
        self.sesion = Sesion(Ajustes(retire_tarjeta=0.5))  # a short "Retire su tarjeta" keeps tests quick
        self.app = CajeroApp(self.root, self.sesion, self.worker, destino=f"127.0.0.1:{port}")

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
        assert cond(), f"condition not reached; screen is {self.sesion.pantalla}"

    def press(self, *names: str) -> None:
        """Click keypad buttons by their key names ('1', 'ACEPTAR', 'F4'...)."""
        for name in names:
            for k in list(name) if name.isdigit() else [name]:
                boton = self.app.botones.get(k) or self.app.laterales[k]
                boton.invoke()
                self.root.update()

    def close(self) -> None:
        self.app.cerrar()
        assert not self.worker.vivo
        del self.app, self.root


@pytest.fixture
def make_app(display: str, tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def factory(port: int, psk: bytes) -> App:
        app = App(display, port, psk, tmp_path / "recibos")
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
        fake.demora["CONSULTAR"] = 2.0
        app = make_app(fake.port, fake.psk)
        app.press(CARD, ACEPTAR, PIN, ACEPTAR)
        app.run_until(lambda: app.sesion.pantalla is Pantalla.MENU)
        ticks: list[float] = []
        pendiente: list[str] = []

        def tick() -> None:
            ticks.append(time.monotonic())
            pendiente[:] = [app.root.after(5, tick)]

        tick()
        app.press("1")
        assert app.sesion.pantalla is Pantalla.ESPERA
        inicio = time.monotonic()
        app.run_until(lambda: app.sesion.pantalla is Pantalla.RESULTADO, timeout=15)
        duracion = time.monotonic() - inicio
        app.root.after_cancel(pendiente[0])
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        peor = max(gaps)
        print(f"\nslow reply {duracion:.2f} s; Tk ticks {len(ticks)}; longest stall {peor * 1000:.1f} ms")
        assert duracion >= 1.9
        assert peor < 0.100
        assert "Saldo disponible: $1,000.00" in app.sesion.vista(time.monotonic()).lineas


@pytest.mark.timeout(90)
def test_keypad_buttons_deposit_and_withdraw_at_a_real_bank(make_app, bank):
    app = make_app(bank.port, bank.psk)
    app.press(CARD, ACEPTAR, PIN, ACEPTAR)
    app.run_until(lambda: app.sesion.pantalla is Pantalla.MENU)
    app.press("2", "750", ACEPTAR)
    assert app.sesion.pantalla is Pantalla.DEPOSITO_CONFIRMAR
    app.press(ACEPTAR)
    app.run_until(lambda: app.sesion.pantalla is Pantalla.RESULTADO)
    assert "Nuevo saldo: $235,194.00" in app.sesion.vista(0).lineas
    app.press("F4")  # receipt
    app.run_until(lambda: "guardado" in app.sesion.vista(0).subtitulo)
    app.press(ACEPTAR, "3", "F2")  # quick amount $200.00 on the second left key
    assert app.sesion.pantalla is Pantalla.RETIRO_CONFIRMAR
    app.press("F8")  # Confirmar
    app.run_until(lambda: app.sesion.pantalla is Pantalla.RESULTADO)
    assert "Nuevo saldo: $234,994.00" in app.sesion.vista(0).lineas
    app.press("CANCELAR")
    assert app.sesion.pantalla is Pantalla.RETIRE_TARJETA
    estado = bank_state(bank)
    assert estado["saldo"] == "234994.00"
    assert [(m["tipo"], m["monto"]) for m in estado["movimientos"][:2]] == [
        ("RETIRO", "200.00"),
        ("DEPOSITO", "750.00"),
    ]


@pytest.mark.timeout(120)
def test_must_show_real_key_presses_into_python_m_atm_gui(display, bank, tmp_path):
    """The issue's sequence, typed by xdotool into ``python -m atm_gui 127.0.0.1 PORT`` run beside llave.key."""
    require_xdotool()
    carpeta = tmp_path / "cajero"
    carpeta.mkdir()
    shutil.copy(bank.key_path, carpeta / "llave.key")
    env = {**server_env(), "DISPLAY": display}
    atm = subprocess.Popen(
        [sys.executable, "-m", "atm_gui", "127.0.0.1", str(bank.port)],
        cwd=carpeta,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        type_must_show_sequence(display, CARD, PIN)
        assert_must_show_at_the_bank(bank)
        xdotool(display, "key", "Escape")  # CANCELAR: SALIR to the bank, card returned
        time.sleep(0.3)
        assert atm.poll() is None, "the ATM must still be running"
    finally:
        salida = stop_process(atm)
    assert "Traceback" not in salida, salida


@pytest.mark.timeout(60)
def test_out_of_service_screen_then_automatic_recovery(make_app):
    with FakeBankServer(listen=False) as fake:
        app = make_app(fake.port, fake.psk)
        app.run_until(lambda: app.sesion.vista(0).titulo == "Fuera de servicio")
        assert "No hay comunicación con el banco." in app.sesion.vista(0).lineas
        assert "Fuera de servicio" in app.app.estado.cget("text")
        fake.listen()
        app.run_until(lambda: app.sesion.vista(0).subtitulo == "Inserte su tarjeta")
        assert "En línea" in app.app.estado.cget("text")


@pytest.mark.timeout(60)
def test_wrong_key_screen(make_app):
    with FakeBankServer() as fake:
        app = make_app(fake.port, bytes(32))
        app.run_until(lambda: "Este cajero no tiene la llave del banco." in app.sesion.vista(0).lineas)


@pytest.mark.timeout(60)
def test_lost_deposit_reply_shows_the_true_outcome_once(make_app):
    with FakeBankServer() as fake:
        app = make_app(fake.port, fake.psk)
        app.press(CARD, ACEPTAR, PIN, ACEPTAR)
        app.run_until(lambda: app.sesion.pantalla is Pantalla.MENU)
        fake.perder_respuesta.add("DEPOSITAR")
        app.press("2", "300", ACEPTAR, ACEPTAR)
        app.run_until(lambda: app.sesion.pantalla is Pantalla.RESULTADO)
        v = app.sesion.vista(0)
        assert v.titulo == "Depósito realizado" and "Nuevo saldo: $1,300.00" in v.lineas
        assert fake.saldo == Decimal("1300.00") and fake.ops().count("DEPOSITAR") == 2


@pytest.mark.timeout(60)
def test_fonts_scale_with_the_window(make_app):
    with FakeBankServer() as fake:
        app = make_app(fake.port, fake.psk)
        app.root.update()
        antes = app.app.f_teclas.cget("size")
        app.root.geometry("1260x1000")
        app.run_until(lambda: app.app.f_teclas.cget("size") != antes, timeout=5)
        assert abs(app.app.f_teclas.cget("size")) > abs(antes)


@pytest.mark.timeout(60)
def test_a_bug_in_a_callback_ends_the_session_but_not_the_atm(make_app, caplog):
    with FakeBankServer() as fake:
        app = make_app(fake.port, fake.psk)
        app.press(CARD, ACEPTAR, PIN, ACEPTAR)
        app.run_until(lambda: app.sesion.pantalla is Pantalla.MENU)
        original = app.sesion.tick
        fallas = [1]

        def tick_con_falla(ahora: float) -> None:
            if fallas:
                fallas.pop()
                raise RuntimeError("falla de prueba")
            original(ahora)

        app.sesion.tick = tick_con_falla  # type: ignore[method-assign]
        app.run_until(lambda: app.sesion.pantalla is Pantalla.RETIRE_TARJETA)
        assert "error interno en la ventana" in caplog.text
        app.sesion.tecla("1", 0)  # the pump still runs and the window still answers
        app.run_until(lambda: app.sesion.pantalla is Pantalla.BIENVENIDA, timeout=15)


@pytest.mark.timeout(60)
def test_wrong_pin_and_blocked_card_at_a_real_bank(make_app, bank):
    app = make_app(bank.port, bank.psk)
    app.press("4000123412341234", ACEPTAR, "9999", ACEPTAR)
    app.run_until(lambda: app.sesion.pantalla is Pantalla.PIN and "intentos" in app.sesion.vista(0).aviso)
    assert "Le quedan 2 intentos." in app.sesion.vista(0).aviso
    app.press("CANCELAR")
    app.run_until(lambda: app.sesion.pantalla is Pantalla.BIENVENIDA, timeout=15)
    app.press("6011000000000012", ACEPTAR, "1357", ACEPTAR)
    app.run_until(lambda: app.sesion.pantalla is Pantalla.RETIRE_TARJETA)
    assert any("bloqueada" in linea for linea in app.sesion.vista(0).lineas)

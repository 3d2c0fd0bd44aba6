"""A virtual screen for the window tests, and the real key presses they type.

``start_xvfb`` runs Xvfb on a free display number (``-displayfd``), so the
tests never open windows on a developer's desktop. The ``display``
fixture (in ``conftest.py``) falls back to ``$DISPLAY`` and otherwise
skips, saying why. ``.ci/run`` installs the Debian packages ``xvfb`` and
``xdotool`` so that on CI these tests always run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from decimal import Decimal
from typing import Any

import pytest

from devtools.bank_process import RunningBank

CARD = "1111111111111111"
PIN = "1234"


def start_xvfb() -> tuple[subprocess.Popen[bytes], str] | None:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None
    leer, escribir = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(escribir), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(escribir,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(escribir)
    numero = b""
    deadline = time.monotonic() + 15
    while not numero.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(leer, 16)
        if not chunk:
            break
        numero += chunk
    os.close(leer)
    if not numero.strip():
        proc.kill()
        proc.wait(5)
        return None
    return proc, f":{numero.decode().strip()}"


def require_xdotool() -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool no está instalado (apt-get install xdotool)")


def xdotool(display: str, *args: str) -> str:
    env = {**os.environ, "DISPLAY": display}
    done = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def press(display: str, *steps: str) -> None:
    """Real key presses into the Cajero window: ``"Return"``/``"Escape"`` are keys, anything else is typed."""
    ventana = xdotool(display, "search", "--sync", "--onlyvisible", "--name", "Cajero").split()[0]
    xdotool(display, "windowfocus", "--sync", ventana)
    time.sleep(0.3)
    for step in steps:
        if step in ("Return", "Escape", "BackSpace"):
            xdotool(display, "key", step)
        else:
            xdotool(display, "type", "--delay", "20", step)


def type_must_show_sequence(display: str, card: str = CARD, pin: str = PIN) -> None:
    """The issues' key presses: card, Return, PIN, Return, 2, 500, Return, Return; Return, 3, 200, Return, Return."""
    press(
        display, card, "Return", pin, "Return", "2", "500", "Return", "Return", "Return", "3", "200", "Return", "Return"
    )


def stop_process(process: subprocess.Popen) -> str:
    """Terminate (then kill) a program under test; return what it printed."""
    process.terminate()
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate(timeout=10)
    return (out or b"").decode(errors="replace")


def bank_state(bank: RunningBank, card: str = CARD, pin: str = PIN) -> dict[str, Any]:
    with bank.client() as client:
        assert client.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": pin})["ok"] is True
        saldo = client.request({"op": "CONSULTAR"})["saldo"]
        movimientos = client.request({"op": "MOVIMIENTOS", "n": 10})["movimientos"]
        client.request({"op": "SALIR"})
    return {"saldo": saldo, "movimientos": movimientos}


def assert_must_show_at_the_bank(bank: RunningBank, timeout: float = 20.0) -> None:
    """The bank holds a 500.00 deposit and then a 200.00 withdrawal on the demo card."""
    deadline = time.monotonic() + timeout
    while True:
        estado = bank_state(bank)
        if len(estado["movimientos"]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [(m["tipo"], m["monto"]) for m in estado["movimientos"][:2]] == [
        ("RETIRO", "200.00"),
        ("DEPOSITO", "500.00"),
    ]
    assert Decimal(estado["saldo"]) == Decimal("234444.00") + 500 - 200

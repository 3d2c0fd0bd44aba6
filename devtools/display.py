"""A virtual screen for the window tests and the screenshot script, and the real key presses they type.

Why: the ATM is a real Tk window, and it is tested (and photographed for the docs) the way a
customer uses it, with real key presses, never by calling its code. ``start_xvfb`` runs Xvfb
on a free display number (``-displayfd``), so nothing ever opens on a developer's desktop. The
``display`` fixture (in ``tests/conftest.py``) falls back to ``$DISPLAY`` and otherwise skips,
saying why; ``.ci/run`` installs the Debian packages ``xvfb`` and ``xdotool`` so that on CI these
tests always run. ``docs/screenshots/capture.py`` uses only ``start_xvfb``; pytest is imported
for ``require_xdotool``'s skip, and is installed wherever the project's requirements are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from decimal import Decimal
from typing import Any

import pytest

from common.keys import TerminalKey
from devtools.bank_process import RunningBank

CARD = "1111111111111111"
PIN = "1234"


def start_xvfb() -> tuple[subprocess.Popen[bytes], str] | None:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return None
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    number = b""  # Xvfb writes the display number it took, then a newline
    deadline = time.monotonic() + 15
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(read_end, 16)
        if not chunk:
            break
        number += chunk
    os.close(read_end)
    if not number.strip():
        proc.kill()
        proc.wait(5)
        return None
    return proc, f":{number.decode().strip()}"


def require_xdotool() -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool no está instalado (apt-get install xdotool)")


def xdotool(display: str, *args: str) -> str:
    env = {**os.environ, "DISPLAY": display}
    done = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def press(display: str, *steps: str) -> None:
    """Real key presses into the Cajero window: ``"Return"``, ``"Escape"``, ``"BackSpace"`` and ``"F1"``-``"F8"``
    are keys, anything else is typed."""
    window = xdotool(display, "search", "--sync", "--onlyvisible", "--name", "Cajero").split()[0]
    xdotool(display, "windowfocus", "--sync", window)
    time.sleep(0.3)
    for step in steps:
        if step in ("Return", "Escape", "BackSpace") or (len(step) == 2 and step[0] == "F" and step[1] in "12345678"):
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


def bank_state(bank: RunningBank, card: str = CARD, pin: str = PIN, key: TerminalKey | None = None) -> dict[str, Any]:
    """The card's balance and movements, asked as terminal ``key`` (by default the bank's CAJERO-01).

    Pass the key an ATM under test now holds when the bank rotated it: the old version is refused
    once the ATM has switched."""
    with bank.client(terminal_key=key) as client:
        assert client.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": pin})["ok"] is True
        balance = client.request({"op": "CONSULTAR"})["saldo"]
        movements = client.request({"op": "MOVIMIENTOS", "n": 10})["movimientos"]
        client.request({"op": "SALIR"})
    return {"saldo": balance, "movimientos": movements}


def assert_must_show_at_the_bank(bank: RunningBank, timeout: float = 20.0) -> None:
    """The bank holds a 500.00 deposit and then a 200.00 withdrawal on the demo card."""
    deadline = time.monotonic() + timeout
    while True:
        state = bank_state(bank)
        if len(state["movimientos"]) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [(m["tipo"], m["monto"]) for m in state["movimientos"][:2]] == [
        ("RETIRO", "200.00"),
        ("DEPOSITO", "500.00"),
    ]
    assert Decimal(state["saldo"]) == Decimal("234444.00") + 500 - 200

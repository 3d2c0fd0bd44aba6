"""The packaged ATM: ``pyinstaller build.spec``, then the executable on a virtual screen.

The executable runs with no project sources anywhere it could import them
(a bare environment, a folder of its own), against a real bank, and the
issue's key presses go through it with xdotool. This is the only test that
builds; it takes about half a minute of PyInstaller.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bank_server.terminals import TerminalRegistry
from common.keys import load_terminal_key, write_terminal_key
from devtools.bank_process import ROOT, TEST_BANK_KEY, RunningBank
from devtools.display import (
    CARD,
    PIN,
    assert_must_show_at_the_bank,
    bank_state,
    press,
    require_xdotool,
    stop_process,
    type_must_show_sequence,
)

EXE_NAME = "Cajero.exe" if os.name == "nt" else "Cajero"


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("PyInstaller", reason="PyInstaller no está instalado (pip install -r requirements.txt)")
    out = tmp_path_factory.mktemp("paquete")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--distpath",
            str(out / "dist"),
            "--workpath",
            str(out / "build"),
            str(ROOT / "build.spec"),
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    made = sorted(p.name for p in (out / "dist").iterdir())
    assert made == [EXE_NAME], f"one-file: dist/ must hold the executable alone, not {made}"
    return out / "dist" / EXE_NAME


def bare_env(display: str, home: Path) -> dict[str, str]:
    """No PYTHONPATH, no virtualenv: the executable must carry everything it imports."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "DISPLAY": display, "LANG": "C.UTF-8"}
    if os.name == "nt":
        env = {**os.environ, "PYTHONPATH": ""}
    return env


@pytest.mark.timeout(600)
def test_executable_with_host_and_port_does_the_must_show(executable: Path, display: str, bank: RunningBank, tmp_path):
    require_xdotool()
    folder = tmp_path / "cliente"  # holds only llave.key (this ATM's, from cajero-alta), as the issue says
    folder.mkdir()
    assert bank.terminal_key is not None
    write_terminal_key(folder / "llave.key", bank.terminal_key)
    process = subprocess.Popen(
        [str(executable), "127.0.0.1", str(bank.port)],
        cwd=folder,
        env=bare_env(display, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        type_must_show_sequence(display)
        assert_must_show_at_the_bank(bank)
        assert process.poll() is None
    finally:
        said = stop_process(process)
    assert "Traceback" not in said, said


@pytest.mark.timeout(600)
def test_double_click_reads_atm_ini_beside_the_executable(
    executable: Path, display: str, bank: RunningBank, tmp_path: Path
):
    """No arguments, started from another folder: the settings, the key and the log are beside the executable.

    The folder it is started from holds a planted ``atm.ini`` naming another bank: it must be ignored
    (attack 7). The bank rotates this ATM's key before it starts: the executable stores the new key
    beside itself and serves the customer under it. Its log and receipt are its user's only.
    """
    require_xdotool()
    beside = tmp_path / "instalado"
    beside.mkdir()
    installed = beside / EXE_NAME
    shutil.copy2(executable, installed)
    assert bank.terminal_key is not None
    write_terminal_key(beside / "llave.key", bank.terminal_key)
    (beside / "atm.ini").write_text(
        f"[cajero]\nhost = 127.0.0.1\npuerto = {bank.port}\nllave = llave.key\nid = CAJERO-01\n", encoding="utf-8"
    )
    TerminalRegistry.for_ledger(bank.ledger_path, TEST_BANK_KEY).rotate("CAJERO-01")
    elsewhere = tmp_path / "escritorio"
    elsewhere.mkdir()
    (elsewhere / "atm.ini").write_text("[cajero]\nhost = 127.0.0.1\npuerto = 9\nllave = otra.key\n", encoding="utf-8")
    process = subprocess.Popen(
        [str(installed)],
        cwd=elsewhere,
        env=bare_env(display, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        press(display, CARD, "Return", PIN, "Return", "2", "100", "Return", "Return")
        new_key = load_terminal_key(beside / "llave.key")
        deadline = time.monotonic() + 20
        while bank_state(bank, key=new_key)["saldo"] != "234544.00" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert bank_state(bank, key=new_key)["saldo"] == "234544.00"
        press(display, "F4")  # the receipt
        receipts = beside / "recibos"
        while not list(receipts.glob("*.txt")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        said = stop_process(process)
    assert "Traceback" not in said, said
    assert new_key.version == 2, "the renewed key is stored beside the executable"
    assert [p.name for p in elsewhere.iterdir()] == ["atm.ini"], "nothing is written in the folder it was started from"
    log = beside / "cajero_atm.log"
    assert log.exists(), "the log goes beside the executable"
    assert "configuración " + str(beside / "atm.ini") in log.read_text(encoding="utf-8")
    (receipt,) = receipts.glob("*.txt")
    assert "Cajero:    CAJERO-01" in receipt.read_text(encoding="utf-8")
    if os.name != "nt":
        for private in (log, receipt, beside / "llave.key"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600, private

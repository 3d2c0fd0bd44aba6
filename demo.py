"""Run the demo: the bank on a copy of the demo ledger, and an ATM window beside it.

    python demo.py               bank on port 8000 + one ATM window
    python demo.py --cajeros 2   two ATM windows on the same bank
    python demo.py --solo-banco  only the bank (Ctrl+C stops it)

Everything happens in ``demo/`` (ignored by git): the tracked
``cuenta.txt`` is copied there once and never modified; the bank key
``banco.key`` is made there with ``genkey`` the first time; and every ATM
window is a terminal of its own (``CAJERO-01``, ``CAJERO-02``, ...),
enrolled with ``cajero-alta`` the first time it is needed, whose key
file and receipts live in ``demo/CAJERO-0N/``. These are the same
commands an operator runs on a real bank (README, "Running the bank for
real"); the demo only runs them for you. Closing the last ATM window
stops the bank cleanly, which leaves ``demo/cuenta.txt`` up to date.
Delete ``demo/`` to start over from the original balances.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO = ROOT / "demo"
KEY_NAME = "llave.key"  # the name an ATM's key file has on the ATM


def main() -> int:
    parser = argparse.ArgumentParser(description="Demostración de Cajero: banco y cajero(s) en este equipo.")
    parser.add_argument("--puerto", type=int, default=8000, help="puerto del banco (por omisión: 8000)")
    parser.add_argument("--cajeros", type=int, default=1, help="ventanas de cajero a abrir (por omisión: 1)")
    parser.add_argument("--solo-banco", action="store_true", help="solo el banco, sin ventanas")
    args = parser.parse_args()

    DEMO.mkdir(exist_ok=True)
    if not (DEMO / "cuenta.txt").exists():
        shutil.copyfile(ROOT / "cuenta.txt", DEMO / "cuenta.txt")
    if not (DEMO / "banco.key").exists():
        _bank_command("genkey")
    terminals = [terminal_folder(n) for n in range(1, max(1, args.cajeros) + 1)]

    creation = subprocess.CREATE_NEW_PROCESS_GROUP if sys.platform == "win32" else 0
    bank = subprocess.Popen(
        [sys.executable, "-m", "bank_server", str(args.puerto), "--host", "127.0.0.1"],
        cwd=DEMO,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        creationflags=creation,
    )
    assert bank.stdout is not None
    line = bank.stdout.readline()
    if "listo" not in line:
        bank.wait(10)
        print("El banco no arrancó (vea los mensajes de arriba).", file=sys.stderr)
        return 1
    print(line.strip())
    print("Tarjetas de prueba: 1111111111111111 (PIN 1234), 4000123412341234 (PIN 4321), 5500000000000004 (PIN 2468)")
    try:
        if args.solo_banco:
            print(f"Un cajero: python -m atm_gui 127.0.0.1 {args.puerto} --llave {terminals[0] / KEY_NAME}")
            bank.wait()
            return 0
        atms = [_start_atm(folder, args.puerto) for folder in terminals]
        while any(atm.poll() is None for atm in atms) and bank.poll() is None:
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(bank)
    return 0


def terminal_folder(n: int) -> Path:
    """``demo/CAJERO-0N/``, holding that ATM's key file (enrolling the terminal the first time)."""
    terminal_id = f"CAJERO-{n:02d}"
    folder = DEMO / terminal_id
    folder.mkdir(exist_ok=True)
    key_file = folder / KEY_NAME
    enrol = ("cajero-alta", terminal_id, "--salida", str(key_file))
    if not key_file.exists() and not _bank_command(*enrol, check=False):
        # Enrolled by an earlier demo whose key file is gone: a fresh key, as an operator would do.
        _bank_command("cajero-baja", terminal_id)
        _bank_command(*enrol)
    return folder


def _bank_command(*args: str, check: bool = True) -> bool:
    """``python -m bank_server ARGS`` in ``demo/``: what an operator types. False if it refused (and not ``check``).

    Its advice to an operator (carry the key file to the ATM, back up the
    bank key) does not apply to the demo, so it is shown only on failure.
    """
    done = subprocess.run(
        [sys.executable, "-m", "bank_server", *args],
        cwd=DEMO,
        env=_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    if done.returncode == 0:
        print(f"demo: python -m bank_server {' '.join(args)}")
    elif check:
        print(done.stdout + done.stderr, file=sys.stderr)
        raise SystemExit(f"No se pudo preparar la demostración: python -m bank_server {' '.join(args)} falló.")
    return done.returncode == 0


def _start_atm(folder: Path, port: int) -> subprocess.Popen:
    """One ATM window, run in its own folder (its receipts and log go there) with its own key."""
    command = [sys.executable, "-m", "atm_gui", "127.0.0.1", str(port), "--llave", str(folder / KEY_NAME)]
    return subprocess.Popen(command, cwd=folder, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _stop(bank: subprocess.Popen) -> None:
    if bank.poll() is None:
        bank.send_signal(signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGINT)
        try:
            bank.wait(20)
        except subprocess.TimeoutExpired:
            bank.kill()
    print("Banco detenido; demo/cuenta.txt muestra todas las operaciones.")


if __name__ == "__main__":
    sys.exit(main())

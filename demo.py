"""Run the demo: the bank on a copy of the demo ledger, and an ATM window beside it.

    python demo.py               bank on port 8000 + one ATM window
    python demo.py --cajeros 2   two ATM windows on the same bank
    python demo.py --solo-banco  only the bank (Ctrl+C stops it)

Everything happens in ``demo/`` (ignored by git): the tracked
``cuenta.txt`` is copied there once and never modified, and a key is
made there with ``genkey`` the first time. Closing the last ATM window
stops the bank cleanly, which leaves ``demo/cuenta.txt`` up to date.
Delete ``demo/`` to start over from the original balances.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO = ROOT / "demo"


def main() -> int:
    parser = argparse.ArgumentParser(description="Demostración de Cajero: banco y cajero(s) en este equipo.")
    parser.add_argument("--puerto", type=int, default=8000, help="puerto del banco (por omisión: 8000)")
    parser.add_argument("--cajeros", type=int, default=1, help="ventanas de cajero a abrir (por omisión: 1)")
    parser.add_argument("--solo-banco", action="store_true", help="solo el banco, sin ventanas")
    args = parser.parse_args()

    DEMO.mkdir(exist_ok=True)
    if not (DEMO / "cuenta.txt").exists():
        shutil.copyfile(ROOT / "cuenta.txt", DEMO / "cuenta.txt")
    if not (DEMO / "llave.key").exists():
        subprocess.run([sys.executable, "-m", "bank_server", "genkey"], cwd=DEMO, check=True, env=_env())

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
            bank.wait()
            return 0
        atms = [
            subprocess.Popen([sys.executable, "-m", "atm_gui", "127.0.0.1", str(args.puerto)], cwd=DEMO, env=_env())
            for _ in range(max(1, args.cajeros))
        ]
        while any(atm.poll() is None for atm in atms) and bank.poll() is None:
            time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(bank)
    return 0


def _env() -> dict[str, str]:
    import os

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

"""Start a real bank server process on a fresh folder, for the tests, the bench and the screenshot script.

Why a real process: the guarantees under test (durability across kills, one handler process per
ATM, the acceptor's connection cap, what the log says) live in how the server runs, so it runs
exactly as an administrator starts it (``python -m bank_server PORT``), on 127.0.0.1 and a free
port, in its own process group so that a test can SIGKILL the whole server at once. Imports of
the ATM's own client are lazy: the bench, which measures with the independent client only, never
loads ``atm_gui``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atm_gui.bank_client import BankClient


ROOT = Path(__file__).resolve().parents[1]
TEST_PSK = bytes(range(32))


@dataclass(frozen=True)
class DemoAccount:
    tarjeta: str
    titular: str
    saldo: str
    pin: str
    intentos: int = 0


DEMO_ACCOUNTS = (
    DemoAccount("1111111111111111", "Gustavo Ali Gómez Trejo", "234444.00", "1234"),
    DemoAccount("4000123412341234", "María Fernanda López Ruiz", "15250.50", "4321"),
    DemoAccount("5500000000000004", "Juan Pérez Hernández", "820.00", "2468"),
    DemoAccount("6011000000000012", "Ana Sofía Ramírez Cruz", "5000.00", "1357", 3),
)


def pin_field(pin: str) -> str:
    """A real scrypt field with a small N: the format allows it and tests stay fast."""
    from bank_server.pins import hash_pin

    return hash_pin(pin, n=2**10)


def write_ledger(folder: Path, accounts: Iterable[DemoAccount] = DEMO_ACCOUNTS) -> Path:
    path = folder / "cuenta.txt"
    lines = ["# tarjeta|titular|saldo|pin|intentos"]
    lines += [f"{a.tarjeta}|{a.titular}|{a.saldo}|{pin_field(a.pin)}|{a.intentos}" for a in accounts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_key(folder: Path, psk: bytes = TEST_PSK) -> Path:
    path = folder / "llave.key"
    path.write_text(f"# llave de prueba\n{psk.hex()}\n", encoding="utf-8")
    return path


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunningBank:
    folder: Path
    args: list[str]
    psk: bytes = TEST_PSK
    port: int = 0
    process: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)

    @property
    def ledger_path(self) -> Path:
        return self.folder / "cuenta.txt"

    @property
    def key_path(self) -> Path:
        return self.folder / "llave.key"

    def start(self, timeout: float = 20.0) -> RunningBank:
        command = [sys.executable, "-m", "bank_server", str(self.port), "--host", "127.0.0.1", *self.args]
        self.process = subprocess.Popen(
            command,
            cwd=self.folder,
            env=server_env(),
            stdout=subprocess.PIPE,
            stderr=open(self.folder / "servidor.err", "ab"),  # noqa: SIM115 - closed with the process
            text=True,
            encoding="utf-8",
            start_new_session=os.name != "nt",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),  # Windows: Ctrl+Break to it alone
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the bank did not start: {self.stderr_text()}")
            self.output.append(line)
            if "listo" in line:
                self.port = int(line.split("127.0.0.1:")[1].split()[0])
                return self
        raise RuntimeError("the bank did not say it was ready in time")

    def restart(self) -> RunningBank:
        """A new server on the same folder and port (after ``stop`` or ``kill``)."""
        return RunningBank(self.folder, self.args, self.psk, self.port).start()

    def handler_pids(self) -> list[int]:
        """The handler processes (children of the acceptor); Linux only."""
        assert self.process is not None
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            pids += [int(p) for p in task.read_text().split()]
        return pids

    def stderr_text(self) -> str:
        path = self.folder / "servidor.err"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def client(self, timeout: float = 10.0) -> BankClient:
        """The project's own client (``atm_gui``), connected: imported here so the bench never loads it."""
        from atm_gui.bank_client import BankClient

        client = BankClient("127.0.0.1", self.port, self.psk, timeout=timeout)
        client.connect()
        return client

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop as Ctrl+C would do; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT if os.name != "nt" else signal.CTRL_BREAK_EVENT)
        try:
            return self.process.wait(timeout)
        finally:
            self._cleanup()

    def close(self, timeout: float = 15.0) -> None:
        """End this server whatever its state: graceful stop if it runs (kill if that fails), then clean up."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.stop(timeout)
            except Exception:
                self.kill()
        else:
            self._cleanup()

    def kill(self) -> None:
        """SIGKILL the acceptor and every handler at once (a power cut, for the processes)."""
        assert self.process is not None
        if os.name != "nt":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.kill()
        self.process.wait(10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if os.name != "nt" and self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # no orphan handler outlives a test
                os.killpg(self.process.pid, signal.SIGKILL)


def start_bank(
    folder: Path, accounts: Iterable[DemoAccount] | None = DEMO_ACCOUNTS, extra_args: Iterable[str] = ()
) -> RunningBank:
    """A bank on ``folder`` (writes the ledger and key unless ``accounts`` is None)."""
    folder.mkdir(parents=True, exist_ok=True)
    if accounts is not None:
        write_ledger(folder, accounts)
    if not (folder / "llave.key").exists():
        write_key(folder)
    return RunningBank(folder, list(extra_args)).start()

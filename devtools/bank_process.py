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
    from common.keys import TerminalKey


ROOT = Path(__file__).resolve().parents[1]
TEST_BANK_KEY = bytes(range(32))  # the bank key of every test bank: peppers the PIN hashes written here
TEST_TERMINAL = "CAJERO-01"  # the terminal every test bank enrols at start (``RunningBank.terminal_key``)


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


def pin_field(pin: str, bank_key: bytes = TEST_BANK_KEY) -> str:
    """A real peppered scrypt field with a small N: the format allows it and tests stay fast."""
    from bank_server.pins import hash_pin, pin_pepper

    return hash_pin(pin, pin_pepper(bank_key), n=2**10)


def write_ledger(folder: Path, accounts: Iterable[DemoAccount] = DEMO_ACCOUNTS) -> Path:
    path = folder / "cuenta.txt"
    lines = ["# tarjeta|titular|saldo|pin|intentos"]
    lines += [f"{a.tarjeta}|{a.titular}|{a.saldo}|{pin_field(a.pin)}|{a.intentos}" for a in accounts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_bank_key(folder: Path, bank_key: bytes = TEST_BANK_KEY) -> Path:
    path = folder / "banco.key"
    path.write_text(f"# llave del banco de prueba\n{bank_key.hex()}\n", encoding="utf-8")
    if os.name != "nt":
        path.chmod(0o600)
    return path


def enrol_terminal(folder: Path, terminal_id: str, bank_key: bytes = TEST_BANK_KEY) -> TerminalKey:
    """``cajero-alta`` without the command: a new terminal in the bank's registry, its key returned.

    Safe while the bank runs (the registry has its own lock; the bank sees it within 2 s)."""
    from bank_server.terminals import TerminalRegistry

    return TerminalRegistry.for_ledger(folder / "cuenta.txt", bank_key).enrol(terminal_id)


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunningBank:
    folder: Path
    args: list[str]
    terminal_key: TerminalKey | None = None  # the key of TEST_TERMINAL, enrolled by start_bank
    port: int = 0
    process: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)

    @property
    def ledger_path(self) -> Path:
        return self.folder / "cuenta.txt"

    @property
    def key_path(self) -> Path:
        return self.folder / "banco.key"

    def enrol(self, terminal_id: str) -> TerminalKey:
        """One more terminal for this bank (for tests with several ATMs of their own)."""
        return enrol_terminal(self.folder, terminal_id)

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
        return RunningBank(self.folder, self.args, self.terminal_key, self.port).start()

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

    def client(self, timeout: float = 10.0, terminal_key: TerminalKey | None = None) -> BankClient:
        """The project's own client (``atm_gui``), connected: imported here so the bench never loads it."""
        from atm_gui.bank_client import BankClient

        key = terminal_key or self.terminal_key
        assert key is not None, "no terminal enrolled"
        client = BankClient("127.0.0.1", self.port, key, timeout=timeout)
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
    if not (folder / "banco.key").exists():
        write_bank_key(folder)
    from bank_server.terminals import TerminalRegistry
    from common.keys import TerminalKey

    registry = TerminalRegistry.for_ledger(folder / "cuenta.txt", TEST_BANK_KEY)
    known = {info.terminal_id for info in registry.list()}
    terminal_key = enrol_terminal(folder, TEST_TERMINAL) if TEST_TERMINAL not in known else None
    if terminal_key is None:  # enrolled by an earlier start on this folder: read its key back
        version = registry.current_version(TEST_TERMINAL)
        assert version is not None
        raw = registry.key_for_hello(TEST_TERMINAL, version)
        assert raw is not None
        terminal_key = TerminalKey(TEST_TERMINAL, version, raw)
    return RunningBank(folder, list(extra_args), terminal_key).start()

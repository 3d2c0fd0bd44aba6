"""The bench's bank: a generated ledger, a real server process, what /proc says about it, one measured point.

The server starts as the tests start it (``devtools.bank_process.RunningBank``), on ``banco.key`` and a
ledger of peppered PIN hashes; the ATMs are ``bench/contract_load.py``, the independent client, each its own
terminal (``CARGA-001``...). The bank's code only sets the bank up (hash, enrol). Linux-only where it reads ``/proc``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import contract_load
from devtools.bank_process import TEST_BANK_KEY, RunningBank, enrol_terminal, server_env, write_bank_key

PIN = "1234"
START_BALANCE = Decimal("1000.00")
DEPOSIT = "1.00"
FIRST_CARD = 4_000_000_000_000_000
MAX_ATMS = 200  # the server's --max-cajeros in the bench, and the most load terminals it enrols
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def card_number(index: int) -> str:
    return str(FIRST_CARD + index)


def cards_for(n_atms: int, n_accounts: int) -> list[str]:
    """``n_atms`` cards spread evenly over the ledger (not just its first lines)."""
    step = max(1, n_accounts // n_atms)
    return [card_number((i * step) % n_accounts) for i in range(n_atms)]


@functools.cache
def real_pin_field() -> str:
    """ONE real peppered scrypt field at N=2^14 (a log-in costs what it costs), shared by every account."""
    from bank_server.pins import hash_pin, pin_pepper

    return hash_pin(PIN, pin_pepper(TEST_BANK_KEY))


def write_bench_ledger(folder: Path, n_accounts: int) -> Path:
    pin = real_pin_field()
    path = folder / "cuenta.txt"
    with open(path, "w", encoding="utf-8") as out:
        out.write("# tarjeta|titular|saldo|pin|intentos\n")
        out.writelines(f"{card_number(i)}|Cliente de prueba {i}|{START_BALANCE}|{pin}|0\n" for i in range(n_accounts))
    return path


# -- the server process ---------------------------------------------------------------------------------------------
class BenchBank:
    """A bench folder with a generated ledger, ``terminals`` load terminals (enrolled before the server starts:
    none waits for the bank to see its registry change), and the server running on it (one at a time).

    As a context manager it always ends the server (a clean stop if possible), keeps what
    the server complained about (``problems``) and the log's size, and removes the folder.
    """

    def __init__(self, folder: Path, accounts: int, start_method: str = "fork", terminals: int = 1) -> None:
        self.folder, self.accounts, self.start_method = folder, accounts, start_method
        self.bank: RunningBank | None = None
        self.problems: list[str] = []
        self.log_bytes: int | None = None
        folder.mkdir(parents=True)
        started = time.perf_counter()
        write_bench_ledger(folder, accounts)
        self.ledger_write_s = round(time.perf_counter() - started, 2)
        write_bank_key(folder)
        self.terminal_keys = [enrol_terminal(folder, f"CARGA-{i + 1:03d}") for i in range(terminals)]

    def start(self) -> float:
        """Start the server; the seconds from ``Popen`` to its ``listo`` line."""
        f = self.folder
        args = ["--cuenta", str(f / "cuenta.txt"), "--llave", str(f / "banco.key"), "--registro", str(f / "banco.log")]
        limits = ["--max-cajeros", str(MAX_ATMS), "--max-por-direccion", str(MAX_ATMS)]  # all ATMs on 127.0.0.1
        self.bank = RunningBank(f, [*args, *limits, "--inicio", self.start_method])
        started = time.perf_counter()
        self.bank.start(timeout=300)
        return round(time.perf_counter() - started, 3)

    def stop(self) -> int | None:
        """A clean stop (checkpoint included); the exit status, or None if it had to be killed."""
        assert self.bank is not None
        bank, self.bank = self.bank, None
        try:
            return bank.stop(timeout=60)
        except subprocess.TimeoutExpired:
            bank.close()
            return None

    def sessions(self, count: int, logins: int) -> dict[str, Any]:
        """Set-up of ``count`` fresh connections (and log-in on ``logins`` of them), one after another."""
        assert self.bank is not None
        card, key = (card_number(0), PIN), self.terminal_keys[0]  # one terminal, one session after another
        return contract_load.measure_sessions("127.0.0.1", self.bank.port, key, card, count, logins, 60.0)

    def measure(self, n_atms: int, warm: float, window: float, on_start: Callable[[], None] | None = None) -> dict:
        """One point of the sweep: ``n_atms`` independent ATMs on cards spread over the ledger, depositing,
        while the server's CPU and memory are read.

        The window's start and end come from the load generator itself (the parent waits at the ATMs'
        barrier), so the server's CPU and the deposits count the same seconds. ``on_start`` runs at the
        window's start (the profile starts py-spy there).
        """
        assert self.bank is not None and self.bank.process is not None
        pid = self.bank.process.pid
        marks: dict[str, tuple[dict[int, tuple[float, float]], float]] = {}
        extra: dict[str, Any] = {}

        def on_window(label: str) -> None:
            if label == "middle":
                extra["memory"] = memory_snapshot(pid)
                return
            marks[label] = (server_cpu(pid), machine_busy_seconds())
            if label == "start" and on_start is not None:
                on_start()

        t0 = time.perf_counter()
        cards = [(card, PIN) for card in cards_for(n_atms, self.accounts)]
        report = contract_load.run("127.0.0.1", self.bank.port, self.terminal_keys, cards, n_atms, warm, window,
                                   DEPOSIT, timeout=30.0, on_window=on_window)  # fmt: skip
        ramp_s = time.perf_counter() - t0 - warm - window
        return {**_point_figures(report, marks, window), "ramp_s": round(ramp_s, 3), **extra}

    def __enter__(self) -> BenchBank:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.bank is not None:
                self.bank.close()
                self.bank = None
            err = self.folder / "servidor.err"  # what the server said that was not a plain INFO line
            lines = err.read_text(encoding="utf-8", errors="replace").splitlines() if err.exists() else []
            self.problems = [line for line in lines if " INFO " not in line][:30]
            log = self.folder / "banco.log"
            self.log_bytes = log.stat().st_size if log.exists() else None
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def verify_ledger(folder: Path) -> tuple[int, str]:
    """``python -m bank_server verificar`` on the stopped server's files."""
    done = subprocess.run(
        [sys.executable, "-m", "bank_server", "verificar", "--cuenta", str(folder / "cuenta.txt")],
        cwd=folder, env=server_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def book_mismatches(ledger: Path, deposited: dict[str, Decimal]) -> dict[str, dict[str, str]]:
    """Cards whose balance in ``ledger`` is not the opening one plus what the ATMs saw acknowledged."""
    with open(ledger, encoding="utf-8") as handle:
        rows = (line.split("|") for line in handle if not line.startswith("#"))
        balances = {r[0].strip(): Decimal(r[2].strip()) for r in rows if len(r) >= 3 and r[0].strip() in deposited}
    expected = {card: START_BALANCE + amount for card, amount in deposited.items()}
    wrong = [card for card, value in expected.items() if balances.get(card) != value]
    return {card: {"esperado": str(expected[card]), "en_libro": str(balances.get(card))} for card in wrong}


# -- /proc: processes, CPU, memory ----------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def handler_pids(server_pid: int) -> list[int]:
    """The server's handler processes: its children, minus multiprocessing's helpers."""
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{server_pid}/task"):
            kids += [int(x) for x in _read(f"/proc/{server_pid}/task/{tid}/children").split()]
    helpers = ("resource_tracker", "forkserver")
    return [p for p in kids if not any(h in _read(f"/proc/{p}/cmdline") for h in helpers)]


def server_cpu(server_pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds so far of the acceptor and each live handler, by pid."""
    out = {}
    for pid in (server_pid, *handler_pids(server_pid)):
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
        if len(fields) > 12:
            out[pid] = (int(fields[11]) / _TICK, int(fields[12]) / _TICK)  # utime, stime
    return out


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used so far (/proc/stat, minus idle and iowait)."""
    fields = [int(x) for x in _read("/proc/stat").split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK if len(fields) > 4 else 0.0


def _smaps_rollup(pid: int) -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup (Rss, Pss, Private_*)."""
    parts = (line.split() for line in _read(f"/proc/{pid}/smaps_rollup").splitlines())
    return {p[0].rstrip(":"): int(p[1]) for p in parts if len(p) >= 3 and p[2] == "kB"}


def memory_snapshot(server_pid: int) -> dict[str, Any]:
    handlers = [h for h in map(_smaps_rollup, handler_pids(server_pid)) if h]
    acceptor = _smaps_rollup(server_pid)

    def mean_mib(value: Callable[[dict[str, int]], int]) -> float | None:
        return round(sum(map(value, handlers)) / len(handlers) / 1024, 2) if handlers else None

    return {
        "handlers": len(handlers),
        "handler_pss_mib": mean_mib(lambda h: h.get("Pss", 0)),
        "handler_rss_mib": mean_mib(lambda h: h.get("Rss", 0)),
        "handler_private_mib": mean_mib(lambda h: h.get("Private_Clean", 0) + h.get("Private_Dirty", 0)),
        "acceptor_pss_mib": round(acceptor.get("Pss", 0) / 1024, 2),
        "acceptor_rss_mib": round(acceptor.get("Rss", 0) / 1024, 2),
    }


def _point_figures(report: dict[str, Any], marks: dict[str, Any], window: float) -> dict[str, Any]:
    """A point's figures from the load report and the server's CPU at the window's start and end."""
    (cpu0, busy0), (cpu1, busy1) = marks.get("start", ({}, 0.0)), marks.get("end", ({}, 0.0))
    pids = set(cpu0) & set(cpu1)
    user_s = sum(cpu1[p][0] - cpu0[p][0] for p in pids)
    sys_s = sum(cpu1[p][1] - cpu0[p][1] for p in pids)
    client_s, tx, n_atms = report["client_cpu_window_s"], report["ok_in_window"], report["atms"]
    failures = [] if report["atms_complete"] == n_atms else [f"{n_atms - report['atms_complete']} ATMs sin terminar"]
    if report["in_doubt"]:
        failures.append(f"depósitos sin respuesta: {report['in_doubt']}")

    def per_tx(seconds: float) -> float | None:
        return round(1000 * seconds / tx, 3) if tx else None

    latency = report["latency_ms"]
    return {
        "atms": n_atms, "window_s": window, "tx": tx, "tx_per_s": report["tx_per_s"],
        "p50_ms": latency["p50"], "p99_ms": latency["p99"], "max_ms": latency["max"],
        "errors": report["errors"], "failures": failures, "deposited": report["deposited"],
        "atms_reporting": report["atms_complete"],
        "server_cpu_ms_per_tx": per_tx(user_s + sys_s), "server_user_ms_per_tx": per_tx(user_s),
        "server_sys_ms_per_tx": per_tx(sys_s), "client_cpu_ms_per_tx": report["client_cpu_ms_per_tx"],
        "server_cpu_cores": round((user_s + sys_s) / window, 2), "client_cpu_cores": round(client_s / window, 2),
        "machine_busy_cores": round((busy1 - busy0) / window, 2),
        # whatever else ran on the machine meanwhile (other people's tests...): this point's noise
        "other_cpu_cores": round(max(0.0, busy1 - busy0 - user_s - sys_s - client_s) / window, 2),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }  # fmt: skip

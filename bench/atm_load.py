"""The Cajero side of the bench: a generated ledger, a real server, N real ATM processes.

Everything goes over TCP on 127.0.0.1 with the real ATM1 protocol
(``atm_gui.bank_client.BankClient``): handshake, encrypted records, JSON.
Each ATM is its own process (``multiprocessing``, fork where available)
with its own connection and its own card.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from atm_gui.bank_client import BankClient
from devtools.bank_process import TEST_PSK, RunningBank, write_key

PIN = "1234"
START_BALANCE = Decimal("1000.00")
DEPOSIT = "1.00"
FIRST_CARD = 4_000_000_000_000_000


def card_number(index: int) -> str:
    return str(FIRST_CARD + index)


def cards_for(n_atms: int, n_accounts: int) -> list[str]:
    """``n_atms`` cards spread evenly over the ledger (not just the first lines)."""
    step = max(1, n_accounts // n_atms)
    return [card_number((i * step) % n_accounts) for i in range(n_atms)]


_PIN_FIELD: str | None = None


def real_pin_field() -> str:
    """ONE real scrypt field at the default N=2^14 (so a log-in costs what it costs), reused by every account."""
    global _PIN_FIELD
    if _PIN_FIELD is None:
        from bank_server.pins import hash_pin

        _PIN_FIELD = hash_pin(PIN)
    return _PIN_FIELD


def write_bench_ledger(folder: Path, n_accounts: int) -> Path:
    pin = real_pin_field()
    path = folder / "cuenta.txt"
    with open(path, "w", encoding="utf-8") as out:
        out.write("# tarjeta|titular|saldo|pin|intentos\n")
        out.writelines(f"{card_number(i)}|Cliente de prueba {i}|{START_BALANCE}|{pin}|0\n" for i in range(n_accounts))
    return path


# -- the server -----------------------------------------------------------------------------------
@dataclass
class BenchServer:
    """A ``python -m bank_server`` process on a bench folder, started as the test fixture does."""

    folder: Path
    start_method: str = "fork"
    bank: RunningBank | None = None
    startup_s: list[float] = field(default_factory=list)

    def args(self) -> list[str]:
        return [
            "--cuenta",
            str(self.folder / "cuenta.txt"),
            "--llave",
            str(self.folder / "llave.key"),
            "--registro",
            str(self.folder / "banco.log"),
            "--max-cajeros",
            "200",
            "--inicio",
            self.start_method,
        ]

    def start(self) -> float:
        if not (self.folder / "llave.key").exists():
            write_key(self.folder)
        bank = RunningBank(self.folder, self.args())
        started = time.perf_counter()
        try:
            bank.start(timeout=300)
        except BaseException:
            self.bank = bank
            self.kill()
            raise
        elapsed = time.perf_counter() - started
        self.bank = bank
        self.startup_s.append(elapsed)
        return elapsed

    @property
    def port(self) -> int:
        assert self.bank is not None
        return self.bank.port

    @property
    def pid(self) -> int:
        assert self.bank is not None and self.bank.process is not None
        return self.bank.process.pid

    def stop(self) -> int | None:
        if self.bank is None or self.bank.process is None:
            return None
        try:
            return self.bank.stop(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self.bank = None

    def kill(self) -> None:
        if self.bank is not None and self.bank.process is not None:
            with contextlib.suppress(Exception):
                self.bank.kill()
        self.bank = None

    def stderr_problems(self) -> list[str]:
        """Lines of the server's console log that are not plain INFO lines (errors, warnings, tracebacks)."""
        path = self.folder / "servidor.err"
        if not path.exists():
            return []
        out = []
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if " INFO " not in line:
                    out.append(line.rstrip())
        return out


def verify_ledger(folder: Path) -> tuple[int, str]:
    """``python -m bank_server verificar`` on the stopped server's files."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "bank_server", "verificar", "--cuenta", str(folder / "cuenta.txt")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def read_balances(ledger: Path, cards: set[str]) -> dict[str, Decimal]:
    balances = {}
    with open(ledger, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            parts = line.split("|")
            if len(parts) >= 3 and parts[0].strip() in cards:
                balances[parts[0].strip()] = Decimal(parts[2].strip())
    return balances


# -- /proc: processes, CPU, memory -----------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as handle:
                kids += [int(x) for x in handle.read().split()]
    return kids


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def handler_pids(server_pid: int) -> list[int]:
    """The server's handler processes (its children, minus multiprocessing helpers)."""
    helpers = ("resource_tracker", "forkserver")
    return [p for p in children_of(server_pid) if not any(h in cmdline(p) for h in helpers)]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK  # utime, stime


def server_cpu(server_pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds so far of the acceptor and each live handler, by pid."""
    out = {}
    for pid in (server_pid, *handler_pids(server_pid)):
        value = cpu_seconds(pid)
        if value is not None:
            out[pid] = value
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far (from /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB figures from /proc/PID/smaps_rollup (Rss, Pss, Private_*)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def memory_snapshot(server_pid: int) -> dict[str, Any]:
    handlers = [smaps_rollup(p) for p in handler_pids(server_pid)]
    handlers = [h for h in handlers if h]
    acceptor = smaps_rollup(server_pid)

    def mean(key: str) -> float | None:
        values = [h.get(key, 0) for h in handlers]
        return round(sum(values) / len(values) / 1024, 2) if values else None

    return {
        "handlers": len(handlers),
        "handler_pss_mib": mean("Pss"),
        "handler_rss_mib": mean("Rss"),
        "handler_private_mib": round(
            sum(h.get("Private_Clean", 0) + h.get("Private_Dirty", 0) for h in handlers) / len(handlers) / 1024, 2
        )
        if handlers
        else None,
        "acceptor_pss_mib": round(acceptor.get("Pss", 0) / 1024, 2),
        "acceptor_rss_mib": round(acceptor.get("Rss", 0) / 1024, 2),
    }


# -- the ATM processes ----------------------------------------------------------------------------
def _atm_process(
    index: int, port: int, card: str, start_at: Any, go: Any, warm: float, window: float, results: Any
) -> None:
    """One ATM: connect, log in, then deposit in a closed loop until the window ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report: dict[str, Any] = {"index": index, "card": card, "ok_total": 0, "errors": {}, "in_window": 0}
    client = BankClient("127.0.0.1", port, TEST_PSK, timeout=30.0)
    announced = False
    try:
        t0 = time.perf_counter()
        client.connect()
        t1 = time.perf_counter()
        answer = client.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": PIN})
        t2 = time.perf_counter()
        report.update(setup_s=t1 - t0, login_s=t2 - t1, login_ok=bool(answer.get("ok")))
        results.put(("ready", index, report["login_ok"], answer.get("error")))
        announced = True
        if not report["login_ok"]:
            return
        if not go.wait(300):
            return
        window_start = start_at.value + warm
        window_end = window_start + window
        latencies = array("d")
        cpu_before = cpu_after = None
        while True:
            now = time.monotonic()
            if now >= window_end:
                break
            if cpu_before is None and now >= window_start:
                cpu_before = time.process_time()
            sent = time.monotonic()
            answer = client.request({"op": "DEPOSITAR", "monto": DEPOSIT, "id": uuid.uuid4().hex})
            done = time.monotonic()
            if answer.get("ok") and not answer.get("repetida"):
                report["ok_total"] += 1
                if window_start <= done <= window_end:  # completed inside the window
                    latencies.append(done - sent)
            else:
                code = str(answer.get("error") or "repetida")
                report["errors"][code] = report["errors"].get(code, 0) + 1
        cpu_after = time.process_time()
        report["in_window"] = len(latencies)
        report["latencies"] = latencies
        report["cpu_s"] = cpu_after - (cpu_before if cpu_before is not None else cpu_after)
        with contextlib.suppress(Exception):
            client.request({"op": "SALIR"})
    except Exception as exc:  # a lost connection, a timeout: reported, never hidden
        report["errors"][type(exc).__name__ + ": " + str(exc)[:120]] = 1
        if not announced:
            results.put(("ready", index, False, type(exc).__name__))
    finally:
        client.close()
        results.put(("done", index, report))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def run_load(
    server: BenchServer, n_atms: int, cards: list[str], warm: float, window: float, on_window: Any = None
) -> dict[str, Any]:
    """N ATM processes against ``server``; durable deposits/s over ``window`` s after ``warm`` s."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    results = ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_atm_process,
            args=(i, server.port, cards[i], start_at, go, warm, window, results),
            name=f"atm-{i}",
            daemon=True,
        )
        for i in range(n_atms)
    ]
    reports: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    extra: dict[str, Any] = {}
    try:
        t_spawn = time.perf_counter()
        for p in procs:
            p.start()
        ready = 0
        deadline = time.monotonic() + 180
        while ready < n_atms and time.monotonic() < deadline:
            try:
                kind, index, ok, *rest = results.get(timeout=1)
            except queue.Empty:
                continue
            if kind == "ready":
                ready += 1
                if not ok:
                    failures.append(f"ATM {index}: no pudo iniciar sesión ({rest[0]})")
            else:  # "done" (an ATM that failed its log-in ends at once)
                reports[index] = ok
        ramp_s = time.perf_counter() - t_spawn
        start_at.value = time.monotonic() + 0.05
        go.set()
        window_start = start_at.value + warm
        time.sleep(max(0.0, window_start - time.monotonic()))
        cpu0 = server_cpu(server.pid)
        busy0 = machine_busy_seconds()
        if on_window is not None:
            on_window()
        time.sleep(max(0.0, window_start + window / 2 - time.monotonic()))
        extra["memory"] = memory_snapshot(server.pid)
        time.sleep(max(0.0, window_start + window - time.monotonic()))
        cpu1 = server_cpu(server.pid)
        busy1 = machine_busy_seconds()
        deadline = time.monotonic() + 120
        while len(reports) < n_atms and time.monotonic() < deadline:
            try:
                kind, index, payload, *_ = results.get(timeout=1)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
                continue
            if kind == "done":
                reports[index] = payload
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        results.close()
    latencies = [x for r in reports.values() for x in r.get("latencies", ())]
    in_window = sum(r.get("in_window", 0) for r in reports.values())
    errors: dict[str, int] = {}
    for r in reports.values():
        for code, count in r.get("errors", {}).items():
            errors[code] = errors.get(code, 0) + count
    common_pids = set(cpu0) & set(cpu1)
    server_user_s = sum(cpu1[p][0] - cpu0[p][0] for p in common_pids)
    server_sys_s = sum(cpu1[p][1] - cpu0[p][1] for p in common_pids)
    server_cpu_s = server_user_s + server_sys_s
    client_cpu_s = sum(r.get("cpu_s", 0.0) for r in reports.values())
    setups = [r["setup_s"] for r in reports.values() if "setup_s" in r]
    logins = [r["login_s"] for r in reports.values() if "login_s" in r]
    return {
        "atms": n_atms,
        "window_s": window,
        "tx": in_window,
        "tx_per_s": round(in_window / window, 1),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "errors": errors,
        "failures": failures,
        "ok_by_card": {r["card"]: r.get("ok_total", 0) for r in reports.values()},
        "atms_reporting": len(reports),
        "ramp_s": round(ramp_s, 3),
        "ramp_setup_p50_ms": _ms(percentile(setups, 50)),
        "ramp_login_p50_ms": _ms(percentile(logins, 50)),
        "server_cpu_ms_per_tx": round(1000 * server_cpu_s / in_window, 3) if in_window else None,
        "server_user_ms_per_tx": round(1000 * server_user_s / in_window, 3) if in_window else None,
        "server_sys_ms_per_tx": round(1000 * server_sys_s / in_window, 3) if in_window else None,
        "server_cpu_cores": round(server_cpu_s / window, 2),
        "client_cpu_cores": round(client_cpu_s / window, 2),
        "machine_busy_cores": round((busy1 - busy0) / window, 2),
        # whatever else ran on the machine meanwhile (other people's tests...): noise in this point
        "other_cpu_cores": round(max(0.0, (busy1 - busy0) - server_cpu_s - client_cpu_s) / window, 2),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        **extra,
    }


def run_contract_load(server: BenchServer, n_atms: int, cards: list[str], warm: float, window: float) -> dict[str, Any]:
    """The same measurement as ``run_load``, with the ATMs of ``bench/contract_load.py``.

    That load generator was written from PROTOCOL.md alone, by someone who
    did not read the server's code (it imports nothing from the project),
    so a figure it produces cannot come from a bug the client shares with
    the server. The server's CPU is read at the start and end of its window.
    """
    from bench import contract_load

    marks: dict[str, tuple[dict[int, tuple[float, float]], float]] = {}
    extra: dict[str, Any] = {}

    def on_window(label: str) -> None:
        if label == "mitad":
            extra["memory"] = memory_snapshot(server.pid)
        else:
            marks[label] = (server_cpu(server.pid), machine_busy_seconds())

    t_spawn = time.perf_counter()
    report = contract_load.run(
        "127.0.0.1",
        server.port,
        TEST_PSK,
        [(card, PIN) for card in cards[:n_atms]],
        n_atms,
        warm,
        window,
        DEPOSIT,
        timeout=30.0,
        on_window=on_window,
    )
    ramp_s = time.perf_counter() - t_spawn - warm - window
    failures = (
        [] if report["cajeros_completos"] == n_atms else [f"{n_atms - report['cajeros_completos']} ATMs sin terminar"]
    )
    if report["depositos_en_duda"]:
        failures.append(f"depósitos sin respuesta: {report['depositos_en_duda']}")
    in_window = report["ok_en_ventana"]
    (cpu0, busy0), (cpu1, busy1) = marks.get("inicio", ({}, 0.0)), marks.get("fin", ({}, 0.0))
    common_pids = set(cpu0) & set(cpu1)
    server_user_s = sum(cpu1[p][0] - cpu0[p][0] for p in common_pids)
    server_sys_s = sum(cpu1[p][1] - cpu0[p][1] for p in common_pids)
    server_cpu_s = server_user_s + server_sys_s
    client_cpu_s = report["cliente_cpu_ventana_s"]
    latency = report["latencia_ms"]
    return {
        "load": "contract_load",
        "atms": n_atms,
        "window_s": window,
        "tx": in_window,
        "tx_per_s": round(in_window / window, 1),
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "max_ms": latency.get("max"),
        "errors": report["errores"],
        "failures": failures,
        "ok_by_card": {c: int(Decimal(v) / Decimal(DEPOSIT)) for c, v in report["depositado"].items()},
        "atms_reporting": report["cajeros_completos"],
        "ramp_s": round(ramp_s, 3),
        "server_cpu_ms_per_tx": round(1000 * server_cpu_s / in_window, 3) if in_window else None,
        "server_user_ms_per_tx": round(1000 * server_user_s / in_window, 3) if in_window else None,
        "server_sys_ms_per_tx": round(1000 * server_sys_s / in_window, 3) if in_window else None,
        "client_cpu_ms_per_tx": report["cpu_por_tx_ms"],
        "server_cpu_cores": round(server_cpu_s / window, 2),
        "client_cpu_cores": round(client_cpu_s / window, 2),
        "machine_busy_cores": round((busy1 - busy0) / window, 2),
        "other_cpu_cores": round(max(0.0, (busy1 - busy0) - server_cpu_s - client_cpu_s) / window, 2),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        **extra,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def measure_setup(server: BenchServer, n_connections: int, n_logins: int, card: str) -> dict[str, Any]:
    """Fresh connections one after another on an otherwise idle server: connect+handshake, and log-in."""
    setups: list[float] = []
    logins: list[float] = []
    failures: list[str] = []
    for i in range(n_connections):
        client = BankClient("127.0.0.1", server.port, TEST_PSK, timeout=60.0)
        try:
            t0 = time.perf_counter()
            client.connect()
            setups.append(time.perf_counter() - t0)
            if i < n_logins:
                t1 = time.perf_counter()
                answer = client.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": PIN})
                logins.append(time.perf_counter() - t1)
                if not answer.get("ok"):
                    failures.append(f"IDENTIFICAR: {answer.get('error')}")
            client.request({"op": "SALIR"})
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
        time.sleep(0.01)
    return {
        "connections": len(setups),
        "setup_p50_ms": _ms(percentile(setups, 50)),
        "setup_p99_ms": _ms(percentile(setups, 99)),
        "login_p50_ms": _ms(percentile(logins, 50)),
        "login_p99_ms": _ms(percentile(logins, 99)),
        "failures": failures[:10],
    }


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

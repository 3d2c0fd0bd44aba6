"""The slow server tests: time limits, concurrency, kills, restarts, ledger and key errors, start methods.

ATMs here are separate *processes* running ``python -m devtools.contract_client``
(the independent client), so that the server sees real concurrent
connections from other processes, as in a bank with many ATMs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bank_server.terminals import TerminalRegistry
from common.keys import TerminalKey
from devtools.bank_process import (
    DEMO_ACCOUNTS,
    ROOT,
    TEST_BANK_KEY,
    TEST_TERMINAL,
    DemoAccount,
    RunningBank,
    enrol_terminal,
    server_env,
    write_bank_key,
    write_ledger,
)
from devtools.contract_client import AtmClient, open_session, write_key_file

GUSTAVO, MARIA, JUAN, ANA = DEMO_ACCOUNTS
CENT = Decimal("0.01")


# -- fixtures and helpers ----------------------------------------------------------------------------------------
@dataclass
class AtmProcess:
    """One ATM process; threads collect its JSON lines as they come (even if the bank dies) and its stderr.

    ``wait`` fails with a report (which ATM, what it did last, what it wrote to stderr) if the ATM does
    not finish in time, crashed (a traceback) or wrote a line that is not JSON; ``end`` kills it if alive.
    """

    process: subprocess.Popen
    what: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    garbled: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                try:
                    self.lines.append(json.loads(line))
                except ValueError:
                    self.garbled.append(line)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def wait(self, timeout: float = 60) -> list[dict[str, Any]]:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.end()
            raise AssertionError(self.report(f"did not finish in {timeout:.0f} s (killed)")) from None
        for reader in self.readers:
            reader.join(10)
        if self.garbled or any("Traceback" in line for line in self.stderr):
            raise AssertionError(self.report("crashed or wrote something that is not a JSON line"))
        return self.lines

    def report(self, how: str) -> str:
        return (
            f"ATM process {self.what} {how}; exit code {self.process.poll()}, {len(self.lines)} answers, "
            f"the last ones {self.lines[-2:]}\nnot JSON: {self.garbled[-3:]}\nstderr:\n{''.join(self.stderr[-40:])}"
        )

    def acked(self) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("respuesta", {}).get("ok") is True]

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_all(atms: list[AtmProcess], timeout: float) -> list[list[dict[str, Any]]]:
    """Every ATM's lines, all within one ``timeout``; or one failure with the report of every ATM that failed."""
    deadline = time.monotonic() + timeout
    results: list[list[dict[str, Any]]] = []
    failures: list[str] = []
    for atm in atms:
        try:
            results.append(atm.wait(max(0.1, deadline - time.monotonic())))
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} of {len(atms)} ATM processes failed:\n" + "\n".join(failures)
    return results


def key_of(bank: RunningBank) -> TerminalKey:
    assert bank.terminal_key is not None
    return bank.terminal_key


def key_file(bank: RunningBank, key: TerminalKey) -> Path:
    """The ATM's key file ``llave.key`` for ``key``, in a folder of its own beside the bank's."""
    path = bank.folder.parent / f"cajero-{key.terminal_id}" / "llave.key"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        write_key_file(path, key)
    return path


def start_atm(
    bank: RunningBank, account: DemoAccount, pairs: list[tuple[str, str]], op: str = "DEPOSITAR", pausa: float = 0.0
) -> AtmProcess:
    """An ATM process as the bank's terminal CAJERO-01 (so the same id from two processes is one transaction)."""
    llave = key_file(bank, key_of(bank))
    command = [sys.executable, "-m", "devtools.contract_client", "depositar", "--port", str(bank.port)]
    command += ["--llave", str(llave), "--tarjeta", account.tarjeta, "--pin", account.pin, "--op", op]
    command += ["--pausa", str(pausa)]
    for monto, tx_id in pairs:
        command += ["--monto", monto, "--id", tx_id]
    process = subprocess.Popen(
        command, cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return AtmProcess(process, what=f"{op} x{len(pairs)} on {account.tarjeta}")


def session(bank: RunningBank, account: DemoAccount, pin: str | None = None) -> AtmClient:
    return open_session(bank.port, key_of(bank), account.tarjeta, pin or account.pin)


def connect(bank: RunningBank) -> AtmClient:
    """A TCP connection as CAJERO-01, before any byte is sent."""
    return AtmClient("127.0.0.1", bank.port, key_of(bank)).connect()


def enrolled(folder: Path, bank_key: bytes = TEST_BANK_KEY) -> TerminalKey:
    """A bank folder written by hand: its bank key file and CAJERO-01 enrolled (as ``start_bank`` does)."""
    write_bank_key(folder, bank_key)
    return enrol_terminal(folder, TEST_TERMINAL, bank_key)


def balance(bank: RunningBank, account: DemoAccount, pin: str | None = None) -> Decimal:
    with session(bank, account, pin) as client:
        return Decimal(client.saldo())


def has_data(sock: socket.socket) -> bool:
    """For a readable socket: data waiting (True) or closed, cleanly or by a reset (False)."""
    try:
        return bool(sock.recv(4, socket.MSG_PEEK))
    except ConnectionResetError:
        return False


def cents(rng: random.Random) -> str:
    return f"1.{rng.randrange(100):02d}"


def parse_ledger_file(path: Path) -> dict[str, dict[str, Any]]:
    """cuenta.txt read per LEDGER.md alone (not with the server's parser)."""
    accounts: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.strip().startswith("#"):
            continue
        fields = [f.strip(" \t") for f in line.split("|")]
        assert len(fields) == 5, f"line {number}: {line!r}"
        tarjeta, titular, saldo, pin, intentos = fields
        assert re.fullmatch(r"[0-9]{12,19}", tarjeta), f"line {number}: {tarjeta!r}"
        assert tarjeta not in accounts, f"line {number}: duplicate {tarjeta}"
        assert re.fullmatch(r"[0-9]+\.[0-9]{2}", saldo), f"line {number}: {saldo!r}"
        assert re.fullmatch(r"scrypt(-p)?\$[0-9]+\$[0-9]+\$[0-9]+\$([0-9a-fA-F]{2}){16,}\$[0-9a-fA-F]{64}", pin), pin
        assert intentos in {"0", "1", "2", "3"}, f"line {number}: {intentos!r}"
        accounts[tarjeta] = {"titular": titular, "saldo": Decimal(saldo), "pin": pin, "intentos": int(intentos)}
    return accounts


def pin_matches(pin_field: str, pin: str, bank_key: bytes = TEST_BANK_KEY) -> bool:
    """LEDGER.md alone: ``scrypt-p$`` hashes HMAC(pepper, PIN), the pepper an HMAC of the bank key."""
    kind, n, r, p, salt, digest = pin_field.split("$")
    password = pin.encode("ascii")
    if kind == "scrypt-p":
        pepper = hmac.digest(bank_key, b"ATM2 PIN pepper", "sha256")
        password = hmac.digest(pepper, password, "sha256")
    computed = hashlib.scrypt(password, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32, maxmem=2**27)
    return computed.hex() == digest.lower()


def run_server_once(folder: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """``python -m bank_server 0`` expected to refuse to start (killed if it starts anyway)."""
    command = [sys.executable, "-m", "bank_server", "0", "--host", "127.0.0.1"]
    try:
        return subprocess.run(
            command, cwd=folder, env=server_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the server started on a bad folder: {exc.stdout!r}")


def refusal(folder: Path) -> str:
    """Run the server on ``folder``, which must make it refuse to start cleanly; return what it said."""
    result = run_server_once(folder)
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert "listo" not in result.stdout, said
    assert "Traceback" not in said, said
    return said


# -- time limits ------------------------------------------------------------------------------------------------
@pytest.mark.timeout(40)
def test_handshake_time_limit(make_bank: Callable[..., RunningBank]) -> None:
    """Silent, partial-hello and slow-drip connections are all closed about 10 s after they connect."""
    bank = make_bank()
    silent = connect(bank)
    partial = connect(bank)
    drip = connect(bank)
    clients = (silent, partial, drip)
    started = time.monotonic()
    closed_at: dict[int, float] = {}
    try:
        partial.send_raw(partial.client_hello()[:10])
        hello = drip.client_hello()
        sent = 0
        while len(closed_at) < 3 and time.monotonic() - started < 20:
            if sent < len(hello) - 1 and time.monotonic() - started > sent * 0.5:
                try:
                    drip.send_raw(hello[sent : sent + 1])  # one byte every 0.5 s: never finishes in 10 s
                except OSError:
                    pass
                sent += 1
            open_socks = [c.sock for c in clients if id(c) not in closed_at]
            readable, _, _ = select.select(open_socks, [], [], 0.1)
            for client in clients:
                if client.sock in readable:
                    try:
                        data = client.sock.recv(100)
                    except ConnectionResetError:
                        data = b""
                    assert data == b"", f"the server sent {data!r} to a client that never finished its hello"
                    closed_at[id(client)] = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    assert len(closed_at) == 3, f"still open after 20 s: {closed_at}"
    for elapsed in closed_at.values():
        assert 8.5 <= elapsed <= 13, f"closed after {elapsed:.1f} s, the limit is 10 s"
    assert balance(bank, JUAN) == Decimal(JUAN.saldo)


@pytest.mark.timeout(40)
def test_handshake_time_limit_counts_the_wait_for_a_slot(make_bank: Callable[..., RunningBank]) -> None:
    """PROTOCOL.md section 7: a connection that has not completed the handshake within 10 s is closed.
    A connection that first waited for a free slot (--max-cajeros) must not get a fresh 10 s afterwards.
    (Found: the handler starts its 10 s when it picks the connection up, so a silent connection that waited
    2.5 s in the line is closed about 12.5 s after it connected.)"""
    bank = make_bank(extra_args=("--max-cajeros", "1"))
    held = session(bank, JUAN)
    silent = connect(bank)
    started = time.monotonic()
    try:
        time.sleep(2.5)
        held.close()  # the slot frees; the silent connection is picked up
        data, closed = silent.read_until_closed(20)
        elapsed = time.monotonic() - started
    finally:
        held.close()
        silent.close()
    assert data == b"" and closed
    assert elapsed <= 11.0, f"a connection without a handshake was closed {elapsed:.1f} s after it connected"


# -- concurrency ------------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_sixteen_atm_processes_deposit_into_one_account(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank()
    rng = random.Random(1234)
    plans = [[(cents(rng), f"atm{a}-{uuid.uuid4().hex}") for _ in range(25)] for a in range(16)]
    atms = [start_atm(bank, GUSTAVO, plan) for plan in plans]
    try:
        results = wait_all(atms, 90)
    finally:
        for atm in atms:
            atm.end()
    for plan, lines in zip(plans, results, strict=True):
        assert [line.get("id") for line in lines] == [tx for _, tx in plan], lines[-3:]
        for line in lines:
            assert line["respuesta"]["ok"] is True and "repetida" not in line["respuesta"], line
    total = sum(Decimal(monto) for plan in plans for monto, _ in plan)
    expected = Decimal(GUSTAVO.saldo) + total
    assert balance(bank, GUSTAVO) == expected
    saldos = sorted(Decimal(line["respuesta"]["saldo"]) for lines in results for line in lines)
    assert len(set(saldos)) == 400, "two deposits answered the same balance: one was lost"
    assert saldos[-1] == expected
    assert bank.stop() == 0
    assert parse_ledger_file(bank.ledger_path)[GUSTAVO.tarjeta]["saldo"] == expected


@pytest.mark.timeout(120)
def test_concurrent_withdrawals_never_overdraw(make_bank: Callable[..., RunningBank]) -> None:
    """8 ATM processes try 12 withdrawals of 10.00 each (960.00) from 820.00: exactly 82 succeed."""
    bank = make_bank()
    plans = [[("10.00", uuid.uuid4().hex) for _ in range(12)] for _ in range(8)]
    atms = [start_atm(bank, JUAN, plan, op="RETIRAR") for plan in plans]
    try:
        results = [line for lines in wait_all(atms, 90) for line in lines]
    finally:
        for atm in atms:
            atm.end()
    codes = [r["respuesta"].get("error", "ok") for r in results]
    assert len(codes) == 96, results[-3:]
    assert codes.count("ok") == 82 and codes.count("FONDOS_INSUFICIENTES") == 14, sorted(set(codes))
    assert balance(bank, JUAN) == Decimal("0.00")


@pytest.mark.timeout(60)
def test_connection_cap_queues_then_serves(make_bank: Callable[..., RunningBank]) -> None:
    """--max-cajeros 4 and 10 connections: at most 4 are served at once; the others are served as slots free
    or closed before the hello, with nothing sent; a legitimate ATM is served after.

    Server decision: beyond the cap, up to max-cajeros connections wait (unread) for a slot for up to 5 s;
    connections beyond that waiting line are closed at once, before the hello.
    """
    bank = make_bank(extra_args=("--max-cajeros", "4", "--max-por-direccion", "100"))  # one address: not its limit
    clients = [connect(bank) for _ in range(10)]
    try:
        for client in clients:
            client.send_raw(client.client_hello())
        time.sleep(1.5)
        readable, _, _ = select.select([c.sock for c in clients], [], [], 0)
        hellos = [sock for sock in readable if has_data(sock)]  # readable also means "closed"
        assert 1 <= len(hellos) <= 4, f"{len(hellos)} connections served at once with --max-cajeros 4"

        served = closed_early = 0
        pending = list(clients)
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            readable, _, _ = select.select([c.sock for c in pending], [], [], 0.2)
            for client in [c for c in pending if c.sock in readable]:
                pending.remove(client)
                if not has_data(client.sock):
                    closed_early += 1
                    client.close()
                    continue
                # finish the handshake for the hello already sent (size, magic and proof checked), then leave politely
                client.receive_server_hello()
                assert client.request({"op": "SALIR"}) == {"ok": True}
                client.close()
                served += 1
        assert not pending, f"{len(pending)} connections neither served nor closed"
        assert served + closed_early == 10 and served >= 4, (served, closed_early)
    finally:
        for client in clients:
            client.close()
    assert balance(bank, JUAN) == Decimal(JUAN.saldo)


@pytest.mark.timeout(60)
def test_connections_waiting_too_long_are_closed_before_the_hello(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank(extra_args=("--max-cajeros", "2", "--max-por-direccion", "100"))  # one address: not its limit
    held = [session(bank, JUAN), session(bank, MARIA)]
    waiting = [connect(bank) for _ in range(2)]
    try:
        for client in waiting:
            client.send_raw(client.client_hello())
        started = time.monotonic()
        for client in waiting:
            data, closed = client.read_until_closed(12)
            assert data == b"" and closed, (data, closed)
        elapsed = time.monotonic() - started
        assert 4 <= elapsed <= 9, f"a waiting connection was closed after {elapsed:.1f} s"
        for client in held:  # the held sessions were never disturbed
            assert client.request({"op": "CONSULTAR"})["ok"] is True
    finally:
        for client in held + waiting:
            client.close()
    deadline = time.monotonic() + 5
    while True:  # once the held ones close, a new ATM is served
        try:
            assert balance(bank, GUSTAVO) == Decimal(GUSTAVO.saldo)
            break
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.timeout(120)
def test_same_ids_from_many_atm_processes_apply_once(make_bank: Callable[..., RunningBank]) -> None:
    """8 ATM processes retry the same 10 transactions at once: each id is applied exactly once."""
    bank = make_bank()
    rng = random.Random(7)
    plan = [(cents(rng), uuid.uuid4().hex) for _ in range(10)]
    atms = [start_atm(bank, MARIA, plan if i % 2 else list(reversed(plan))) for i in range(8)]
    try:
        results = [line for lines in wait_all(atms, 90) for line in lines]
    finally:
        for atm in atms:
            atm.end()
    assert len(results) == 80 and all(r["respuesta"]["ok"] is True for r in results), results[:3]
    for _monto, tx in plan:
        answers = [r["respuesta"] for r in results if r["id"] == tx]
        assert sum(1 for a in answers if not a.get("repetida")) == 1, answers
        assert len({a["saldo"] for a in answers}) == 1, f"the repeats did not answer the original result: {answers}"
    assert balance(bank, MARIA) == Decimal(MARIA.saldo) + sum(Decimal(m) for m, _ in plan)


@pytest.mark.timeout(60)
def test_concurrent_wrong_pins_block_exactly_once(make_bank: Callable[..., RunningBank]) -> None:
    """Six connections send a wrong PIN at the same instant: 2, 1, 0 remaining once each, then BLOQUEADA."""
    bank = make_bank()
    clients = [connect(bank).handshake() for _ in range(6)]
    try:
        frames = [
            c.seal(json.dumps({"op": "IDENTIFICAR", "tarjeta": JUAN.tarjeta, "pin": "0000"}).encode()) for c in clients
        ]
        for client, data in zip(clients, frames, strict=True):
            client.send_raw(data)
        answers = [client.recv_message() for client in clients]
    finally:
        for client in clients:
            client.close()
    remaining = sorted(a["intentos_restantes"] for a in answers if a["error"] == "PIN_INCORRECTO")
    assert remaining == [0, 1, 2], answers
    assert [a["error"] for a in answers].count("TARJETA_BLOQUEADA") == 3, answers
    with connect(bank) as client:
        client.handshake()
        assert client.identify(JUAN.tarjeta, JUAN.pin)["error"] == "TARJETA_BLOQUEADA"


# -- kills and restarts ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.timeout(60)
def test_retry_across_a_restart_is_repetida(make_bank: Callable[..., RunningBank], how: str) -> None:
    bank = make_bank()
    with session(bank, JUAN) as client:
        first = client.request({"op": "DEPOSITAR", "monto": "45.67", "id": "reintento-1"})
        second = client.request({"op": "RETIRAR", "monto": "5.67", "id": "reintento-2"})
    assert (first["saldo"], second["saldo"]) == ("865.67", "860.00")
    bank.stop() if how == "stop" else bank.kill()
    bank.start()
    with session(bank, JUAN) as client:
        again = client.request({"op": "DEPOSITAR", "monto": "45.67", "id": "reintento-1"})
        assert again == {"ok": True, "id": "reintento-1", "saldo": "865.67", "repetida": True}
        again = client.request({"op": "RETIRAR", "monto": "5.67", "id": "reintento-2"})
        assert again == {"ok": True, "id": "reintento-2", "saldo": "860.00", "repetida": True}
        assert client.request({"op": "RETIRAR", "monto": "5.68", "id": "reintento-2"})["error"] == "ID_REPETIDO"
        assert client.saldo() == "860.00"


@pytest.mark.timeout(60)
def test_retry_is_repetida_even_where_a_new_request_would_be_refused(make_bank: Callable[..., RunningBank]) -> None:
    """An applied transaction's retry answers the original result, whatever changed since: the balance
    (FONDOS_INSUFICIENTES now), the day's total (LIMITE_DIARIO now), or the per-operation maximum the bank
    was restarted with (MONTO_INVALIDO now). Otherwise an ATM whose reply was lost would tell the customer
    the withdrawal failed although the money left the account. (Found: rules.decide_movement checks the
    per-operation maximum before looking the id up, so the last retry gets MONTO_INVALIDO.)"""
    bank = make_bank(extra_args=("--limite-diario", "820.00"))
    with session(bank, JUAN) as client:
        assert client.request({"op": "RETIRAR", "monto": "820.00", "id": "todo"})["saldo"] == "0.00"
        again = client.request({"op": "RETIRAR", "monto": "820.00", "id": "todo"})
        assert again == {"ok": True, "id": "todo", "saldo": "0.00", "repetida": True}
    with session(bank, MARIA) as client:
        assert client.request({"op": "DEPOSITAR", "monto": "5000.00", "id": "grande"})["saldo"] == "20250.50"
    assert bank.stop() == 0
    bank.args = ["--max-operacion", "1000.00"]
    bank.start()
    with session(bank, MARIA) as client:
        again = client.request({"op": "DEPOSITAR", "monto": "5000.00", "id": "grande"})
        assert again == {"ok": True, "id": "grande", "saldo": "20250.50", "repetida": True}
        assert client.saldo() == "20250.50"


@pytest.mark.timeout(120)
def test_kill_during_deposits_loses_no_acknowledged_one(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank()
    rng = random.Random(99)
    accounts = (GUSTAVO, MARIA, JUAN)
    start = {a.tarjeta: Decimal(a.saldo) for a in accounts}
    plans = {a.tarjeta: [[(cents(rng), uuid.uuid4().hex) for _ in range(60)] for _ in range(2)] for a in accounts}
    atms = [(a, start_atm(bank, a, plan, pausa=0.01)) for a in accounts for plan in plans[a.tarjeta]]
    try:
        deadline = time.monotonic() + 30
        while sum(len(atm.acked()) for _, atm in atms) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        bank.kill()  # SIGKILL of the acceptor and every handler at once, mid-traffic
        wait_all([atm for _, atm in atms], 30)
    finally:
        for _, atm in atms:
            atm.end()
    acked_ids = {line["id"] for _, atm in atms for line in atm.acked()}
    assert 60 <= len(acked_ids) < 360, "the kill did not happen mid-traffic"

    bank.start()
    for account in accounts:
        every = [pair for plan in plans[account.tarjeta] for pair in plan]
        acked_sum = sum(Decimal(m) for m, tx in every if tx in acked_ids)
        unacked_sum = sum(Decimal(m) for m, tx in every if tx not in acked_ids)
        now = balance(bank, account)
        assert now >= start[account.tarjeta] + acked_sum, f"{account.tarjeta}: an acknowledged deposit was lost"
        assert now <= start[account.tarjeta] + acked_sum + unacked_sum
        with session(bank, account) as client:
            for monto, tx in every:
                response = client.request({"op": "DEPOSITAR", "monto": monto, "id": tx})
                assert response["ok"] is True, response
                if tx in acked_ids:
                    assert response.get("repetida") is True, response
            assert Decimal(client.saldo()) == start[account.tarjeta] + sum(Decimal(m) for m, _ in every)


@pytest.mark.timeout(120)
def test_graceful_stop_under_load_leaves_every_acknowledged_deposit_in_cuenta_txt(
    make_bank: Callable[..., RunningBank],
) -> None:
    """Ctrl+C while 4 ATM processes deposit: after the stop, cuenta.txt holds every acknowledged deposit and
    agrees with the bank restarted on it; retrying every id is 'repetida' for each acknowledged one."""
    bank = make_bank()
    rng = random.Random(5)
    plans = [[(cents(rng), uuid.uuid4().hex) for _ in range(80)] for _ in range(4)]
    atms = [start_atm(bank, GUSTAVO, plan, pausa=0.01) for plan in plans]
    try:
        deadline = time.monotonic() + 30
        while sum(len(atm.acked()) for atm in atms) < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bank.stop() == 0
        wait_all(atms, 30)
    finally:
        for atm in atms:
            atm.end()
    acked = {line["id"]: Decimal(line["monto"]) for atm in atms for line in atm.acked()}
    assert 40 <= len(acked) < 320, "the stop did not happen mid-traffic"
    in_ledger = parse_ledger_file(bank.ledger_path)[GUSTAVO.tarjeta]["saldo"]
    assert in_ledger >= Decimal(GUSTAVO.saldo) + sum(acked.values()), "an acknowledged deposit is not in cuenta.txt"

    bank.start()  # with the journal: the bank agrees with cuenta.txt
    assert balance(bank, GUSTAVO) == in_ledger
    with session(bank, GUSTAVO) as client:
        for plan in plans:
            for monto, tx in plan:
                response = client.request({"op": "DEPOSITAR", "monto": monto, "id": tx})
                assert response["ok"] is True, response
                if tx in acked:
                    assert response.get("repetida") is True, response
        assert Decimal(client.saldo()) == Decimal(GUSTAVO.saldo) + sum(Decimal(m) for plan in plans for m, _ in plan)


@pytest.mark.timeout(60)
def test_graceful_stop_leaves_cuenta_txt_complete(make_bank: Callable[..., RunningBank]) -> None:
    """After a clean stop cuenta.txt alone (parsed here per LEDGER.md) is the bank: delete every other file
    but the bank key and the terminals' registry (LEDGER.md: "the terminals' keys aside"), start again,
    and balances, PINs and blocks are the same."""
    bank = make_bank()
    with session(bank, GUSTAVO) as client:
        client.request({"op": "DEPOSITAR", "monto": "0.10", "id": "g1"})
        client.request({"op": "DEPOSITAR", "monto": "0.20", "id": "g2"})
        client.request({"op": "RETIRAR", "monto": "1000.00", "id": "g3"})
    with session(bank, MARIA) as client:
        assert client.request({"op": "CAMBIAR_PIN", "pin_actual": MARIA.pin, "pin_nuevo": "86420"})["ok"] is True
        client.request({"op": "RETIRAR", "monto": "250.50", "id": "m1"})
    with connect(bank) as client:
        client.handshake()
        for _ in range(3):
            client.identify(JUAN.tarjeta, "0000")
    expected = {
        GUSTAVO.tarjeta: (Decimal("233444.30"), 0),
        MARIA.tarjeta: (Decimal("15000.00"), 0),
        JUAN.tarjeta: (Decimal("820.00"), 3),
        ANA.tarjeta: (Decimal("5000.00"), 3),
    }
    assert bank.stop() == 0
    ledger = parse_ledger_file(bank.ledger_path)
    assert {card: (a["saldo"], a["intentos"]) for card, a in ledger.items()} == expected
    assert ledger[GUSTAVO.tarjeta]["titular"] == GUSTAVO.titular
    assert pin_matches(ledger[MARIA.tarjeta]["pin"], "86420")
    assert not pin_matches(ledger[MARIA.tarjeta]["pin"], MARIA.pin)
    assert pin_matches(ledger[GUSTAVO.tarjeta]["pin"], GUSTAVO.pin)

    for path in bank.folder.iterdir():
        if path.name not in ("cuenta.txt", "banco.key", "cuenta.cajeros"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = bank.ledger_path.read_bytes()
    bank.start()
    assert balance(bank, GUSTAVO) == Decimal("233444.30")
    assert balance(bank, MARIA, "86420") == Decimal("15000.00")
    with connect(bank) as client:
        client.handshake()
        assert client.identify(JUAN.tarjeta, JUAN.pin)["error"] == "TARJETA_BLOQUEADA"
        assert client.identify(MARIA.tarjeta, MARIA.pin)["error"] == "PIN_INCORRECTO"
    with session(bank, GUSTAVO) as client:
        assert client.request({"op": "DEPOSITAR", "monto": "0.70", "id": "g4"})["saldo"] == "233445.00"
    assert bank.stop() == 0
    assert bank.ledger_path.read_bytes() != before
    assert parse_ledger_file(bank.ledger_path)[GUSTAVO.tarjeta]["saldo"] == Decimal("233445.00")


@pytest.mark.timeout(60)
def test_ledger_written_by_hand_with_padding_and_comments(
    make_bank: Callable[..., RunningBank], tmp_path: Path
) -> None:
    """LEDGER.md: spaces around fields are ignored, comments and blank lines kept out of the way."""
    folder = tmp_path / "manual"
    folder.mkdir()
    write_ledger(folder, (JUAN,))
    lines = (folder / "cuenta.txt").read_text(encoding="utf-8").splitlines()
    card, titular, _saldo, pin, intentos = lines[1].split("|")
    text = "# comentario del administrador\n\n" + f"  {card} | {titular} |     820.00 | {pin} | {intentos}  \r\n"
    text += "\n# fin\n"
    (folder / "cuenta.txt").write_text(text, encoding="utf-8")
    bank = RunningBank(folder, [], enrolled(folder))
    bank.start()
    try:
        with session(bank, JUAN) as client:
            assert client.saldo() == "820.00"
            assert client.request({"op": "DEPOSITAR", "monto": "1", "id": "x"})["saldo"] == "821.00"
        assert bank.stop() == 0
    finally:
        if bank.process is not None and bank.process.poll() is None:
            bank.kill()
    assert parse_ledger_file(folder / "cuenta.txt")[JUAN.tarjeta]["saldo"] == Decimal("821.00")


# -- ledger and key errors --------------------------------------------------------------------------------------
def _broken(lines: list[str], problem: str) -> tuple[list[str], int]:
    """Return the broken lines and the 1-based line number of the problem (the header comment is line 1)."""
    if problem == "coma-decimal":
        lines[2] = lines[2].replace("|15250.50|", "|12,50|")
        return lines, 3
    if problem == "tarjeta-repetida":
        lines[3] = lines[3].replace(JUAN.tarjeta, MARIA.tarjeta)
        return lines, 4
    if problem == "campos":
        lines[3] = lines[3].rsplit("|", 1)[0]
        return lines, 4
    if problem == "campos-de-mas":
        lines[2] += "|extra"
        return lines, 3
    if problem == "tarjeta-corta":
        lines[1] = lines[1].replace(GUSTAVO.tarjeta, "12345", 1)
        return lines, 2
    if problem == "un-decimal":
        lines[4] = lines[4].replace("|5000.00|", "|5000.0|")
        return lines, 5
    if problem == "saldo-negativo":
        lines[4] = lines[4].replace("|5000.00|", "|-5000.00|")
        return lines, 5
    if problem == "intentos-4":
        lines[4] = lines[4][:-1] + "4"
        return lines, 5
    if problem == "saldo-con-letras":
        lines[3] = lines[3].replace("|820.00|", "|820.00 pesos|")
        return lines, 4
    if problem == "pin-sin-hash":
        parts = lines[2].split("|")
        parts[3] = "4321"
        lines[2] = "|".join(parts)
        return lines, 3
    raise AssertionError(problem)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "problem",
    [
        "coma-decimal",
        "tarjeta-repetida",
        "campos",
        "campos-de-mas",
        "tarjeta-corta",
        "un-decimal",
        "saldo-negativo",
        "intentos-4",
        "saldo-con-letras",
        "pin-sin-hash",
    ],
)
def test_broken_ledger_line_stops_the_server(tmp_path: Path, problem: str) -> None:
    folder = tmp_path / "roto"
    folder.mkdir()
    write_ledger(folder)
    write_bank_key(folder)
    lines, number = _broken((folder / "cuenta.txt").read_text(encoding="utf-8").splitlines(), problem)
    (folder / "cuenta.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = (folder / "cuenta.txt").read_bytes()
    said = refusal(folder)
    assert "cuenta.txt" in said, said
    assert re.search(rf"(l[ií]nea|line)\s*:?\s*{number}\b", said, re.IGNORECASE), said
    assert (folder / "cuenta.txt").read_bytes() == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("upper", [False, True], ids=["lower-hex", "upper-hex"])
@pytest.mark.parametrize("form", ["pin_hash", "pin_hash_peppered"])
def test_ledger_pin_field_from_the_contract_vectors(tmp_path: Path, upper: bool, form: str) -> None:
    """A ledger written by another tool, with one of vectors.json's PIN fields (N=16384, the older unpeppered
    form or the peppered one, with the vectors' bank key), is served: PIN 1234 works."""
    vectors = json.loads((Path(__file__).with_name("vectors.json")).read_text(encoding="utf-8"))
    pin_field = vectors[form]["field"]
    if upper:
        kind, rest = pin_field.split("$", 1)
        pin_field = kind + "$" + rest.upper()
    folder = tmp_path / "vector"
    folder.mkdir()
    (folder / "cuenta.txt").write_text(f"123456789012|Vector|10.00|{pin_field}|0\n", encoding="utf-8")
    bank = RunningBank(folder, [], enrolled(folder, bytes.fromhex(vectors["bank_key"])))
    bank.start()
    try:
        with connect(bank) as client:
            client.handshake()
            assert client.identify("123456789012", "4321")["error"] == "PIN_INCORRECTO"
            assert client.identify("123456789012", vectors[form]["pin"]) == {"ok": True, "titular": "Vector"}
            assert client.saldo() == "10.00"
    finally:
        bank.stop()


@pytest.mark.timeout(60)
def test_ledger_with_a_very_large_balance(tmp_path: Path) -> None:
    """LEDGER.md puts no upper bound on ``saldo`` ("a decimal with exactly two decimals, zero or more").
    The server must either serve such a balance exactly, or refuse to start with a message naming the file
    and the line; a crash with a traceback is neither. (Found: 27 integer digits crash the start-up in
    common.money.format_amount with decimal.InvalidOperation: Decimal's default 28-digit context.)"""
    folder = tmp_path / "grande"
    folder.mkdir()
    huge = "9" * 27 + ".99"
    write_ledger(folder, (JUAN, DemoAccount("123412341234", "Fortuna", huge, "1234")))
    before = (folder / "cuenta.txt").read_bytes()
    bank = RunningBank(folder, [], enrolled(folder))
    try:
        bank.start()
    except RuntimeError:
        bank._cleanup()
        said = bank.stderr_text()
        assert "Traceback" not in said, said[-1500:]
        assert "cuenta.txt" in said and re.search(r"(l[ií]nea|line)\s*:?\s*3\b", said, re.IGNORECASE), said
        assert (folder / "cuenta.txt").read_bytes() == before
        return
    try:
        with open_session(bank.port, key_of(bank), "123412341234", "1234") as client:
            assert client.saldo() == huge
            response = client.request({"op": "RETIRAR", "monto": "0.99", "id": "g1"})
            assert response.get("saldo") == "9" * 27 + ".00", response
    finally:
        bank.stop()


@pytest.mark.timeout(60)
def test_ledger_that_is_not_utf8_stops_the_server(tmp_path: Path) -> None:
    folder = tmp_path / "latin1"
    folder.mkdir()
    write_ledger(folder)
    write_bank_key(folder)
    data = (folder / "cuenta.txt").read_bytes().replace("Pérez".encode(), "Pérez".encode("latin-1"))
    (folder / "cuenta.txt").write_bytes(data)
    said = refusal(folder)
    assert "cuenta.txt" in said, said
    assert re.search(r"(l[ií]nea|line)\s*:?\s*4\b", said, re.IGNORECASE), said
    assert (folder / "cuenta.txt").read_bytes() == data


@pytest.mark.timeout(60)
def test_missing_ledger_stops_the_server(tmp_path: Path) -> None:
    folder = tmp_path / "sin-cuentas"
    folder.mkdir()
    write_bank_key(folder)
    said = refusal(folder)
    assert "cuenta.txt" in said, said
    assert not (folder / "cuenta.txt").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "content",
    [
        None,
        "",
        "# solo un comentario\n",
        TEST_BANK_KEY.hex()[:-1] + "\n",
        TEST_BANK_KEY.hex() + "0\n",
        TEST_BANK_KEY.hex()[:-1] + "g\n",
        TEST_BANK_KEY.hex() + " extra\n",
        "llave=" + TEST_BANK_KEY.hex() + "\n",
        "ATM2 CAJERO-01 1 " + TEST_BANK_KEY.hex() + "\n",  # an ATM's key file where the bank key belongs
    ],
    ids=[
        "missing",
        "empty",
        "comments-only",
        "63-digits",
        "65-digits",
        "not-hex",
        "trailing-text",
        "prefix",
        "atm-key-file",
    ],
)
def test_missing_or_malformed_bank_key_stops_the_server(tmp_path: Path, content: str | None) -> None:
    folder = tmp_path / "sin-llave"
    folder.mkdir()
    write_ledger(folder)
    if content is not None:
        (folder / "banco.key").write_text(content, encoding="utf-8")
    ledger_before = (folder / "cuenta.txt").read_bytes()
    said = refusal(folder)
    assert "genkey" in said, said
    assert "banco.key" in said, said
    assert TEST_BANK_KEY.hex()[:16] not in said, "the key (or part of it) was printed"
    assert (folder / "cuenta.txt").read_bytes() == ledger_before


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "bank_key_file",
    [
        ("# llave\n\n" + TEST_BANK_KEY.hex().upper() + "\n").encode(),  # upper-case hex, comments, blank line
        b"# llave\r\n\r\n" + TEST_BANK_KEY.hex().encode() + b"\r\n",  # Windows line endings
    ],
    ids=["upper-case-hex-and-comments", "crlf"],
)
def test_bank_key_file_variants_are_accepted(tmp_path: Path, bank_key_file: bytes) -> None:
    """The same bank key written differently: the PIN hashes it peppers still check, the terminal's key opens."""
    folder = tmp_path / "llave"
    folder.mkdir()
    write_ledger(folder, (JUAN,))
    terminal_key = enrolled(folder)
    (folder / "banco.key").write_bytes(bank_key_file)
    bank = RunningBank(folder, [], terminal_key)
    bank.start()
    try:
        assert balance(bank, JUAN) == Decimal("820.00")
    finally:
        bank.stop()


@pytest.mark.timeout(60)
def test_file_flags_put_every_file_where_asked(tmp_path: Path) -> None:
    """--cuenta, --llave and --registro: the server runs from another folder; journal and lock go beside
    the ledger, the log where --registro says."""
    data = tmp_path / "datos"
    run = tmp_path / "run"
    data.mkdir()
    run.mkdir()
    write_ledger(data, (JUAN,))
    (data / "cuenta.txt").rename(data / "banco.txt")
    write_bank_key(tmp_path)
    (tmp_path / "banco.key").rename(tmp_path / "secreto.key")
    terminal_key = TerminalRegistry.for_ledger(data / "banco.txt", TEST_BANK_KEY).enrol(TEST_TERMINAL)
    args = ["--cuenta", str(data / "banco.txt"), "--llave", str(tmp_path / "secreto.key")]
    args += ["--registro", str(tmp_path / "registro.log")]
    bank = RunningBank(run, args, terminal_key)
    bank.start()
    try:
        with session(bank, JUAN) as client:
            assert client.request({"op": "DEPOSITAR", "monto": "1.00", "id": "f1"})["saldo"] == "821.00"
    finally:
        assert bank.stop() == 0
    assert parse_ledger_file(data / "banco.txt")[JUAN.tarjeta]["saldo"] == Decimal("821.00")
    assert (tmp_path / "registro.log").exists()
    assert sorted(p.name for p in run.iterdir()) == ["servidor.err"], "the server wrote into its working folder"


@pytest.mark.timeout(60)
def test_second_server_on_the_same_ledger_is_refused(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank()
    second = RunningBank(bank.folder, [], bank.terminal_key)
    with pytest.raises(RuntimeError):
        second.start()
    second._cleanup()
    assert balance(bank, JUAN) == Decimal("820.00")


# -- start methods ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_other_start_methods(make_bank: Callable[..., RunningBank], method: str) -> None:
    bank = make_bank(extra_args=("--inicio", method))
    first = session(bank, JUAN)
    second = session(bank, JUAN)
    try:
        assert first.request({"op": "DEPOSITAR", "monto": "10.00", "id": "s1"})["saldo"] == "830.00"
        assert second.request({"op": "DEPOSITAR", "monto": "5.00", "id": "s2"})["saldo"] == "835.00"
        assert first.saldo() == second.saldo() == "835.00"
        assert second.request({"op": "DEPOSITAR", "monto": "10.00", "id": "s1"})["repetida"] is True
        assert first.request({"op": "RETIRAR", "monto": "35.00", "id": "s3"})["saldo"] == "800.00"
    finally:
        first.close()
        second.close()
    assert bank.stop() == 0
    assert parse_ledger_file(bank.ledger_path)[JUAN.tarjeta]["saldo"] == Decimal("800.00")

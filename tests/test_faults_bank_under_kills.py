"""Jepsen's bank workload, our way: ATMs move money while the bank is killed.

Ten ATM processes, each a terminal with its own key, make random deposits
and withdrawals on five shared accounts, each with a fresh id. Meanwhile the test SIGKILLs the whole
server (acceptor and every handler at once) several times and restarts
it, or kills single handler processes. An ATM whose reply was lost
reconnects, identifies again and resends the *same* request with the same
id until it gets a definite answer, as the real ATM does.

At the end every operation is either applied or refused, and each balance
equals its start plus the applied deposits minus the applied withdrawals,
exactly; no balance is ever negative; and after a clean stop the ledger
alone says so.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from atm_gui.bank_client import BankClient, BankError, BankWrongKey
from bank_server.ledger import load_ledger
from common.keys import TerminalKey
from devtools.bank_process import DemoAccount, RunningBank, start_bank
from devtools.workers import Progress, Workers

CARDS = [f"80000000000000{i:02d}" for i in range(5)]
START = Decimal("300.00")
PIN = "2580"
GIVE_UP = 30.0  # s after the workload's end: an ATM still without a definite answer fails with what it saw
CTX = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL of a process group is POSIX")


def atm(progress: Progress, port: int, key: TerminalKey, seed: int, until: float) -> tuple[list[tuple], int]:
    """One ATM process (run by ``devtools.workers``): its outcomes and how many times it reconnected.

    Retries are for a lost connection only, and only until ``until + GIVE_UP``; a refusal
    (IDENTIFICAR not ok, an unexpected error code, the wrong key) fails at once."""
    rng = random.Random(seed)
    card = CARDS[seed % len(CARDS)]
    give_up = until + GIVE_UP
    client: BankClient | None = None
    outcomes = []
    retries = 0

    def session() -> BankClient:
        attempts = 0
        while True:
            attempts += 1
            try:
                progress.note(f"connecting and identifying {card} (attempt {attempts})", progress.last)
                fresh = BankClient("127.0.0.1", port, key, timeout=5)
                fresh.connect()
                answer = fresh.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": PIN})
                progress.note(f"identified {card} (attempt {attempts})", answer)
                assert answer["ok"], answer
                return fresh
            except BankWrongKey:
                raise
            except BankError as exc:
                if time.monotonic() > give_up:
                    raise TimeoutError(f"no session for {card} after {attempts} attempts; last: {exc!r}") from exc
                time.sleep(0.05)

    while time.monotonic() < until:
        op = rng.choice(("DEPOSITAR", "RETIRAR"))
        request = {"op": op, "monto": f"{rng.randint(1, 9000) / 100:.2f}", "id": uuid.uuid4().hex}
        attempts = 0
        while True:  # until this request has a definite answer
            attempts += 1
            try:
                client = client or session()
                progress.note(f"{op} {request['monto']} id {request['id']} (attempt {attempts})", progress.last)
                answer = client.request(request)
                progress.note(f"{op} {request['monto']} id {request['id']} answered", answer)
                break
            except BankWrongKey:
                raise
            except BankError as exc:
                client = None
                retries += 1
                if time.monotonic() > give_up:
                    raise TimeoutError(f"no answer to {request} after {attempts} attempts; last: {exc!r}") from exc
        if answer["ok"]:
            outcomes.append(("applied", op, card, request["monto"], request["id"]))
        else:
            assert answer["error"] in {"FONDOS_INSUFICIENTES", "LIMITE_DIARIO"}, answer
            outcomes.append(("refused", op, card, request["monto"], request["id"]))
    if client is not None:
        client.close()
    return outcomes, retries


def server_report(bank: RunningBank) -> str:
    """For a failure: where the handlers wait (Linux) and the end of the server's stderr and log."""
    lines = []
    with contextlib.suppress(Exception):
        waits = Counter(Path(f"/proc/{pid}/wchan").read_text() or "running" for pid in bank.handler_pids())
        lines.append(f"live handlers, by kernel wait: {dict(waits)}")  # futex_do_wait: blocked on a semaphore
    for name, text in (("servidor.err", bank.stderr_text()), ("banco.log", _read(bank.folder / "banco.log"))):
        lines.append(f"{name} (last 30 lines):\n" + "\n".join(text.splitlines()[-30:]))
    return "\n".join(lines)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def run_workload(bank: RunningBank, seconds: float, disturb) -> tuple[list[tuple], int]:
    keys = [bank.enrol(f"JEPSEN-{seed:02d}") for seed in range(10)]
    until = time.monotonic() + seconds
    with Workers(CTX) as workers:  # on the way out, whatever happened, every ATM process is ended
        for seed, key in enumerate(keys):
            workers.start(f"atm {seed}", atm, bank.port, key, seed, until)
        bank = disturb(bank, until)
        workers.context = lambda: server_report(bank)
        collected = workers.results(deadline=max(until + GIVE_UP, time.monotonic()) + 15)
    outcomes = [o for batch, _ in collected for o in batch]
    retries = sum(r for _, r in collected)
    assert bank.stop() == 0
    return outcomes, retries


def check_balances(bank: RunningBank, outcomes: list[tuple]) -> None:
    expected = dict.fromkeys(CARDS, START)
    for status, op, card, monto, _ in outcomes:
        if status == "applied":
            expected[card] += Decimal(monto) if op == "DEPOSITAR" else -Decimal(monto)
    ledger, errors = load_ledger(bank.ledger_path)  # the ledger alone, after the clean stop
    assert errors == []
    for card in CARDS:
        assert ledger.accounts[card].saldo == expected[card], card
        assert ledger.accounts[card].saldo >= 0
    ids = [o[4] for o in outcomes]
    assert len(ids) == len(set(ids))


@pytest.fixture
def kill_bank(tmp_path: Path):
    bank = start_bank(tmp_path / "banco", [DemoAccount(card, "Jepsen", str(START), PIN) for card in CARDS])
    yield bank
    bank._cleanup()


@pytest.mark.timeout(180)
def test_whole_server_killed_six_times(kill_bank: RunningBank):
    kills = []

    def disturb(bank: RunningBank, until: float) -> RunningBank:
        for _ in range(6):
            time.sleep(random.uniform(0.8, 1.6))
            bank.kill()
            kills.append(time.monotonic())
            bank = bank.restart()
        kill_bank.process = bank.process  # the fixture stops whatever runs last
        return bank

    outcomes, retries = run_workload(kill_bank, 12.0, disturb)
    assert len(kills) == 6
    assert sum(o[0] == "applied" for o in outcomes) > 100
    assert retries > 0, "kills should have cut some replies"
    check_balances(kill_bank, outcomes)


@pytest.mark.timeout(180)
def test_single_handlers_killed(kill_bank: RunningBank):
    killed = []

    def disturb(bank: RunningBank, until: float) -> RunningBank:
        rng = random.Random(3)
        while time.monotonic() < until - 1:
            time.sleep(rng.uniform(0.1, 0.3))
            pids = bank.handler_pids()
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                except ProcessLookupError:
                    pass
        return bank

    outcomes, retries = run_workload(kill_bank, 8.0, disturb)
    assert len(killed) >= 10 and retries > 0
    check_balances(kill_bank, outcomes)

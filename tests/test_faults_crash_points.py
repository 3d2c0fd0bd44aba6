"""Crash points: kill the write path at every interesting instant, then recover.

In the manner of SQLite's crash tests and the ALICE study: a writer process
runs transactions against the real ledger files and dies (SIGKILL, from its
own fault-injection hook or from the test at a random moment) hundreds of
times. After every death the test recovers the ledger as the server's
start-up does and checks:

- every transaction acknowledged to the test is present, with its balance;
- no transaction is half there (each card's balance equals its start plus
  the movements the journal holds for it);
- ``cuenta.txt`` is always a whole, parseable ledger.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from bank_server import faults
from bank_server.journal import Record
from bank_server.ledger import load_ledger
from bank_server.rules import Limits, decide_movement
from bank_server.store import Store, StoreMode
from common.messages import RequestError
from devtools.bank_process import DemoAccount, write_ledger

CARDS = ("7000000000000001", "7000000000000002", "7000000000000003")
START = Decimal("1000.00")
POINTS = (
    "antes_de_escribir",
    "escritura_a_medias",
    "antes_de_sincronizar",
    "checkpoint_temporal",
    "checkpoint_antes_de_reemplazar",
)
CTX = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def writer(ledger: Path, points: dict[str, float], seed: int, acks) -> None:
    """Run transactions until killed; report each one only once it is durable."""
    faults._POINTS = points
    rng = random.Random(seed)
    store = Store.open(ledger, mode=StoreMode.ATTACH)
    for number in range(10_000):
        card = rng.choice(CARDS)
        tipo = rng.choice(("DEPOSITO", "RETIRO"))
        monto = Decimal(rng.randint(1, 5000)) / 100
        tx_id = uuid.uuid4().hex
        try:
            with store.locked() as state:
                fecha = "2026-11-23T10:00:00-06:00"
                outcome = decide_movement(state, tipo, card, monto, tx_id, fecha, Limits(daily_limit=Decimal(10**9)))
                assert isinstance(outcome, Record)
                store.commit(outcome)
        except RequestError:
            continue
        acks.send((tx_id, tipo, card, str(monto), str(outcome.cuenta.saldo)))
        if number % 7 == 3:
            store.checkpoint()


def reporting_writer(ledger: Path, points: dict[str, float], seed: int, acks) -> None:
    """The writer process. Its only expected end is a SIGKILL: an exception is sent home with its
    traceback (after the acks, so the last ack says how far it got) and fails the test."""
    try:
        writer(ledger, points, seed, acks)
    except BaseException:
        acks.send(("error", traceback.format_exc()))
        raise


def check_recovered(ledger: Path, acked: dict[str, tuple[str, str, str, str]]) -> None:
    store = Store.open(ledger, mode=StoreMode.RECOVER)  # exactly what the server does at start-up
    try:
        state = store.state
        for card in CARDS:
            state.account(card)  # decode the history the start-up only indexed
        for tx_id, (tipo, card, monto, saldo) in acked.items():
            applied = state.applied.get(tx_id)
            assert applied is not None, f"acknowledged transaction {tx_id} was lost"
            assert (applied.tipo, applied.tarjeta, applied.monto, applied.saldo) == (
                tipo,
                card,
                Decimal(monto),
                Decimal(saldo),
            )
        for card in CARDS:
            movements = [a for a in state.applied.values() if a.tarjeta == card]
            net = sum((a.monto if a.tipo == "DEPOSITO" else -a.monto for a in movements), Decimal(0))
            assert state.accounts[card].saldo == START + net, f"{card}: a transaction is half applied"
            assert state.accounts[card].saldo >= 0
    finally:
        store.close()
    ledger_data, errors = load_ledger(ledger)
    assert errors == [], errors
    assert set(CARDS) <= set(ledger_data.accounts)


def run_writer_until_death(ledger: Path, points: dict[str, float], seed: int, kill_after: float | None) -> list[tuple]:
    """Run a writer until it dies (by the hook, or killed after ``kill_after`` s), reading its acks meanwhile
    (a full pipe must not stall it); at most 20 s more, then it is killed and the test fails."""
    receiver, sender = CTX.Pipe(duplex=False)
    process = CTX.Process(target=reporting_writer, args=(ledger, points, seed, sender))
    acks: list[tuple] = []
    errors: list[str] = []
    process.start()
    sender.close()
    started = time.monotonic()
    kill_at = started + kill_after if kill_after is not None else None
    deadline = started + (kill_after or 0) + 20
    ended = False
    try:
        while not ended and time.monotonic() < deadline:
            if kill_at is not None and time.monotonic() >= kill_at:
                process.kill()
                kill_at = None
            wait = min(0.2, max(0.0, kill_at - time.monotonic())) if kill_at is not None else 0.2
            try:
                if receiver.poll(wait):
                    message = receiver.recv()
                    if message[0] == "error":
                        errors.append(message[1])
                    else:
                        acks.append(message)
            except (EOFError, OSError):  # its end of the pipe is closed: it is dead and all it sent is read
                ended = True
    finally:
        if process.is_alive():
            process.kill()
        process.join(10)
        receiver.close()
    last = f"{len(acks)} acks, the last {acks[-1] if acks else None}"
    assert not errors, f"the writer (seed {seed}) failed instead of being killed ({last}):\n{errors[0]}"
    assert ended, f"the writer (seed {seed}) neither died nor was killed within 20 s ({last})"
    assert process.exitcode != 0, "the writer should have been killed"
    return acks


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = write_ledger(tmp_path, [DemoAccount(card, "Prueba", str(START), "1234") for card in CARDS])
    Store.open(path, mode=StoreMode.RECOVER).close()
    return path


@pytest.mark.timeout(240)
def test_hook_kills_at_every_point_of_the_write_path(ledger: Path):
    """200 deaths by the hook, 40 at each point of the write path."""
    acked: dict[str, tuple[str, str, str, str]] = {}
    deaths = dict.fromkeys(POINTS, 0)
    for round_number in range(200):
        point = POINTS[round_number % len(POINTS)]
        for tx_id, *rest in run_writer_until_death(ledger, {point: 0.15}, round_number, kill_after=None):
            acked[tx_id] = tuple(rest)
        deaths[point] += 1
        check_recovered(ledger, acked)
    assert all(count == 40 for count in deaths.values())
    assert len(acked) > 200, "the writers should have acknowledged transactions between deaths"


@pytest.mark.timeout(240)
def test_kills_at_random_instants(ledger: Path):
    """100 SIGKILLs from outside at random moments (inside or outside the write path)."""
    rng = random.Random(7)
    acked: dict[str, tuple[str, str, str, str]] = {}
    for round_number in range(100):
        for tx_id, *rest in run_writer_until_death(ledger, {}, 1000 + round_number, kill_after=rng.uniform(0.01, 0.12)):
            acked[tx_id] = tuple(rest)
        check_recovered(ledger, acked)
    assert len(acked) > 100

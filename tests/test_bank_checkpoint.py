"""The acceptor's periodic checkpoint: cuenta.txt catches up while the bank runs, so a crash replays little."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from bank_server.ledger import load_ledger
from devtools.bank_process import RunningBank

JUAN = ("5500000000000004", "2468")
LOG_IN_RECORDS = 2  # a right PIN: its attempt counted before the check, then the count reset


def ledger_now(path: Path) -> tuple[Decimal, int]:
    ledger, errors = load_ledger(path)
    assert errors == []
    return ledger.accounts[JUAN[0]].saldo, ledger.diario


@pytest.mark.timeout(60)
def test_cuenta_txt_catches_up_while_the_bank_runs_and_after_a_crash(make_bank) -> None:
    bank: RunningBank = make_bank(extra_args=("--punto-de-control", "0.5"))
    assert ledger_now(bank.ledger_path) == (Decimal("820.00"), 0)
    with bank.client() as atm:
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": JUAN[0], "pin": JUAN[1]})["ok"]
        for n in range(3):
            assert atm.request({"op": "DEPOSITAR", "monto": "10.00", "id": f"p{n}"})["ok"]
    records = LOG_IN_RECORDS + 3
    deadline = time.monotonic() + 10
    while ledger_now(bank.ledger_path)[1] < records and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ledger_now(bank.ledger_path) == (Decimal("850.00"), records), "cuenta.txt shows the deposits, server up"
    bank.kill()
    restarted = bank.restart()
    try:
        with restarted.client() as atm:
            assert atm.request({"op": "IDENTIFICAR", "tarjeta": JUAN[0], "pin": JUAN[1]})["ok"]
            again = atm.request({"op": "DEPOSITAR", "monto": "10.00", "id": "p2"})
            assert again == {"ok": True, "id": "p2", "saldo": "850.00", "repetida": True}
    finally:
        restarted.close()


def test_idle_bank_does_not_rewrite_cuenta_txt(make_bank) -> None:
    bank: RunningBank = make_bank(extra_args=("--punto-de-control", "0.2"))
    before = bank.ledger_path.stat().st_mtime_ns
    time.sleep(1.0)
    assert bank.ledger_path.stat().st_mtime_ns == before

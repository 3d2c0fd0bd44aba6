"""Run the independent contract client (``bench/contract_load.py``) against a real bank and check the books.

Lives in ``tests/`` because it asserts; ``devtools/`` stays below ``bench/`` and never imports it."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from bank_server.ledger import load_ledger
from bench import contract_load  # the client that never saw the server's code
from devtools.bank_process import DemoAccount, RunningBank, enrol_terminal, start_bank


def load_terminal(index: int) -> str:
    """The terminal id of load ATM ``index``: ``CARGA-001``, ``CARGA-002``, ..."""
    return f"CARGA-{index + 1:03d}"


def run_independent_load(
    folder: Path, accounts: list[DemoAccount], window: float, amount: str, extra_args: tuple[str, ...] = ()
) -> tuple[RunningBank, dict[str, Any]]:
    """A bank on ``accounts``, one independent ATM per account for ``window`` s, each its own terminal
    (enrolled before the bank starts, so that no handshake races the registry's reload), a clean stop;
    then the books: every balance in ``cuenta.txt`` is the opening one plus what the ATMs saw acknowledged."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = [enrol_terminal(folder, load_terminal(i)) for i in range(len(accounts))]
    bank = start_bank(folder, accounts, extra_args=extra_args)
    try:
        cards = [(a.tarjeta, a.pin) for a in accounts]
        report = contract_load.run("127.0.0.1", bank.port, keys, cards, len(accounts), 0.3, window, amount)
    finally:
        assert bank.stop() == 0
    assert contract_load.succeeded(report), report["errors"]
    assert report["errors"] == {} and report["in_doubt"] == {}
    assert report["ok_in_window"] > 0
    assert {atm["terminal"] for atm in report["per_atm"]} == {k.terminal_id for k in keys}
    ledger, errors = load_ledger(bank.ledger_path)
    assert errors == []
    for account in accounts:
        expected = Decimal(account.saldo) + Decimal(report["deposited"][account.tarjeta])
        assert ledger.accounts[account.tarjeta].saldo == expected, account.tarjeta
        assert Decimal(report["balances"][account.tarjeta]["end"]) == expected
    return bank, report

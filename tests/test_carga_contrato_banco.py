"""The independent load generator (``bench/carga_contrato.py``, written from PROTOCOL.md alone) against
the real server: every deposit it saw acknowledged is in ``cuenta.txt`` after a clean stop, to the cent.

This is what the bench's throughput figures rest on; if the server and a client that never saw its
code stopped agreeing on a single byte, this fails before any figure is published.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bank_server.ledger import load_ledger
from bench import carga_contrato
from tests.bank_fixture import TEST_PSK, DemoAccount, start_bank

CARDS = [DemoAccount(f"40000000000000{i:02d}", f"Cliente {i}", "1000.00", f"{1000 + i}") for i in range(4)]


@pytest.mark.timeout(120)
def test_independent_load_generator_and_the_bank_agree_to_the_cent(tmp_path: Path):
    bank = start_bank(tmp_path / "banco", CARDS)
    try:
        report = carga_contrato.run(
            "127.0.0.1", bank.port, TEST_PSK, [(a.tarjeta, a.pin) for a in CARDS], 4, 0.3, 1.0, "0.25"
        )
    finally:
        assert bank.stop() == 0
    assert carga_contrato.succeeded(report), report["errores"]
    assert report["errores"] == {} and report["depositos_en_duda"] == {}
    assert report["ok_en_ventana"] > 0
    ledger, errors = load_ledger(bank.ledger_path)
    assert errors == []
    for account in CARDS:
        expected = Decimal(account.saldo) + Decimal(report["depositado"][account.tarjeta])
        assert ledger.accounts[account.tarjeta].saldo == expected, account.tarjeta
        assert Decimal(report["saldos"][account.tarjeta]["final"]) == expected

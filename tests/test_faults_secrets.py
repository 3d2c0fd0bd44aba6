"""No PIN, key (terminal or bank) or full card number leaks into the files the bank writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools.bank_process import TEST_BANK_KEY, DemoAccount, RunningBank, start_bank

CARD = "4929000011112222"
PINS = ("908172", "564738", "192837", "746352")  # the right one, wrong ones, the new one


@pytest.mark.timeout(90)
def test_no_secret_in_ledger_journal_or_logs(tmp_path: Path):
    bank: RunningBank = start_bank(
        tmp_path / "banco", [DemoAccount(CARD, "Secreto", "100.00", PINS[0])], extra_args=["--detallado"]
    )
    try:
        with bank.client() as atm:
            assert atm.request({"op": "IDENTIFICAR", "tarjeta": CARD, "pin": PINS[1]})["error"] == "PIN_INCORRECTO"
            assert atm.request({"op": "IDENTIFICAR", "tarjeta": CARD, "pin": PINS[0]})["ok"]
            assert atm.request({"op": "CAMBIAR_PIN", "pin_actual": PINS[3], "pin_nuevo": PINS[2]})["ok"] is False
            assert atm.request({"op": "CAMBIAR_PIN", "pin_actual": PINS[0], "pin_nuevo": PINS[2]})["ok"]
            assert atm.request({"op": "DEPOSITAR", "monto": "1.00", "id": "s1"})["ok"]
        with bank.client() as atm:
            assert atm.request({"op": "IDENTIFICAR", "tarjeta": CARD, "pin": PINS[2]})["ok"]
    finally:
        assert bank.stop() == 0
    written = {
        name: (bank.folder / name).read_text(encoding="utf-8", errors="replace")
        for name in ("cuenta.txt", "cuenta.diario", "banco.log", "servidor.err")
    }
    written["stdout"] = "".join(bank.output)
    assert bank.terminal_key is not None
    keys = (bank.terminal_key.key.hex(), TEST_BANK_KEY.hex())  # the ATM's key and the bank key
    assert "IDENTIFICAR" in written["banco.log"], "the log should have the requests"
    assert "DEPOSITAR 1.00 -> ok" in written["banco.log"], "--detallado logs accepted movements too"
    for name, text in written.items():
        for pin in PINS:
            if name in ("cuenta.txt", "cuenta.diario"):  # hex hashes could hold six digits by chance
                assert f"|{pin}|" not in text and f'"{pin}"' not in text, (name, pin)
            else:
                assert pin not in text, (name, pin)
        for key in keys:
            assert key not in text.lower(), name
    for name in ("banco.log", "servidor.err", "stdout"):
        assert CARD not in written[name], f"full card number in {name}"


@pytest.mark.timeout(90)
def test_log_keeps_refusals_and_log_ins_and_leaves_movements_to_the_journal(tmp_path: Path):
    """Without --detallado an accepted deposit is not logged (the journal has it); a refusal and a log-in are."""
    bank: RunningBank = start_bank(tmp_path / "banco", [DemoAccount(CARD, "Cliente", "100.00", PINS[0])])
    try:
        with bank.client() as atm:
            assert atm.request({"op": "IDENTIFICAR", "tarjeta": CARD, "pin": PINS[0]})["ok"]
            assert atm.request({"op": "DEPOSITAR", "monto": "1.00", "id": "d1"})["ok"]
            assert atm.request({"op": "RETIRAR", "monto": "500.00", "id": "r1"})["error"] == "FONDOS_INSUFICIENTES"
    finally:
        assert bank.stop() == 0
    log = (bank.folder / "banco.log").read_text(encoding="utf-8")
    assert "IDENTIFICAR - -> ok" in log
    assert "RETIRAR 500.00 -> FONDOS_INSUFICIENTES" in log
    assert "DEPOSITAR" not in log
    journal = (bank.folder / "cuenta.diario").read_text(encoding="utf-8")
    assert re.search(r'"id":"(CAJERO-01/)?d1"', journal), "the journal has the deposit (its id kept per terminal)"

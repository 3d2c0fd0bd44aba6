"""The independent load generator (``bench/contract_load.py`` over ``devtools/contract_client.py``, written
from PROTOCOL.md alone) against the real server: every deposit it saw acknowledged is in ``cuenta.txt``
after a clean stop, to the cent.

This is what the bench's throughput figures rest on; if the server and a client that never saw its
code stopped agreeing on a single byte, this fails before any figure is published.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import contract_load
from devtools.bank_process import DemoAccount
from devtools.contract_client import TerminalKey
from tests.independent_load import run_independent_load

CARDS = [DemoAccount(f"40000000000000{i:02d}", f"Cliente {i}", "1000.00", f"{1000 + i}") for i in range(4)]


@pytest.mark.timeout(120)
def test_independent_load_generator_and_the_bank_agree_to_the_cent(tmp_path: Path):
    run_independent_load(tmp_path / "banco", CARDS, 1.0, "0.25")


def test_each_load_atm_needs_a_terminal_of_its_own():
    """Ids, limits and suspensions are per terminal: two load ATMs on one terminal would not be two ATMs."""
    key = TerminalKey("CARGA-001", 1, bytes(32))
    cards = [(a.tarjeta, a.pin) for a in CARDS[:2]]
    with pytest.raises(ValueError, match="mismo terminal"):
        contract_load.run("127.0.0.1", 1, [key, key], cards, 2, 0.0, 1.0)
    with pytest.raises(ValueError, match="una por cajero"):
        contract_load.run("127.0.0.1", 1, [key], cards, 2, 0.0, 1.0)

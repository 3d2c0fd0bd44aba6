"""Ledger + journal + lock, in one process: recovery, torn writes, damage."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bank_server.journal import Record
from bank_server.rules import Limits, decide_movement
from bank_server.store import LedgerLoadError, Store, journal_path_for, ledger_problems
from common.messages import RequestError
from tests.bank_fixture import DemoAccount, write_ledger

CARD = "1111111111111111"


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return write_ledger(tmp_path, [DemoAccount(CARD, "Ana", "100.00", "1234")])


def deposit(store: Store, amount: str, tx_id: str) -> Record:
    with store.locked() as state:
        record = decide_movement(state, "DEPOSITO", CARD, Decimal(amount), tx_id, "2026-11-23T10:00:00-06:00", Limits())
        assert isinstance(record, Record)
        store.commit(record)
    return record


def balance(ledger: Path) -> Decimal:
    store = Store.open(ledger, recover=True)
    try:
        return store.state.accounts[CARD].saldo
    finally:
        store.close()


def test_first_open_ties_ledger_and_journal(ledger: Path):
    Store.open(ledger, recover=True).close()
    first_line = ledger.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# cajero: libro=") and first_line.endswith(" diario=0")
    libro = first_line.split("libro=")[1].split()[0]
    assert journal_path_for(ledger).read_text().startswith(f"# cajero-diario libro={libro}")


def test_committed_records_survive_without_checkpoint(ledger: Path):
    store = Store.open(ledger, recover=True)
    before = ledger.read_bytes()
    deposit(store, "10.50", "a")
    deposit(store, "0.25", "b")
    assert ledger.read_bytes() == before, "a transaction must not rewrite cuenta.txt"
    store.close()  # no checkpoint: as after a crash
    assert balance(ledger) == Decimal("110.75")
    assert "diario=2" in ledger.read_text(encoding="utf-8"), "recovery checkpoints what it replayed"


@pytest.mark.parametrize("tail", ["half-a-record", "garbled-whole-line"])
def test_torn_or_garbled_last_line_is_cut_and_never_used(ledger: Path, tail: str):
    store = Store.open(ledger, recover=True)
    deposit(store, "1.00", "a")
    store.close()
    journal = journal_path_for(ledger)
    good = journal.read_bytes()
    torn = Record(2, "2026-11-23T10:00:00-06:00", "DEPOSITO", store.state.accounts[CARD], "b", Decimal("5")).encode()
    journal.write_bytes(good + (torn[: len(torn) // 2] if tail == "half-a-record" else b'deadbeef {"n": 2}\n'))
    assert balance(ledger) == Decimal("101.00")
    assert journal.read_bytes() == good


def test_damaged_committed_line_is_reported_not_used(ledger: Path):
    store = Store.open(ledger, recover=True)
    deposit(store, "1.00", "a")
    deposit(store, "2.00", "b")
    store.close()
    journal = journal_path_for(ledger)
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"1.00"', b'"9.00"')
    journal.write_bytes(b"\n".join(lines))
    ledger_before = ledger.read_bytes()
    with pytest.raises(LedgerLoadError) as caught:
        Store.open(ledger, recover=True)
    assert "cuenta.diario, línea 2" in str(caught.value)
    assert ledger.read_bytes() == ledger_before
    assert any("línea 2" in str(p) for p in ledger_problems(ledger))


def test_journal_of_another_ledger_is_refused(ledger: Path, tmp_path: Path):
    Store.open(ledger, recover=True).close()
    (tmp_path / "otro").mkdir()
    other = write_ledger(tmp_path / "otro", [DemoAccount(CARD, "Ana", "100.00", "1234")])
    journal_path_for(ledger).rename(journal_path_for(other))
    with pytest.raises(LedgerLoadError, match="otro archivo de cuentas"):
        Store.open(other, recover=True)


def test_checkpoint_makes_the_ledger_alone_the_whole_state(ledger: Path):
    store = Store.open(ledger, recover=True)
    deposit(store, "7.00", "a")
    store.checkpoint()
    store.close()
    journal_path_for(ledger).unlink()
    assert balance(ledger) == Decimal("107.00")
    # the ids are remembered only by the journal; the balance is the ledger's alone
    store = Store.open(ledger, recover=True)
    deposit(store, "1.00", "b")
    store.close()
    assert balance(ledger) == Decimal("108.00")


def test_two_stores_see_each_others_commits(ledger: Path):
    one = Store.open(ledger, recover=True)
    two = Store.open(ledger, recover=False)
    deposit(one, "5.00", "a")
    deposit(two, "6.00", "b")
    assert one.refresh().accounts[CARD].saldo == Decimal("111.00")
    with two.locked() as state:
        assert state.applied["a"].saldo == Decimal("105.00")
    one.close()
    two.close()


def test_lazy_handler_decodes_only_its_card_and_still_knows_every_id(tmp_path: Path):
    other = "2222222222222222"
    ledger = write_ledger(
        tmp_path, [DemoAccount(CARD, "Ana", "100.00", "1234"), DemoAccount(other, "Beto", "50.00", "1")]
    )
    writer = Store.open(ledger, recover=True)
    handler = Store.open(ledger, recover=False)
    handler.state.eager = False
    fecha = "2026-11-23T10:00:00-06:00"

    def move(store: Store, card: str, amount: str, tx_id: str) -> Record:
        with store.locked() as state:
            outcome = decide_movement(state, "DEPOSITO", card, Decimal(amount), tx_id, fecha, Limits())
            assert isinstance(outcome, Record)
            store.commit(outcome)
        return outcome

    move(writer, other, "1.00", "before-bind")
    move(writer, CARD, "2.00", "mine-before-bind")
    handler.refresh()
    assert handler.state.deferred, "before binding, records wait undecoded"
    handler.state.bind(CARD)
    assert handler.state.account(CARD).saldo == Decimal("102.00")
    move(writer, other, "3.00", "after-bind")
    move(writer, CARD, "4.00", "mine-after-bind")
    assert move(handler, CARD, "5.00", "handler").cuenta.saldo == Decimal("111.00")
    for foreign in ("before-bind", "after-bind"):
        with pytest.raises(RequestError) as refused, handler.locked() as state:
            decide_movement(state, "DEPOSITO", CARD, Decimal("1.00"), foreign, fecha, Limits())
        assert refused.value.code == "ID_REPETIDO"
    with handler.locked() as state:
        assert decide_movement(
            state, "DEPOSITO", CARD, Decimal("4.00"), "mine-after-bind", fecha, Limits()
        ).saldo == Decimal("106.00")
    assert writer.refresh().accounts[other].saldo == Decimal("54.00")
    writer.close()
    handler.close()


def test_start_up_sets_history_aside_until_its_card_is_asked_for(ledger: Path):
    store = Store.open(ledger, recover=True)
    deposit(store, "1.00", "old")
    store.checkpoint()  # "old" is now history: already in cuenta.txt
    store.close()
    store = Store.open(ledger, recover=True)
    state = store.state
    assert "old" not in state.applied and state.owner_of("old") == CARD, "indexed, not decoded"
    with store.locked() as locked_state:
        again = decide_movement(
            locked_state, "DEPOSITO", CARD, Decimal("1.00"), "old", "2026-11-23T10:00:00-06:00", Limits()
        )
    assert not isinstance(again, Record) and again.saldo == Decimal("101.00"), "a retry of history is a repeat"
    assert [r.id for r in state.movements[CARD]] == ["old"]
    store.close()

"""Ledger + journal + lock, in one process: recovery, torn writes, damage."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import portalocker
import pytest

from bank_server import journal as journal_module
from bank_server import store as store_module
from bank_server.clock import now_iso
from bank_server.journal import JournalError, Record
from bank_server.rules import Limits, decide_movement
from bank_server.store import LedgerLoadError, LedgerLock, Store, StoreMode, journal_path_for, ledger_problems
from common.messages import RequestError
from devtools.bank_process import DemoAccount, write_ledger

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
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    try:
        return store.state.accounts[CARD].saldo
    finally:
        store.close()


def test_first_open_ties_ledger_and_journal(ledger: Path):
    Store.open(ledger, mode=StoreMode.RECOVER).close()
    first_line = ledger.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# cajero: libro=") and first_line.endswith(" diario=0")
    libro = first_line.split("libro=")[1].split()[0]
    assert journal_path_for(ledger).read_text().startswith(f"# cajero-diario libro={libro}")


def test_committed_records_survive_without_checkpoint(ledger: Path):
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    before = ledger.read_bytes()
    deposit(store, "10.50", "a")
    deposit(store, "0.25", "b")
    assert ledger.read_bytes() == before, "a transaction must not rewrite cuenta.txt"
    store.close()  # no checkpoint: as after a crash
    assert balance(ledger) == Decimal("110.75")
    assert "diario=2" in ledger.read_text(encoding="utf-8"), "recovery checkpoints what it replayed"


@pytest.mark.parametrize("tail", ["half-a-record", "garbled-whole-line"])
def test_torn_or_garbled_last_line_is_cut_and_never_used(ledger: Path, tail: str):
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    deposit(store, "1.00", "a")
    store.close()
    journal = journal_path_for(ledger)
    good = journal.read_bytes()
    torn = Record(2, "2026-11-23T10:00:00-06:00", "DEPOSITO", store.state.accounts[CARD], "b", Decimal("5")).encode()
    journal.write_bytes(good + (torn[: len(torn) // 2] if tail == "half-a-record" else b'deadbeef {"n": 2}\n'))
    assert balance(ledger) == Decimal("101.00")
    assert journal.read_bytes() == good


def test_damaged_committed_line_is_reported_not_used(ledger: Path):
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    deposit(store, "1.00", "a")
    deposit(store, "2.00", "b")
    store.close()
    journal = journal_path_for(ledger)
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"1.00"', b'"9.00"')
    journal.write_bytes(b"\n".join(lines))
    ledger_before = ledger.read_bytes()
    with pytest.raises(LedgerLoadError) as caught:
        Store.open(ledger, mode=StoreMode.RECOVER)
    assert "cuenta.diario, línea 2" in str(caught.value)
    assert ledger.read_bytes() == ledger_before
    assert any("línea 2" in str(p) for p in ledger_problems(ledger))


def test_journal_of_another_ledger_is_refused(ledger: Path, tmp_path: Path):
    Store.open(ledger, mode=StoreMode.RECOVER).close()
    (tmp_path / "otro").mkdir()
    other = write_ledger(tmp_path / "otro", [DemoAccount(CARD, "Ana", "100.00", "1234")])
    journal_path_for(ledger).rename(journal_path_for(other))
    with pytest.raises(LedgerLoadError, match="otro archivo de cuentas"):
        Store.open(other, mode=StoreMode.RECOVER)


def test_checkpoint_makes_the_ledger_alone_the_whole_state(ledger: Path):
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    deposit(store, "7.00", "a")
    store.checkpoint()
    store.close()
    journal_path_for(ledger).unlink()
    assert balance(ledger) == Decimal("107.00")
    # the ids are remembered only by the journal; the balance is the ledger's alone
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    deposit(store, "1.00", "b")
    store.close()
    assert balance(ledger) == Decimal("108.00")


def test_two_stores_see_each_others_commits(ledger: Path):
    one = Store.open(ledger, mode=StoreMode.RECOVER)
    two = Store.open(ledger, mode=StoreMode.ATTACH)
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
    writer = Store.open(ledger, mode=StoreMode.RECOVER)
    handler = Store.open(ledger, mode=StoreMode.HANDLER)
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
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    deposit(store, "1.00", "old")
    store.checkpoint()  # "old" is now history: already in cuenta.txt
    store.close()
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    state = store.state
    assert "old" not in state.applied and state.owner_of("old") == CARD, "indexed, not decoded"
    with store.locked() as locked_state:
        again = decide_movement(
            locked_state, "DEPOSITO", CARD, Decimal("1.00"), "old", "2026-11-23T10:00:00-06:00", Limits()
        )
    assert not isinstance(again, Record) and again.saldo == Decimal("101.00"), "a retry of history is a repeat"
    assert [r.id for r in state.movements[CARD]] == ["old"]
    store.close()


def test_a_line_still_being_written_is_left_for_later_not_cut(ledger: Path):
    """Without the lock, a line with no newline yet is someone's write in progress: wait for the rest."""
    writer = Store.open(ledger, mode=StoreMode.RECOVER)
    reader = Store.open(ledger, mode=StoreMode.ATTACH)
    line = Record(
        1,
        "2026-11-23T10:00:00-06:00",
        "DEPOSITO",
        writer.state.accounts[CARD]._replace(saldo=Decimal("101.00")),
        "x",
        Decimal("1.00"),
    ).encode()
    journal = journal_path_for(ledger)
    with open(journal, "ab") as out:
        out.write(line[:50])
    assert reader.refresh().accounts[CARD].saldo == Decimal("100.00")
    with open(journal, "ab") as out:
        out.write(line[50:])
    assert reader.refresh().accounts[CARD].saldo == Decimal("101.00")
    assert reader.state.last_n == 1
    writer.close()
    reader.close()


def test_catching_up_on_megabytes_of_records_reads_them_all(ledger: Path):
    """More than one read's worth of journal (the reader takes 1 MiB at a time) arrives whole and in order."""
    writer = Store.open(ledger, mode=StoreMode.RECOVER)
    reader = Store.open(ledger, mode=StoreMode.ATTACH)
    for i in range(3000):  # about 1.2 MB of journal
        deposit(writer, "0.01", f"t{i}")
    state = reader.refresh()
    assert state.last_n == 3000
    assert state.accounts[CARD].saldo == Decimal("130.00")
    assert "t0" in state.applied and "t2999" in state.applied
    writer.close()
    reader.close()


@pytest.mark.parametrize("how", ["deleted", "renamed-over"])
def test_a_journal_deleted_or_replaced_under_a_running_store_stops_its_writes(ledger: Path, how: str):
    store = Store.open(ledger, mode=StoreMode.RECOVER)
    deposit(store, "1.00", "a")
    journal = journal_path_for(ledger)
    if how == "deleted":
        journal.unlink()
    else:
        copy = journal.with_name("copia.diario")
        copy.write_bytes(journal.read_bytes())
        copy.replace(journal)
    with pytest.raises(JournalError, match="reemplazado"):
        deposit(store, "1.00", "b")
    store.close()


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset is POSIX only")
@pytest.mark.parametrize("zone", ["UTC", "America/Mexico_City", "Asia/Kolkata", "America/St_Johns", "Europe/Madrid"])
def test_now_iso_is_isoformat_with_the_local_offset(monkeypatch: pytest.MonkeyPatch, zone: str):
    """The fast ``now_iso`` writes exactly what ``datetime.isoformat`` would, half-hour offsets included."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        for _ in range(5):  # retry if a second boundary falls between the two readings
            before = datetime.now().astimezone().isoformat(timespec="seconds")
            ours = now_iso()
            if before == datetime.now().astimezone().isoformat(timespec="seconds"):
                break
        assert ours == before
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("path", ["flock", "portalocker"])
def test_ledger_lock_excludes_every_other_handle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str):
    """The direct ``flock`` (POSIX) and the portalocker path (taken on Windows) both exclude another open."""
    if path == "portalocker":
        monkeypatch.setattr(store_module, "fcntl", None)
    lock = LedgerLock(tmp_path / "cuenta.lock")
    with lock, open(tmp_path / "cuenta.lock", "a+b") as other, pytest.raises(portalocker.AlreadyLocked):
        portalocker.lock(other, portalocker.LOCK_EX | portalocker.LOCK_NB)
    with open(tmp_path / "cuenta.lock", "a+b") as other:
        portalocker.lock(other, portalocker.LOCK_EX | portalocker.LOCK_NB)  # released on exit
        portalocker.unlock(other)


def two_card_ledger(tmp_path: Path) -> tuple[Path, str]:
    other = "2222222222222222"
    return write_ledger(
        tmp_path, [DemoAccount(CARD, "Ana", "100.00", "1234"), DemoAccount(other, "Beto", "50.00", "1")]
    ), other


def foreign_line(store: Store, card: str, n: int, tx_id: str) -> bytes:
    account = store.refresh().accounts[card]
    return Record(n, "2026-11-23T10:00:00-06:00", "DEPOSITO", account, tx_id, Decimal("1.00")).encode()


def test_a_bound_handler_reads_other_cards_records_without_parsing_each_line(tmp_path: Path, monkeypatch):
    """Other cards' records reach a handler in bulk (one CRC check per read, not one per line), and still
    give it every id and the last number; a line still being written is left for later."""
    ledger, other = two_card_ledger(tmp_path)
    writer = Store.open(ledger, mode=StoreMode.RECOVER)
    handler = Store.open(ledger, mode=StoreMode.HANDLER)
    handler.state.bind(CARD)
    for i in range(20):
        with writer.locked() as state:
            record = decide_movement(
                state, "DEPOSITO", other, Decimal("1.00"), f"o{i}", "2026-11-23T10:00:00-06:00", Limits()
            )
            writer.commit(record)
    with open(journal_path_for(ledger), "ab") as out:
        out.write(foreign_line(writer, other, 21, "half")[:40])
    scanned: list[bytes] = []
    real_scan_line = journal_module.scan_line
    monkeypatch.setattr(
        journal_module, "scan_line", lambda line, number: scanned.append(line) or real_scan_line(line, number)
    )
    state = handler.refresh()
    assert len(scanned) == 1, "only the last complete line is checked one by one"
    assert state.last_n == 20 and state.owner_of("o0") == other and state.owner_of("o19") == other
    assert state.owner_of("half") is None
    deposit(handler, "1.00", "mine")
    assert handler.state.accounts[CARD].saldo == Decimal("101.00")
    assert "half" not in journal_path_for(ledger).read_text(encoding="utf-8"), "the torn tail was cut under the lock"
    writer.close()
    handler.close()


def test_a_bound_handler_still_refuses_a_record_number_that_goes_back(tmp_path: Path):
    ledger, other = two_card_ledger(tmp_path)
    writer = Store.open(ledger, mode=StoreMode.RECOVER)
    handler = Store.open(ledger, mode=StoreMode.HANDLER)
    handler.state.bind(CARD)
    deposit(writer, "1.00", "a")
    handler.refresh()
    with open(journal_path_for(ledger), "ab") as out:
        out.write(foreign_line(writer, other, 1, "b"))  # number 1 again
    with pytest.raises(JournalError, match="fuera de orden"):
        handler.refresh()
    writer.close()
    handler.close()

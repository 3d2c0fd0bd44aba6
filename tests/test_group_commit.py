"""Group commit: handlers share fdatasync calls, and no record is answered before a sync that covers it.

The unit tests drive ``SyncBoard`` with threads standing in for handler processes (each with its own
open file description, so their ``flock`` calls exclude each other as processes' do). The last test
runs the real server under concurrent ATMs and reads, from its detailed log, that syncs were shared.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bank_server.group_commit import SyncBoard, sync_lock_path_for
from bank_server.journal import decode_record
from devtools.bank_process import DemoAccount
from tests.independent_load import run_independent_load

fcntl = pytest.importorskip("fcntl", reason="group commit needs fcntl.flock (POSIX)")


def board_pair(tmp_path: Path) -> tuple[SyncBoard, SyncBoard]:
    """Two handles on one board, as two handler processes hold it."""
    shared = SyncBoard.create(multiprocessing.get_context(), tmp_path / "cuenta.txt")
    return shared, SyncBoard(shared.words, sync_lock_path_for(tmp_path / "cuenta.txt"))


def test_a_record_already_covered_is_not_synced_again(tmp_path: Path):
    one, two = board_pair(tmp_path)
    syncs: list[str] = []
    one.wrote(100)
    two.wrote(250)
    two.make_durable(250, lambda: syncs.append("two"))
    one.make_durable(100, lambda: syncs.append("one"))
    assert syncs == ["two"], "the sync for 250 began after 100 was written: it covers it"
    assert (one.own_syncs, one.shared_syncs, two.own_syncs) == (0, 1, 1)


def test_the_leader_syncs_for_everything_written_before_it_began(tmp_path: Path):
    one, two = board_pair(tmp_path)
    one.wrote(100)
    two.wrote(250)  # written after one's record, before one's sync
    one.make_durable(100, lambda: None)
    calls: list[int] = []
    two.make_durable(250, lambda: calls.append(1))
    assert calls == [], "one's sync read 'written' (250) before it began"


@pytest.mark.parametrize(
    ("written_before_the_sync", "expected"),
    [
        (True, ["one synced"]),  # one's sync began after 250 was written: it covers it
        (False, ["one synced", "two syncs"]),  # 250 came during one's sync: it needs a sync of its own
    ],
    ids=["covered-by-the-running-sync", "written-during-it"],
)
def test_a_follower_waits_for_the_running_sync_then_syncs_only_if_not_covered(
    tmp_path: Path, written_before_the_sync: bool, expected: list[str]
):
    one, two = board_pair(tmp_path)
    one.wrote(100)
    if written_before_the_sync:
        two.wrote(250)
    in_sync, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_sync() -> None:
        in_sync.set()
        release.wait(5)
        order.append("one synced")

    leader = threading.Thread(target=one.make_durable, args=(100, slow_sync))
    leader.start()
    assert in_sync.wait(5)
    if not written_before_the_sync:
        two.wrote(250)
    follower = threading.Thread(target=two.make_durable, args=(250, lambda: order.append("two syncs")))
    follower.start()
    time.sleep(0.2)
    assert order == [], "the follower waits for the running sync instead of starting its own"
    release.set()
    leader.join(5)
    follower.join(5)
    assert order == expected
    assert two.own_syncs == len(expected) - 1


def test_a_follower_of_a_leader_that_died_mid_sync_syncs_for_itself(tmp_path: Path):
    """A killed leader's flock is released by the kernel and it never published: the waiter must lead."""
    one, _two = board_pair(tmp_path)
    one.wrote(100)
    dead_leader = open(sync_lock_path_for(tmp_path / "cuenta.txt"), "a+b")  # noqa: SIM115 - closed below
    fcntl.flock(dead_leader.fileno(), fcntl.LOCK_EX)
    synced = threading.Event()
    follower = threading.Thread(target=one.make_durable, args=(100, synced.set))
    follower.start()
    time.sleep(0.2)
    assert not synced.is_set()
    dead_leader.close()  # as the kernel does when the process dies
    follower.join(5)
    assert synced.is_set() and one.own_syncs == 1


@pytest.mark.timeout(120)
def test_concurrent_atms_share_syncs_and_every_deposit_is_in_the_ledger(tmp_path: Path):
    accounts = [DemoAccount(f"41000000000000{i:02d}", f"Cliente {i}", "100.00", f"{2000 + i}") for i in range(12)]
    bank, report = run_independent_load(tmp_path / "banco", accounts, 2.0, "1.00", ("--detallado",))
    own = shared = 0
    for line in (bank.folder / "banco.log").read_text(encoding="utf-8").splitlines():
        if "fdatasync propios" in line:
            words = line.split()
            own, shared = own + int(words[-5].rstrip(",")), shared + int(words[-1])
    deposits = sum(int(Decimal(v)) for v in report["deposited"].values())
    # besides the deposits, each log-in commits records of its own (ATM2: the PIN attempt is counted, synced,
    # before it is checked); so the syncs are counted against every record in the journal
    records = [decode_record(line) for line in (bank.folder / "cuenta.diario").read_bytes().splitlines()[1:]]
    assert sum(r.tipo == "DEPOSITO" for r in records) == deposits
    assert own + shared == len(records), "every record was made durable once, one way or the other"
    assert shared > 0, "with 12 ATMs writing at once, some records ride on another handler's sync"

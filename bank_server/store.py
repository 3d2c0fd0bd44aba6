"""The bank's files, shared by many processes: ledger, journal, lock.

``cuenta.txt`` is the checkpoint; ``cuenta.diario`` holds every change
since (and the recent history); ``cuenta.lock`` is the cross-process lock
(portalocker: ``flock`` on POSIX, ``LockFileEx`` on Windows) that every
writer holds while it reads the journal's tail, decides and appends.

How a process opens the store is its ``StoreMode``: the server's start-up
and administration recover, a handler serves one card.

The write path of one transaction, in order:
1. read the records other processes appended since we last looked, then
   take the lock and read the few appended meanwhile;
2. decide with the pure rules;
3. append the record in one ``write``;
4. release the lock, then make the journal durable up to our record:
   our own ``fdatasync``, or one another handler began after our write
   (``group_commit``); from here it survives any crash;
5. only then answer the ATM.

A kill before 3 completes leaves at most a torn last line, never
acknowledged, which the next writer cuts off. ``cuenta.txt`` is replaced
only by ``checkpoint`` (write a temporary file, fsync, ``os.replace``,
fsync the folder), so it is always either the old or the new whole file.
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from bank_server import faults, paths
from bank_server.file_lock import FileLock
from bank_server.group_commit import SyncBoard
from bank_server.journal import (
    Journal,
    JournalError,
    RawRecord,
    Record,
    create_journal,
    decode_scanned,
    read_header,
    write_atomically,
)
from bank_server.ledger import Ledger, LedgerError, index_ledger, load_ledger, render_ledger
from bank_server.state import BankState


class StoreMode(enum.Enum):
    """How a process opens the bank's files (``Store.open``)."""

    RECOVER = "recover"
    """The server's start-up and administration: crash recovery under the lock. The ledger is parsed
    whole (any problem refuses it), ledger and journal are tied together if needed, a torn tail is cut,
    and what the journal holds beyond ``cuenta.txt`` is checkpointed. Decodes eagerly (see ``BankState``)."""
    ATTACH = "attach"
    """Another process on a bank already recovered: no lock, no recovery, the ledger indexed by card
    (parsed on use). Decodes eagerly."""
    HANDLER = "handler"
    """One ATM's handler: ``ATTACH``, then one card per connection, so other cards' records are only
    indexed. A handler started by ``fork`` switches the acceptor's store instead (``become_handler``)."""
    VERIFY = "verify"
    """``verificar``: read everything strictly, without the lock, and write nothing."""


class LedgerLoadError(Exception):
    """The ledger or its journal cannot be used; ``problems`` names files and lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def journal_path_for(ledger_path: Path) -> Path:
    return paths.journal_path(ledger_path)


def lock_path_for(ledger_path: Path) -> Path:
    """``cuenta.bloqueos/cuenta.lock``, its private folder made on demand (``bank_server.paths``)."""
    return paths.ledger_lock_path(ledger_path)


LedgerLock = FileLock  # the ledger's lock: ``cuenta.bloqueos/cuenta.lock``


class Store:
    """One process's view of the bank: state in memory, kept current from the journal."""

    def __init__(self, ledger_path: Path, ledger: Ledger, state: BankState, journal: Journal) -> None:
        self.ledger_path = ledger_path
        self._ledger = ledger
        self.state = state
        self._journal = journal
        self._journal_pid = os.getpid()
        self._lock = LedgerLock(lock_path_for(ledger_path))
        self._written_to: int | None = None
        self.sync_board: SyncBoard | None = None  # a handler's: syncs shared with the others (group_commit)

    # -- opening -------------------------------------------------------------------
    @property
    def notices(self) -> list[LedgerError]:
        """What the ledger's parse found worth telling but not refusing (names with control characters)."""
        return list(self._ledger.notices)

    @classmethod
    def open(cls, ledger_path: Path, *, mode: StoreMode) -> Store:
        """Load the bank's state as ``mode`` says (see ``StoreMode``)."""
        ledger_path = Path(ledger_path)
        if mode is StoreMode.VERIFY:
            return cls._load(ledger_path, lock_held=False)
        if mode is not StoreMode.RECOVER:
            store = cls._load(ledger_path, lock_held=False, lazy=True)
            return store.become_handler() if mode is StoreMode.HANDLER else store
        with LedgerLock(lock_path_for(ledger_path)):
            store = cls._load(ledger_path, lock_held=True)
            if store._ledger.libro is None or store.state.last_n > store._ledger.diario:
                store._write_checkpoint()
            return store

    def become_handler(self) -> Store:
        """From now on serve one ATM (``StoreMode.HANDLER``): also the acceptor's store, inherited by ``fork``."""
        self.state.eager = False
        return self

    @classmethod
    def _load(cls, ledger_path: Path, *, lock_held: bool, lazy: bool = False) -> Store:
        if lazy:
            ledger = index_ledger(ledger_path.read_bytes())
        else:
            ledger, errors = load_ledger(ledger_path)
            if errors:
                raise LedgerLoadError([str(e) for e in errors])
        journal_path = journal_path_for(ledger_path)
        if not journal_path.exists():
            if not lock_held:
                raise LedgerLoadError([f"{journal_path}: no existe (el servidor lo crea al arrancar)"])
            if ledger.libro is None:
                ledger.libro = uuid.uuid4().hex
                write_atomically(ledger_path, render_ledger(ledger, ledger.accounts, ledger.libro, 0).encode("utf-8"))
            create_journal(journal_path, ledger.libro)
        try:
            libro = read_header(journal_path)
        except JournalError as exc:
            raise LedgerLoadError([str(exc)]) from None
        if ledger.libro != libro:
            raise LedgerLoadError(
                [
                    f"{journal_path}: el diario pertenece a otro archivo de cuentas (libro {libro}), "
                    f"no a {ledger_path}. Si reemplazó {ledger_path.name} a propósito, mueva el diario a otra carpeta."
                ]
            )
        journal = Journal(journal_path)
        accounts = ledger.accounts if lazy else dict(ledger.accounts)
        state = BankState(accounts, ledger.diario, partial(decode_raw, journal_path))
        store = cls(ledger_path, ledger, state, journal)
        try:
            store._catch_up(locked=lock_held)
        except JournalError as exc:
            journal.close()
            raise LedgerLoadError([str(exc)]) from None
        return store

    def close(self) -> None:
        self._journal.close()

    # -- reading and writing ---------------------------------------------------------
    def _own_journal(self) -> Journal:
        """Reopen the journal after ``fork``: a shared read offset would mix two processes' reads."""
        if self._journal_pid != os.getpid():
            fresh = Journal(self._journal.path)
            fresh.offset, fresh.lines = self._journal.offset, self._journal.lines
            self._journal, self._journal_pid = fresh, os.getpid()
        return self._journal

    def _catch_up(self, *, locked: bool) -> None:
        journal = self._own_journal()
        focus = None if self.state.eager else self.state.focus
        scan = journal.read_new(locked=locked, focus=focus, after_n=self.state.last_n)
        for raw in scan.records:
            if raw.n <= self.state.last_n and raw.n > self.state.checkpoint_n:
                raise JournalError(journal.path, raw.number, f"registro {raw.n} fuera de orden")
            self.state.take(raw)
        if scan.last_n:
            self.state.index_others(scan.others, scan.last_n)

    def refresh(self) -> BankState:
        """Catch up without the lock: enough for reads (balance, movements, PIN hash)."""
        self._catch_up(locked=False)
        return self.state

    @contextmanager
    def locked(self) -> Iterator[BankState]:
        """Hold the ledger lock with the state brought fully up to date.

        Records committed inside are durable when the block exits: the
        lock is released first and then the journal is synced, so the
        disk's latency is paid outside the lock; with a ``sync_board`` the
        sync may be another handler's that already covers our record.
        """
        self._written_to = None
        self._catch_up(locked=False)  # most of the reading, before the lock
        try:
            with self._lock:
                journal = self._own_journal()
                if not journal.same_file_on_disk():
                    raise JournalError(journal.path, 0, "el diario fue reemplazado mientras este proceso lo usaba")
                self._catch_up(locked=True)
                yield self.state
        finally:
            if self._written_to is not None:
                faults.crash_point("antes_de_sincronizar")
                if self.sync_board is None:
                    self._journal.sync()
                else:
                    self.sync_board.make_durable(self._written_to, self._journal.sync)
                self._written_to = None

    def commit(self, record: Record) -> None:
        """Append ``record``; call inside ``locked()``, which makes it durable on exit."""
        self._written_to = self._own_journal().write(record)
        if self.sync_board is not None:
            self.sync_board.wrote(self._written_to)
        self.state.apply(record)

    def checkpoint(self) -> None:
        """Rewrite ``cuenta.txt`` with every applied change (clean stop, administration)."""
        with self.locked():
            self._write_checkpoint()

    def snapshot(self) -> bool:
        """Checkpoint *without* the lock, for the acceptor's periodic one: True if it wrote.

        Safe because a checkpoint is a consistent picture at some record
        ``n`` (this process has applied exactly the records up to ``n``)
        and says so in its ``diario`` mark: if an older picture replaces a
        newer one, recovery replays a little more, nothing else. It keeps
        the replay after a crash short without ever stalling the handlers.
        """
        self.refresh()
        if self.state.last_n == self.state.checkpoint_n:
            return False
        self._write_checkpoint(tmp_suffix=f".{os.getpid()}.tmp")
        return True

    def _write_checkpoint(self, tmp_suffix: str = ".tmp") -> None:
        if not self._ledger.layout and self._ledger.accounts:  # opened lazily: take the file's comments and order
            full, errors = load_ledger(self.ledger_path)
            if errors:
                raise LedgerLoadError([str(e) for e in errors])
            self._ledger.layout = full.layout
        libro = self._ledger.libro or self._journal.libro
        text = render_ledger(self._ledger, self.state.accounts, libro, self.state.last_n)
        write_atomically(self.ledger_path, text.encode("utf-8"), tmp_suffix)
        self._ledger.libro, self._ledger.diario = libro, self.state.last_n
        self.state.checkpoint_n = self.state.last_n


def decode_raw(journal_path: Path, raw: RawRecord) -> Record:
    try:
        return decode_scanned(raw)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise JournalError(journal_path, raw.number, f"registro dañado: {exc}") from None


def ledger_problems(ledger_path: Path) -> list[LedgerError | str]:
    """Everything wrong with a ledger and its journal, for ``verificar`` (reads only)."""
    _ledger, errors = load_ledger(ledger_path)
    problems: list[LedgerError | str] = list(errors)
    if errors:
        return problems
    journal_path = journal_path_for(ledger_path)
    if journal_path.exists():
        try:
            Store.open(ledger_path, mode=StoreMode.VERIFY).close()
        except LedgerLoadError as exc:
            problems.extend(exc.problems)
    return problems

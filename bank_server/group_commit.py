"""Handlers share their ``fdatasync`` calls: group commit across processes.

Why: one ``fdatasync`` of the journal makes durable every record whose
``write`` had finished when the call began, whoever wrote it. On this kind
of machine (a virtual disk) each call costs about 180 µs of CPU in the
kernel, the largest single cost of a deposit. So one handler, the
*leader*, syncs for every record written so far, and the handlers whose
records it covers wait for it instead of paying for a sync of their own.

The shared words (a ``RawArray`` from the acceptor, inherited under
``fork``, passed to ``spawn`` children):

- ``written``: the end offset of the newest record, set by its writer
  while it still holds the ledger lock (so only one process writes it at
  a time, and only after the record is complete).
- ``durable``: an end offset that a finished ``fdatasync`` covered: the
  leader read ``written`` *before* calling it, so every record up to there
  was complete when the call began.

And a file lock, ``cuenta.sincro.lock``: the leader holds it exclusively
for the length of its sync; a follower waits for that sync by asking for it
shared, which the kernel grants when the leader is done (or dead: a killed
leader's lock is released with its process, and a follower then leads).

A record ending at ``end`` is answered only once ``durable >= end``. Each
word is written whole (aligned 8 bytes) and every value ever written is
true, so a race between two leaders can at worst cost a redundant sync,
never a record. Offsets from before a torn tail was cut are ends of
complete records, all before the cut, so they stay true. Where there is
no ``fcntl`` (Windows) and in processes without a board (administration,
single-process tests) every writer simply syncs its own record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from bank_server import paths

try:
    import fcntl
except ImportError:  # Windows: no group commit, each writer syncs
    fcntl = None  # type: ignore[assignment]

_WRITTEN, _DURABLE = 0, 1
MAX_ROUNDS = 50  # followers re-check after each sync they waited for; then they sync themselves


def sync_lock_path_for(ledger_path: Path) -> Path:
    """``cuenta.bloqueos/cuenta.sincro.lock``, its private folder made on demand (``bank_server.paths``)."""
    return paths.sync_lock_path(ledger_path)


class SyncBoard:
    """Where handlers publish what is written and what is durable (see the module docstring)."""

    def __init__(self, words: Any, lock_path: Path) -> None:
        self._words = words
        self._lock_path = lock_path
        self._lock: BinaryIO | None = None  # opened in the process that uses it (never shared across fork)
        self.own_syncs = 0  # this process's counts, for the log and the bench
        self.shared_syncs = 0

    @classmethod
    def create(cls, ctx: Any, ledger_path: Path) -> SyncBoard:
        return cls(ctx.RawArray("q", 2), sync_lock_path_for(ledger_path))

    @property
    def words(self) -> Any:
        return self._words

    @staticmethod
    def available() -> bool:
        return fcntl is not None

    def wrote(self, end: int) -> None:
        """Call with the ledger lock held, right after appending a record that ends at ``end``."""
        self._words[_WRITTEN] = end

    def make_durable(self, end: int, sync: Callable[[], None]) -> None:
        """Return once every record up to ``end`` is on disk: by someone's sync, or by ours."""
        words = self._words
        if words[_DURABLE] >= end:
            self.shared_syncs += 1
            return
        if self._lock is None:
            self._lock = open(self._lock_path, "a+b")  # noqa: SIM115 - lives as long as the process
        fd = self._lock.fileno()
        for _ in range(MAX_ROUNDS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a sync is running: wait for it, then look again
                fcntl.flock(fd, fcntl.LOCK_SH)
                fcntl.flock(fd, fcntl.LOCK_UN)
                if words[_DURABLE] >= end:
                    self.shared_syncs += 1
                    return
                continue
            try:  # we lead: one sync for everything written so far
                if words[_DURABLE] >= end:
                    self.shared_syncs += 1
                    return
                target = max(words[_WRITTEN], end)
                sync()
                self.own_syncs += 1
                if words[_DURABLE] < target:
                    words[_DURABLE] = target
                return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        sync()
        self.own_syncs += 1

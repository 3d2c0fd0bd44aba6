"""Group commit across processes: one ``fdatasync`` for every record waiting.

A handler writes its journal record under the ledger lock, releases the
lock, and only then makes the record durable here, before answering. The
shared file ``cuenta.sync`` holds the journal offset known to be on disk.
Under its own small lock, a process whose record is already below that
offset returns at once (someone else's sync covered it); otherwise it
syncs the journal, which covers every record written so far by anyone,
and raises the offset. While one process waits for the disk, the others
keep deciding and writing under the ledger lock, and then share the next
sync: the disk's one-sync-per-transaction ceiling stops being the
bank's ceiling.

The stored offset may only ever be *lower* than the truth (that costs an
extra sync, never a lost transaction): it is reset at start-up and
lowered when a torn tail is cut off. Because it only ever overstates
nothing, a process may read it without the lock to learn that its record
is already on disk; only a process that must sync takes the lock.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import BinaryIO

import portalocker

_OFFSET = struct.Struct("<Q")


def sync_fd(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


class GroupSync:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._pid = -1
        self._lock: BinaryIO | None = None
        self._file: BinaryIO | None = None
        self._map: mmap.mmap | None = None

    def _open(self) -> tuple[BinaryIO, mmap.mmap]:
        """Per process (a handle inherited through fork would share the lock instead of excluding)."""
        if self._pid != os.getpid() or self._lock is None or self._map is None:
            self._lock = open(self._lock_path, "a+b")  # noqa: SIM115 - kept for the process's life
            handle = open(self.path, "a+b")  # noqa: SIM115
            if os.fstat(handle.fileno()).st_size < _OFFSET.size:
                handle.write(b"\0" * _OFFSET.size)
                handle.flush()
            handle.close()
            self._file = open(self.path, "r+b")  # noqa: SIM115
            self._map = mmap.mmap(self._file.fileno(), _OFFSET.size)
            self._pid = os.getpid()
        return self._lock, self._map

    def wait_durable(self, fd: int, offset: int) -> None:
        """Return once the journal behind ``fd`` is on disk up to ``offset``."""
        lock, shared = self._open()
        if _OFFSET.unpack_from(shared)[0] >= offset:
            return  # another process's sync already covered it: no lock needed to see that
        portalocker.lock(lock, portalocker.LOCK_EX)
        try:
            if _OFFSET.unpack_from(shared)[0] >= offset:
                return
            size = os.fstat(fd).st_size
            sync_fd(fd)
            _OFFSET.pack_into(shared, 0, size)
        finally:
            portalocker.unlock(lock)

    def lower_to(self, offset: int) -> None:
        """The journal was cut (or recreated): nothing beyond ``offset`` is known durable."""
        lock, shared = self._open()
        portalocker.lock(lock, portalocker.LOCK_EX)
        try:
            if _OFFSET.unpack_from(shared)[0] > offset:
                _OFFSET.pack_into(shared, 0, offset)
        finally:
            portalocker.unlock(lock)

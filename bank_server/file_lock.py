"""An exclusive lock on a file, shared by the bank's processes and dying with its holder.

One class for the ledger lock (``store.py``) and the log's counters lock
(``logs.py``), which had grown as two copies of the same code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import portalocker

try:
    import fcntl
except ImportError:  # Windows: portalocker's LockFileEx
    fcntl = None  # type: ignore[assignment]


class FileLock:
    """The cross-process lock. Each process opens its own handle (a handle inherited
    through ``fork`` would share the lock with the parent instead of excluding it).

    Every transaction takes it, so on POSIX it calls ``flock`` directly:
    portalocker's flag checks cost 12 µs per lock and unlock against 1 µs
    for the two system calls, and portalocker does exactly this ``flock``
    underneath. Elsewhere (Windows: ``LockFileEx``) portalocker does the work.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None
        self._pid = -1

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            self._handle = open(self.path, "a+b")
            self._pid = os.getpid()
        assert self._handle is not None
        if fcntl is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX)
        else:
            portalocker.lock(self._handle, portalocker.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        assert self._handle is not None
        if fcntl is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        else:
            portalocker.unlock(self._handle)

    def close(self) -> None:
        """Close this process's handle (the lock, if held, goes with it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

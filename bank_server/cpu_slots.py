"""A bound on the scrypt work of the whole bank: at most one PIN check per core at a time.

Why: a PIN check costs 30-60 ms of CPU by design, and a client that
sends them without pause (PIN changes, or log-ins on many connections)
could keep every core busy and starve the deposits of everyone else.
Each check first takes one of ``count`` slots: a slot is an exclusive
``flock`` on a small file in the bank's lock folder. A lock held by a
process dies with it, so a handler killed mid-check never keeps a slot
(a multiprocessing semaphore would: see ``bank_server/stop_flag.py``).
Where there is no ``fcntl`` (Windows) there is no bound.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class CpuSlots:
    """``with slots.held(): expensive()`` runs at most ``count`` such sections at once, bank-wide."""

    def __init__(self, folder: Path, stem: str, count: int | None = None) -> None:
        self._paths = [folder / f"{stem}.scrypt.{i}.lock" for i in range(count or os.cpu_count() or 1)]
        self._handles: list[BinaryIO] = []  # opened on first use, in the process that uses them

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        fd = self._take()
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _take(self) -> int:
        if not self._handles:
            self._handles = [open(path, "a+b") for path in self._paths]  # noqa: SIM115 - live with the process
        for handle in self._handles:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle.fileno()
            except BlockingIOError:
                continue
        fd = self._handles[os.getpid() % len(self._handles)].fileno()  # all busy: queue on one
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

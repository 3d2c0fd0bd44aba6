"""One PIN check per card at a time, bank-wide.

Why: a PIN attempt is counted in the card's ``intentos`` before it is
checked (``rules.decide_pin_admission``). If several attempts on one card
could be in flight at once, the count would include them all, and three
right PINs typed at once would make the card look blocked to every other
operation of that card for the length of a scrypt. Serialized per card,
at most one attempt is ever in flight, so the count is the true number
of wrong PINs plus at most one.

How: an exclusive POSIX record lock (``fcntl.lockf``) on one byte of one
shared file in the bank's lock folder, the byte chosen by the card's
CRC-32 among ``SLOTS``. Two cards that share a byte only wait for each
other's check, never deadlock (a check holds one card lock and takes no
other). A record lock dies with its process, so a handler killed
mid-check frees the card. Where ``fcntl`` is missing (Windows) checks
are not serialized; the count before the check still bounds guessing.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

SLOTS = 4096


class CardLocks:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: BinaryIO | None = None  # opened in the process that uses it

    @contextlib.contextmanager
    def held(self, card: str) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        if self._handle is None:
            self._handle = open(self._path, "a+b")  # noqa: SIM115 - lives with the process
        fd, slot = self._handle.fileno(), zlib.crc32(card.encode("ascii")) % SLOTS
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, slot)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, slot)

"""The acceptor's "stop now" flag, read by every handler between requests.

Why not a ``multiprocessing.Event``: its ``is_set()`` takes a lock (a POSIX
semaphore) shared by every process. A handler SIGKILLed while inside
``is_set()`` dies holding it, the semaphore is never released, and every
other handler then blocks forever at its next check: the whole bank hangs
while its ATMs retry. That was the cause of the rare hang in
``tests/test_faults_bank_under_kills.py::test_single_handlers_killed``,
which kills handlers at random instants.

This flag is one shared byte with no lock (``RawValue``): the acceptor is
its only writer, a byte is written whole, and a reader that dies at any
instant holds nothing. It is picklable into a ``spawn`` child at process
creation, like the Event was.
"""

from __future__ import annotations

from typing import Any


class StopFlag:
    """Set once by the acceptor; read by handlers without any lock."""

    def __init__(self, ctx: Any) -> None:
        self._byte = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._byte.value = 1

    def is_set(self) -> bool:
        return self._byte.value != 0

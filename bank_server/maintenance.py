"""The acceptor's work on the bank's files, behind one object.

The acceptor keeps its own ``Store`` (opened with ``StoreMode.RECOVER``)
for two reasons: under ``fork`` every handler inherits it, so it should
be close to current when a handler starts; and ``cuenta.txt`` should
follow the journal, now and then while the server runs (so that a crash
leaves little to replay) and at a clean stop (so that the file alone
shows every applied transaction). ``StorageMaintenance`` does all of it;
the acceptor only calls ``tick`` on each turn of its loop,
``store_for_fork`` before starting a handler by ``fork``, and
``final_checkpoint`` once every handler is gone.

Nothing here is fatal: damage is logged (the handlers answer
ERROR_INTERNO) and the server goes on.
"""

from __future__ import annotations

import logging
import time

from bank_server.journal import JournalError
from bank_server.store import LedgerLoadError, Store

log = logging.getLogger(__name__)
REFRESH_INTERVAL = 1.0  # seconds between catch-ups, so that fork hands children a nearly current state


class StorageMaintenance:
    def __init__(self, store: Store, checkpoint_interval: float) -> None:
        self.store = store
        self.checkpoint_interval = checkpoint_interval
        self._last_refresh = self._last_checkpoint = time.monotonic()

    def tick(self) -> None:
        """Catch up with the journal once a second; checkpoint every ``checkpoint_interval`` seconds."""
        if time.monotonic() - self._last_refresh > REFRESH_INTERVAL:
            self._refresh()
            self._last_refresh = time.monotonic()
        if time.monotonic() - self._last_checkpoint > self.checkpoint_interval:
            self._periodic_checkpoint()
            self._last_checkpoint = time.monotonic()

    def store_for_fork(self) -> Store:
        """The store a handler about to be started by ``fork`` inherits, brought up to date first."""
        self._refresh()
        return self.store

    def final_checkpoint(self) -> None:
        """At a clean stop, with every handler gone: ``cuenta.txt`` shows every applied transaction."""
        try:
            self.store.checkpoint()
        except (JournalError, OSError) as exc:
            log.error("cuenta.txt no se actualizó (el diario conserva todo): %s", exc)
            return
        log.info("cuenta.txt actualizado; servidor detenido")

    def _refresh(self) -> None:
        """Catch up with the journal; damage is logged (handlers answer ERROR_INTERNO), never fatal here."""
        try:
            self.store.refresh()
        except (JournalError, OSError) as exc:
            log.error("no se pudo leer el diario: %s", exc)

    def _periodic_checkpoint(self) -> None:
        """Bring ``cuenta.txt`` up to date now and then, so a crash leaves little to replay."""
        try:
            started = time.perf_counter()
            if self.store.snapshot():
                log.info(
                    "cuenta.txt actualizado (diario %d) en %.2f s",
                    self.store.state.last_n,
                    time.perf_counter() - started,
                )
        except (JournalError, LedgerLoadError, OSError) as exc:  # e.g. Windows: the file is open elsewhere
            log.warning("no se pudo actualizar cuenta.txt ahora (se reintentará): %s", exc)

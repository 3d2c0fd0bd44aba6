"""The ATM's own key file (``llave.key``): read before every connection, replaced whole on rotation.

Why a small class of its own: three rules about the key meet here, and
the worker should not have to know them.

* The file is read again before every connection, so an operator who
  fixes or replaces it needs no restart, and a key renewed by the bank
  (``RENOVAR_LLAVE``) is used from the next connection on.
* The terminal id is pinned: the first key read (or the id the ATM was
  started as) names this ATM for the rest of its run, because receipts
  already printed carry it. A later file naming another terminal is an
  error, reported like a missing key, never a silent change of identity.
* A renewed key is written with ``common.keys.write_terminal_key``
  (temporary file, fsync, replace, folder fsync) *before* it is used,
  so a crash at any instant leaves the old key file or the new one,
  whole; the bank accepts both until the new one is first used.

Errors are ``KeyFileError`` in Spanish naming the file (the staff read
them in the log); none holds key material.
"""

from __future__ import annotations

import threading
from pathlib import Path

from common.errors import KeyFileError
from common.keys import TerminalKey, load_terminal_key, write_terminal_key


class KeyStore:
    """The key file of one ATM. Safe to share between threads (one lock around read and write)."""

    def __init__(self, path: Path, terminal_id: str | None = None) -> None:
        self.path = Path(path)
        self._terminal_id = terminal_id
        self._lock = threading.Lock()

    @property
    def terminal_id(self) -> str | None:
        """The id this ATM runs as, once known (from the start-up key, ``atm.ini``, or the first key read)."""
        return self._terminal_id

    def load(self) -> TerminalKey:
        """The key in the file now; ``KeyFileError`` if it is missing, malformed or another terminal's."""
        with self._lock:
            key = load_terminal_key(self.path)
            if self._terminal_id is None:
                self._terminal_id = key.terminal_id
            elif key.terminal_id != self._terminal_id:
                raise KeyFileError(
                    f"{self.path}: es la llave del cajero {key.terminal_id}, pero este cajero es "
                    f"{self._terminal_id}. Ponga aquí la llave de {self._terminal_id}, o reinicie el cajero "
                    "si de verdad cambió de identificador."
                )
            return key

    def save(self, key: TerminalKey) -> None:
        """Replace the file with ``key`` atomically; on ``KeyFileError`` the old file is still there, whole."""
        with self._lock:
            if self._terminal_id is not None and key.terminal_id != self._terminal_id:
                raise KeyFileError(f"{self.path}: no se guarda una llave del cajero {key.terminal_id} en este cajero.")
            write_terminal_key(self.path, key)

"""Files that survive a crash or a power cut: create once, or replace whole, then sync the folder.

Why one module: the ledger's checkpoint, the terminal registry, the bank
key and every ATM key file need the same three steps, and a missing one
(the folder's fsync after a rename or a new file) passes every test that
only kills processes, then loses the file to a power cut. Every file made
here is 0600 from its first byte: they hold keys, PIN hashes or balances.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

PRIVATE = 0o600
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_IGNORED_SYNC_ERRORS = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF)
_REPLACE_RETRIES = 50  # Windows: a reader holding the file open makes os.replace fail for a moment


def sync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable.

    A no-op where folders cannot be opened (Windows, whose NTFS journals
    the rename itself) or where the file system refuses to sync one.
    """
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _IGNORED_SYNC_ERRORS:
            raise
    finally:
        os.close(fd)


def create_new(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    """Write ``data`` to a file that must not exist yet, synced, folder synced.

    ``O_EXCL`` makes "does it exist?" and "create it" one step, so two
    operators cannot race into two different keys. Raises
    ``FileExistsError`` or ``OSError`` for the caller to word; a file
    half written is removed, so a failure leaves nothing behind.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, mode)
    try:
        _write_all_and_sync(fd, data, mode)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    sync_folder(Path(path).parent)


def replace_atomically(
    path: Path,
    data: bytes,
    tmp_suffix: str = ".tmp",
    mode: int = PRIVATE,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Replace ``path`` with ``data``: a crash at any instant leaves the old file or the new one, whole.

    The temporary file ``<name><tmp_suffix>`` sits in the same folder (a
    rename never crosses file systems); a leftover from a killed writer is
    removed first. Writers that do not share a lock pass their own suffix
    so that two never write the same temporary file. ``before_replace`` is
    for crash tests.
    """
    path = Path(path)
    tmp = path.with_name(path.name + tmp_suffix)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, mode)
    try:
        _write_all_and_sync(fd, data, mode)
        if before_replace is not None:
            before_replace()
        _replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_folder(path.parent)


def _write_all_and_sync(fd: int, data: bytes, mode: int) -> None:
    with os.fdopen(fd, "wb") as handle:
        if hasattr(os, "fchmod"):
            os.fchmod(handle.fileno(), mode)  # the mode asked for, whatever the umask
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace(tmp: Path, path: Path) -> None:
    for attempt in range(_REPLACE_RETRIES + 1):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if os.name != "nt" or attempt == _REPLACE_RETRIES:
                raise
            time.sleep(0.01)

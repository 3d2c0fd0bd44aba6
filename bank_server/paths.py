"""Where the bank keeps the files beside its ledger, named in one place.

Why one module: the journal, the terminal registry, the logs and half a
dozen lock files all hang off the ledger's (or the log's) name, and each
module used to spell its own ``with_suffix``. Moving the locks into one
folder (attack item 3 of issue 11) is then a change here, not in five
modules, and the operator's documentation can point at one list.

For a ledger ``cuenta.txt``:

``cuenta.diario``              the journal
``cuenta.cajeros``             the terminal registry (``cuenta.cajeros.vistos``: when each was last seen)
``cuenta.bloqueos/``           every lock file, in a folder only the bank's user may open (0700):
    ``cuenta.lock``            the ledger lock every writer holds
    ``cuenta.sincro.lock``     the group commit's sync lock
    ``cuenta.servidor.lock``   one server per ledger
    ``cuenta.cajeros.lock``    the terminal registry's writers
    ``.__banco.lock`` ...      the log files' locks and ``banco.log.recuento`` (repeated lines)

and for a log ``banco.log``: ``banco.alertas.log``, the operator's alerts.

Why a folder: a lock file that another local user can open is a lock
that user can hold, and then the whole bank waits (``flock`` needs only
read access). Inside a 0700 folder nobody else can open it, whatever
the file's own mode. Each lock file keeps its old name, so an operator
who knew ``cuenta.lock`` finds it in the new folder.

The helpers that return a lock file's path also make its folder (and the
empty lock file, 0600) on demand, because the code that opens a lock
opens it lazily, in whichever process first needs it. That part is
best effort: on read-only media (``verificar`` on a backup copy) nothing
is made and nothing fails until a lock is really taken. A folder that
exists but belongs to another user, or that is a symbolic link, is
refused: someone else could then hold the bank's locks. Windows has no
POSIX modes: there the folder inherits its parent's permissions and only
its existence is ensured.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

LOCKS_SUFFIX = ".bloqueos"
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
_POSIX = os.name != "nt"
_BINARY = getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeLocksFolderError(PermissionError):
    """The locks folder exists but others could use it (another owner, a link, not a folder)."""


# -- files beside the ledger ------------------------------------------------------------------------------------
def journal_path(ledger: Path) -> Path:
    """``cuenta.txt`` -> ``cuenta.diario``."""
    return Path(ledger).with_suffix(".diario")


def registry_path(ledger: Path) -> Path:
    """``cuenta.txt`` -> ``cuenta.cajeros``: the terminals and their wrapped keys."""
    return Path(ledger).with_suffix(".cajeros")


def registry_seen_path(registry: Path) -> Path:
    """``cuenta.cajeros`` -> ``cuenta.cajeros.vistos``: when and from where each terminal was last seen."""
    registry = Path(registry)
    return registry.with_name(registry.name + ".vistos")


def alerts_log_path(log_file: Path) -> Path:
    """``banco.log`` -> ``banco.alertas.log``: the alerts, which a flood of other lines cannot rotate away."""
    log_file = Path(log_file)
    return log_file.with_name(f"{log_file.stem}.alertas{log_file.suffix}")


# -- the locks folder ------------------------------------------------------------------------------------------------
def locks_dir(sidecar: Path) -> Path:
    """The locks folder of a ledger, or of any file named after it (``cuenta.cajeros``): ``cuenta.bloqueos``.

    Only the name: nothing is made (see ``ensure_locks_dir``).
    """
    return Path(sidecar).with_suffix(LOCKS_SUFFIX)


def log_locks_dir(log_file: Path) -> Path:
    """Where a log keeps its locks when the caller names no locks folder: ``banco.log`` -> ``banco.bloqueos``."""
    return Path(log_file).with_suffix(LOCKS_SUFFIX)


def ensure_locks_dir(folder: Path) -> Path:
    """Make ``folder`` (0700) if it is missing; refuse one that other users could use. Returns ``folder``.

    Best effort where the folder cannot be made (read-only media, no
    permission): the caller that then opens a lock in it gets the
    system's error, with the path in it.
    """
    folder = Path(folder)
    try:
        os.mkdir(folder, PRIVATE_FOLDER)
    except FileExistsError:
        if _POSIX:
            _check_private_folder(folder)
        return folder
    except OSError:
        return folder
    if _POSIX:  # exactly 0700 whatever the umask (a umask of 0o277 would leave it unwritable)
        os.chmod(folder, PRIVATE_FOLDER)
    return folder


def _check_private_folder(folder: Path) -> None:
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeLocksFolderError(
            f"{folder}: debería ser la carpeta de bloqueos del banco y no es una carpeta (¿un enlace?). "
            "Muévalo a otro lugar y vuelva a intentarlo."
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafeLocksFolderError(
            f"{folder}: la carpeta de bloqueos pertenece a otro usuario, que podría detener el banco. "
            "Bórrela (el banco la vuelve a crear) y vuelva a intentarlo."
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        try:
            os.chmod(folder, PRIVATE_FOLDER)
        except OSError:
            raise UnsafeLocksFolderError(
                f"{folder}: otros usuarios pueden abrir la carpeta de bloqueos y no se pudo cerrarla (chmod 700)."
            ) from None


def private_lock_file(folder: Path, name: str) -> Path:
    """``folder/name``, with the folder made private and the file made (empty, 0600) if missing.

    Why make the file here: the lock's owner opens it with a plain
    ``open(path, "a+b")``, whose mode would come from the umask of
    whichever process (server or administration command) came first.
    """
    path = ensure_locks_dir(folder) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | _BINARY | _NOFOLLOW, PRIVATE_FILE)
    except OSError:
        return path  # best effort (see the module docstring)
    try:
        if _POSIX:
            info = os.fstat(fd)
            if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
                os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return path


def ledger_lock_path(ledger: Path) -> Path:
    """The ledger lock every writer holds: ``cuenta.bloqueos/cuenta.lock``."""
    ledger = Path(ledger)
    return private_lock_file(locks_dir(ledger), f"{ledger.stem}.lock")


def sync_lock_path(ledger: Path) -> Path:
    """The group commit's sync lock: ``cuenta.bloqueos/cuenta.sincro.lock``."""
    ledger = Path(ledger)
    return private_lock_file(locks_dir(ledger), f"{ledger.stem}.sincro.lock")


def server_lock_path(ledger: Path) -> Path:
    """One server per ledger: ``cuenta.bloqueos/cuenta.servidor.lock``."""
    ledger = Path(ledger)
    return private_lock_file(locks_dir(ledger), f"{ledger.stem}.servidor.lock")


def registry_lock_path(registry: Path) -> Path:
    """The terminal registry's writers: ``cuenta.cajeros`` -> ``cuenta.bloqueos/cuenta.cajeros.lock``."""
    registry = Path(registry)
    return private_lock_file(locks_dir(registry), f"{registry.name}.lock")


__all__ = [
    "LOCKS_SUFFIX",
    "UnsafeLocksFolderError",
    "alerts_log_path",
    "ensure_locks_dir",
    "journal_path",
    "ledger_lock_path",
    "locks_dir",
    "log_locks_dir",
    "private_lock_file",
    "registry_lock_path",
    "registry_path",
    "registry_seen_path",
    "server_lock_path",
    "sync_lock_path",
]

"""The files beside the ledger: one place names them, every lock lives in a private folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import portalocker
import pytest

from bank_server import paths
from bank_server.group_commit import sync_lock_path_for
from bank_server.store import LedgerLock, Store, StoreMode, lock_path_for
from bank_server.terminals import TerminalRegistry
from devtools.bank_process import DemoAccount, write_ledger

POSIX = os.name == "posix"
BANK_KEY = bytes(range(32))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_sidecar_is_named_after_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "cuenta.txt"
    assert paths.journal_path(ledger) == tmp_path / "cuenta.diario"
    assert paths.registry_path(ledger) == tmp_path / "cuenta.cajeros"
    assert paths.registry_seen_path(tmp_path / "cuenta.cajeros") == tmp_path / "cuenta.cajeros.vistos"
    assert paths.alerts_log_path(tmp_path / "banco.log") == tmp_path / "banco.alertas.log"
    assert paths.alerts_log_path(tmp_path / "registro") == tmp_path / "registro.alertas"
    assert paths.locks_dir(ledger) == paths.locks_dir(paths.registry_path(ledger)) == tmp_path / "cuenta.bloqueos"
    assert not (tmp_path / "cuenta.bloqueos").exists(), "naming the folder makes nothing"


def test_every_lock_of_the_bank_is_in_the_one_locks_folder(tmp_path: Path) -> None:
    ledger = tmp_path / "cuenta.txt"
    folder = tmp_path / "cuenta.bloqueos"
    registry = TerminalRegistry.for_ledger(ledger, BANK_KEY)
    found = {
        lock_path_for(ledger): "cuenta.lock",
        sync_lock_path_for(ledger): "cuenta.sincro.lock",
        paths.server_lock_path(ledger): "cuenta.servidor.lock",
        registry.lock_path: "cuenta.cajeros.lock",
    }
    for path, name in found.items():
        assert path == folder / name
        assert path.is_file(), "made on demand, for whoever opens it first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuenta.bloqueos"], "no lock beside the ledger"


def test_the_store_works_with_its_lock_in_the_folder(tmp_path: Path) -> None:
    ledger = write_ledger(tmp_path, [DemoAccount("1111111111111111", "Ana", "100.00", "1234")])
    Store.open(ledger, mode=StoreMode.RECOVER).close()
    lock = tmp_path / "cuenta.bloqueos" / "cuenta.lock"
    assert lock.is_file() and not (tmp_path / "cuenta.lock").exists()
    with LedgerLock(lock_path_for(ledger)), open(lock, "a+b") as other, pytest.raises(portalocker.AlreadyLocked):
        portalocker.lock(other, portalocker.LOCK_EX | portalocker.LOCK_NB)


@pytest.mark.skipif(not POSIX, reason="modos de archivo POSIX")
def test_the_folder_is_0700_and_its_files_0600_whatever_the_umask(tmp_path: Path) -> None:
    ledger = tmp_path / "cuenta.txt"
    old = os.umask(0)
    try:
        made = [lock_path_for(ledger), sync_lock_path_for(ledger), paths.server_lock_path(ledger)]
        made.append(TerminalRegistry.for_ledger(ledger, BANK_KEY).lock_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "cuenta.bloqueos") == 0o700
    for path in made:
        assert _mode(path) == 0o600, path.name


@pytest.mark.skipif(not POSIX, reason="modos de archivo POSIX")
def test_a_folder_or_lock_left_open_to_others_is_closed(tmp_path: Path) -> None:
    folder = tmp_path / "cuenta.bloqueos"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "cuenta.lock").touch()
    (folder / "cuenta.lock").chmod(0o666)
    lock = lock_path_for(tmp_path / "cuenta.txt")
    assert _mode(folder) == 0o700
    assert _mode(lock) == 0o600


@pytest.mark.skipif(not POSIX, reason="enlaces simbólicos POSIX")
def test_a_link_or_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "otra"
    elsewhere.mkdir()
    (tmp_path / "cuenta.bloqueos").symlink_to(elsewhere)
    with pytest.raises(paths.UnsafeLocksFolderError, match="no es una carpeta"):
        lock_path_for(tmp_path / "cuenta.txt")
    (tmp_path / "banco.bloqueos").write_text("", encoding="utf-8")
    with pytest.raises(paths.UnsafeLocksFolderError):
        paths.ensure_locks_dir(tmp_path / "banco.bloqueos")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(not POSIX, reason="dueños de archivo POSIX")
def test_a_folder_owned_by_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its owner could hold the bank's locks (or read them): the bank refuses to start on it."""
    folder = tmp_path / "cuenta.bloqueos"
    folder.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)
    else:  # we cannot give a folder away: be someone else instead
        monkeypatch.setattr(paths.os, "geteuid", lambda: folder.stat().st_uid + 1)
    with pytest.raises(paths.UnsafeLocksFolderError, match="otro usuario"):
        lock_path_for(tmp_path / "cuenta.txt")


def test_where_nothing_can_be_made_the_paths_are_still_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``verificar`` on read-only media: naming a lock must not fail; only taking it would."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paths.os, "mkdir", refuse)
    monkeypatch.setattr(paths.os, "open", refuse)
    assert lock_path_for(tmp_path / "cuenta.txt") == tmp_path / "cuenta.bloqueos" / "cuenta.lock"
    assert not (tmp_path / "cuenta.bloqueos").exists()

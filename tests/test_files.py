"""common/files.py: new files refuse to overwrite, replacements are whole, every file is 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common import files


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_new_writes_private_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "banco.key"
    old_umask = os.umask(0)  # a careless umask must not widen the file
    try:
        files.create_new(path, b"secreto\n")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"secreto\n"
    if os.name != "nt":
        assert _mode(path) == 0o600
    with pytest.raises(FileExistsError):
        files.create_new(path, b"otro\n")
    assert path.read_bytes() == b"secreto\n"


def test_replace_atomically_replaces_whole_and_tightens_mode(tmp_path: Path) -> None:
    path = tmp_path / "cuenta.txt"
    path.write_bytes(b"viejo\n")
    if os.name != "nt":
        path.chmod(0o644)
    (tmp_path / "cuenta.txt.tmp").write_bytes(b"medio")  # a writer killed mid-way
    files.replace_atomically(path, b"nuevo\n")
    assert path.read_bytes() == b"nuevo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuenta.txt"]
    if os.name != "nt":
        assert _mode(path) == 0o600


def test_a_failure_before_the_rename_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "cuenta.txt"
    path.write_bytes(b"viejo\n")

    def crash() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        files.replace_atomically(path, b"nuevo\n", before_replace=crash)
    assert path.read_bytes() == b"viejo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuenta.txt"]


@pytest.mark.skipif(os.name == "nt", reason="folders cannot be opened on Windows")
def test_sync_folder_syncs_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    files.create_new(tmp_path / "a", b"x")
    files.replace_atomically(tmp_path / "b", b"y")
    assert synced == [False, True, False, True]  # file, then its folder, each time

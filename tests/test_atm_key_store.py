"""The ATM's key file: pinned to one terminal, and replaced whole even when the process dies mid-way.

The kill test is deterministic: a child process stores a renewed key
with ``KeyStore.save`` (the ATM's own code path), and is SIGKILLed by
itself just before and just after each system call of the write
(unlink, open, fchmod, write, fsync, replace, the folder's open, fsync
and close), one kill point per run, until a run gets through. After
every kill the key file must load and be the old key or the new one.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atm_gui.key_store import KeyStore
from common.errors import KeyFileError
from common.keys import TerminalKey, format_terminal_key_file, load_terminal_key, write_terminal_key
from devtools.bank_process import ROOT, server_env

pytestmark = pytest.mark.timeout(120)

OLD = TerminalKey("CAJERO-01", 1, bytes([1]) * 32)
NEW = TerminalKey("CAJERO-01", 2, bytes([2]) * 32)

KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from atm_gui.key_store import KeyStore
    from common.keys import TerminalKey

    path, target = Path(sys.argv[1]), int(sys.argv[2])
    store = KeyStore(path, "CAJERO-01")
    step = 0

    def point(name):
        global step
        if step == target:
            sys.stdout.write(name + "\\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        step += 1

    def around(name, fn):
        def wrapped(*args, **kwargs):
            point("antes de " + name)
            result = fn(*args, **kwargs)
            point("después de " + name)
            return result
        return wrapped

    class HalfThenKill:
        # A file whose write stops half way (flushed to the OS) at a kill point.
        def __init__(self, f):
            self.f = f
        def write(self, data):
            half = len(data) // 2
            self.f.write(data[:half])
            self.f.flush()
            point("a medio escribir")
            self.f.write(data[half:])
            return len(data)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    real_fdopen = os.fdopen
    os.fdopen = lambda *args, **kwargs: HalfThenKill(real_fdopen(*args, **kwargs))
    for name in ("unlink", "open", "fchmod", "fsync", "replace", "close"):
        if hasattr(os, name):
            setattr(os, name, around(name, getattr(os, name)))

    store.save(TerminalKey("CAJERO-01", 2, bytes([2]) * 32))
    sys.stdout.write("hecho %d\\n" % step)
    """
)


def _write_old(path: Path) -> None:
    """The old key, as an ATM had it before the rotation, alone: every run then takes the same steps."""
    for other in path.parent.iterdir():
        other.unlink()
    path.write_text(format_terminal_key_file(OLD), encoding="utf-8")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill_9_at_every_step_of_storing_a_renewed_key_leaves_the_old_or_the_new(tmp_path: Path) -> None:
    path = tmp_path / "llave.key"
    _write_old(path)
    outcomes: list[tuple[str, TerminalKey]] = []  # (where it was killed, the key file after)
    for target in range(200):
        run = subprocess.run(
            [sys.executable, "-c", KILLED_WRITER, str(path), str(target)],
            capture_output=True,
            text=True,
            env=server_env(),
            cwd=ROOT,
            timeout=30,
        )
        said = run.stdout.strip()
        if run.returncode == 0:
            assert said.startswith("hecho"), said
            break
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        key = load_terminal_key(path)  # never missing, never broken
        assert key in (OLD, NEW), said
        if key == NEW and os.name != "nt":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        outcomes.append((said, key))
        leftovers = sorted(p.name for p in tmp_path.iterdir())
        _write_old(path)
    else:
        pytest.fail("the writer never finished")
    names = [name for name, _ in outcomes]
    assert len(names) >= 14, f"too few kill points to prove anything: {names}"
    for step in ("a medio escribir", "antes de fsync", "antes de replace", "después de replace", "antes de close"):
        assert step in names, f"no kill {step}: {names}"
    swap = names.index("después de replace")
    assert names[swap - 1] == "antes de replace"
    assert [key for _, key in outcomes] == [OLD] * swap + [NEW] * (len(outcomes) - swap), (
        "the old key until the replace, the new one from the replace on (never the old one back)"
    )
    assert load_terminal_key(path) == NEW
    assert [p.name for p in tmp_path.iterdir()] == ["llave.key"], "a finished write leaves no stray file"
    assert leftovers == ["llave.key"], "a kill after the replace leaves nothing beside the key"
    # A write after a killed one removes the temporary file the killed one left.
    (tmp_path / "llave.key.tmp").write_text("medio archivo", encoding="utf-8")
    KeyStore(path, "CAJERO-01").save(OLD)
    assert load_terminal_key(path) == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["llave.key"]


def test_the_first_key_read_pins_the_terminal(tmp_path: Path) -> None:
    path = tmp_path / "llave.key"
    store = KeyStore(path)
    with pytest.raises(KeyFileError, match="no existe"):
        store.load()
    assert store.terminal_id is None
    write_terminal_key(path, OLD)
    assert store.load() == OLD and store.terminal_id == "CAJERO-01"
    write_terminal_key(path, TerminalKey("CAJERO-02", 1, bytes(32)))
    with pytest.raises(KeyFileError, match="es la llave del cajero CAJERO-02, pero este cajero es CAJERO-01"):
        store.load()
    with pytest.raises(KeyFileError, match="CAJERO-02"):
        store.save(TerminalKey("CAJERO-02", 2, bytes(32)))


def test_an_atm1_key_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "llave.key"
    path.write_text("# llave compartida\n" + "ab" * 32 + "\n", encoding="utf-8")
    with pytest.raises(KeyFileError) as info:
        KeyStore(path).load()
    assert str(path) in str(info.value) and "ATM1" in str(info.value) and "ab" * 8 not in str(info.value)

"""The terminal registry (``bank_server/terminals.py``) on real files and real processes."""

from __future__ import annotations

import base64
import multiprocessing
import os
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from bank_server import terminals
from bank_server.terminals import (
    DamagedRegistryError,
    TerminalRegistry,
    TerminalRegistryError,
    UnknownTerminalError,
    WrongBankKeyError,
)
from common.keys import TerminalKey, load_terminal_key

BANK_KEY = bytes(range(32))
OTHER_BANK_KEY = bytes(range(1, 33))
T0 = 1_700_000_000.0
POSIX = os.name == "posix"


def registry(folder: Path, **options: Any) -> TerminalRegistry:
    return TerminalRegistry.for_ledger(folder / "cuenta.txt", BANK_KEY, **options)


def context() -> Any:
    """``fork`` where it exists, as the server uses it; children then inherit the parent's registry."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def key_file_line(path: Path) -> list[str]:
    lines = [line for line in path.read_text("utf-8").splitlines() if line and not line.startswith("#")]
    return lines[0].split(" ")


# -- enrolment, rotation, revocation -------------------------------------------------------


def test_enrol_writes_the_atm_key_file_and_the_bank_serves_that_key(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    key = reg.enrol("SUC-01", tmp_path / "SUC-01.key")
    assert (key.terminal_id, key.version, len(key.key)) == ("SUC-01", 1, 32)
    assert key_file_line(tmp_path / "SUC-01.key") == ["ATM2", "SUC-01", "1", key.key.hex()]
    assert load_terminal_key(tmp_path / "SUC-01.key") == key  # what the ATM reads
    assert reg.key_for_hello("SUC-01", 1) == key.key
    assert reg.key_for_hello("SUC-01", 2) is None
    assert reg.key_for_hello("SUC-02", 1) is None
    assert registry(tmp_path).key_for_hello("SUC-01", 1) == key.key  # another process's view: from the file
    assert (tmp_path / "cuenta.cajeros").exists()


def test_enrol_refuses_an_active_id_an_existing_key_file_and_a_bad_id(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    with pytest.raises(TerminalRegistryError, match=r"ya está dado de alta.*cajero-rotar SUC-01"):
        reg.enrol("SUC-01")
    taken = tmp_path / "ocupado.key"
    taken.write_text("no tocar\n")
    with pytest.raises(TerminalRegistryError, match=r"ocupado.key: ya existe"):
        reg.enrol("SUC-02", taken)
    assert taken.read_text() == "no tocar\n"
    assert reg.key_for_hello("SUC-02", 1) is None
    assert [info.terminal_id for info in reg.list()] == ["SUC-01"]
    for bad in ("suc-01", "", "A" * 33, "SUC_01", "SUC 01"):
        with pytest.raises(ValueError, match="identificador de cajero no válido"):
            reg.enrol(bad)


def test_rotation_pending_key_is_stable_and_old_version_lasts_until_confirmed(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    first = reg.enrol("SUC-01")
    assert reg.pending_key("SUC-01") is None
    assert reg.current_version("SUC-01") == 1
    assert reg.rotate("SUC-01") == 2
    assert reg.rotate("SUC-01") == 2  # asked again before the switch: the same pending key
    pending = reg.pending_key("SUC-01")
    assert pending is not None and pending[0] == 2 and pending[1] != first.key
    assert reg.pending_key("SUC-01") == pending
    assert registry(tmp_path).pending_key("SUC-01") == pending  # handed the same by every process
    assert reg.key_for_hello("SUC-01", 1) == first.key
    assert reg.key_for_hello("SUC-01", 2) == pending[1]
    assert reg.current_version("SUC-01") == 1

    assert registry(tmp_path).confirm_version("SUC-01", 2) is True  # confirmed by some handler process
    time.sleep(0.6)  # this process's view is refreshed by its throttled stat
    assert reg.key_for_hello("SUC-01", 1) is None
    assert reg.key_for_hello("SUC-01", 2) == pending[1]
    assert reg.pending_key("SUC-01") is None
    assert reg.current_version("SUC-01") == 2
    assert reg.confirm_version("SUC-01", 2) is True  # idempotent
    assert reg.confirm_version("SUC-01", 1) is False
    assert reg.rotate("SUC-01") == 3


def test_revoke_then_enrol_again_gives_a_fresh_key_at_the_next_version(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    first = reg.enrol("SUC-01")
    reg.rotate("SUC-01")
    assert reg.revoke("SUC-01") is True
    assert reg.revoke("SUC-01") is False
    assert reg.is_revoked("SUC-01")
    assert reg.key_for_hello("SUC-01", 1) is None and reg.key_for_hello("SUC-01", 2) is None
    assert reg.pending_key("SUC-01") is None and reg.current_version("SUC-01") is None
    assert reg.confirm_version("SUC-01", 2) is False
    with pytest.raises(TerminalRegistryError, match=r"dado de baja.*cajero-alta SUC-01"):
        reg.rotate("SUC-01")
    with pytest.raises(TerminalRegistryError, match=r"dado de baja.*cajero-alta SUC-01"):
        reg.reactivate("SUC-01")
    (info,) = reg.list()
    assert (info.active, info.current_version, info.pending_version) == (False, None, None)

    again = reg.enrol("SUC-01")
    assert again.version == 3 and again.key not in (first.key,)
    assert reg.key_for_hello("SUC-01", 3) == again.key
    assert not reg.is_revoked("SUC-01")
    assert reg.is_revoked("NADIE")
    for command in (reg.revoke, reg.rotate, reg.reactivate):
        with pytest.raises(UnknownTerminalError, match=r"no hay ningún cajero NADIE.*cajero-alta NADIE"):
            command("NADIE")


def test_versions_stop_at_the_contract_maximum(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    path = tmp_path / "cuenta.cajeros"
    path.write_text(path.read_text().replace('"ultima_version": 1', f'"ultima_version": {2**32 - 1}'))
    with pytest.raises(TerminalRegistryError, match="todas las versiones"):
        reg.rotate("SUC-01")


# -- secrecy --------------------------------------------------------------------------------


def test_wrong_bank_key_is_refused_clearly_and_changes_nothing(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    before = (tmp_path / "cuenta.cajeros").read_bytes()
    wrong = TerminalRegistry.for_ledger(tmp_path / "cuenta.txt", OTHER_BANK_KEY)
    for attempt in (wrong.list, lambda: wrong.key_for_hello("SUC-01", 1), lambda: wrong.enrol("SUC-02")):
        with pytest.raises(WrongBankKeyError, match=r"la llave del banco no corresponde a cuenta.cajeros"):
            attempt()
    assert (tmp_path / "cuenta.cajeros").read_bytes() == before
    with pytest.raises(ValueError, match="32 bytes"):
        TerminalRegistry(tmp_path / "x.cajeros", b"corta")


@pytest.mark.skipif(not POSIX, reason="modos de archivo POSIX")
def test_every_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        reg = registry(tmp_path)
        reg.enrol("SUC-01", tmp_path / "SUC-01.key")
        reg.seen("SUC-01", "10.0.0.1", T0)
        reg.backup(tmp_path / "respaldo.cajeros")
    finally:
        os.umask(old)
    written = ("cuenta.cajeros", "cuenta.bloqueos/cuenta.cajeros.lock", "cuenta.cajeros.vistos", "SUC-01.key")
    for name in (*written, "respaldo.cajeros"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def _forms(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="), url.rstrip(b"=")]


def test_no_key_in_clear_in_any_file_listing_repr_or_error(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    keys = [reg.enrol(f"SUC-0{i}").key for i in range(1, 4)]
    for terminal_id in ("SUC-01", "SUC-02"):
        reg.rotate(terminal_id)
        pending = reg.pending_key(terminal_id)
        assert pending is not None
        keys.append(pending[1])
    reg.seen("SUC-01", "10.0.0.1", T0)
    reg.record_wrong_pin("SUC-03", T0)
    reg.backup(tmp_path / "respaldo.cajeros")
    errors = []
    for attempt in (lambda: reg.enrol("SUC-01"), lambda: reg.revoke("NADIE")):
        with pytest.raises(TerminalRegistryError) as caught:
            attempt()
        errors.append(str(caught.value) + repr(caught.value))
    texts = [
        repr(reg.list()).encode(),
        str(reg.list()).encode(),
        repr(TerminalKey("SUC-01", 1, keys[0])).encode(),
        str(TerminalKey("SUC-01", 1, keys[0])).encode(),
        repr(reg).encode(),
        *(error.encode() for error in errors),
        *(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()),
    ]
    for secret in [*keys, BANK_KEY]:
        for form in _forms(secret):
            for text in texts:
                assert form not in text


def test_a_damaged_line_is_named_and_nothing_is_rewritten(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    reg.enrol("SUC-02")
    path = tmp_path / "cuenta.cajeros"
    lines = path.read_text("utf-8").splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, start=1) if '"SUC-02"' in line)
    lines[number - 1] = lines[number - 1][:40] + "\n"
    path.write_text("".join(lines), "utf-8")
    damaged = path.read_bytes()
    fresh = registry(tmp_path)
    with pytest.raises(DamagedRegistryError, match=f"cuenta.cajeros, línea {number}: .*JSON") as caught:
        fresh.list()
    assert "respaldo" in str(caught.value)
    with pytest.raises(DamagedRegistryError):
        fresh.enrol("SUC-03")
    assert path.read_bytes() == damaged


def test_a_wrapped_key_moved_to_another_terminal_fails_its_tag(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    reg.enrol("SUC-02")
    path = tmp_path / "cuenta.cajeros"
    lines = path.read_text("utf-8").splitlines()
    one = next(i for i, line in enumerate(lines) if '"SUC-01"' in line)
    two = next(i for i, line in enumerate(lines) if '"SUC-02"' in line)
    blob = lines[one].split('"llave_cifrada": "')[1].split('"')[0]
    other = lines[two].split('"llave_cifrada": "')[1].split('"')[0]
    lines[two] = lines[two].replace(other, blob)
    path.write_text("\n".join(lines) + "\n", "utf-8")
    fresh = registry(tmp_path)
    assert fresh.key_for_hello("SUC-01", 1) is not None
    with pytest.raises(DamagedRegistryError, match=f"línea {two + 1}: la llave cifrada del cajero SUC-02"):
        fresh.key_for_hello("SUC-02", 1)


def test_a_failed_write_changes_nothing_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = registry(tmp_path)
    key = reg.enrol("SUC-01")
    before = (tmp_path / "cuenta.cajeros").read_bytes()

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(terminals, "_write_atomically", disk_full)
    with pytest.raises(TerminalRegistryError, match=r"cuenta.cajeros: no se pudo escribir .*no se cambió nada"):
        reg.rotate("SUC-01")
    with pytest.raises(TerminalRegistryError):
        reg.enrol("SUC-02", tmp_path / "SUC-02.key")
    assert not (tmp_path / "SUC-02.key").exists()  # no key file for a terminal that was not enrolled
    assert (tmp_path / "cuenta.cajeros").read_bytes() == before
    assert reg.pending_key("SUC-01") is None and reg.key_for_hello("SUC-01", 1) == key.key


def test_backup_is_a_loadable_copy_and_never_overwrites(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    key = reg.enrol("SUC-01")
    (tmp_path / "vacio").mkdir()
    with pytest.raises(TerminalRegistryError, match="no existe"):
        registry(tmp_path / "vacio").backup(tmp_path / "nada.cajeros")
    reg.backup(tmp_path / "respaldo.cajeros")
    assert TerminalRegistry(tmp_path / "respaldo.cajeros", BANK_KEY).key_for_hello("SUC-01", 1) == key.key
    with pytest.raises(TerminalRegistryError, match="ya existe"):
        reg.backup(tmp_path / "respaldo.cajeros")


# -- readers: cheap and current ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_readers_stat_at_most_once_per_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry(tmp_path).enrol("SUC-01")
    clock = FakeClock()
    reader = registry(tmp_path, clock=clock)
    key = reader.key_for_hello("SUC-01", 1)
    assert key is not None
    stats = []
    real = terminals._stat_signature
    monkeypatch.setattr(terminals, "_stat_signature", lambda path: stats.append(path) or real(path))
    registry(tmp_path).revoke("SUC-01")
    for _ in range(1000):
        assert reader.current_version("SUC-01") == 1  # within the interval: no system call, old view
        assert not reader.is_revoked("SUC-01")
    assert stats == []
    clock.now += 0.5
    assert reader.is_revoked("SUC-01")
    assert len(stats) == 1
    assert reader.key_for_hello("SUC-01", 1) is None  # a hello always looks: a stale key is never handed out
    assert len(stats) == 2


def test_with_views_refreshed_by_the_acceptor_hello_costs_one_stat_and_seen_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    acceptor = registry(tmp_path, clock=clock)
    acceptor.enrol("SUC-01")
    acceptor.seen("SUC-01", "10.0.0.1", T0)
    acceptor.refresh(include_seen=True)  # the acceptor's loop
    calls = []
    real = terminals._stat_signature
    monkeypatch.setattr(terminals, "_stat_signature", lambda path: calls.append(path) or real(path))
    assert acceptor.key_for_hello("SUC-01", 1) is not None
    acceptor.seen("SUC-01", "10.0.0.1", T0 + 5)  # a handler's connection, seconds later: coalesced
    assert len(calls) == 1  # the hello's stat of the registry (an old version must be refused at once)


def _watch_revocation(reg: TerminalRegistry | Path, ready: Any, seen_at: Any) -> None:
    reader = reg if isinstance(reg, TerminalRegistry) else registry(reg)
    assert not reader.is_revoked("SUC-01")
    ready.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if reader.is_revoked("SUC-01"):
            seen_at.value = time.time()
            return
        time.sleep(0.01)


def test_a_reader_in_another_process_sees_a_revocation_within_2_seconds(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    reg.key_for_hello("SUC-01", 1)
    ctx = context()
    ready, seen_at = ctx.Event(), ctx.Value("d", 0.0)
    child = ctx.Process(
        target=_watch_revocation, args=(reg if ctx.get_start_method() == "fork" else tmp_path, ready, seen_at)
    )
    child.start()
    try:
        assert ready.wait(30)
        time.sleep(0.3)
        revoked_at = time.time()
        registry(tmp_path).revoke("SUC-01")  # as the operator's command would, from its own process
        child.join(15)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert seen_at.value > 0, "el lector nunca vio la baja"
    assert seen_at.value - revoked_at < 2.0


# -- many writers -------------------------------------------------------------------------------


def _enrol_many(reg: TerminalRegistry | Path, prefix: str, folder: Path, count: int) -> None:
    writer = reg if isinstance(reg, TerminalRegistry) else registry(reg)
    for i in range(count):
        terminal_id = f"{prefix}-{i:02d}"
        writer.enrol(terminal_id, folder / f"{terminal_id}.key")
        writer.record_wrong_pin(terminal_id, T0 + i)


def test_two_processes_enrolling_at_once_lose_nothing(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-00")  # the parent has used its lock before the children inherit the object
    ctx = context()
    shared: TerminalRegistry | Path = reg if ctx.get_start_method() == "fork" else tmp_path
    children = [ctx.Process(target=_enrol_many, args=(shared, prefix, tmp_path, 20)) for prefix in ("A", "B")]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    fresh = registry(tmp_path)
    infos = fresh.list(now=T0 + 30)
    assert len(infos) == 41
    keys = set()
    for info in infos:
        if info.terminal_id == "SUC-00":
            continue
        assert info.wrong_pins_last_hour == 1
        _, terminal_id, version, hex_key = key_file_line(tmp_path / f"{info.terminal_id}.key")
        assert (terminal_id, int(version)) == (info.terminal_id, info.current_version)
        assert fresh.key_for_hello(terminal_id, 1) == bytes.fromhex(hex_key)
        keys.add(hex_key)
    assert len(keys) == 40


def _churn(folder: Path, seed: int) -> None:
    """Change the registry in every way as fast as possible, until killed."""
    rng = random.Random(seed)
    reg = registry(folder)
    n = 0
    while True:
        n += 1
        terminal_id = f"K{seed}-{n}"
        reg.enrol(terminal_id)
        version = reg.rotate(terminal_id)
        if rng.random() < 0.5:
            reg.confirm_version(terminal_id, version)
        reg.record_wrong_pin(terminal_id, time.time())
        reg.seen(terminal_id, f"10.0.0.{n % 250}", time.time())
        if rng.random() < 0.3:
            reg.revoke(terminal_id)


def test_kill_9_of_a_writer_at_random_moments_leaves_a_loadable_registry(tmp_path: Path) -> None:
    rng = random.Random(20240501)
    ctx = context()
    for round_number in range(10):
        child = ctx.Process(target=_churn, args=(tmp_path, round_number))
        child.start()
        time.sleep(rng.uniform(0.05, 0.4))
        child.kill()
        child.join(10)
        fresh = registry(tmp_path)
        infos = fresh.list()
        for info in infos:  # every active terminal's keys still unwrap
            if info.active:
                assert fresh.key_for_hello(info.terminal_id, info.current_version or 0) is not None
                if info.pending_version is not None:
                    assert fresh.pending_key(info.terminal_id) is not None
        fresh.enrol(f"DESPUES-{round_number}")  # and the next writer is not blocked by a leftover
    assert len(registry(tmp_path).list()) > 10


# -- guessing ------------------------------------------------------------------------------------


def test_more_than_the_limit_suspends_until_reactivated_or_the_hour_passes(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    reg.enrol("SUC-02")
    # Ten wrong PINs, as if on several cards: the contract sums them per terminal.
    for i in range(10):
        assert reg.record_wrong_pin("SUC-01", T0 + i) is False
        assert not reg.is_suspended("SUC-01", T0 + i)
    assert reg.record_wrong_pin("SUC-01", T0 + 10) is True  # the 11th is "more than 10"
    assert reg.is_suspended("SUC-01", T0 + 11)
    assert not reg.is_suspended("SUC-02", T0 + 11)
    assert registry(tmp_path).is_suspended("SUC-01", T0 + 11)  # durable and shared
    info = {i.terminal_id: i for i in reg.list(now=T0 + 11)}["SUC-01"]
    assert (info.suspended, info.wrong_pins_last_hour) == (True, 11)

    assert registry(tmp_path).reactivate("SUC-01") is True  # the operator, from another process
    assert not reg.is_suspended("SUC-01", T0 + 12)  # at once: is_suspended always checks the file
    assert reg.reactivate("SUC-01") is False

    for i in range(11):
        reg.record_wrong_pin("SUC-01", T0 + 100 + i)
    assert reg.is_suspended("SUC-01", T0 + 200)
    assert reg.is_suspended("SUC-01", T0 + 100 + 3600 - 1)
    assert not reg.is_suspended("SUC-01", T0 + 100 + 3600 + 0.5)  # the first attempt left the hour
    assert not reg.is_suspended("SUC-01", T0 + 100 + 3600 + 11)


def test_the_limit_is_configurable(tmp_path: Path) -> None:
    reg = registry(tmp_path, guess_limit=3)
    reg.enrol("SUC-01")
    assert [reg.record_wrong_pin("SUC-01", T0 + i) for i in range(4)] == [False, False, False, True]
    with pytest.raises(UnknownTerminalError):
        reg.record_wrong_pin("NADIE", T0)


def _guess(folder: Path, count: int) -> None:
    reg = registry(folder)
    for i in range(count):
        reg.record_wrong_pin("SUC-01", T0 + i / 100)


def test_wrong_pins_from_two_processes_add_up(tmp_path: Path) -> None:
    registry(tmp_path).enrol("SUC-01")
    ctx = context()
    children = [ctx.Process(target=_guess, args=(tmp_path, 6)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    reg = registry(tmp_path)
    assert reg.is_suspended("SUC-01", T0 + 60)
    assert reg.list(now=T0 + 60)[0].wrong_pins_last_hour == 12


# -- last seen -------------------------------------------------------------------------------------


def test_last_seen_is_coalesced_and_listed(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    seen_file = tmp_path / "cuenta.cajeros.vistos"
    reg.seen("SUC-01", "10.0.0.1", T0)
    first = os.stat(seen_file)
    reg.seen("SUC-01", "10.0.0.1", T0 + 30)
    registry(tmp_path).seen("SUC-01", "10.0.0.1", T0 + 31)  # a fresh handler process: reads, does not write
    assert (os.stat(seen_file).st_ino, os.stat(seen_file).st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    (info,) = reg.list()
    assert (info.last_seen and info.last_seen.timestamp(), info.last_address) == (T0, "10.0.0.1")
    reg.seen("SUC-01", "10.0.0.2", T0 + 40)  # a new address is news
    assert reg.list()[0].last_address == "10.0.0.2"
    reg.seen("SUC-01", "10.0.0.2", T0 + 101)  # and so is a minute gone by
    assert reg.list()[0].last_seen.timestamp() == T0 + 101  # type: ignore[union-attr]


def test_a_damaged_last_seen_file_is_not_fatal(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")
    (tmp_path / "cuenta.cajeros.vistos").write_text('basura\n{"id": 3}\n')
    (info,) = reg.list()
    assert info.last_seen is None
    reg.seen("SUC-01", "10.0.0.1", T0)
    assert reg.list()[0].last_address == "10.0.0.1"


def test_a_failed_last_seen_write_is_only_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry(tmp_path)
    reg.enrol("SUC-01")

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(terminals, "_write_atomically", disk_full)
    reg.seen("SUC-01", "10.0.0.1", T0)
    assert "no se pudo anotar cuándo se vio al cajero SUC-01" in caplog.text

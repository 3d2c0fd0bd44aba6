"""Logs that a flood cannot flush away: repeated lines coalesced per source, alerts in a file of their own."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bank_server import logs
from bank_server.logs import Coalescing, alert, setup_logging, source_of, write_all_summaries

POSIX = os.name == "posix"
ROOT = Path(__file__).resolve().parent.parent
REFUSED = "%s %s %s %s -> %s%s"  # the conversation's line, as a refused request logs it
LIMIT = 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def logging_to(log_file: Path | None, policy: Coalescing, **options: object) -> Iterator[None]:
    """``setup_logging`` for the test, then pytest's own handlers and levels as they were."""
    root = logging.getLogger()
    saved = list(root.handlers)
    saved_levels = root.level, logging.getLogger("bank_server").level
    for handler in saved:
        root.removeHandler(handler)
    try:
        setup_logging(log_file, console=False, coalescing=policy, **options)  # type: ignore[arg-type]
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(saved_levels[0])
        logging.getLogger("bank_server").setLevel(saved_levels[1])


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def summary_counts(lines: list[str], source: str) -> list[int]:
    pattern = re.compile(rf"(\d+) líneas? más como esta de {re.escape(source)},")
    return [int(m.group(1)) for line in lines for m in [pattern.search(line)] if m]


def refuse(log: logging.Logger, peer: str, error: str = "PETICION_INVALIDA") -> None:
    log.info(REFUSED, peer, "-", "IDENTIFICAR", "-", error, "")


# -- coalescing ----------------------------------------------------------------------------------------------------
def test_a_flood_from_one_source_is_coalesced_and_other_sources_all_pass(tmp_path: Path) -> None:
    clock = FakeClock()
    log_file = tmp_path / "banco.log"
    with logging_to(log_file, Coalescing(lines_per_window=LIMIT, window=60.0, clock=clock)):
        log = logging.getLogger("bank_server.conversation")
        for i in range(1000):
            refuse(log, f"10.0.0.9:{40000 + i % 7}")  # one host, new ports: still one source
            if i % 200 == 0:
                refuse(log, f"10.0.0.8:{5000 + i}")  # same kind of line, another source: LIMIT lines, all pass
                log.info("%s conectado", f"10.0.0.7:{6000 + i}")
            clock.now += 0.01
        log.info("%s conectado", "10.0.0.9:1")  # another kind of line from the flooding host passes
        log.info("cuenta.txt actualizado")  # a line about no source is never held back
        clock.now += 61
        refuse(log, "10.0.0.9:2")  # the window has ended: its summary, and a new window
    lines = lines_of(log_file)
    flood = [line for line in lines if "10.0.0.9:" in line and "PETICION_INVALIDA" in line and "más" not in line]
    assert len(flood) == LIMIT + 1, "LIMIT lines of the first window, the first of the next"
    assert summary_counts(lines, "10.0.0.9") == [1000 - LIMIT]
    assert len([line for line in lines if "10.0.0.8:" in line]) == LIMIT
    assert len([line for line in lines if "10.0.0.7:" in line]) == LIMIT
    assert any("10.0.0.9:1 conectado" in line for line in lines)
    assert any("cuenta.txt actualizado" in line for line in lines)
    assert summary_counts(lines, "10.0.0.8") == summary_counts(lines, "10.0.0.7") == []
    summary = next(line for line in lines if "líneas más" in line)
    assert " INFO " in summary and "PETICION_INVALIDA" in summary, "the summary keeps the level and shows a sample"
    assert len(lines) == 3 * LIMIT + 4  # and nothing else: 1,000 lines of flood took 6 lines and a summary


def test_every_line_not_written_is_counted_in_exactly_one_summary(tmp_path: Path) -> None:
    clock = FakeClock()
    log_file = tmp_path / "banco.log"
    sent = 0
    with logging_to(log_file, Coalescing(lines_per_window=LIMIT, window=10.0, clock=clock)):
        log = logging.getLogger("bank_server.handler")
        for burst in (3, 40, 7, 123):  # bursts shorter and longer than the limit, over several windows
            for _ in range(burst):
                log.warning("%s cajero %s rechazado: %s", "192.0.2.1:4000", "SUC-01", "versión desconocida")
                sent += 1
                clock.now += 0.001
            clock.now += 11
        log.info("%s conectado", "192.0.2.50:1")  # the last window ends when someone logs after it
        for _ in range(9):  # a window still open when the server stops
            log.warning("%s cajero %s rechazado: %s", "192.0.2.1:4000", "SUC-01", "versión desconocida")
            sent += 1
        write_all_summaries()
    lines = lines_of(log_file)
    written = [line for line in lines if "rechazado" in line and "líneas más" not in line]
    counts = summary_counts(lines, "192.0.2.1")
    assert len(written) == 3 + LIMIT * 4
    assert counts == [40 - LIMIT, 7 - LIMIT, 123 - LIMIT, 9 - LIMIT]
    assert len(written) + sum(counts) == sent


def test_a_process_that_logs_without_a_file_flushes_its_summaries_when_logging_closes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    for handler in saved:
        root.removeHandler(handler)
    try:
        setup_logging(None, coalescing=Coalescing(lines_per_window=2, window=600.0))
        log = logging.getLogger("bank_server.handler")
        for _ in range(10):
            log.warning("%s error de protocolo: %s", "198.51.100.4:999", "registro inválido")
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
    finally:
        for handler in saved:
            root.addHandler(handler)
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "error de protocolo" in line and "más" not in line]) == 2
    assert summary_counts(err, "198.51.100.4") == [8]


_FLOOD_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from bank_server.logs import Coalescing, setup_logging
    setup_logging(Path(sys.argv[1]), console=False, lock_dir=Path(sys.argv[2]),
                  coalescing=Coalescing(lines_per_window=5, window=600.0))
    log = logging.getLogger("bank_server.conversation")
    for i in range(int(sys.argv[3])):
        log.info("%s %s %s %s -> %s%s", "203.0.113.9:%d" % (1000 + i), "-", "SALDO", "-", "NO_IDENTIFICADO", "")
    """
)


def test_a_flood_spread_over_processes_is_counted_once(tmp_path: Path) -> None:
    """Each connection has its own handler process: the counts are shared, so a flood over many is still one."""
    log_file, lock_dir, each = tmp_path / "banco.log", tmp_path / "cuenta.bloqueos", 300
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    floods = [
        subprocess.Popen([sys.executable, "-c", _FLOOD_SCRIPT, str(log_file), str(lock_dir), str(each)], env=env)
        for _ in range(3)
    ]
    assert [flood.wait(timeout=60) for flood in floods] == [0, 0, 0]
    with logging_to(log_file, Coalescing(lines_per_window=5, window=600.0), lock_dir=lock_dir):
        write_all_summaries()  # as the acceptor does when it stops
    lines = lines_of(log_file)
    written = [line for line in lines if "NO_IDENTIFICADO" in line and "líneas más" not in line]
    counts = summary_counts(lines, "203.0.113.9")
    assert len(written) == 5, "five lines between all the processes, not five each"
    assert len(written) + sum(counts) == 3 * each
    assert len(counts) <= 3


def test_a_flood_from_very_many_addresses_stays_bounded(tmp_path: Path) -> None:
    clock = FakeClock()
    log_file = tmp_path / "banco.log"
    with logging_to(log_file, Coalescing(lines_per_window=1, window=600.0, clock=clock)):
        log = logging.getLogger("bank_server.handler")
        for i in range(logs.SLOTS + 2000):
            log.info("%s conectado", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:80")
        write_all_summaries()
    lines = lines_of(log_file)
    written = [line for line in lines if "líneas más" not in line]
    assert len(lines) < logs.SLOTS + 10
    assert len(written) + sum(summary_counts(lines, logs.MANY_SOURCES)) == logs.SLOTS + 2000


@pytest.mark.parametrize(
    ("first", "source"),
    [
        ("10.0.0.1:4000", "10.0.0.1"),
        ("::1:5555", "::1"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("SUC-01:5", None),
        ("error: 12", None),
        ("cuenta.txt", None),
        (("SUC-01", "10.0.0.2:80"), "10.0.0.2"),  # "cajero %s (%s)": the peer need not come first
        (("SUC-01", 3), None),
    ],
)
def test_the_source_is_the_host_of_an_argument_host_port(first: str | tuple[object, ...], source: str | None) -> None:
    args = first if isinstance(first, tuple) else (first,)
    record = logging.LogRecord("bank_server.x", logging.INFO, __file__, 1, "%s algo" * len(args), args, None)
    assert source_of(record) == source


def test_an_explicit_source_wins_and_a_path_is_no_source(tmp_path: Path) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s: no se pudo leer", (tmp_path,), None)
    assert source_of(record) is None
    record.source = "10.9.9.9"
    assert source_of(record) == "10.9.9.9"


def test_a_table_left_by_another_version_is_started_afresh(tmp_path: Path) -> None:
    lock_dir = tmp_path / "banco.bloqueos"
    lock_dir.mkdir()
    (lock_dir / "banco.log.recuento").write_bytes(b"basura" * 10)
    log_file = tmp_path / "banco.log"
    with logging_to(log_file, Coalescing(lines_per_window=2, clock=FakeClock())):
        for _ in range(5):
            logging.getLogger("bank_server.x").info("%s conectado", "10.0.0.1:1")
        write_all_summaries()
    lines = lines_of(log_file)
    assert len(lines) == 3 and summary_counts(lines, "10.0.0.1") == [3]


# -- alerts ----------------------------------------------------------------------------------------------------------
def test_alerts_survive_a_flood_that_rotates_the_main_log_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_BYTES", 8 * 1024)
    monkeypatch.setattr(logs, "BACKUPS", 2)
    log_file = tmp_path / "banco.log"
    with logging_to(log_file, Coalescing(clock=FakeClock())):
        alert("%s cajero %s suspendido: %d PIN incorrectos", "10.0.0.5:4100", "SUC-01", 10)
        log = logging.getLogger("bank_server.maintenance")
        for i in range(2000):  # lines that are not coalesced (no source): the worst case for the main log
            log.warning("no se pudo aceptar una conexión: %s (%d)", "demasiados archivos abiertos", i)
        alert("%s cajero %s dado de baja: se cierra la conexión", "10.0.0.6:4200", "SUC-02")
    main = [*lines_of(log_file), *lines_of(tmp_path / "banco.log.1"), *lines_of(tmp_path / "banco.log.2")]
    assert (tmp_path / "banco.log.2").exists(), "the flood rotated the main log"
    assert not any("suspendido" in line for line in main), "the first alert is gone from the main log"
    assert any("ALERTA: 10.0.0.6:4200 cajero SUC-02 dado de baja" in line for line in main), "alerts go there too"
    alerts = lines_of(tmp_path / "banco.alertas.log")
    assert len(alerts) == 2
    assert "ALERTA: 10.0.0.5:4100 cajero SUC-01 suspendido: 10 PIN incorrectos" in alerts[0]
    assert " WARNING " in alerts[0] and "SUC-02" in alerts[1]


def test_a_flood_of_alerts_is_coalesced_so_older_alerts_stay(tmp_path: Path) -> None:
    log_file = tmp_path / "banco.log"
    with logging_to(log_file, Coalescing(lines_per_window=LIMIT, clock=FakeClock())):
        alert("%s cajero %s suspendido", "10.0.0.5:1", "SUC-01")
        for i in range(500):
            alert("%s cajero %s error de protocolo: %s", f"10.0.0.6:{i}", "SUC-02", "registro inválido")
        alert("cajero %s dado de baja", "SUC-03", source="10.0.0.7")
        write_all_summaries()
    alerts = lines_of(tmp_path / "banco.alertas.log")
    assert "suspendido" in alerts[0] and any("SUC-03" in line for line in alerts)
    assert summary_counts(alerts, "10.0.0.6") == [500 - LIMIT]
    assert len(alerts) == 1 + LIMIT + 1 + 1
    assert summary_counts(lines_of(log_file), "10.0.0.6") == [500 - LIMIT], "the summary is in the main log too"


# -- modes -------------------------------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(not POSIX, reason="modos de archivo POSIX")
def test_log_files_and_their_locks_are_private_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "MAX_BYTES", 2048)
    log_file = tmp_path / "banco.log"
    log_file.write_text("línea de una versión anterior\n", encoding="utf-8")
    log_file.chmod(0o644)  # left readable by an older version: made private
    lock_dir = tmp_path / "cuenta.bloqueos"
    old = os.umask(0)
    try:
        with logging_to(log_file, Coalescing(clock=FakeClock()), lock_dir=lock_dir):
            alert("%s cajero %s suspendido", "10.0.0.5:1", "SUC-01")
            for i in range(200):
                logging.getLogger("bank_server.x").warning("línea sin fuente %d", i)
    finally:
        os.umask(old)
    made = [tmp_path / "banco.log", tmp_path / "banco.log.1", tmp_path / "banco.alertas.log"]
    made += list(lock_dir.iterdir())
    assert len(made) >= 6
    for path in made:
        assert _mode(path) == 0o600, path.name
    assert _mode(lock_dir) == 0o700
    assert not any(p.name.startswith(".__") for p in tmp_path.iterdir()), "no lock file beside the log"

"""Logging for every process of the server: console, ``banco.log``, and alerts in ``banco.alertas.log``.

``ConcurrentRotatingFileHandler`` (concurrent-log-handler) takes a file
lock around each write and each rotation, so the acceptor and all the
handler processes can share ``banco.log`` without interleaving or losing
lines. Each process sets logging up for itself (after ``fork`` too: an
inherited lock handle would be shared with the parent, not exclusive).

Why more than that (attack item 5 of issue 11): ``banco.log`` keeps
5 x 5 MB, and one connection sending refused requests as fast as it can
filled all of it in about two minutes, flushing away whatever the
operator needed to read. Two defences:

* **Repeated lines are coalesced per source.** A line's source is the
  address of the connection it is about (the argument ``"host:port"``
  of the handler's lines, counted by host, so a new connection does not
  start a new count) or ``extra={"source": ...}``. For each
  source, template and level, the first ``lines_per_window`` lines of a
  window (60 s) are written; the rest are only counted, and when the
  window ends one line says ``"N líneas más como esta de HOST"`` with one
  of them as a sample. The counts live in a small table shared by every
  process of the server (``banco.log.recuento``, memory-mapped, in the
  locks folder, under a file lock that dies with its holder), so a flood
  spread over many connections, each in its own handler process, is
  counted as one. Lines with no source (start-up, checkpoints) pass as
  they are: nobody outside can repeat them at will.
* **Alerts have a file of their own.** ``alert()`` writes to the main
  log and to ``banco.alertas.log``, which receives nothing else and has
  its own rotation budget, so no flood of other lines can rotate an alert
  away. Alerts are coalesced too (separately), so a flood of alerts
  cannot rotate the older alerts away either.

A window that ends while nobody logs is summarised by the next process
that logs (one of them looks at every slot once a second), by ``write_due_summaries``
(the acceptor's loop), or at the next start: the counts are in a file.
``write_all_summaries`` writes the ones still open (the acceptor, when
it stops). Every log file is 0600 and its locks are in the 0700 locks
folder (``bank_server.paths``), whatever the umask. Keys and PINs are
never logged: the callers' rule, which a summary keeps (its sample is a
line that would have been written).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import re
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler

from bank_server.file_lock import FileLock
from bank_server.paths import alerts_log_path, ensure_locks_dir, log_locks_dir, private_lock_file

try:
    import fcntl
except ImportError:  # Windows: portalocker (LockFileEx)
    fcntl = None  # type: ignore[assignment]

FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5
ALERT_MAX_BYTES = 2 * 1024 * 1024  # the alerts' own budget: coalesced, they take years to fill it
ALERT_BACKUPS = 5
ALERT_LOGGER = "bank_server.alertas"
ALERT_PREFIX = "ALERTA: "
PRIVATE_FILE = 0o600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Coalescing:
    """How many lines alike from one source are written per window, and the clock that measures windows.

    ``clock`` must be one clock for every process (``time.monotonic`` is,
    on Linux, Windows and macOS); tests pass their own.
    """

    lines_per_window: int = 20
    window: float = 60.0
    sweep_every: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic)


# -- the shared table of counts --------------------------------------------------------------------------------------
# One slot per (alert?, level, source, template): the window's start, lines written and lines only counted, and
# what the summary line needs (source and a sample). Open addressing over SLOTS; when a flood from very many
# addresses fills them, OVERFLOW slots keyed by template alone count for "varias direcciones", so the log stays
# bounded even then.
_MAGIC = b"CAJREC01"
_HEADER = struct.Struct("<8sI")  # magic, slots
_NEXT_SWEEP = struct.Struct("<d")  # after the header: when the next look at every slot is due, for all processes
_HEAD = struct.Struct("<QdII")  # key, window start, written, counted
_SOURCE_BYTES, _SAMPLE_BYTES = 48, 200
_TAIL = struct.Struct(f"<HH{_SOURCE_BYTES}s{_SAMPLE_BYTES}s")  # level, alert, source, sample
_SAMPLE_AT = _HEAD.size + 2 + 2 + _SOURCE_BYTES  # within a slot
_SLOT_SIZE = _HEAD.size + _TAIL.size
SLOTS = 4096  # a host uses a few (one per kind of line): room for the lines of ~1,000 hosts a minute
OVERFLOW = 32
_PROBES = 16
_ALL = SLOTS + OVERFLOW
_SLOTS_AT = _HEADER.size + _NEXT_SWEEP.size
_TABLE_SIZE = _SLOTS_AT + _ALL * _SLOT_SIZE
MANY_SOURCES = "varias direcciones"


@dataclass(frozen=True)
class Summary:
    """Lines counted and not written: ``count`` like ``sample``, from ``source``."""

    source: str
    count: int
    level: int
    alert: bool
    sample: str


def _key(*parts: object) -> int:
    text = "\x1f".join(str(part) for part in parts).encode("utf-8", "backslashreplace")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") or 1


def _clip(text: str, size: int) -> bytes:
    return text.encode("utf-8", "backslashreplace")[:size]


def _unclip(data: bytes) -> str:
    return data.rstrip(b"\0").decode("utf-8", "ignore")


class _Table:
    """The counting slots, in a buffer: an ``mmap`` of the shared file, or a process's own ``bytearray``.

    Every method runs under ``locked()``.
    """

    def __init__(self, buffer: mmap.mmap | bytearray, lock: _FileMutex | None, policy: Coalescing) -> None:
        self._buffer = buffer
        self._lock = lock
        self.policy = policy

    @classmethod
    def private(cls, policy: Coalescing) -> _Table:
        """This process's own table (no log file, or the shared one could not be opened)."""
        buffer = bytearray(_TABLE_SIZE)
        _HEADER.pack_into(buffer, 0, _MAGIC, _ALL)
        return cls(buffer, None, policy)

    @classmethod
    def shared(cls, path: Path, policy: Coalescing) -> _Table:
        """The table every process of the server maps from ``path`` (made 0600 on first use)."""
        lock = _FileMutex(private_lock_file(path.parent, path.name + ".lock"))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with lock:
                _make_private(path)
                if os.fstat(fd).st_size != _TABLE_SIZE:  # new, or left by another version: start afresh
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, _TABLE_SIZE)
                buffer = mmap.mmap(fd, _TABLE_SIZE)
                if _HEADER.unpack_from(buffer, 0) != (_MAGIC, _ALL):
                    buffer[:] = bytes(_TABLE_SIZE)
                    _HEADER.pack_into(buffer, 0, _MAGIC, _ALL)
        finally:
            os.close(fd)  # the mapping stays valid
        return cls(buffer, lock, policy)

    @property
    def is_shared(self) -> bool:
        return self._lock is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        with self._lock:
            yield

    def close(self) -> None:
        if isinstance(self._buffer, mmap.mmap):
            self._buffer.close()
        if self._lock is not None:
            self._lock.close()

    # -- slots --------------------------------------------------------------------------------------------------
    def _offset(self, index: int) -> int:
        return _SLOTS_AT + index * _SLOT_SIZE

    def _head(self, index: int) -> tuple[int, float, int, int]:
        return _HEAD.unpack_from(self._buffer, self._offset(index))

    def _set_head(self, index: int, key: int, start: float, written: int, counted: int) -> None:
        _HEAD.pack_into(self._buffer, self._offset(index), key, start, written, counted)

    def _summary(self, index: int, counted: int) -> Summary:
        level, alert, source, sample = _TAIL.unpack_from(self._buffer, self._offset(index) + _HEAD.size)
        return Summary(_unclip(source), counted, level, bool(alert), _unclip(sample))

    def _expired(self, start: float, now: float) -> bool:
        return now - start >= self.policy.window or now < start  # a clock that went back: a boot ago

    # -- deciding ------------------------------------------------------------------------------------------
    def admit(self, record: logging.LogRecord, source: str, now: float) -> tuple[bool, list[Summary]]:
        """True if ``record`` is to be written; and the summaries of windows that ended meanwhile."""
        alert = record.name == ALERT_LOGGER
        template = str(record.msg)
        key = _key(alert, record.levelno, source, template)
        index = self._find(key, now)
        if index is None:  # every slot near this one is busy: count it with the others of its template
            source = MANY_SOURCES
            key = _key(alert, record.levelno, source, template)
            index = SLOTS + key % OVERFLOW
        return self._count(index, key, source, record, now)

    def _find(self, key: int, now: float) -> int | None:
        reusable = None
        start_at = key % SLOTS
        for step in range(_PROBES):
            index = (start_at + step) % SLOTS
            slot_key, start, _, _ = self._head(index)
            if slot_key == key:
                return index
            if reusable is None and (slot_key == 0 or self._expired(start, now)):
                reusable = index
        return reusable

    def _count(
        self, index: int, key: int, source: str, record: logging.LogRecord, now: float
    ) -> tuple[bool, list[Summary]]:
        summaries = []
        slot_key, start, written, counted = self._head(index)
        if slot_key == 0 or self._expired(start, now) or (slot_key != key and index < SLOTS):
            if slot_key and counted:
                summaries.append(self._summary(index, counted))
            slot_key, start, written, counted = key, now, 0, 0
            tail = (record.levelno, record.name == ALERT_LOGGER, _clip(source, _SOURCE_BYTES), b"")
            _TAIL.pack_into(self._buffer, self._offset(index) + _HEAD.size, *tail)
        # (an overflow slot still open for another template simply counts this line with its own)
        if written < self.policy.lines_per_window:
            self._set_head(index, slot_key, start, written + 1, counted)
            return True, summaries
        if counted == 0:  # the first line not written is the summary's sample
            sample_at = self._offset(index) + _SAMPLE_AT
            sample = _clip(record.getMessage(), _SAMPLE_BYTES).ljust(_SAMPLE_BYTES, b"\0")
            self._buffer[sample_at : sample_at + _SAMPLE_BYTES] = sample
        self._set_head(index, slot_key, start, written, counted + 1)
        return False, summaries

    def sweep_due(self, now: float) -> bool:
        """True if nobody has looked at every slot for ``sweep_every`` (read without the lock: a hint)."""
        (next_sweep,) = _NEXT_SWEEP.unpack_from(self._buffer, _HEADER.size)
        return now >= next_sweep or next_sweep - now > self.policy.sweep_every  # (or a clock of another boot)

    def sweep(self, now: float, *, everything: bool) -> list[Summary]:
        """Summaries of the windows that ended (``everything``: of every window), their counts cleared."""
        _NEXT_SWEEP.pack_into(self._buffer, _HEADER.size, now + self.policy.sweep_every)
        summaries = []
        for index in range(_ALL):
            key, start, written, counted = self._head(index)
            if key == 0:
                continue
            ended = self._expired(start, now)
            if counted and (ended or everything):
                summaries.append(self._summary(index, counted))
            if ended:
                self._set_head(index, 0, 0.0, 0, 0)
            elif counted and everything:
                self._set_head(index, key, start, written, 0)  # the window goes on; its count starts again
        return summaries


_FileMutex = FileLock


# -- the handler in front of the real ones -----------------------------------------------------------------------
_IP_LIKE = re.compile(r"[0-9.]{7,15}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[\w.-]+)?")  # IPv4 or IPv6 (cheap: every line)


def source_of(record: logging.LogRecord) -> str | None:
    """The host a line is about: ``extra={"source": ...}``, else the first argument ``"host:port"`` with an IP host.

    Any argument, not only the first: ``"cajero %s (%s)", terminal_id, peer``
    is about the peer too (a terminal id never looks like an address).
    """
    explicit = getattr(record, "source", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    args = record.args
    if not isinstance(args, tuple):
        return None
    for arg in args:
        if isinstance(arg, str):
            host, colon, port = arg.rpartition(":")
            if colon and port.isdigit() and _IP_LIKE.fullmatch(host.strip("[]")):
                return host.strip("[]")
    return None


class CoalescingHandler(logging.Handler):
    """Writes each record to ``targets`` unless it repeats a line of the same source too often (module docstring)."""

    def __init__(self, targets: list[logging.Handler], table: _Table) -> None:
        super().__init__()
        self.targets = targets
        self.table = table
        self._policy = table.policy
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        source = None if getattr(record, "summary", False) else source_of(record)
        write, summaries = True, []
        if source is not None:
            try:
                with self.table.locked():
                    write, summaries = self.table.admit(record, source, self._policy.clock())
            except Exception:  # never lose a line to the bookkeeping: write it
                write, summaries = True, []
        self._write_summaries(summaries)
        if write:
            self._forward(record)
        self._sweep(everything=False, when_due=True)

    def write_summaries(self, *, everything: bool = False, when_due: bool = False) -> None:
        """Write the summaries of ended windows (``everything``: of all); ``when_due``: at most once a second."""
        self.acquire()
        try:
            self._sweep(everything=everything, when_due=when_due)
        finally:
            self.release()

    def _sweep(self, *, everything: bool, when_due: bool) -> None:
        now = self._policy.clock()
        try:
            if when_due and not self.table.sweep_due(now):
                return
            with self.table.locked():
                if when_due and not self.table.sweep_due(now):  # another process just did it
                    return
                summaries = self.table.sweep(now, everything=everything)
        except Exception:
            return
        self._write_summaries(summaries)

    def _write_summaries(self, summaries: list[Summary]) -> None:
        for summary in summaries:
            self._forward(_summary_record(summary, self._policy))

    def _forward(self, record: logging.LogRecord) -> None:
        for target in self.targets:
            if record.levelno >= target.level:
                target.handle(record)

    def close(self) -> None:
        """Summaries due (a process's own table: all of them), then close the real handlers.

        A process started by ``fork`` that inherited this handler writes
        nothing here: its copies of the file handles share the parent's
        log lock. A shared table's open windows are left to the others
        (``write_all_summaries`` at the server's stop, or the next start).
        """
        self.acquire()
        try:
            if os.getpid() == self._pid:
                self._sweep(everything=not self.table.is_shared, when_due=False)
            for target in self.targets:
                target.close()
            self.table.close()
        finally:
            self.release()
        super().close()


def _summary_record(summary: Summary, policy: Coalescing) -> logging.LogRecord:
    lines = "1 línea más" if summary.count == 1 else f"{summary.count} líneas más"
    record = logging.LogRecord(
        ALERT_LOGGER if summary.alert else __name__,
        summary.level,
        __file__,
        0,
        "%s como esta de %s, sin escribir (se escriben %d cada %d s): %s",
        (lines, summary.source, policy.lines_per_window, round(policy.window), summary.sample),
        None,
    )
    record.summary = True
    return record


def _only_alerts(record: logging.LogRecord) -> bool:
    return record.name == ALERT_LOGGER


def _make_private(path: Path) -> None:
    """0600 for a file an older version (or another umask) left readable by others; best effort."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            os.chmod(path, PRIVATE_FILE)


def _rotating(path: Path, max_bytes: int, backups: int, lock_dir: Path) -> ConcurrentRotatingFileHandler:
    for old in [path, *(path.with_name(f"{path.name}.{n}") for n in range(1, backups + 1))]:
        _make_private(old)
    return ConcurrentRotatingFileHandler(
        str(path),
        mode="a",
        maxBytes=max_bytes,
        backupCount=backups,
        encoding="utf-8",
        chmod=PRIVATE_FILE,  # new files and rotations are made 0600 before they get their name
        lock_file_directory=str(lock_dir),
    )


# -- the interface ----------------------------------------------------------------------------------------------------
def setup_logging(
    log_file: Path | None,
    *,
    console: bool = True,
    detailed: bool = False,
    lock_dir: Path | None = None,
    coalescing: Coalescing | None = None,
) -> None:
    """Console, ``log_file`` and its alerts file for this process; ``detailed`` adds the DEBUG lines.

    ``lock_dir`` is where the logs keep their locks and the shared counts
    (the server passes its ledger's locks folder, so that one private
    folder holds every lock); by default ``banco.bloqueos`` beside
    ``banco.log``. Every process of one server must pass the same one.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    policy = coalescing or Coalescing()
    formatter = logging.Formatter(FORMAT)
    targets: list[logging.Handler] = []
    if console:
        targets.append(logging.StreamHandler(sys.stderr))
    table, trouble = _Table.private(policy), None
    if log_file is not None:
        log_file = Path(log_file)
        folder = ensure_locks_dir(lock_dir if lock_dir is not None else log_locks_dir(log_file))
        targets.append(_rotating(log_file, MAX_BYTES, BACKUPS, folder))
        alerts = _rotating(alerts_log_path(log_file), ALERT_MAX_BYTES, ALERT_BACKUPS, folder)
        alerts.addFilter(_only_alerts)
        targets.append(alerts)
        try:
            table = _Table.shared(folder / f"{log_file.name}.recuento", policy)
        except (OSError, ValueError) as exc:
            trouble = exc
    for target in targets:
        target.setFormatter(formatter)
    root.addHandler(CoalescingHandler(targets, table))
    root.setLevel(logging.INFO)
    logging.getLogger("bank_server").setLevel(logging.DEBUG if detailed else logging.NOTSET)
    if trouble is not None:
        log.warning("las líneas repetidas se resumirán en cada proceso por separado: %s", trouble)


def alert(message: str, *args: object, source: str | None = None) -> None:
    """Tell the operator something that must not be lost: to ``banco.log`` and to ``banco.alertas.log``.

    For suspensions, revocations, protocol errors from a known terminal:
    what an operator reads after an attack, so a flood must not rotate it
    away. Same arguments as ``log.warning``; put the peer ``"host:port"``
    first (or pass ``source=host``) so that a flood of alerts from one
    address is coalesced like other lines. Never pass a key or a PIN.
    """
    extra = {"source": source} if source else None
    logging.getLogger(ALERT_LOGGER).warning(ALERT_PREFIX + message, *args, extra=extra, stacklevel=2)


def _coalescer() -> CoalescingHandler | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, CoalescingHandler):
            return handler
    return None


def write_due_summaries() -> None:
    """Write the summaries of windows that ended, if a second has passed since the last look (the acceptor's loop)."""
    handler = _coalescer()
    if handler is not None:
        handler.write_summaries(when_due=True)


def write_all_summaries() -> None:
    """Write a summary of every window still open (the acceptor, once its handlers are gone)."""
    handler = _coalescer()
    if handler is not None:
        handler.write_summaries(everything=True)


__all__ = [
    "ALERT_LOGGER",
    "Coalescing",
    "CoalescingHandler",
    "alert",
    "setup_logging",
    "source_of",
    "write_all_summaries",
    "write_due_summaries",
]

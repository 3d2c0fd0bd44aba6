"""The append-only journal beside the ledger (``cuenta.diario``).

Why a journal: rewriting ``cuenta.txt`` for every transaction would cost
time proportional to the number of accounts, and a crash in the middle of
a rewrite is exactly what must not lose anything. Instead every change is
one line appended here and flushed to disk (``fdatasync``) *before* the
ATM hears "ok".
``cuenta.txt`` is rewritten only at checkpoints (start-up, clean stop,
administration, and the acceptor's periodic one), atomically.

A line is ``<crc> <n> <tarjeta> <id> <json>\\n`` (docs/ledger.md):

- ``crc``: 8 hex digits, the CRC-32 of the rest of the line (after the
  space that follows it, without the newline);
- ``n``, ``tarjeta``, ``id``: the record's number, its card and its
  transaction id (``.`` when it has none), repeated from the JSON so
  that a handler can skip other cards' records without decoding them;
- ``json``: the record, ``{"n", "fecha", "tipo", "cuenta"}`` plus ``id``
  and ``monto`` for a DEPOSITO or RETIRO (``Record.encode``). The account's
  PIN hash is written only by the records that set it (``PIN``, ``ALTA``):
  a journal is not a list of every hash a card ever had, and the others
  carry ``cuenta`` without ``pin`` (``KEEP_PIN`` once decoded: the state
  keeps the hash it has).

The CRC tells a torn write (a process killed mid-``write``: always the
last line, never acknowledged) from a complete one. A torn last line is
cut off by the next writer, which holds the lock and so knows nobody is
writing it. A bad line *followed by good ones* is damage, not a torn
write: it is reported with its line number and never used.

Each record carries the *whole* resulting account, not a delta, so that
replaying a record twice is harmless and recovery is a plain overwrite.
The first line names the ledger it belongs to: ``# cajero-diario libro=<uuid>``.
"""

from __future__ import annotations

import json
import operator
import os
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, NamedTuple

from bank_server import faults
from bank_server.ledger import Account, fast_account, parse_account
from common.files import replace_atomically
from common.money import AmountError, format_amount, parse_ledger_amount

HEADER_RE = re.compile(rb"# cajero-diario libro=([0-9a-f]{32})\n")
MOVEMENT_TYPES = frozenset({"DEPOSITO", "RETIRO"})
RECORD_TYPES = MOVEMENT_TYPES | {"INTENTOS", "PIN", "ALTA", "DESBLOQUEO"}
PIN_SETTING_TYPES = frozenset({"PIN", "ALTA"})  # the only records that carry the PIN hash
KEEP_PIN = ""  # a decoded record's ``cuenta.pin`` when the line did not carry it: "unchanged"
_STAND_IN_PIN = "scrypt$2$1$1$" + "00" * 16 + "$" + "00" * 32  # lets such a line go through the account parser
_O_BINARY = getattr(os, "O_BINARY", 0)
NO_ID = "."  # in a line's prefix, for records without a transaction id ("-" is a valid id)
_NO_ID = NO_ID.encode("ascii")
_SPLIT_PREFIX = operator.methodcaller("split", " ", 4)
_ID_AND_CARD = operator.itemgetter(3, 2)
_READ_CHUNK = 1 << 20


class JournalError(Exception):
    """Damage in the journal: the file, the line and what is wrong."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}, línea {line}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass(frozen=True)
class Record:
    """One committed change: the account as it is *after* it."""

    n: int
    fecha: str
    tipo: str
    cuenta: Account
    id: str | None = None
    monto: Decimal | None = None

    def encode(self) -> bytes:
        cuenta = self.cuenta.to_json()
        if self.tipo not in PIN_SETTING_TYPES:
            del cuenta["pin"]
        body: dict[str, object] = {"n": self.n, "fecha": self.fecha, "tipo": self.tipo, "cuenta": cuenta}
        if self.id is not None:
            body["id"] = self.id
        if self.monto is not None:
            body["monto"] = format_amount(self.monto)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        line = b"%d %s %s %s" % (
            self.n,
            self.cuenta.tarjeta.encode("ascii"),
            (self.id or NO_ID).encode("ascii"),
            payload,
        )
        return b"%08x %s\n" % (zlib.crc32(line), line)


class Scan(NamedTuple):
    """What one read of the journal found."""

    records: list[RawRecord]  # lines to take one by one, in order
    others: dict[str, str]  # read without a loop (see ``Journal._other_cards_only``): id -> card
    last_n: int  # with ``others``: the number of the last line read


class RawRecord(NamedTuple):
    """A checked line not yet decoded: what a handler needs to skip another card's record cheaply."""

    n: int
    tarjeta: str
    id: str | None
    line: bytes
    number: int  # line number in the journal, for error messages


def scan_line(line: bytes, number: int) -> RawRecord:
    """Check the CRC and read the plain prefix (``n tarjeta id``); ``ValueError`` if unusable.

    Every handler runs this on every record any process appends, so it is
    kept to a few calls into C: one split, one CRC, two ints.
    """
    parts = line.split(b" ", 4)
    if len(parts) != 5 or len(parts[0]) != 8 or not parts[1].isdigit():
        raise ValueError("la línea no tiene el formato <crc> <n> <tarjeta> <id> <json>")
    try:
        crc = int(parts[0], 16)
    except ValueError:
        raise ValueError("el CRC no es hexadecimal") from None
    if zlib.crc32(line[9:]) != crc:
        raise ValueError("el CRC no coincide (línea dañada o escrita a medias)")
    tx_id = parts[3]
    return RawRecord(
        int(parts[1]), parts[2].decode("ascii"), None if tx_id == _NO_ID else tx_id.decode("ascii"), line, number
    )


def decode_record(line: bytes) -> Record:
    """Decode one complete line (without its newline); ``ValueError`` says why it is unusable."""
    return decode_scanned(scan_line(line, 0))


def decode_scanned(raw: RawRecord) -> Record:
    """Decode a line whose CRC and prefix ``scan_line`` already checked."""
    payload = raw.line[9:].split(b" ", 3)[3]
    body = json.loads(payload.decode("utf-8"))
    cuenta = body["cuenta"]
    carries_pin = "pin" in cuenta
    pin = cuenta["pin"] if carries_pin else _STAND_IN_PIN
    fields = [str(f) for f in (cuenta["tarjeta"], cuenta["titular"], cuenta["saldo"], pin, cuenta["intentos"])]
    account = fast_account("|".join(fields)) if not any("|" in f for f in fields) else None
    if account is None:
        account, problem = parse_account(fields)
        if account is None:
            raise ValueError(problem)
    if not carries_pin:
        account = account._replace(pin=KEEP_PIN)
    tipo = body["tipo"]
    if tipo not in RECORD_TYPES or not isinstance(body["n"], int) or not isinstance(body["fecha"], str):
        raise ValueError("registro con tipo, número o fecha no válidos")
    monto = None
    if "monto" in body:
        try:
            monto = parse_ledger_amount(body["monto"])
        except AmountError as exc:
            raise ValueError(str(exc)) from None
    if tipo in MOVEMENT_TYPES and (monto is None or not isinstance(body.get("id"), str)):
        raise ValueError("un movimiento necesita id y monto")
    record = Record(body["n"], body["fecha"], tipo, account, body.get("id"), monto)
    if (record.n, record.cuenta.tarjeta, record.id) != (raw.n, raw.tarjeta, raw.id):
        raise ValueError("el prefijo de la línea no coincide con el registro")
    return record


def sync_fd(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def write_atomically(path: Path, data: bytes, tmp_suffix: str = ".tmp") -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole.

    Writers that do not hold the ledger lock pass their own ``tmp_suffix``
    so that two of them never write the same temporary file. The crash
    points let the crash tests die half-way through a checkpoint.
    """
    if faults.triggered("checkpoint_temporal"):
        with open(path.with_name(path.name + tmp_suffix), "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
        faults.die()
    replace_atomically(
        path, data, tmp_suffix, before_replace=lambda: faults.crash_point("checkpoint_antes_de_reemplazar")
    )


def create_journal(path: Path, libro: str) -> None:
    """Write an empty journal for ledger ``libro`` (atomically: it appears whole or not at all)."""
    write_atomically(path, b"# cajero-diario libro=%s\n" % libro.encode("ascii"))


def read_header(path: Path) -> str:
    with open(path, "rb") as handle:
        first = handle.readline(200)
    match = HEADER_RE.fullmatch(first)
    if not match:
        raise JournalError(path, 1, "falta la cabecera '# cajero-diario libro=...'")
    return match.group(1).decode("ascii")


class Journal:
    """An open journal: incremental reads from an offset, appends with fsync.

    One instance per process. Reads use a buffered reader; appends use a raw
    ``O_APPEND`` descriptor so that each record is one ``write``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.libro = read_header(path)
        self._reader: BinaryIO = open(path, "rb")  # noqa: SIM115 - lives as long as the journal
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | _O_BINARY)
        self.offset = len(self._reader.readline())  # bytes consumed so far: the header
        self.lines = 1  # lines consumed so far (for error messages)

    def close(self) -> None:
        self._reader.close()
        os.close(self._fd)

    def same_file_on_disk(self) -> bool:
        """False if our file is no longer the journal: deleted, or replaced by a rename.

        Either way the file we hold has no name left (``st_nlink`` 0): one
        ``fstat``, where comparing with ``stat(path)`` took two calls on
        every transaction.
        """
        try:
            return os.fstat(self._fd).st_nlink > 0
        except OSError:
            return False

    def read_new(self, *, locked: bool, focus: str | None = None, after_n: int = 0) -> Scan:
        """Records appended since the last call, checked (CRC) but not decoded.

        With ``locked`` (the caller holds the ledger lock, so no one is
        writing) an incomplete or garbled *last* line is a torn write and is
        cut off. Without the lock it may be a write in progress: it is left
        for the next call. A bad line with good ones after it is damage.

        ``focus`` is a handler's card and ``after_n`` the last record it has;
        see ``_other_cards_only`` for the shortcut they allow.
        """
        data = self._read_from(self.offset)
        if not data:
            return Scan([], {}, 0)
        if focus is not None:
            scan = self._other_cards_only(data, focus, after_n, locked=locked)
            if scan is not None:
                return scan
        records: list[RawRecord] = []
        position = 0
        while position < len(data):
            end = data.find(b"\n", position)
            if end < 0:
                if locked:
                    self._truncate(self.offset + position)
                break
            try:
                records.append(scan_line(data[position:end], self.lines + 1))
            except (ValueError, UnicodeDecodeError) as exc:
                if end + 1 == len(data):  # the last line: a torn write, or one in progress
                    if locked:
                        self._truncate(self.offset + position)
                    break
                raise JournalError(self.path, self.lines + 1, f"registro dañado: {exc}") from None
            position = end + 1
            self.lines += 1
        self.offset += position
        return Scan(records, {}, 0)

    def _other_cards_only(self, data: bytes, focus: str, after_n: int, *, locked: bool) -> Scan | None:
        """Read new lines that are all other cards' records without a Python loop; None: take the careful path.

        A handler serves one card, yet every record any ATM commits is read
        by every other handler: N-1 lines per transaction with N ATMs, at
        several microseconds each in a per-line loop. Of another card's
        record a handler needs only its id (so a reused id is refused) and
        how far the numbering has gone. So: if the focus card appears
        nowhere in the new lines, the last line passes its CRC check, the
        numbers run on from ``after_n`` without a gap, each line's id and
        card are cut from its prefix by ``split`` mapped over all the lines,
        and nothing else is parsed. Anything else
        (our card written by someone else, a torn or damaged line) goes the
        careful way. The other lines' CRCs are left to the acceptor, which
        checks every line within a second and logs any damage; no line's
        *content* is used here.
        """
        end = data.rfind(b"\n") + 1
        if end == 0 or b" %s " % focus.encode("ascii") in data:
            return None
        try:
            last = scan_line(data[data.rfind(b"\n", 0, end - 1) + 1 : end - 1], 0)
        except (ValueError, UnicodeDecodeError):
            return None
        lines = data[: end - 1].decode("latin-1").split("\n")  # prefixes are ASCII; latin-1 never fails
        count = len(lines)
        if last.n != after_n + count:
            return None
        try:  # <crc> <n> <tarjeta> <id> <json>: id -> tarjeta, with map() and dict() looping in C
            others = dict(map(_ID_AND_CARD, map(_SPLIT_PREFIX, lines)))
        except (IndexError, ValueError):
            return None
        others.pop(NO_ID, None)
        if locked and end < len(data):
            self._truncate(self.offset + end)
        self.offset += end
        self.lines += count
        return Scan([], others, last.n)

    def _read_from(self, offset: int) -> bytes:
        """Everything from ``offset`` to the end: one ``pread`` when nothing new (the common case)."""
        if not hasattr(os, "pread"):  # Windows
            self._reader.seek(offset)
            return self._reader.read()
        chunks = []
        while True:
            chunk = os.pread(self._reader.fileno(), _READ_CHUNK, offset)
            chunks.append(chunk)
            if len(chunk) < _READ_CHUNK:
                return chunk if len(chunks) == 1 else b"".join(chunks)
            offset += len(chunk)

    def write(self, record: Record) -> int:
        """Append ``record`` in one ``write``; return the offset just past it (group commit needs it).

        Not yet durable: the caller makes it so (``sync``), after releasing
        the lock and before answering anyone. Caller holds the lock.
        """
        data = record.encode()
        faults.crash_point("antes_de_escribir")
        if faults.triggered("escritura_a_medias"):
            os.write(self._fd, data[: len(data) // 2])
            faults.die()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"escritura incompleta ({written} de {len(data)} bytes)")
        except OSError:
            self._truncate(self.offset)
            raise
        self.offset += len(data)
        self.lines += 1
        return os.lseek(self._fd, 0, os.SEEK_CUR)  # where O_APPEND put our last byte: the file's own word

    def sync(self) -> None:
        """Flush the journal to the disk.

        Called *outside* the ledger lock, so that while one process waits for
        the disk the others go on deciding and writing; handlers also share
        these calls (``group_commit``).
        """
        sync_fd(self._fd)

    def _truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        sync_fd(self._fd)

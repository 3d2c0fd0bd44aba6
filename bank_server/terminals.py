"""The bank's terminal registry (``cuenta.cajeros``): every ATM's keys, state and guessing count.

PROTOCOL.md sections 2, 3 and 6: each ATM is a terminal with an id and its
own 32-byte key with a version; the bank holds them all, rotates them,
revokes terminals, and suspends PIN checks for a terminal that guesses.
This module keeps that registry on disk, shared by the acceptor, every
handler process and the operator's commands, all of which may run at once.

Files, beside the ledger (names derived from it, as ``cuenta.diario`` is):

``cuenta.cajeros``
    UTF-8 JSON lines, sorted by id; ``#`` lines and blank lines are
    ignored. The first other line is the header,
    ``{"formato": "cajero-cajeros 1", "control": "<base64>"}``; each line
    after it is one terminal::

        {"id": "SUC-01", "estado": "activo", "ultima_version": 2,
         "actual": {"version": 1, "llave_cifrada": "<base64>"},
         "pendiente": {"version": 2, "llave_cifrada": "<base64>"},
         "pines_fallidos": ["2024-05-01T10:00:00.000+00:00"]}

    (one line in the file). ``estado`` is ``activo`` or ``revocado`` (a
    revoked terminal keeps no key); ``ultima_version`` is the highest
    version ever issued, so that enrolling a revoked id again never reuses
    a version; ``pines_fallidos`` are the wrong-PIN attempts of the last
    hour, kept here because the guessing limit must survive restarts and
    be shared by every handler process.

    Keys are never stored in clear: ``llave_cifrada`` is
    ``nonce (12) || AES-256-GCM(key) (32) || tag (16)`` in base64, under a
    wrapping key derived from the bank key with its own label (never the
    bank key itself), with the terminal id and version as associated data
    so that a wrapped key moved to another line or version fails its tag.
    ``control`` is a GCM tag over nothing, so that a wrong bank key is
    reported at load time even before any key is unwrapped. The file alone
    is therefore safe to back up (``backup``): it is useless without
    ``banco.key``, which must be backed up separately.

``cuenta.cajeros.vistos``
    JSON lines ``{"id", "visto", "direccion"}``: when and from where each
    terminal was last seen. Advisory only, so it lives apart: its frequent
    small writes must not make every handler reload the keys. A damaged
    line there is skipped, never fatal.

``cuenta.cajeros.lock``
    The cross-process lock (portalocker) every writer holds.

Every write is atomic (temporary file created ``0600`` in the same
folder, fsync, ``os.replace``, fsync of the folder), so a crash at any
instant leaves the old or the new whole file. Readers never lock: they
``stat`` the file at most every ``check_interval`` seconds (inode, size,
mtime: ``os.replace`` always brings a new inode) and reload only when it
changed, so an operator's change reaches every running handler well within
the contract's 2 seconds without a system call per request.

No key, wrapped or not, ever appears in a repr, a log line or an
exception text. ``TerminalKey`` and the ATM's key-file text come from
``common.keys``, so the bank writes exactly what the ATM reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import portalocker
from Crypto.Cipher import AES

from bank_server import paths
from common.files import create_new, replace_atomically
from common.handshake import MAX_VERSION, TERMINAL_KEY_SIZE, is_valid_terminal_id, is_valid_version
from common.keys import TerminalKey, format_terminal_key_file

log = logging.getLogger("bank_server.cajeros")

FORMAT = "cajero-cajeros 1"
KEY_BYTES = TERMINAL_KEY_SIZE
DEFAULT_GUESS_LIMIT = 10
GUESS_WINDOW = 3600.0
DEFAULT_CHECK_INTERVAL = 0.5
DEFAULT_SEEN_INTERVAL = 60.0
MAX_KEPT_ATTEMPTS = 1000  # bounds a line's size; far above any sane limit

_WRAP_LABEL = b"ATM2 bank: terminal key wrapping"
_CONTROL_AAD = b"ATM2 cajeros: control"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAPPED_BYTES = _NONCE_BYTES + KEY_BYTES + _TAG_BYTES
_ACTIVE, _REVOKED = "activo", "revocado"
_HEADER_COMMENT = (
    "# Cajeros del banco (protocolo ATM2): una línea JSON por cajero.\n"
    "# Las llaves están cifradas con la llave del banco (banco.key): este archivo no sirve sin ella.\n"
    "# No lo edite a mano: use cajero-alta, cajero-rotar, cajero-baja, cajero-reactivar y cajeros.\n"
)
_RESTORE = "Restaure la última copia de respaldo de este archivo."

T = TypeVar("T")


# -- errors ---------------------------------------------------------------------------


class TerminalRegistryError(Exception):
    """An operator-facing problem with the registry; the Spanish message names the file and the way out."""


class UnknownTerminalError(TerminalRegistryError):
    """The id is not in the registry."""


class WrongBankKeyError(TerminalRegistryError):
    """The bank key given is not the one the registry was written with (a GCM tag failed)."""


class DamagedRegistryError(TerminalRegistryError):
    """The registry file cannot be read whole; ``problems`` lists every bad line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- public values --------------------------------------------------------------------


@dataclass(frozen=True)
class TerminalInfo:
    """What ``cajeros`` shows of one terminal: never a key."""

    terminal_id: str
    active: bool
    current_version: int | None
    pending_version: int | None
    suspended: bool
    wrong_pins_last_hour: int
    last_seen: datetime | None
    last_address: str | None


def check_terminal_id(terminal_id: str) -> str:
    """Return ``terminal_id`` if it follows the contract's grammar; else a Spanish ``ValueError``."""
    if not is_valid_terminal_id(terminal_id):
        raise ValueError(
            f"identificador de cajero no válido: {terminal_id!r:.40}; debe tener de 1 a 32 caracteres "
            "entre A-Z (mayúsculas), 0-9 y '-', por ejemplo SUC-CENTRO-01"
        )
    return terminal_id


def registry_path_for(ledger_path: Path) -> Path:
    """``cuenta.txt`` -> ``cuenta.cajeros`` (as the journal is ``cuenta.diario``)."""
    return paths.registry_path(ledger_path)


def write_key_file(path: Path, key: TerminalKey) -> None:
    """Create the ATM's key file ``path`` (mode 0600) for ``cajero-alta``; never overwrite one.

    ``common.keys.write_terminal_key`` replaces the file (the ATM's side of
    a rotation); enrolment must not, so this creates it with ``O_EXCL``:
    the check and the creation are one step, and two operators cannot
    race into two keys for one file. The text is ``common.keys``'s.
    """
    try:
        create_new(path, format_terminal_key_file(key).encode("utf-8"))
    except FileExistsError:
        raise TerminalRegistryError(
            f"{path}: ya existe; no se sobrescribe un archivo de llave. Elija otro con --salida, "
            "o bórrelo a mano si de verdad ya no sirve."
        ) from None
    except OSError as exc:
        raise TerminalRegistryError(f"{path}: no se pudo crear el archivo de llave ({exc.strerror}).") from None


# -- internal values ------------------------------------------------------------------


@dataclass(frozen=True)
class _Wrapped:
    version: int
    blob: bytes = field(repr=False)


@dataclass(frozen=True)
class _Terminal:
    terminal_id: str
    active: bool
    last_version: int
    current: _Wrapped | None
    pending: _Wrapped | None
    wrong_pins: tuple[float, ...]
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class _Seen:
    when: float
    address: str


Signature = tuple[int, int, int]


class _LineError(Exception):
    """A problem in one line of the registry, collected with the others."""


# -- the registry ---------------------------------------------------------------------


class TerminalRegistry:
    """The terminal registry of one bank, safe to use from many processes at once.

    Reads use an in-memory view refreshed by a throttled ``stat``; writes
    take the lock, reload the file, change it and replace it. After a
    ``fork`` the child keeps the parent's view (so the acceptor should
    call ``refresh`` in its loop) and opens its own lock handle.
    """

    def __init__(
        self,
        path: Path,
        bank_key: bytes,
        *,
        guess_limit: int = DEFAULT_GUESS_LIMIT,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        seen_interval: float = DEFAULT_SEEN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(bank_key, bytes) or len(bank_key) != KEY_BYTES:
            raise ValueError("la llave del banco debe tener 32 bytes")
        if guess_limit < 0:
            raise ValueError("el límite de intentos no puede ser negativo")
        self.path = Path(path)
        self.seen_path = paths.registry_seen_path(self.path)
        self.lock_path = paths.registry_lock_path(self.path)
        self.guess_limit = guess_limit
        self.check_interval = check_interval
        self.seen_interval = seen_interval
        self._clock = clock
        self._wrapping_key = hmac.new(bank_key, _WRAP_LABEL, hashlib.sha256).digest()
        self._terminals: dict[str, _Terminal] = {}
        self._signature: Signature | None = None
        self._checked_at: float | None = None
        self._seen: dict[str, _Seen] = {}
        self._seen_signature: Signature | None = None
        self._seen_checked_at: float | None = None
        self._lock = _FileLock(self.lock_path)

    def __repr__(self) -> str:
        return f"TerminalRegistry({str(self.path)!r})"

    @classmethod
    def for_ledger(cls, ledger_path: Path, bank_key: bytes, **options: Any) -> TerminalRegistry:
        return cls(registry_path_for(ledger_path), bank_key, **options)

    # -- reading (hot path: handlers) ----------------------------------------------------

    def refresh(self, *, force: bool = False, include_seen: bool = False) -> None:
        """Reload the registry if it changed; ``stat`` it at most every ``check_interval`` unless forced.

        Raises ``TerminalRegistryError`` if the file became unreadable:
        callers refuse the terminal rather than trust a stale view. The
        acceptor calls it with ``include_seen`` in its loop, so that forked
        handlers start with both views current and rarely need a system call.
        """
        if include_seen:
            try:
                self._refresh_seen(force=force)
            except (OSError, TerminalRegistryError) as exc:
                log.warning("%s: no se pudo leer: %s", self.seen_path, exc)
        now = self._clock()
        if not force and self._checked_at is not None and now - self._checked_at < self.check_interval:
            return
        if _stat_signature(self.path) != self._signature or self._checked_at is None:
            self._terminals, self._signature = self._read_registry()
        self._checked_at = now

    def key_for_hello(self, terminal_id: str, version: int) -> bytes | None:
        """The key for a ClientHello naming ``terminal_id`` and ``version``, or None to refuse.

        None means unknown, revoked, or neither the current nor the pending
        version: the caller closes without a ServerHello (section 3). It
        always ``stat``s the file (one system call per connection): an old
        version must be refused from the moment another handler confirmed
        the new one, not half a second later.
        """
        self.refresh(force=True)
        terminal = self._terminals.get(terminal_id)
        if terminal is None or not terminal.active:
            return None
        for wrapped in (terminal.current, terminal.pending):
            if wrapped is not None and wrapped.version == version:
                return self._unwrap(terminal, wrapped)
        return None

    def current_version(self, terminal_id: str) -> int | None:
        """The current version of an active terminal (what RENOVAR_LLAVE answers with no pending key)."""
        self.refresh()
        terminal = self._terminals.get(terminal_id)
        if terminal is None or not terminal.active or terminal.current is None:
            return None
        return terminal.current.version

    def pending_key(self, terminal_id: str) -> tuple[int, bytes] | None:
        """``(version, key)`` of the pending key for RENOVAR_LLAVE; the same every time until confirmed."""
        self.refresh()
        terminal = self._terminals.get(terminal_id)
        if terminal is None or not terminal.active or terminal.pending is None:
            return None
        return terminal.pending.version, self._unwrap(terminal, terminal.pending)

    def is_revoked(self, terminal_id: str) -> bool:
        """True if the terminal may no longer talk to the bank (revoked, or gone). Throttled: cheap to poll."""
        self.refresh()
        terminal = self._terminals.get(terminal_id)
        return terminal is None or not terminal.active

    def is_suspended(self, terminal_id: str, now: float) -> bool:
        """True if PIN checks are suspended for this terminal at wall-clock time ``now``.

        It always ``stat``s the file: it runs once per IDENTIFICAR, which
        costs a scrypt anyway, and another handler of the same terminal may
        have just recorded the attempt that suspends it.
        """
        self.refresh(force=True)
        terminal = self._terminals.get(terminal_id)
        return terminal is not None and self._count_recent(terminal, now) > self.guess_limit

    def list(self, now: float | None = None) -> list[TerminalInfo]:
        """Every terminal, sorted by id, with its state at ``now``; no keys."""
        now = time.time() if now is None else now
        self.refresh(force=True)
        self._refresh_seen(force=True)
        infos = []
        for terminal_id, terminal in sorted(self._terminals.items()):
            seen = self._seen.get(terminal_id)
            recent = self._count_recent(terminal, now)
            infos.append(
                TerminalInfo(
                    terminal_id=terminal_id,
                    active=terminal.active,
                    current_version=terminal.current.version if terminal.current else None,
                    pending_version=terminal.pending.version if terminal.pending else None,
                    suspended=recent > self.guess_limit,
                    wrong_pins_last_hour=recent,
                    last_seen=datetime.fromtimestamp(seen.when, timezone.utc) if seen else None,
                    last_address=seen.address if seen else None,
                )
            )
        return infos

    # -- operator commands ----------------------------------------------------------------

    def enrol(self, terminal_id: str, key_file: Path | None = None) -> TerminalKey:
        """``cajero-alta``: a fresh random key for a new or revoked terminal, at the next version.

        With ``key_file`` the ATM's key file is created (never overwritten)
        before the registry is written, and removed if that write fails: so
        no terminal is enrolled with a key nobody received.
        """
        check_terminal_id(terminal_id)
        created: list[Path] = []

        def change(terminals: dict[str, _Terminal]) -> TerminalKey:
            old = terminals.get(terminal_id)
            if old is not None and old.active:
                raise TerminalRegistryError(
                    f"{self.path}: el cajero {terminal_id} ya está dado de alta "
                    f"(versión {old.current.version if old.current else '?'}). Para darle una llave nueva use "
                    f"cajero-rotar {terminal_id}; para empezar de cero, cajero-baja {terminal_id} y luego cajero-alta."
                )
            version = self._next_version(old.last_version if old else 0, terminal_id)
            key = TerminalKey(terminal_id, version, secrets.token_bytes(KEY_BYTES))
            if key_file is not None:
                write_key_file(key_file, key)
                created.append(key_file)
            wrapped = self._wrap(terminal_id, version, key.key)
            terminals[terminal_id] = _Terminal(terminal_id, True, version, wrapped, None, old.wrong_pins if old else ())
            return key

        try:
            return self._mutate(change)
        except BaseException:
            for path in created:
                _unlink_quietly(path)
            raise

    def rotate(self, terminal_id: str) -> int:
        """``cajero-rotar``: make a pending key at the next version; asked again, keep the same one."""

        def change(terminals: dict[str, _Terminal]) -> int:
            terminal = self._require_active(terminals, terminal_id)
            if terminal.pending is not None:
                return terminal.pending.version
            version = self._next_version(terminal.last_version, terminal_id)
            pending = self._wrap(terminal_id, version, secrets.token_bytes(KEY_BYTES))
            terminals[terminal_id] = replace(terminal, pending=pending, last_version=version)
            return version

        return self._mutate(change)

    def revoke(self, terminal_id: str) -> bool:
        """``cajero-baja``: refuse the terminal from now on and forget its keys. False if it already was."""

        def change(terminals: dict[str, _Terminal]) -> bool:
            terminal = self._require_known(terminals, terminal_id)
            if not terminal.active:
                return False
            terminals[terminal_id] = replace(terminal, active=False, current=None, pending=None)
            return True

        return self._mutate(change)

    def reactivate(self, terminal_id: str) -> bool:
        """``cajero-reactivar``: lift a guessing suspension (forget the recent wrong PINs).

        False if there was nothing to forget. A revoked terminal is not
        brought back this way: that needs a new key (``cajero-alta``).
        """

        def change(terminals: dict[str, _Terminal]) -> bool:
            terminal = self._require_known(terminals, terminal_id)
            if not terminal.active:
                raise TerminalRegistryError(
                    f"{self.path}: el cajero {terminal_id} está dado de baja; cajero-reactivar solo levanta una "
                    f"suspensión por PIN incorrectos. Para volver a usarlo: cajero-alta {terminal_id} "
                    "(recibe una llave nueva)."
                )
            if not terminal.wrong_pins:
                return False
            terminals[terminal_id] = replace(terminal, wrong_pins=())
            return True

        return self._mutate(change)

    def backup(self, destination: Path) -> None:
        """Copy the registry, consistent under the lock, to a new file ``destination`` (0600).

        The copy holds wrapped keys only: keep ``banco.key`` backed up
        elsewhere, since without it the copy cannot be used.
        """
        with self._lock:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                raise TerminalRegistryError(f"{self.path}: no existe; no hay cajeros que respaldar.") from None
            self._parse_registry(data)  # never back up a file that would not load
            _create_new_file(destination, data)

    # -- handler events -------------------------------------------------------------------

    def confirm_version(self, terminal_id: str, version: int) -> bool:
        """The first record of a session with ``version`` passed its check: a pending version becomes current.

        From then on the old version is refused. Idempotent, and free when
        ``version`` is already current. False if ``version`` is neither.
        """
        self.refresh()
        terminal = self._terminals.get(terminal_id)
        if terminal is not None and terminal.active and terminal.current and terminal.current.version == version:
            return True

        def change(terminals: dict[str, _Terminal]) -> bool:
            terminal = terminals.get(terminal_id)
            if terminal is None or not terminal.active:
                return False
            if terminal.pending is not None and terminal.pending.version == version:
                terminals[terminal_id] = replace(terminal, current=terminal.pending, pending=None)
                return True
            return terminal.current is not None and terminal.current.version == version

        return self._mutate(change)

    def record_wrong_pin(self, terminal_id: str, now: float) -> bool:
        """Count one wrong PIN of this terminal at wall-clock ``now``; True if it is suspended after it.

        Suspended means more than ``guess_limit`` attempts in the last hour
        (so with the default 10, the 11th wrong attempt is still checked
        and it is the one that suspends). Each call is a locked, synced
        write: wrong PINs are rare, and the count must survive a restart.
        """

        def change(terminals: dict[str, _Terminal]) -> bool:
            terminal = terminals.get(terminal_id)
            if terminal is None:
                raise UnknownTerminalError(f"{self.path}: no hay ningún cajero {terminal_id}.")
            recent = [t for t in terminal.wrong_pins if t > now - GUESS_WINDOW]
            recent.append(now)
            terminals[terminal_id] = replace(terminal, wrong_pins=tuple(recent[-MAX_KEPT_ATTEMPTS:]))
            return len(recent) > self.guess_limit

        return self._mutate(change)

    def admit_pin_attempt(self, terminal_id: str, now: float) -> int | None:
        """Count a PIN attempt of this terminal *before* it is checked; None (nothing counted) if suspended.

        Check and count are one locked write, so simultaneous attempts on
        many cards cannot all slip under the limit (as they could if the
        attempt were counted only once found wrong). Returns the count in
        the last hour, this attempt included: above ``guess_limit``, this
        is the attempt that suspends the terminal if it proves wrong. A
        right PIN takes its attempt back with ``withdraw_pin_attempt``.
        """

        def change(terminals: dict[str, _Terminal]) -> int | None:
            terminal = terminals.get(terminal_id)
            if terminal is None:
                raise UnknownTerminalError(f"{self.path}: no hay ningún cajero {terminal_id}.")
            recent = [t for t in terminal.wrong_pins if t > now - GUESS_WINDOW]
            if len(recent) > self.guess_limit:
                return None
            recent.append(now)
            terminals[terminal_id] = replace(terminal, wrong_pins=tuple(recent[-MAX_KEPT_ATTEMPTS:]))
            return len(recent)

        return self._mutate(change)

    def withdraw_pin_attempt(self, terminal_id: str, admitted_at: float) -> None:
        """The attempt admitted at ``admitted_at`` was a right PIN (or checked nothing): it does not count."""

        def change(terminals: dict[str, _Terminal]) -> None:
            terminal = terminals.get(terminal_id)
            stamp = _iso(admitted_at)  # the file keeps milliseconds: compare as it was written
            match = next((t for t in terminal.wrong_pins if _iso(t) == stamp), None) if terminal else None
            if terminal is None or match is None:
                return
            kept = list(terminal.wrong_pins)
            kept.remove(match)
            terminals[terminal_id] = replace(terminal, wrong_pins=tuple(kept))

        self._mutate(change)

    def seen(self, terminal_id: str, address: str, when: float) -> None:
        """Note that the terminal was seen at ``when`` (wall clock) from ``address``.

        Coalesced: nothing is written while the last record (in this
        process's view, refreshed by the throttled stat) is from the same
        address and less than ``seen_interval`` old; so under load a
        terminal costs about one write a minute, not one per connection.
        Failures are logged, never raised: this is bookkeeping.
        """
        try:
            self._refresh_seen()
            if self._seen_is_fresh(terminal_id, address, when):
                return
            with self._lock:
                self._seen, self._seen_signature = _read_seen(self.seen_path)
                self._seen_checked_at = self._clock()
                if self._seen_is_fresh(terminal_id, address, when):
                    return
                seen = dict(self._seen)
                seen[terminal_id] = _Seen(when, address)
                _write_atomically(self.seen_path, _render_seen(seen))
                self._seen, self._seen_signature = seen, _stat_signature(self.seen_path)
        except (OSError, portalocker.LockException, TerminalRegistryError) as exc:
            log.warning("%s: no se pudo anotar cuándo se vio al cajero %s: %s", self.seen_path, terminal_id, exc)

    # -- internals ------------------------------------------------------------------------

    def _mutate(self, change: Callable[[dict[str, _Terminal]], T]) -> T:
        """Run ``change`` on a fresh copy of the registry under the lock; write it back if it changed."""
        with self._lock:
            # Always re-read under the lock: a decision on a stale view would lose another writer's change.
            self._terminals, self._signature = self._read_registry()
            self._checked_at = self._clock()
            terminals = dict(self._terminals)
            result = change(terminals)
            if terminals != self._terminals:
                try:
                    _write_atomically(self.path, self._render(terminals))
                except OSError as exc:
                    raise TerminalRegistryError(
                        f"{self.path}: no se pudo escribir ({exc.strerror or exc}); no se cambió nada. "
                        "Revise el espacio libre y los permisos de la carpeta."
                    ) from None
                self._terminals, self._signature = self._read_registry()
                self._checked_at = self._clock()
            return result

    def _read_registry(self) -> tuple[dict[str, _Terminal], Signature | None]:
        try:
            with open(self.path, "rb") as handle:
                signature = _signature_of(os.fstat(handle.fileno()))
                data = handle.read()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            raise TerminalRegistryError(f"{self.path}: no se pudo leer ({exc.strerror}).") from None
        return self._parse_registry(data), signature

    def _parse_registry(self, data: bytes) -> dict[str, _Terminal]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DamagedRegistryError([f"{self.path}: no es texto UTF-8. {_RESTORE}"]) from None
        terminals: dict[str, _Terminal] = {}
        problems: list[str] = []
        header_seen = False
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                obj = _json_object(line)
                if not header_seen:
                    self._check_header(obj)
                    header_seen = True
                    continue
                terminal = _parse_terminal(obj, number)
                if terminal.terminal_id in terminals:
                    raise _LineError(f"el cajero {terminal.terminal_id} ya apareció en otra línea")
                terminals[terminal.terminal_id] = terminal
            except _LineError as exc:
                problems.append(f"{self.path}, línea {number}: {exc}")
        if not header_seen and not problems and text.strip():
            problems.append(f'{self.path}: falta la línea de encabezado {{"formato": "{FORMAT}", ...}}.')
        if problems:
            problems.append(f"{self.path}: {_RESTORE} No se cambió nada.")
            raise DamagedRegistryError(problems)
        return terminals

    def _check_header(self, obj: dict[str, Any]) -> None:
        if obj.get("formato") != FORMAT:
            raise _LineError(f'se esperaba el encabezado {{"formato": "{FORMAT}", ...}}')
        blob = _decode_blob(obj.get("control"), _NONCE_BYTES + _TAG_BYTES, "control")
        cipher = AES.new(self._wrapping_key, AES.MODE_GCM, nonce=blob[:_NONCE_BYTES])
        cipher.update(_CONTROL_AAD)
        try:
            cipher.decrypt_and_verify(b"", blob[_NONCE_BYTES:])
        except ValueError:
            raise WrongBankKeyError(
                f"{self.path}: la llave del banco no corresponde a {self.path.name}. Arranque con el mismo "
                "banco.key con que se dieron de alta los cajeros (o restaure ese archivo de su respaldo); "
                "no se cambió nada."
            ) from None

    def _render(self, terminals: dict[str, _Terminal]) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        cipher = AES.new(self._wrapping_key, AES.MODE_GCM, nonce=nonce)
        cipher.update(_CONTROL_AAD)
        _, tag = cipher.encrypt_and_digest(b"")
        lines = [_HEADER_COMMENT, _dump({"formato": FORMAT, "control": _b64(nonce + tag)})]
        lines.extend(_dump(_terminal_to_json(terminals[key])) for key in sorted(terminals))
        return "".join(lines).encode("utf-8")

    def _wrap(self, terminal_id: str, version: int, key: bytes) -> _Wrapped:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        cipher = AES.new(self._wrapping_key, AES.MODE_GCM, nonce=nonce)
        cipher.update(_aad(terminal_id, version))
        sealed, tag = cipher.encrypt_and_digest(key)
        return _Wrapped(version, nonce + sealed + tag)

    def _unwrap(self, terminal: _Terminal, wrapped: _Wrapped) -> bytes:
        blob = wrapped.blob
        cipher = AES.new(self._wrapping_key, AES.MODE_GCM, nonce=blob[:_NONCE_BYTES])
        cipher.update(_aad(terminal.terminal_id, wrapped.version))
        try:
            return cipher.decrypt_and_verify(blob[_NONCE_BYTES:-_TAG_BYTES], blob[-_TAG_BYTES:])
        except ValueError:
            raise DamagedRegistryError(
                [
                    f"{self.path}, línea {terminal.line}: la llave cifrada del cajero {terminal.terminal_id} "
                    f"(versión {wrapped.version}) no pasa su verificación: la línea fue alterada. {_RESTORE} "
                    f"O dé al cajero una llave nueva: cajero-baja {terminal.terminal_id} y cajero-alta "
                    f"{terminal.terminal_id}."
                ]
            ) from None

    def _require_known(self, terminals: dict[str, _Terminal], terminal_id: str) -> _Terminal:
        terminal = terminals.get(terminal_id)
        if terminal is None:
            raise UnknownTerminalError(
                f"{self.path}: no hay ningún cajero {terminal_id}. Vea la lista con: cajeros; "
                f"para registrarlo: cajero-alta {terminal_id}."
            )
        return terminal

    def _require_active(self, terminals: dict[str, _Terminal], terminal_id: str) -> _Terminal:
        terminal = self._require_known(terminals, terminal_id)
        if not terminal.active:
            raise TerminalRegistryError(
                f"{self.path}: el cajero {terminal_id} está dado de baja. Para volver a usarlo: "
                f"cajero-alta {terminal_id} (recibe una llave nueva)."
            )
        return terminal

    def _next_version(self, last: int, terminal_id: str) -> int:
        if last >= MAX_VERSION:
            raise TerminalRegistryError(
                f"{self.path}: el cajero {terminal_id} ya usó todas las versiones de llave (hasta {MAX_VERSION}); "
                "dé de alta el cajero con otro identificador."
            )
        return last + 1

    def _count_recent(self, terminal: _Terminal, now: float) -> int:
        return sum(1 for t in terminal.wrong_pins if t > now - GUESS_WINDOW)

    def _refresh_seen(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and self._seen_checked_at is not None and now - self._seen_checked_at < self.check_interval:
            return
        signature = _stat_signature(self.seen_path)
        if signature != self._seen_signature or self._seen_checked_at is None:
            self._seen, self._seen_signature = _read_seen(self.seen_path)
        self._seen_checked_at = now

    def _seen_is_fresh(self, terminal_id: str, address: str, when: float) -> bool:
        last = self._seen.get(terminal_id)
        return last is not None and last.address == address and 0 <= when - last.when < self.seen_interval


# -- the lock -------------------------------------------------------------------------


class _FileLock:
    """Exclusive cross-process lock on a 0600 file; each process opens its own handle.

    A handle inherited through ``fork`` would share the parent's lock
    instead of excluding it, hence the pid check.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: BinaryIO | None = None
        self._pid = -1

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
            except OSError as exc:
                raise TerminalRegistryError(f"{self.path}: no se pudo abrir el cerrojo ({exc.strerror}).") from None
            self._handle = os.fdopen(fd, "r+b")
            self._pid = os.getpid()
        assert self._handle is not None
        portalocker.lock(self._handle, portalocker.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        assert self._handle is not None
        portalocker.unlock(self._handle)


# -- file helpers ---------------------------------------------------------------------


def _signature_of(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _stat_signature(path: Path) -> Signature | None:
    try:
        return _signature_of(os.stat(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TerminalRegistryError(f"{path}: no se pudo consultar ({exc.strerror or exc}).") from None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _create_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file ``path`` and sync it; refuse to overwrite."""
    try:
        create_new(path, data)
    except FileExistsError:
        raise TerminalRegistryError(f"{path}: ya existe; no se sobrescribe. Elija otro nombre.") from None
    except OSError as exc:
        raise TerminalRegistryError(f"{path}: no se pudo crear ({exc.strerror}).") from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (only called under the registry lock, so one temporary name is enough)."""
    replace_atomically(path, data)


# -- line formats ---------------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def _json_object(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        raise _LineError("no es un objeto JSON válido") from None
    if not isinstance(obj, dict):
        raise _LineError("no es un objeto JSON")
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_blob(value: Any, length: int, name: str) -> bytes:
    try:
        blob = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        blob = b""
    if len(blob) != length:
        raise _LineError(f"el campo {name} no es un valor cifrado válido")
    return blob


def _aad(terminal_id: str, version: int) -> bytes:
    return b"ATM2 terminal key|" + terminal_id.encode("ascii") + b"|" + str(version).encode("ascii")


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")


def _epoch(value: Any) -> float:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _LineError(f"fecha no válida: {str(value)[:40]!r}; se espera ISO 8601 con zona horaria")
    return moment.timestamp()


def _version(value: Any, name: str) -> int:
    if not is_valid_version(value):
        raise _LineError(f"{name}: la versión debe ser un entero de 1 a {MAX_VERSION}")
    return value


def _parse_wrapped(value: Any, name: str) -> _Wrapped | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _LineError(f"{name} debe ser un objeto o null")
    version = _version(value.get("version"), name)
    return _Wrapped(version, _decode_blob(value.get("llave_cifrada"), _WRAPPED_BYTES, f"{name}.llave_cifrada"))


def _parse_terminal(obj: dict[str, Any], number: int) -> _Terminal:
    terminal_id = obj.get("id")
    if not is_valid_terminal_id(terminal_id):
        raise _LineError("falta el id del cajero o no sigue la gramática [A-Z0-9-]{1,32}")
    state = obj.get("estado")
    if state not in (_ACTIVE, _REVOKED):
        raise _LineError(f"cajero {terminal_id}: estado debe ser {_ACTIVE!r} o {_REVOKED!r}")
    last = _version(obj.get("ultima_version"), f"cajero {terminal_id}: ultima_version")
    current = _parse_wrapped(obj.get("actual"), f"cajero {terminal_id}: actual")
    pending = _parse_wrapped(obj.get("pendiente"), f"cajero {terminal_id}: pendiente")
    attempts = obj.get("pines_fallidos", [])
    if not isinstance(attempts, list):
        raise _LineError(f"cajero {terminal_id}: pines_fallidos debe ser una lista de fechas")
    active = state == _ACTIVE
    _check_versions(terminal_id, active, last, current, pending)
    return _Terminal(terminal_id, active, last, current, pending, tuple(_epoch(t) for t in attempts), number)


def _check_versions(
    terminal_id: str, active: bool, last: int, current: _Wrapped | None, pending: _Wrapped | None
) -> None:
    if active and current is None:
        raise _LineError(f"cajero {terminal_id}: un cajero activo necesita su llave actual")
    if not active and (current is not None or pending is not None):
        raise _LineError(f"cajero {terminal_id}: un cajero dado de baja no guarda llaves")
    if pending is not None and current is not None and pending.version <= current.version:
        raise _LineError(f"cajero {terminal_id}: la versión pendiente debe ser mayor que la actual")
    if any(w is not None and w.version > last for w in (current, pending)):
        raise _LineError(f"cajero {terminal_id}: una versión supera ultima_version")


def _terminal_to_json(terminal: _Terminal) -> dict[str, Any]:
    def wrapped(value: _Wrapped | None) -> dict[str, Any] | None:
        return None if value is None else {"version": value.version, "llave_cifrada": _b64(value.blob)}

    return {
        "id": terminal.terminal_id,
        "estado": _ACTIVE if terminal.active else _REVOKED,
        "ultima_version": terminal.last_version,
        "actual": wrapped(terminal.current),
        "pendiente": wrapped(terminal.pending),
        "pines_fallidos": [_iso(t) for t in terminal.wrong_pins],
    }


def _render_seen(seen: dict[str, _Seen]) -> bytes:
    lines = ["# Cuándo y desde dónde se vio por última vez a cada cajero (informativo).\n"]
    lines.extend(
        _dump({"id": key, "visto": _iso(seen[key].when), "direccion": seen[key].address}) for key in sorted(seen)
    )
    return "".join(lines).encode("utf-8")


def _read_seen(path: Path) -> tuple[dict[str, _Seen], Signature | None]:
    """Read the advisory last-seen file; bad lines are skipped (logged), never fatal."""
    try:
        with open(path, "rb") as handle:
            signature = _signature_of(os.fstat(handle.fileno()))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return {}, None
    seen: dict[str, _Seen] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = _json_object(line)
            terminal_id, address = obj.get("id"), obj.get("direccion")
            if not isinstance(terminal_id, str) or not isinstance(address, str):
                raise _LineError("faltan id o direccion")
            seen[terminal_id] = _Seen(_epoch(obj.get("visto")), address)
        except _LineError as exc:
            log.warning("%s, línea %d: se ignora (%s)", path, number, exc)
    return seen, signature

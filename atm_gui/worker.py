"""The ATM's one worker thread: it owns the bank connection and does every slow thing.

Why a thread of its own: a socket read may wait seconds (a slow bank, a
time-out, a reconnection), and Tk freezes if its thread waits. So the
Tk thread only puts commands on ``commands`` and drains ``events`` with
``after()``; this thread owns the ``BankClient`` and the key, and puts
nothing but the frozen events of ``atm_gui.events`` back.

What it decides on its own, because only it sees the socket:

* Reconnection. A request whose connection broke is sent again on a new
  connection, after identifying the card again (one card per connection;
  the card and PIN are kept in memory for the session only, never
  logged). ``Depositar`` and ``Retirar`` keep their ``id``, so the bank's
  idempotency answers the original result (``repetida``) instead of
  applying the money twice: the customer sees the true outcome.
* ``CambiarPin`` whose answer was lost: the new PIN is tried first, so a
  change that was applied is reported as done and not tried again.
* Being out of service. When the bank cannot be reached, holds another
  key for this ATM, or refuses this terminal (unknown, revoked, an old
  key version), or the key file is unusable, it says which
  (``BankStatus.reason``) and tries again every few seconds, so the
  ATM comes back by itself once someone has acted; between customers
  it also looks every ``probe_every`` seconds (connect, RENOVAR_LLAVE,
  SALIR), so the welcome screen is honest.
* Its key. The key file is read before every connection (``KeyStore``),
  and after every handshake the worker asks ``RENOVAR_LLAVE``: a key the
  bank hands over is written to the key file, atomically, before it is
  ever used, and used from the next connection on (PROTOCOL.md
  section 6). The key never reaches a log or an event.

Commands: ``OpenSession``, ``SendRequest``, ``CloseSession``,
``SaveReceipt`` and ``Stop``. Events: ``BankStatus``, ``Connected``,
``Disconnected``, ``Reconnecting``, ``Reply``, ``RequestFailed``,
``ReceiptSaved``, ``ReceiptFailed``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from atm_gui.bank_client import BankClient, BankError, BankRefused, BankWrongKey
from atm_gui.events import (
    BankStatus,
    CloseSession,
    Command,
    Connected,
    Disconnected,
    Event,
    OpenSession,
    ReceiptFailed,
    ReceiptSaved,
    Reconnecting,
    Reply,
    RequestFailed,
    SaveReceipt,
    SendRequest,
    Stop,
)
from atm_gui.key_store import KeyStore
from atm_gui.model import STAFF_OUTAGES, OutageReason
from common.errors import KeyFileError
from common.files import create_new
from common.keys import TerminalKey
from common.messages import (
    CambiarPin,
    Consultar,
    Depositar,
    Identificar,
    Movimientos,
    Request,
    Retirar,
    Salir,
    request_op_name,
)

log = logging.getLogger("cajero.atm")

# Requests that may be sent again after a lost reply without changing the outcome.
RETRYABLE = (Consultar, Movimientos, Depositar, Retirar, CambiarPin)
MAX_BACKOFF = 2.0  # seconds between attempts to resend a request, at most
RECEIPT_MODE = 0o600  # a receipt names a card (masked) and a balance: for this user only
# The log line for each outage, for the staff (the customer's words are in ``wording``).
OUTAGE_LOG_LINES: dict[OutageReason | None, str] = {
    None: "sin comunicación con el banco",
    OutageReason.UNREACHABLE: "sin comunicación con el banco",
    OutageReason.WRONG_KEY: "la llave de este cajero no coincide con la que el banco tiene para él",
    OutageReason.REFUSED: (
        "el banco rechazó a este cajero: no está dado de alta, fue dado de baja, o la versión de su llave ya no vale"
    ),
    OutageReason.NO_KEY: "este cajero no tiene una llave utilizable (vea el error anterior)",
}


class _NoConnection(Exception):
    """No connection could be made at all; ``reason`` says why."""

    def __init__(self, reason: OutageReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class _Refused(Exception):
    """The bank refused the card again on reconnection (blocked meanwhile, PIN changed)."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__(response.get("error"))
        self.response = response


class Worker:
    """Start with ``start()``, feed ``send()``, read ``events``, end with ``stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        keys: KeyStore,
        receipts_dir: Path,
        *,
        timeout: float = 10.0,
        retry_every: float = 5.0,
        retry_for: float = 30.0,
        probe_every: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self._keys = keys
        self._key_problem: str | None = None
        self._receipts_dir = receipts_dir
        self._timeout = timeout
        self._retry_every = retry_every
        self._retry_for = retry_for
        self._probe_every = probe_every
        self.commands: queue.Queue[Command] = queue.Queue()
        self.events: queue.Queue[Event] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cajero-banco", daemon=True)
        self._client: BankClient | None = None
        self._session_no: int | None = None
        self._card: str | None = None
        self._pin: str | None = None
        self._next_attempt: float | None = None
        self._online: bool | None = None
        self._outage = OutageReason.UNREACHABLE

    @property
    def destination(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the Tk thread's side ----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def send(self, command: Command) -> None:
        self.commands.put(command)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread: it says SALIR to the bank if a session is open, then ends."""
        self._stopping.set()
        self.commands.put(Stop())
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the worker thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            self._look_again()
            while not self._stopping.is_set():
                wait = None if self._next_attempt is None else max(0.0, self._next_attempt - time.monotonic())
                try:
                    command = self.commands.get(timeout=wait)
                except queue.Empty:
                    self._look_again()
                    continue
                if isinstance(command, Stop):
                    break
                try:
                    self._handle(command)
                except Exception:  # the thread must outlive any bug: the session is told and ends
                    log.exception("error inesperado al atender %s", type(command).__name__)
                    self._close_client()
                    correlation_id = command.correlation_id if isinstance(command, SendRequest) else None
                    self._emit(RequestFailed(command.session_no, correlation_id))
        finally:
            self._say_goodbye()

    def _look_again(self) -> None:
        """Probe or reconnect (``_retry``); a bug there must not end the thread, or the ATM would be dead.

        The staff find the trace in the log; the screen says out of service,
        and the worker tries again a few seconds later.
        """
        try:
            self._retry()
        except Exception:
            log.exception("error inesperado al conectar con el banco")
            self._close_client()
            self._set_status(False, OutageReason.UNREACHABLE)
            self._retry_later()

    def _handle(self, command: OpenSession | SendRequest | CloseSession | SaveReceipt) -> None:
        match command:
            case OpenSession():
                self._open_session(command)
            case SendRequest():
                self._send_request(command)
            case CloseSession():
                self._close_session(command)
            case SaveReceipt():
                self._save_receipt(command)

    def _emit(self, event: Event) -> None:
        self.events.put(event)

    def _set_status(self, online: bool, reason: OutageReason | None = None, terminal_id: str = "") -> None:
        """Tell the window when the bank comes or goes (once per change), and log it."""
        if online == self._online and (online or reason == self._outage):
            return
        self._online = online
        self._outage = reason or self._outage
        if online:
            log.info("en línea con el banco %s como cajero %s", self.destination, terminal_id)
        else:
            log.warning("%s (banco %s)", OUTAGE_LOG_LINES.get(reason, OUTAGE_LOG_LINES[None]), self.destination)
        self._emit(BankStatus(online, reason, self.destination, terminal_id if online else ""))

    def _offline(self, reason: OutageReason) -> _NoConnection:
        """Say why the bank cannot be used (once per change) and return the error to raise."""
        self._set_status(False, reason)
        return _NoConnection(reason)

    def _load_key(self) -> TerminalKey:
        """This ATM's key as the file holds it now; a problem is logged once, not at every retry."""
        try:
            key = self._keys.load()
        except KeyFileError as exc:
            if str(exc) != self._key_problem:
                self._key_problem = str(exc)
                log.error("%s", exc)
            raise self._offline(OutageReason.NO_KEY) from None
        self._key_problem = None
        return key

    def _connect(self) -> None:
        """Open a connection or raise ``_NoConnection``; reads the key each time so a fixed or renewed key is used."""
        self._close_client()
        key = self._load_key()
        client = BankClient(self.host, self.port, key, timeout=self._timeout)
        try:
            client.connect()
            self._renew_key(client, key)
        except BankWrongKey:
            raise self._offline(OutageReason.WRONG_KEY) from None
        except BankRefused:
            raise self._offline(OutageReason.REFUSED) from None
        except BankError as exc:
            log.info("no se pudo conectar: %s", exc)
            client.close()
            raise self._offline(OutageReason.UNREACHABLE) from None
        self._client = client
        self._set_status(True, terminal_id=key.terminal_id)

    def _renew_key(self, client: BankClient, key: TerminalKey) -> None:
        """``RENOVAR_LLAVE`` after every handshake; a new key is stored (atomically) before any use.

        This connection goes on under the old key, which the bank keeps
        accepting until a session under the new one proves it; the next
        connection reads the new file. If the file cannot be written the
        old key stays in use and the bank hands the same key over again
        next time, so nothing is lost but a log line.
        """
        new_key = client.renew_key()
        if new_key is None or new_key.version == key.version:
            return
        if new_key.version < key.version:
            log.warning(
                "el banco ofreció la versión %d de la llave, anterior a la %d en uso: se ignora",
                new_key.version,
                key.version,
            )
            return
        try:
            self._keys.save(new_key)
        except KeyFileError as exc:
            log.error("%s", exc)
            return
        log.info(
            "llave del cajero %s renovada: versión %d guardada en %s; se usa desde la próxima conexión",
            new_key.terminal_id,
            new_key.version,
            self._keys.path,
        )

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _retry_later(self) -> None:
        self._next_attempt = time.monotonic() + self._retry_every

    def _probe_later(self) -> None:
        """Between customers, look again now and then, so the welcome screen tells the truth."""
        self._next_attempt = time.monotonic() + self._probe_every if self._probe_every > 0 else None

    def _probe(self) -> None:
        """Between customers: connect (and take any renewed key), say SALIR, close: is the bank there?"""
        try:
            self._connect()
        except _NoConnection:
            self._retry_later()
            return
        self._probe_later()
        self._say_goodbye()

    def _retry(self) -> None:
        self._next_attempt = None
        if self._session_no is None:
            self._probe()
            return
        try:
            self._connect()
            if self._card is not None:
                self._identify_again()
        except _NoConnection:
            self._retry_later()
            return
        except _Refused:
            # Never guess the PIN again (that could block the card): end this session instead.
            self._close_client()
            self._card = self._pin = None
            self._emit(RequestFailed(self._session_no))
            return
        except BankError:
            self._close_client()
            self._retry_later()
            return
        self._emit(Connected(self._session_no))

    def _say_goodbye(self) -> None:
        if self._client is not None:
            with contextlib.suppress(BankError):
                self._client.request(Salir())
        self._close_client()

    def _identify_again(self, pin: str | None = None) -> dict[str, Any]:
        """Identify the session's card on a new connection; with the session's PIN a refusal raises ``_Refused``."""
        assert self._client is not None and self._card is not None
        response = self._client.request(Identificar(self._card, pin or self._pin or ""))
        if response.get("ok") is not True and pin is None:
            raise _Refused(response)
        return response

    # -- commands ---------------------------------------------------------------------
    def _open_session(self, command: OpenSession) -> None:
        self._say_goodbye()
        self._session_no = command.session_no
        self._card = self._pin = None
        try:
            self._connect()
        except _NoConnection as exc:
            self._retry_later()
            self._emit(Disconnected(command.session_no, exc.reason))
            return
        self._next_attempt = None
        self._emit(Connected(command.session_no))

    def _close_session(self, command: CloseSession) -> None:
        if command.session_no != self._session_no:
            return
        self._say_goodbye()
        self._session_no = None
        self._card = self._pin = None
        if not self._online:
            self._retry_later()
        else:
            self._probe_later()

    def _save_receipt(self, command: SaveReceipt) -> None:
        file_name = Path(command.file_name).name  # never a path from elsewhere
        try:
            self._receipts_dir.mkdir(parents=True, exist_ok=True)
            path = self._receipts_dir / file_name
            create_new(path, command.text.encode("utf-8"), RECEIPT_MODE)
        except OSError as exc:
            log.error("no se pudo guardar el recibo %s: %s", file_name, exc)
            self._emit(ReceiptFailed(command.session_no, file_name))
            return
        self._emit(ReceiptSaved(command.session_no, file_name, path))

    def _send_request(self, command: SendRequest) -> None:
        session_no, correlation_id, request = command.session_no, command.correlation_id, command.request
        if session_no != self._session_no:
            return
        if self._client is None and self._card is None and self._next_attempt is not None:
            # The session is out of service, waiting for the bank: this request cannot go.
            self._emit(Disconnected(session_no, self._outage, correlation_id))
            return
        try:
            response = self._send_with_retries(command)
        except _Refused as exc:
            response = exc.response
        except _NoConnection as exc:
            self._retry_later()
            if isinstance(request, RETRYABLE):
                self._emit(RequestFailed(session_no, correlation_id))
            else:
                self._emit(Disconnected(session_no, exc.reason, correlation_id))
            return
        except BankError as exc:
            log.warning("se perdió la respuesta de %s: %s", request_op_name(request), exc)
            self._close_client()
            self._emit(RequestFailed(session_no, correlation_id))
            return
        self._remember_credentials(request, response)
        self._emit(Reply(session_no, correlation_id, response))

    def _remember_credentials(self, request: Request, response: dict[str, Any]) -> None:
        """Keep the card and PIN that work, to identify again after a reconnection."""
        if response.get("ok") is True:
            match request:
                case Identificar(tarjeta=card, pin=pin):
                    self._card, self._pin = card, pin
                case CambiarPin(pin_nuevo=new_pin):
                    self._pin = new_pin
        if isinstance(request, Identificar) and response.get("error") == "CAJERO_SUSPENDIDO":
            log.warning("el banco suspendió la verificación de PIN en este cajero: demasiados PIN incorrectos")
        if response.get("repetida") and isinstance(request, Depositar | Retirar):
            log.info(
                "%s %s ya estaba aplicada; el banco devolvió el resultado original",
                request_op_name(request),
                request.id,
            )

    def _send_with_retries(self, command: SendRequest) -> dict[str, Any]:
        """Send, and if the reply is lost, reconnect, re-identify and send the same request again."""
        request = command.request
        deadline = time.monotonic() + self._retry_for
        attempt = 0
        sent = False
        while True:
            try:
                if self._client is None and self._reconnect_for(request, sent):
                    return {"ok": True}
                assert self._client is not None
                sent = True
                return self._client.request(request)
            except (BankError, _NoConnection) as exc:
                self._close_client()
                if not isinstance(request, RETRYABLE) or self._stopping.is_set() or time.monotonic() >= deadline:
                    raise
                if isinstance(exc, _NoConnection) and exc.reason in STAFF_OUTAGES:
                    raise
                attempt += 1
                log.warning("reintentando %s (intento %d) tras: %s", request_op_name(request), attempt, exc)
                self._emit(Reconnecting(command.session_no, command.correlation_id, attempt))
                self._stopping.wait(min(0.2 * 2**attempt, MAX_BACKOFF))

    def _reconnect_for(self, request: Request, sent: bool) -> bool:
        """Reconnect and identify again; True if that shows a PIN change already sent was applied."""
        self._connect()
        if self._card is None:
            return False
        # A PIN change whose reply was lost: if the new PIN works, it was applied.
        if isinstance(request, CambiarPin) and sent and self._identify_again(request.pin_nuevo).get("ok") is True:
            return True
        self._identify_again()
        return False

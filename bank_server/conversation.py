"""One ATM conversation: request text in, response dict out.

``Conversation`` holds what the contract makes per-connection (which
terminal, which card is identified) and turns each request into calls on
the ``Store``: reads without the lock, writes inside it. PIN checks are
``PinChecker``'s (counted before checked, scrypt outside the lock).

Transaction ids are scoped per terminal (PROTOCOL.md section 5): the bank
keeps ``<terminal>/<id>``, so the same id from two terminals names two
transactions, and no terminal can learn or block another's ids. The
customer sees the id as the ATM sent it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bank_server.clock import now_iso
from bank_server.journal import Record
from bank_server.ledger import MAX_PIN_ATTEMPTS
from bank_server.pin_checks import PinChecker
from bank_server.rules import Limits, account_for, decide_movement, decide_pin_change
from bank_server.state import Applied
from bank_server.store import Store
from bank_server.terminals import TerminalRegistry
from common import messages as m
from common.messages import RequestError, error_response, mask_card, ok_response
from common.money import REQUEST_AMOUNT_RE as AMOUNT_RE
from common.money import format_amount

log = logging.getLogger(__name__)
_ROUTINE_OPS = frozenset({m.CONSULTAR, m.DEPOSITAR, m.RETIRAR, m.MOVIMIENTOS, m.SALIR})


def scoped_id(terminal_id: str, tx_id: str) -> str:
    """How the bank keeps a terminal's transaction id (``/`` is in neither grammar)."""
    return f"{terminal_id}/{tx_id}"


def shown_id(stored: str) -> str:
    """The id as its terminal sent it (records from before ATM2 have no terminal)."""
    return stored.rpartition("/")[2]


@dataclass
class Conversation:
    store: Store
    limits: Limits
    peer: str
    terminal_id: str
    registry: TerminalRegistry
    pins: PinChecker
    card: str | None = None  # identified card
    tried: str | None = field(default=None, init=False)  # the existing card this connection is bound to
    finished: bool = field(default=False, init=False)

    def handle(self, text: str) -> dict[str, Any]:
        """Answer one request. Never raises for anything a client can send."""
        op = "?"
        try:
            message = m.decode_object(text)
            op = m.request_op(message)
            if op in m.ACCOUNT_OPS and self.card is None:
                raise RequestError("NO_IDENTIFICADO")
            request = m.parse_request(message)
            response = self._dispatch(request)
        except RequestError as exc:
            response = error_response(exc)
        except Exception:  # a bug or a disk failure: nothing was applied (the append is the commit)
            log.exception("%s %s: error interno", self.peer, op)
            response = error_response(RequestError("ERROR_INTERNO"))
        self._log(op, message if op != "?" else {}, response)
        return response

    # -- one method per operation ------------------------------------------------
    def _dispatch(self, request: m.Request) -> dict[str, Any]:
        if isinstance(request, m.Identificar):
            return self._identify(request)
        if isinstance(request, m.Salir):
            self.finished = True
            return ok_response()
        if isinstance(request, m.RenovarLlave):
            return self._renew_key()
        assert self.card is not None
        if isinstance(request, m.Consultar):
            account = account_for(self.store.refresh(), self.card)
            return ok_response(
                titular=account.titular, tarjeta=mask_card(account.tarjeta), saldo=format_amount(account.saldo)
            )
        if isinstance(request, m.Depositar | m.Retirar):
            return self._movement(request)
        if isinstance(request, m.Movimientos):
            return self._movements(request.n)
        if isinstance(request, m.CambiarPin):
            return self._change_pin(request)
        raise AssertionError(f"unhandled request {request!r}")

    def _identify(self, request: m.Identificar) -> dict[str, Any]:
        if self.card is not None:
            raise RequestError("PETICION_INVALIDA", "already identified")
        if self.tried is not None and request.tarjeta != self.tried:
            raise RequestError("PETICION_INVALIDA", "one card per connection")
        account_for(self.store.refresh(), request.tarjeta)
        if self.tried is None:
            self.tried = request.tarjeta
            self.store.state.bind(request.tarjeta)
        account = self.pins.identify(request.tarjeta, request.pin)
        self.card = request.tarjeta
        return ok_response(titular=account.titular)

    def _renew_key(self) -> dict[str, Any]:
        """RENOVAR_LLAVE: the pending key if a rotation is under way, else the current version alone."""
        pending = self.registry.pending_key(self.terminal_id)
        if pending is not None:
            version, key = pending
            return ok_response(version=version, llave=key.hex())
        version = self.registry.current_version(self.terminal_id)
        if version is None:  # revoked meanwhile: the loop closes the connection within 2 s
            raise RequestError("PETICION_INVALIDA", "terminal no longer active")
        return ok_response(version=version)

    def _movement(self, request: m.Depositar | m.Retirar) -> dict[str, Any]:
        assert self.card is not None
        tipo = "DEPOSITO" if isinstance(request, m.Depositar) else "RETIRO"
        with self.store.locked() as state:
            tx_id = scoped_id(self.terminal_id, request.id)
            outcome = decide_movement(state, tipo, self.card, request.monto, tx_id, now_iso(), self.limits)
            if isinstance(outcome, Record):
                self.store.commit(outcome)
        if isinstance(outcome, Applied):
            return ok_response(id=request.id, saldo=format_amount(outcome.saldo), repetida=True)
        return ok_response(id=request.id, saldo=format_amount(outcome.cuenta.saldo))

    def _movements(self, n: int) -> dict[str, Any]:
        assert self.card is not None
        state = self.store.refresh()
        account_for(state, self.card)
        recent = list(state.movements.get(self.card, ()))[-n:]
        return ok_response(
            movimientos=[
                {
                    "id": shown_id(r.id) if r.id else r.id,
                    "fecha": r.fecha,
                    "tipo": r.tipo,
                    "monto": format_amount(r.monto) if r.monto is not None else "0.00",
                    "saldo": format_amount(r.cuenta.saldo),
                }
                for r in reversed(recent)
            ]
        )

    def _change_pin(self, request: m.CambiarPin) -> dict[str, Any]:
        assert self.card is not None
        checked = self.pins.check(self.card, request.pin_actual)  # counted like a log-in
        new_field = self.pins.new_hash(request.pin_nuevo)  # slow: outside the lock
        with self.store.locked() as state:
            now = account_for(state, self.card)
            if now.pin != checked.pin:  # changed by another connection meanwhile: the safe side
                raise RequestError("PIN_INCORRECTO", intentos_restantes=max(0, MAX_PIN_ATTEMPTS - now.intentos))
            self.store.commit(decide_pin_change(state, self.card, new_field, now_iso()))
        return ok_response()

    # -- the log line: time and peer come from the formatter and this call; no PIN, no full card.
    # Only text that passed the contract's grammar is logged, so a request can never forge a log line.
    # Log-ins, PIN changes and every refusal are INFO; an accepted read or movement is DEBUG
    # (``--detallado``): the journal already holds every movement, durably, and one log line
    # per request cost more CPU than the rest of a deposit's bookkeeping.
    def _log(self, op: str, message: dict[str, Any], response: dict[str, Any]) -> None:
        ok = bool(response.get("ok"))
        level = logging.DEBUG if ok and op in _ROUTINE_OPS else logging.INFO
        if not log.isEnabledFor(level):
            return
        card = self.card or message.get("tarjeta")
        shown = mask_card(card) if isinstance(card, str) and m.CARD_RE.fullmatch(card) else "-"
        amount = message.get("monto")
        shown_amount = amount if isinstance(amount, str) and AMOUNT_RE.fullmatch(amount) else "-"
        outcome = "ok" if ok else response.get("error")
        extra = " repetida" if response.get("repetida") else ""
        log.log(level, "%s %s %s %s -> %s%s", self.peer, shown, op, shown_amount, outcome, extra)

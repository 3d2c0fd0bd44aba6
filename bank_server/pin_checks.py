"""Checking a PIN: one attempt at a time per card, counted before it is checked, bounded in CPU.

The attack this answers: with the count of wrong PINs read from a stale
copy, 30 simultaneous guesses on one card were all checked, so three
tries became thirty. Here attempts on one card are checked one at a
time (``CardLocks``), and each is first *admitted* under the ledger
lock (``rules.decide_pin_admission``: ``intentos`` + 1, synced), then
checked outside the lock (scrypt is slow), then a right PIN resets the
count (``rules.decide_pin_success``). An IDENTIFICAR's attempt is also
admitted against its terminal first (``TerminalGuard``: checked and
counted in one locked write of the registry, taken back if the PIN proves
right), so simultaneous attempts on many cards cannot all slip under the
terminal's limit (PROTOCOL.md section 6).

CPU: each connection may run at most ``MAX_CHECKS_PER_CONNECTION`` scrypt
computations, and the whole bank one per core at a time (``CpuSlots``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from bank_server.card_locks import CardLocks
from bank_server.clock import now_iso
from bank_server.cpu_slots import CpuSlots
from bank_server.ledger import MAX_PIN_ATTEMPTS, Account
from bank_server.logs import alert
from bank_server.pins import hash_pin, needs_rehash, verify_pin
from bank_server.rules import decide_pin_admission, decide_pin_success
from bank_server.store import Store
from bank_server.terminals import TerminalRegistry
from common.messages import RequestError

log = logging.getLogger(__name__)
MAX_CHECKS_PER_CONNECTION = 8  # log-in (at most 3 tries on its one card) and a few PIN changes


@dataclass
class TerminalGuard:
    """The terminal's side of guessing (PROTOCOL.md section 6): its attempts over all cards, in the registry."""

    registry: TerminalRegistry
    terminal_id: str
    peer: str

    def admit(self) -> tuple[float, int]:
        """Count an IDENTIFICAR's attempt before its check: ``(when, count)``; ``CAJERO_SUSPENDIDO`` if over."""
        when = time.time()
        count = self.registry.admit_pin_attempt(self.terminal_id, when)
        if count is None:
            raise RequestError("CAJERO_SUSPENDIDO")
        return when, count

    def withdraw(self, when: float) -> None:
        self.registry.withdraw_pin_attempt(self.terminal_id, when)

    def wrong_pin(self, count: int | None) -> None:
        """A wrong PIN: counted already if admitted (``count``); else (a PIN change) counted now."""
        if count is None:
            suspended = self.registry.record_wrong_pin(self.terminal_id, time.time())
        else:
            suspended = count > self.registry.guess_limit
        if suspended:
            alert(
                "%s cajero %s suspendido para PIN: más de %d PIN incorrectos en la última hora",
                self.peer,
                self.terminal_id,
                self.registry.guess_limit,
            )


@dataclass
class PinChecker:
    store: Store
    pepper: bytes
    slots: CpuSlots
    cards: CardLocks
    guard: TerminalGuard
    checks: int = field(default=0, init=False)

    def identify(self, card: str, pin: str) -> Account:
        """IDENTIFICAR's check: the terminal's attempt is counted first, and refused if it is suspended."""
        self._spend()
        when, count = self.guard.admit()
        try:
            account = self._check(card, pin, count)
        except RequestError as exc:
            if exc.code != "PIN_INCORRECTO":  # nothing was checked (a blocked card): the attempt does not count
                self.guard.withdraw(when)
            raise
        self.guard.withdraw(when)  # a right PIN is not a guess
        return account

    def check(self, card: str, pin: str) -> Account:
        """CAMBIAR_PIN's check of the current PIN: a wrong one counts for the terminal; no suspension stops it."""
        self._spend()
        return self._check(card, pin, None)

    def _check(self, card: str, pin: str, terminal_count: int | None) -> Account:
        """The account if ``pin`` is right (count reset, hash upgraded); else a ``RequestError``."""
        with self.cards.held(card):  # one attempt per card in flight: the count stays true
            return self._check_alone(card, pin, terminal_count)

    def _check_alone(self, card: str, pin: str, terminal_count: int | None) -> Account:
        with self.store.locked() as state:
            admission = decide_pin_admission(state, card, now_iso())
            self.store.commit(admission)
        admitted = admission.cuenta
        with self.slots.held():
            correct = verify_pin(pin, admitted.pin, self.pepper)
            upgraded = hash_pin(pin, self.pepper) if correct and needs_rehash(admitted.pin) else None
        if correct:
            with self.store.locked() as state:
                success = decide_pin_success(state, card, admitted.pin, upgraded, now_iso())
                if success is not None:
                    self.store.commit(success)
                    return success.cuenta
        self.guard.wrong_pin(terminal_count)
        raise RequestError("PIN_INCORRECTO", intentos_restantes=max(0, MAX_PIN_ATTEMPTS - admitted.intentos))

    def new_hash(self, pin: str) -> str:
        """A peppered hash of a new PIN (slow: outside the ledger lock, inside a CPU slot)."""
        self._spend()
        with self.slots.held():
            return hash_pin(pin, self.pepper)

    def _spend(self) -> None:
        self.checks += 1
        if self.checks > MAX_CHECKS_PER_CONNECTION:
            log.warning("%s: demasiadas verificaciones de PIN en una conexión", self.guard.peer)
            raise RequestError("PETICION_INVALIDA", "too many PIN checks on one connection")

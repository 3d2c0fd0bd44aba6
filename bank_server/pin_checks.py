"""Checking a PIN: one attempt at a time per card, counted before it is checked, bounded in CPU.

The attack this answers: with the count of wrong PINs read from a stale
copy, 30 simultaneous guesses on one card were all checked, so three
tries became thirty. Here an attempt is first *admitted* under the ledger
lock (``rules.decide_pin_admission``: ``intentos`` + 1, synced), then
checked outside the lock (scrypt is slow), then a right PIN resets the
count (``rules.decide_pin_success``). Wrong attempts also count against
the terminal (``TerminalGuard``), which is suspended for PIN checks past
its limit (PROTOCOL.md section 6).

CPU: each connection may run at most ``MAX_CHECKS_PER_CONNECTION`` scrypt
computations, and the whole bank one per core at a time (``CpuSlots``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from bank_server.clock import now_iso
from bank_server.cpu_slots import CpuSlots
from bank_server.ledger import MAX_PIN_ATTEMPTS, Account
from bank_server.pins import hash_pin, needs_rehash, verify_pin
from bank_server.rules import decide_pin_admission, decide_pin_success
from bank_server.store import Store
from bank_server.terminals import TerminalRegistry
from common.messages import RequestError

log = logging.getLogger(__name__)
try:  # TEMPORARY until bank_server.logs.alert lands
    from bank_server.logs import alert
except ImportError:
    alert = log.warning
MAX_CHECKS_PER_CONNECTION = 8  # log-in (at most 3 tries on its one card) and a few PIN changes


@dataclass
class TerminalGuard:
    """The terminal's side of guessing: suspended or not, and counting its wrong PINs."""

    registry: TerminalRegistry
    terminal_id: str
    peer: str

    def refuse_if_suspended(self) -> None:
        if self.registry.is_suspended(self.terminal_id, time.time()):
            raise RequestError("CAJERO_SUSPENDIDO")

    def wrong_pin(self) -> None:
        if self.registry.record_wrong_pin(self.terminal_id, time.time()):
            alert(
                "cajero %s (%s) suspendido para PIN: más de %d PIN incorrectos en la última hora",
                self.terminal_id,
                self.peer,
                self.registry.guess_limit,
            )


@dataclass
class PinChecker:
    store: Store
    pepper: bytes
    slots: CpuSlots
    guard: TerminalGuard
    checks: int = field(default=0, init=False)

    def check(self, card: str, pin: str) -> Account:
        """The account if ``pin`` is right (count reset, hash upgraded); else a ``RequestError``."""
        self._spend()
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
        self.guard.wrong_pin()
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

"""The bank's state in memory, rebuilt from the ledger plus the journal.

Every process (acceptor, handlers, administration commands) keeps one
``BankState`` and brings it up to date by applying the journal records it
has not seen yet. ``apply`` is the only way state changes, so a handler
that has read the journal up to some point agrees exactly with any other
process that has read up to the same point.

Besides balances it derives what the rules need and the contract asks
for: transaction ids for idempotency (at least the last 100,000 or 24
hours, whichever is more), each card's recent movements for MOVIMIENTOS,
and each card's withdrawals today for the daily limit.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from bank_server.journal import TIPOS_MOVIMIENTO, RawRecord, Record
from bank_server.ledger import Account
from common.messages import MAX_MOVIMIENTOS
from common.money import add

ID_MEMORY_COUNT = 100_000
ID_MEMORY_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class Applied:
    """What the bank remembers of an applied DEPOSITO or RETIRO, by id."""

    tipo: str
    tarjeta: str
    monto: Decimal
    saldo: Decimal
    fecha: str


class BankState:
    """Balances, ids, movements and daily totals, as of journal record ``last_n``.

    *Eager* (the acceptor, administration, recovery): every record is
    decoded and applied. A handler is *lazy*: it serves one card, so a
    record of another card costs it only a CRC check and an id lookup
    (``take``), not a JSON decode under the ledger lock; before it knows
    its card, it keeps such records aside and decodes a card's records
    when the card is first asked for (``account``).
    """

    def __init__(self, accounts: dict[str, Account], diario: int, decode: Callable[[RawRecord], Record]) -> None:
        self.accounts = accounts
        self.last_n = diario  # number of the last record read
        self.checkpoint_n = diario  # records up to here are already in cuenta.txt
        self.applied: OrderedDict[str, Applied] = OrderedDict()
        self.movements: dict[str, deque[Record]] = {}
        self.withdrawn_today: dict[str, tuple[str, Decimal]] = {}
        self.decode = decode
        self.eager = True
        self.focus: str | None = None  # a lazy handler's card, once bound
        self.deferred: dict[str, list[RawRecord]] = {}  # lazy, before binding: records set aside by card
        self.foreign_ids: dict[str, str] = {}  # lazy, after binding: other cards' transaction ids

    def take(self, raw: RawRecord) -> None:
        """Read one record from the journal, decoding it only if this process needs it."""
        self.last_n = max(self.last_n, raw.n)
        if self.eager or raw.tarjeta == self.focus:
            self.apply(self.decode(raw))
        elif self.focus is None:
            self.deferred.setdefault(raw.tarjeta, []).append(raw)
        elif raw.id is not None:
            self.foreign_ids[raw.id] = raw.tarjeta

    def account(self, card: str) -> Account | None:
        """The card's current account, decoding what was set aside for it."""
        for raw in self.deferred.pop(card, ()):
            self.apply(self.decode(raw))
        return self.accounts.get(card)

    def bind(self, card: str) -> None:
        """From now on this process serves ``card`` only: keep just the ids of other cards' records."""
        self.account(card)
        for raws in self.deferred.values():
            self.foreign_ids.update((raw.id, raw.tarjeta) for raw in raws if raw.id is not None)
        self.deferred.clear()
        self.focus = card

    def apply(self, record: Record) -> None:
        """Fold one decoded record in. Records at or below the checkpoint only feed history."""
        if record.n > self.checkpoint_n:
            self.accounts[record.cuenta.tarjeta] = record.cuenta
        self.last_n = max(self.last_n, record.n)
        if record.tipo not in TIPOS_MOVIMIENTO:
            return
        assert record.id is not None and record.monto is not None
        card = record.cuenta.tarjeta
        self.applied[record.id] = Applied(record.tipo, card, record.monto, record.cuenta.saldo, record.fecha)
        self.applied.move_to_end(record.id)
        self.movements.setdefault(card, deque(maxlen=MAX_MOVIMIENTOS)).append(record)
        if record.tipo == "RETIRO":
            day = record.fecha[:10]
            known_day, total = self.withdrawn_today.get(card, (day, Decimal(0)))
            if day == known_day:
                self.withdrawn_today[card] = (day, add(total, record.monto))
            elif day > known_day:
                self.withdrawn_today[card] = (day, record.monto)
        if len(self.applied) > 2 * ID_MEMORY_COUNT:
            self.forget_old_ids(datetime.now().astimezone())

    def forget_old_ids(self, now: datetime) -> None:
        """Drop ids beyond the last 100,000 that are also older than 24 hours."""
        horizon = (now - ID_MEMORY_AGE).isoformat(timespec="seconds")
        while len(self.applied) > ID_MEMORY_COUNT:
            tx_id, oldest = next(iter(self.applied.items()))
            if _instant(oldest.fecha) >= _instant(horizon):
                break
            del self.applied[tx_id]

    def withdrawn_on(self, card: str, day: str) -> Decimal:
        known_day, total = self.withdrawn_today.get(card, (day, Decimal(0)))
        return total if known_day == day else Decimal(0)


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso)

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

from bank_server.journal import KEEP_PIN, MOVEMENT_TYPES, RawRecord, Record
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

    Decoding a journal line (JSON, account fields, Decimals) is the costly
    part of reading it, so a process decodes only what it needs, when it
    needs it. A record is *set aside* (kept raw, by card) or only *indexed*
    (its id remembered with its card) otherwise:

    - *eager* (the acceptor, administration, recovery): records after the
      checkpoint are decoded at once, because ``cuenta.txt`` must be
      rewritable from memory; older records (history: ids, movements,
      today's withdrawals) are set aside until their card is asked for.
      Start-up therefore costs a CRC check per history record, not a decode.
    - *lazy* (a handler): before it knows its card, everything is set
      aside; once bound to its card (one card per connection), another
      card's record is only indexed.
    """

    def __init__(self, accounts: dict[str, Account], diario: int, decode: Callable[[RawRecord], Record]) -> None:
        self.accounts = accounts
        self.last_n = diario  # number of the last record read
        self.checkpoint_n = diario  # records up to here are already in cuenta.txt
        self.applied: OrderedDict[str, Applied] = OrderedDict()
        self.movements: dict[str, deque[Record]] = {}
        self.withdrawn_today: dict[str, tuple[str, Decimal]] = {}
        self.decode = decode
        self.eager = True  # False in a handler (StoreMode.HANDLER)
        self.focus: str | None = None  # a lazy handler's card, once bound
        self.deferred: dict[str, list[RawRecord]] = {}  # records set aside, by card, in order
        self.id_owner: dict[str, str] = {}  # ids of records not decoded here -> their card

    def take(self, raw: RawRecord) -> None:
        """Read one record from the journal, decoding it only if this process needs it now."""
        self.last_n = max(self.last_n, raw.n)
        if raw.tarjeta == self.focus or (self.eager and raw.n > self.checkpoint_n):
            self.account(raw.tarjeta)  # what was set aside for the card comes first
            self.apply(self.decode(raw))
            return
        if raw.id is not None:
            self.id_owner[raw.id] = raw.tarjeta
        if self.focus is None:
            self.deferred.setdefault(raw.tarjeta, []).append(raw)

    def index_others(self, others: dict[str, str], last_n: int) -> None:
        """Take other cards' records read in bulk by a bound handler: their ids, and the last number."""
        self.id_owner.update(others)
        self.last_n = max(self.last_n, last_n)

    def account(self, card: str) -> Account | None:
        """The card's current account, decoding first what was set aside for it."""
        for raw in self.deferred.pop(card, ()):
            self.apply(self.decode(raw))
        return self.accounts.get(card)

    def owner_of(self, tx_id: str) -> str | None:
        """The card a transaction id belongs to, decoded or not (None: a new id)."""
        if tx_id in self.applied:
            return self.applied[tx_id].tarjeta
        return self.id_owner.get(tx_id)

    def bind(self, card: str) -> None:
        """From now on this process serves ``card`` only: other cards' records are just indexed."""
        self.account(card)
        self.deferred.clear()
        self.focus = card

    def apply(self, record: Record) -> None:
        """Fold one decoded record in. Records at or below the checkpoint only feed history."""
        if record.n > self.checkpoint_n:
            cuenta = record.cuenta
            if cuenta.pin == KEEP_PIN:  # the record did not carry the hash: it did not change it
                previous = self.accounts.get(cuenta.tarjeta)
                if previous is None:
                    raise ValueError(f"registro {record.n}: la tarjeta {cuenta.tarjeta[-4:]} no tiene PIN conocido")
                cuenta = cuenta._replace(pin=previous.pin)
            self.accounts[cuenta.tarjeta] = cuenta
        self.last_n = max(self.last_n, record.n)
        if record.tipo not in MOVEMENT_TYPES:
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

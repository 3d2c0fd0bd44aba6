"""``python -m bench --costos``: what one deposit costs the server in one process, and what logging adds.

No sockets, no other processes: the server's own ``ServerConnection``, ``Conversation`` and ``Store``
on a generated ledger, fed the real ATM2 bytes of the independent client (one enrolled terminal; the
handshake and log-in are set-up, not timed). Only the server's half of each request is timed: the
single-writer floor of the transaction path, with no lock contention and no other process's records
to catch up on. Logging (as ``--detallado``) is switched on and off in alternating blocks, so that the
machine's noise hits both alike. Also: the CPU of reading ONE other process's journal record, which
every handler pays for every record the others write. Where inside a deposit the time goes is ``--perfil``'s job.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from bank_server.card_locks import CardLocks
from bank_server.conversation import Conversation
from bank_server.cpu_slots import CpuSlots
from bank_server.journal import Record, decode_record
from bank_server.ledger import Account
from bank_server.logs import setup_logging
from bank_server.pin_checks import PinChecker, TerminalGuard
from bank_server.pins import pin_pepper
from bank_server.rules import Limits
from bank_server.state import BankState
from bank_server.store import Store, StoreMode, lock_path_for
from bank_server.terminals import TerminalRegistry
from bench.bank import DEPOSIT, PIN, card_number, real_pin_field, write_bench_ledger
from common.endpoints import MessageReceived, ServerConnection
from common.messages import encode
from devtools import contract_client as client
from devtools.bank_process import TEST_BANK_KEY, enrol_terminal, write_bank_key


class Rig:
    """A server-side conversation on ``folder``'s ledger, fed by the independent client in memory."""

    def __init__(self, folder: Path, card: str) -> None:
        ledger, peer = folder / "cuenta.txt", "127.0.0.1:1"
        write_bank_key(folder)
        key = enrol_terminal(folder, "COSTOS-01")
        self.store = Store.open(ledger, mode=StoreMode.RECOVER)
        registry = TerminalRegistry.for_ledger(ledger, TEST_BANK_KEY)
        locks = lock_path_for(ledger).parent  # wired as the handler wires a confirmed session
        slots, cards = CpuSlots(locks, ledger.stem), CardLocks(locks / f"{ledger.stem}.tarjetas.lock")
        guard = TerminalGuard(registry, key.terminal_id, peer)
        pins = PinChecker(self.store, pin_pepper(TEST_BANK_KEY), slots, cards, guard)
        self.conversation = Conversation(self.store, Limits(), peer, key.terminal_id, registry, pins)
        self.server = ServerConnection()
        ephemeral, nonce_c = client.Ephemeral.generate(), os.urandom(client.NONCE_SIZE)
        hello = client.client_hello_payload(key.terminal_id, key.version, ephemeral.public, nonce_c)
        self.server.receive_data(client.frame(hello))  # HelloReceived: the handler would look the key up
        self.server.accept(key)
        keys = client.verify_server_hello(key.key, hello, ephemeral, self.server.data_to_send()[4:]).keys
        self.sealer = client.RecordSealer(keys.enc_c2s, keys.mac_c2s)
        self.opener = client.RecordOpener(keys.enc_s2c, keys.mac_s2c)
        login = self.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": PIN})  # also confirms the session
        client.check_reply("IDENTIFICAR", self.reply(self.server_turn(login)))

    def request(self, message: dict[str, Any]) -> bytes:
        return client.frame(self.sealer.seal(client.encode_json(message)))

    def reply(self, data: bytes) -> dict[str, Any]:
        return client.decode_reply(self.opener.open(data[4:]))

    def server_turn(self, data: bytes) -> bytes:
        """Exactly what a handler does with one request's bytes; the response's bytes."""
        for event in self.server.receive_data(data):
            if isinstance(event, MessageReceived):
                self.server.send_message(encode(self.conversation.handle(event.text)))
        return self.server.data_to_send()

    def deposits(self, n: int) -> tuple[float, float, int]:
        """``n`` deposits: (wall s, CPU s) of the server's half only, and how many failed."""
        wall = cpu = 0.0
        failures = 0
        for _ in range(n):
            data = self.request({"op": "DEPOSITAR", "monto": DEPOSIT, "id": uuid.uuid4().hex})
            w0, c0 = time.perf_counter(), time.process_time()
            answer = self.server_turn(data)
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            failures += not self.reply(answer).get("ok")
        return wall, cpu, failures


def _median_ms(values: list[float]) -> float:
    return round(1000 * sorted(values)[len(values) // 2], 3)


def _logging_on_and_off(rig: Rig, n: int) -> dict[str, Any]:
    """Medians over alternating blocks with logging on and off."""
    rig.deposits(min(200, n))  # warm-up
    blocks: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    failures = 0
    size = max(50, n // 10)
    try:
        for _ in range(max(1, n // size)):
            for logged, times in blocks.items():
                logging.disable(logging.NOTSET if logged else logging.CRITICAL)
                wall, cpu, bad = rig.deposits(size)
                times.append((wall / size, cpu / size))
                failures += bad
    finally:
        logging.disable(logging.NOTSET)
    row = {
        "wall_ms_per_tx": _median_ms([w for w, _ in blocks[True]]),
        "cpu_ms_per_tx": _median_ms([c for _, c in blocks[True]]),
        "wall_ms_per_tx_no_logging": _median_ms([w for w, _ in blocks[False]]),
        "cpu_ms_per_tx_no_logging": _median_ms([c for _, c in blocks[False]]),
        "failures": failures,
    }
    row["logging_cpu_ms_per_tx"] = round(row["cpu_ms_per_tx"] - row["cpu_ms_per_tx_no_logging"], 3)
    return row


def measure_size(tmp: Path, size: int, n: int) -> dict[str, Any]:
    """One ledger size, logging set up as the server does with ``--detallado`` (console to a file, and banco.log)."""
    folder = tmp / f"banco-{size}"
    folder.mkdir()
    write_bench_ledger(folder, size)
    old_stderr = sys.stderr
    with open(folder / "consola.err", "w", encoding="utf-8") as console:
        sys.stderr = console  # the console handler writes here, as under the test fixture
        try:
            setup_logging(folder / "banco.log", detailed=True)
        finally:
            sys.stderr = old_stderr
        rig = None
        try:
            rig = Rig(folder, card_number(size // 2))
            return _logging_on_and_off(rig, n)
        finally:
            if rig is not None:
                rig.store.close()
            setup_logging(None, console=False)


def catch_up_cost(n: int = 5000) -> dict[str, Any]:
    """CPU of reading ONE other process's record: decode (CRC, JSON, account, PIN field) + apply.

    With k busy handlers each transaction costs about (k - 1) times this, on top of its own work.
    """
    account = Account(card_number(7), "Cliente de prueba 7", Decimal("1234.00"), real_pin_field(), 0)
    date = "2026-11-23T10:15:02-06:00"
    lines = [Record(i + 1, date, "DEPOSITO", account, f"{i:032x}", Decimal("1.00")).encode()[:-1] for i in range(n)]
    state = BankState({account.tarjeta: account}, 0, lambda raw: decode_record(raw.line))
    t0 = time.process_time()
    records = [decode_record(line) for line in lines]
    t1 = time.process_time()
    for record in records:
        state.apply(record)
    t2 = time.process_time()
    return {
        "decode_us_per_record": round(1e6 * (t1 - t0) / n, 1),
        "apply_us_per_record": round(1e6 * (t2 - t1) / n, 1),
        "line_bytes": len(lines[0]) + 1,
    }


def describe(costs: dict[str, Any], say: Callable[[str], None]) -> None:
    c = costs["catch_up"]
    say(
        f"  leer UN registro ajeno del diario: decodificar {c['decode_us_per_record']} µs + aplicar "
        f"{c['apply_us_per_record']} µs de CPU ({c['line_bytes']} bytes por línea); cada manejador lo paga por "
        "cada registro de los demás"
    )
    for size, r in costs["by_size"].items():
        say(f"  {int(size):>7,} cuentas: {r['wall_ms_per_tx']} ms de reloj y {r['cpu_ms_per_tx']} ms de CPU por "
            f"depósito (fsync incluido; medianas de bloques); sin logging {r['wall_ms_per_tx_no_logging']} ms / "
            f"{r['cpu_ms_per_tx_no_logging']} ms CPU -> logging {r['logging_cpu_ms_per_tx']} ms CPU/tx")  # fmt: skip


def measure(sizes: list[int], n: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="cajero-costos-"))
    try:
        by_size = {str(size): measure_size(tmp, size, n) for size in sizes}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"deposits": n, "catch_up": catch_up_cost(), "by_size": by_size}

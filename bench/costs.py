"""``python -m bench --costos``: what one deposit costs the server, piece by piece, in one process.

No sockets, no other processes: the server's own ``ServerConnection``,
``Session`` and ``Store`` on a generated ledger, fed by an in-memory
``ClientConnection`` (the real ATM1 bytes). Only the server's half of
each request is timed: verify+decrypt, decode, lock, catch up, decide,
append, fsync, log, encode, encrypt. That is the single-writer floor of
the transaction path, without lock contention and without catch-up of
other processes' records (there are none here); the multi-process
picture is ``--perfil``.

Three measurements per ledger size:
- plain: wall and CPU per deposit, logging as the server sets it up
  (console to a file, as under the test fixture, plus ``banco.log``);
- no logging (``logging.disable``): the difference is what logging costs;
- cProfile: inclusive time of each piece, as a share of the profiled total.
"""

from __future__ import annotations

import contextlib
import cProfile
import logging
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import atm_load
from devtools.bank_process import TEST_PSK

# (label, file suffix, function names): inclusive time, summed over the names.
PIECES: list[tuple[str, str, tuple[str, ...]]] = [
    ("canal: verificar HMAC + descifrar (receive_data)", "common/connection.py", ("receive_data",)),
    ("sesión: handle() completo", "bank_server/conversation.py", ("handle",)),
    ("  petición: JSON + validación", "common/messages.py", ("decode_object", "request_op", "parse_request")),
    ("  _movement() completo", "bank_server/conversation.py", ("_movement",)),
    ("    tomar el candado del libro (flock)", "bank_server/store.py", ("__enter__",)),
    ("    ¿mismo diario? (stat)", "bank_server/journal.py", ("same_file_on_disk",)),
    ("    ponerse al día con el diario", "bank_server/store.py", ("_catch_up",)),
    ("    decidir (reglas)", "bank_server/rules.py", ("decide_movement",)),
    ("    fecha (now_iso)", "bank_server/conversation.py", ("now_iso",)),
    ("    codificar registro (JSON + CRC)", "bank_server/journal.py", ("encode",)),
    ("    os.write / append", "bank_server/journal.py", ("append", "write")),
    ("    fdatasync (journal._sync)", "bank_server/journal.py", ("_sync",)),
    ("    fdatasync fuera del candado (Journal.sync)", "bank_server/journal.py", ("sync",)),
    ("    aplicar al estado", "bank_server/state.py", ("apply",)),
    ("    soltar el candado", "bank_server/store.py", ("__exit__",)),
    ("  logging (_log)", "bank_server/conversation.py", ("_log",)),
    ("respuesta: JSON (encode)", "common/messages.py", ("encode",)),
    ("canal: cifrar + HMAC (send_message)", "common/connection.py", ("send_message",)),
]


class Rig:
    """A server-side session on ``folder``'s ledger, driven by an in-memory ATM."""

    def __init__(self, folder: Path, card: str) -> None:
        from bank_server.conversation import Session
        from bank_server.rules import Limits
        from bank_server.store import Store
        from common.connection import ClientConnection, ServerConnection

        self.store = Store.open(folder / "cuenta.txt", recover=True)
        self.session = Session(self.store, Limits(), "127.0.0.1:1")
        self.client = ClientConnection(TEST_PSK)
        self.server = ServerConnection(TEST_PSK)
        self.client.start()
        self.server.receive_data(self.client.data_to_send())
        self.client.receive_data(self.server.data_to_send())
        assert self.server_turn(self.client_bytes({"op": "IDENTIFICAR", "tarjeta": card, "pin": atm_load.PIN}))

    def client_bytes(self, message: dict[str, Any]) -> bytes:
        from common.messages import encode

        self.client.send_message(encode(message))
        return self.client.data_to_send()

    def server_turn(self, data: bytes) -> bool:
        """Exactly what the handler does with one request's bytes."""
        from common.connection import MessageReceived
        from common.messages import encode

        ok = False
        for event in self.server.receive_data(data):
            if isinstance(event, MessageReceived):
                response = self.session.handle(event.text)
                ok = bool(response.get("ok"))
                self.server.send_message(encode(response))
        self.client.receive_data(self.server.data_to_send())
        return ok

    def deposits(self, n: int, profiler: cProfile.Profile | None = None) -> tuple[float, float, int]:
        """``n`` deposits; returns (wall s, CPU s, failures) of the server's half only."""
        wall = cpu = 0.0
        failures = 0
        for _ in range(n):
            data = self.client_bytes({"op": "DEPOSITAR", "monto": atm_load.DEPOSIT, "id": uuid.uuid4().hex})
            w0, c0 = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            ok = self.server_turn(data)
            if profiler is not None:
                profiler.disable()
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            failures += not ok
        return wall, cpu, failures

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.close()


def _pieces(profiler: cProfile.Profile) -> list[dict[str, Any]]:
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = 0.0
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
        if file.endswith("bench/costs.py") and func == "server_turn":
            total += ct
    rows = []
    for label, suffix, names in PIECES:
        value = sum(
            ct
            for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items()
            if file.replace("\\", "/").endswith(suffix) and func in names
        )
        rows.append({"piece": label, "pct": round(100 * value / total, 1) if total else None, "seconds": value})
    return rows


def measure(sizes: list[int], n: int, say: Any = print) -> dict[str, Any]:
    from bank_server.logs import setup_logging

    out: dict[str, Any] = {"deposits": n, "by_size": {}, "catch_up": catch_up_cost()}
    c = out["catch_up"]
    say(
        f"  leer UN registro ajeno del diario: decodificar {c['decode_us_per_record']} µs + aplicar "
        f"{c['apply_us_per_record']} µs de CPU ({c['line_bytes']} bytes por línea); cada manejador lo paga por "
        f"cada registro de los demás"
    )
    old_stderr = sys.stderr
    tmp = Path(tempfile.mkdtemp(prefix="cajero-costos-"))
    try:
        for size in sizes:
            folder = tmp / f"banco-{size}"
            folder.mkdir()
            atm_load.write_bench_ledger(folder, size)
            console = open(folder / "consola.err", "w", encoding="utf-8")  # noqa: SIM115 - closed below
            try:
                sys.stderr = console
                setup_logging(folder / "banco.log", detailed=True)  # "on" = --detallado: a line per deposit
                sys.stderr = old_stderr
                rig = Rig(folder, atm_load.card_number(size // 2))
                try:
                    rig.deposits(min(200, n))  # warm-up
                    # logging on and off in alternating blocks: the machine's noise hits both alike
                    on: list[tuple[float, float]] = []
                    off: list[tuple[float, float]] = []
                    failures = 0
                    block = max(50, n // 10)
                    for _ in range(max(1, n // block)):
                        wall, cpu, bad = rig.deposits(block)
                        on.append((wall / block, cpu / block))
                        logging.disable(logging.CRITICAL)
                        wall, cpu, bad2 = rig.deposits(block)
                        logging.disable(logging.NOTSET)
                        off.append((wall / block, cpu / block))
                        failures += bad + bad2
                    profiler_wall = cProfile.Profile()
                    _, _, bad = rig.deposits(n // 2, profiler_wall)
                    failures += bad
                    profiler_cpu = cProfile.Profile(time.process_time)
                    _, _, bad = rig.deposits(n // 2, profiler_cpu)
                    failures += bad
                finally:
                    logging.disable(logging.NOTSET)
                    rig.close()
            finally:
                sys.stderr = old_stderr
                setup_logging(None, console=False)
                console.close()
            row = {
                "wall_ms_per_tx": _median_ms(w for w, _ in on),
                "cpu_ms_per_tx": _median_ms(c for _, c in on),
                "wall_ms_per_tx_no_logging": _median_ms(w for w, _ in off),
                "cpu_ms_per_tx_no_logging": _median_ms(c for _, c in off),
                "failures": failures,
                "pieces_wall": _pieces(profiler_wall),
                "pieces_cpu": _pieces(profiler_cpu),
            }
            row["logging_cpu_ms_per_tx"] = round(row["cpu_ms_per_tx"] - row["cpu_ms_per_tx_no_logging"], 3)
            out["by_size"][str(size)] = row
            say(
                f"  {size:>7,} cuentas: {row['wall_ms_per_tx']} ms de reloj y {row['cpu_ms_per_tx']} ms de CPU por "
                f"depósito (fsync incluido; medianas de bloques); sin logging {row['wall_ms_per_tx_no_logging']} ms / "
                f"{row['cpu_ms_per_tx_no_logging']} ms CPU -> logging {row['logging_cpu_ms_per_tx']} ms CPU/tx"
            )
    finally:
        sys.stderr = old_stderr
        atm_load.remove_tree(tmp)
    return out


def catch_up_cost(n: int = 5000) -> dict[str, Any]:
    """CPU of reading ONE other process's record: decode (CRC, JSON, account, PIN field) + apply.

    Every handler does this for every record any other process wrote, so
    with k busy handlers each transaction costs about (k - 1) times this
    in total, on top of its own work.
    """
    from decimal import Decimal

    from bank_server.journal import Record, decode_record
    from bank_server.ledger import Account
    from bank_server.state import BankState

    account = Account(atm_load.card_number(7), "Cliente de prueba 7", Decimal("1234.00"), atm_load.real_pin_field(), 0)
    lines = [
        Record(i + 1, "2026-11-23T10:15:02-06:00", "DEPOSITO", account, uuid.uuid4().hex, Decimal("1.00")).encode()[:-1]
        for i in range(n)
    ]
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


def _median_ms(values: Any) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[len(ordered) // 2], 3)


def print_pieces(costs: dict[str, Any], say: Any = print) -> None:
    sizes = list(costs["by_size"])
    head = "".join(f"{'reloj ' + s:>14}{'CPU ' + s:>12}" for s in sizes)
    say(f"{'pieza de un depósito, lado servidor (cProfile, % inclusivo)':<60}" + head)
    labels = [p["piece"] for p in costs["by_size"][sizes[0]]["pieces_wall"]]
    for i, label in enumerate(labels):
        cells = []
        for s in sizes:
            for kind, width in (("pieces_wall", 14), ("pieces_cpu", 12)):
                pct = costs["by_size"][s][kind][i]["pct"]
                cells.append(f"{pct or '-':>{width}}")
        say(f"{label:<60}" + "".join(cells))

"""Deposit load against the bank from N ATM processes that speak ATM2 through the independent client.

The bench's figures must come from a client that shares no code with the server, or a bug common
to both would go unnoticed while the figures still "work". The protocol is
``devtools/contract_client.py``, written from PROTOCOL.md alone; this module adds the processes,
the clock and the books: every reply checked in full, each balance against the previous one plus
the deposit. Each ATM is its own terminal with its own key, and sends RENOVAR_LLAVE after each
handshake as an ATM does. It shares 2 cores with the server, so a request stays cheap (one AES
object per direction, one ``recv`` per reply, the plaintext concatenated, ids from a prefix and a counter)::

    python -m bench.contract_load --puerto 8123 --llaves c1.key c2.key --tarjetas tarjetas.json --cajeros 2 \\
        [--host H] [--calentamiento 1.5] [--ventana 5] [--monto 1.00] [--sesiones 0]

One JSON report on stdout (English keys), diagnostics on stderr; in-process: :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import re
import resource
import sys
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from devtools.contract_client import (
    AtmClient,
    ContractError,
    KeyLike,
    ReplyError,
    ServerError,
    TerminalKey,
    check_reply,
    deposit_encoder,
    is_request_amount,
    load_key_file,
)

DEFAULT_TIMEOUT = 10.0
_CARD = re.compile(r"[0-9]{12,19}")
_PIN = re.compile(r"[0-9]{4,6}")
_CENT = Decimal("0.01")


@dataclass
class AtmTask:
    """What one ATM process needs; picklable (``spawn``)."""

    index: int
    host: str
    port: int
    key: TerminalKey  # this module's own type: a spawned ATM never unpickles (so imports) the project's
    card: str
    pin: str
    amount: str
    warmup: float
    window: float
    check_balance: bool
    timeout: float
    barrier_timeout: float


def _count(errors: dict[str, int], kind: str) -> None:
    errors[kind] = errors.get(kind, 0) + 1


def _say(message: str) -> None:
    """A diagnostic on stderr in one write, so that the lines of several ATMs never interleave."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def error_kind(exc: BaseException) -> str:
    """The label an error is counted by: the contract's kind, the bank's code, or the network's."""
    if isinstance(exc, ContractError):
        return exc.kind
    if isinstance(exc, ServerError):
        return exc.code
    return "tiempo_agotado" if isinstance(exc, TimeoutError) else "error_de_red"


def connect(host: str, port: int, key: KeyLike, timeout: float) -> AtmClient:
    """A session as an ATM opens one: handshake (proof checked), then RENOVAR_LLAVE, the first record, which
    confirms the session at the bank (a pending key is not stored: not the bench's files). Closed if anything fails."""
    client = AtmClient(host, port, key, timeout, keep_frames=False)
    try:
        client.connect().handshake().renew_key()
        return client
    except BaseException:
        client.close()
        raise


def balance(client: AtmClient, card: str) -> Decimal:
    return Decimal(check_reply("CONSULTAR", client.request({"op": "CONSULTAR"}), card=card)["saldo"])


# -- one ATM process -----------------------------------------------------------------------------------------------
def _atm_worker(task: AtmTask, barrier: Any, results: Any) -> None:
    """One ATM: connect, identify, wait for all, deposit in a closed loop, SALIR.

    It always leaves a result in ``results``, failed or not, so the parent never has to guess.
    """
    out: dict[str, Any] = {
        "index": task.index, "card": task.card, "complete": False, "ok_total": 0, "ok_in_window": 0,
        "in_doubt": 0, "latencies": array("d"), "errors": {}, "cpu_window_s": 0.0,
        "balance_start": None, "balance_end": None,
    }  # fmt: skip
    client: AtmClient | None = None
    try:
        client = connect(task.host, task.port, task.key, task.timeout)
        check_reply("IDENTIFICAR", client.identify(task.card, task.pin))
        start = balance(client, task.card)
        out["balance_start"] = out["balance_end"] = str(start)
        alive = _deposit_loop(task, client, out, start) if _wait_for_all(task, barrier, out) else None
        if alive is not False:  # a dead connection cannot say SALIR
            client.logout()
            out["complete"] = bool(alive)
    except (ContractError, ServerError, OSError) as exc:
        _count(out["errors"], error_kind(exc))
        _say(f"cajero {task.index}: {error_kind(exc)}: {exc}")
        if out["balance_start"] is None:
            barrier.abort()  # the others must not wait for an ATM that could not start
    except Exception as exc:  # a fault of the client itself is reported, never lost
        _count(out["errors"], "fallo_del_cliente")
        _say(f"cajero {task.index}: fallo inesperado del cliente: {exc!r}")
    finally:
        if client is not None:
            client.close()
        results.put(out)


def _wait_for_all(task: AtmTask, barrier: Any, out: dict[str, Any]) -> bool:
    try:
        barrier.wait(task.barrier_timeout)
    except threading.BrokenBarrierError:
        _count(out["errors"], "barrera_rota")
        _say(f"cajero {task.index}: otro cajero no pudo empezar; no se hace la carga")
        return False
    return True


def _deposit_loop(task: AtmTask, client: AtmClient, out: dict[str, Any], last_balance: Decimal) -> bool:
    """Closed loop of deposits; False if the connection became unusable.

    A deposit counts in the window when its OK reply arrives between the end
    of the warm-up and the end of the window; the one in flight when the
    window closes completes and counts towards what was deposited, not tx/s.
    """
    errors: dict[str, int] = out["errors"]
    latencies = out["latencies"]
    encode = deposit_encoder(task.amount)
    amount = Decimal(task.amount)
    # a random 96-bit prefix per process and a counter: unique across ATMs and runs (the bank
    # remembers ids for 24 h) and within [A-Za-z0-9_-]{1,64}, without a UUID per request
    prefix = os.urandom(12).hex() + "-"
    perf, cpu, request = time.perf_counter, time.process_time, client.request
    check_balance = task.check_balance
    ok_total = ok_window = counter = 0
    warm_end = perf() + task.warmup
    win_end = warm_end + task.window
    cpu_start: float | None = None
    try:
        while (t0 := perf()) < win_end:
            if cpu_start is None and t0 >= warm_end:
                cpu_start = cpu()
            counter += 1
            tx_id = prefix + str(counter)
            try:
                reply = check_reply("DEPOSITAR", request(encode(tx_id)), tx_id)
            except ReplyError as exc:  # the channel is still in step: go on, the deposit is in doubt
                out["in_doubt"] += 1
                _count(errors, exc.kind)
                continue
            except (ContractError, OSError) as exc:  # the connection is gone
                out["in_doubt"] += 1
                _count(errors, error_kind(exc))
                _say(f"cajero {task.index}: {error_kind(exc)}: {exc}")
                return False
            except ServerError as exc:
                _count(errors, exc.code)
                continue
            t1 = perf()
            if reply.get("repetida") is True:  # fresh ids cannot repeat: the bank applied nothing now
                _count(errors, "repetida_inesperada")
                continue
            ok_total += 1
            new_balance = Decimal(reply["saldo"])
            if check_balance and new_balance != last_balance + amount:
                _count(errors, "saldo_inesperado")
            last_balance = new_balance
            if warm_end <= t1 < win_end:
                ok_window += 1
                latencies.append(t1 - t0)
    finally:  # also when something unexpected cuts the loop: what was deposited must show
        out["cpu_window_s"] = cpu() - cpu_start if cpu_start is not None else 0.0
        out.update(ok_total=ok_total, ok_in_window=ok_window, balance_end=str(last_balance))
    return True


# -- sessions --------------------------------------------------------------------------------------------------------
def summary_ms(values: Sequence[float], with_max: bool = False) -> dict[str, Any]:
    """Nearest-rank p50 and p99 (and the maximum), in milliseconds; None for no values."""
    ordered = sorted(values)

    def rank(pct: int) -> float | None:
        return round(ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1] * 1000, 3) if ordered else None

    return {"p50": rank(50), "p99": rank(99), **({"max": rank(100)} if with_max else {})}


def measure_sessions(
    host: str, port: int, key: KeyLike, card: tuple[str, str], count: int, logins: int = 20, timeout: float = 10.0
) -> dict[str, Any]:
    """``count`` fresh connections one after another, as terminal ``key``: TCP + handshake + RENOVAR_LLAVE
    each (until that first record the bank has not accepted the session), IDENTIFICAR on the first ``logins``."""
    setup, login, errors, perf = array("d"), array("d"), dict[str, int](), time.perf_counter
    for i in range(count):
        client: AtmClient | None = None
        try:
            t0 = perf()
            client = connect(host, port, key, timeout)
            setup.append(perf() - t0)
            if i < logins:
                t0 = perf()
                check_reply("IDENTIFICAR", client.identify(*card))
                login.append(perf() - t0)
            client.logout()
        except (ContractError, ServerError, OSError) as exc:
            _count(errors, error_kind(exc))
            _say(f"sesión {i}: {error_kind(exc)}: {exc}")
        finally:
            if client is not None:
                client.close()
    return {"session_ms": {**summary_ms(setup), "n": len(setup)}, "login_ms": {**summary_ms(login), "n": len(login)},
            "errors": errors}  # fmt: skip


# -- the parent process ------------------------------------------------------------------------------------------
def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _check_arguments(keys: Sequence[TerminalKey], cards: Sequence[tuple[str, str]], n_atms: int, amount: str,
                     warmup: float, window: float, sessions: int) -> None:  # fmt: skip
    """``ValueError`` with a message in Spanish for anything the run cannot start with."""
    problems = [
        (len(keys) < n_atms, f"Hay {len(keys)} llaves de cajero para {n_atms} cajeros: hace falta una por cajero."),
        (len({k.terminal_id for k in keys[:n_atms]}) < min(n_atms, len(keys)), "Dos cajeros con el mismo terminal."),
        (not is_request_amount(amount), f"El importe {amount!r} no cumple la gramática del contrato o no es > 0."),
        (warmup < 0 or window <= 0, "El calentamiento no puede ser negativo y la ventana debe ser positiva."),
        (sessions < 0, "El número de sesiones no puede ser negativo."),
        (n_atms < 1, "Hace falta al menos un cajero."),
        (len(cards) < n_atms, f"Hay {len(cards)} tarjetas para {n_atms} cajeros: hace falta una por cajero."),
    ]
    problems += [
        (not _CARD.fullmatch(card) or not _PIN.fullmatch(pin), f"La tarjeta {i} o su PIN no tienen el formato.")
        for i, (card, pin) in enumerate(cards[:n_atms])
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(message)


def _run_atms(tasks: list[AtmTask], barrier: Any, ctx: Any, deadline: float,
              on_window: Callable[[str], None] | None) -> tuple[list[dict[str, Any]], list[Any]]:  # fmt: skip
    """Start one process per task, follow the window if asked, collect every report, stop stragglers."""
    results = ctx.Queue()
    procs = [ctx.Process(target=_atm_worker, args=(t, barrier, results), name=f"cajero-{t.index}") for t in tasks]
    try:
        for p in procs:
            p.start()
        if on_window is not None:
            _observe_window(barrier, tasks[0], on_window)
        reports = _collect(results, procs, len(tasks), deadline)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()) + 1.0)
    finally:
        _stop_stragglers(procs)
        results.close()
    return reports, procs


def _collect(results: Any, procs: list[Any], n: int, deadline: float) -> list[dict[str, Any]]:
    """Every ATM's report; once all have ended, whatever is left in the pipe, then no more waiting."""
    reports: list[dict[str, Any]] = []
    while len(reports) < n and time.monotonic() < deadline:
        alive = any(p.is_alive() for p in procs)
        try:
            reports.append(results.get(timeout=0.25 if alive else 1.0))
        except queue.Empty:
            if not alive:
                break
    return reports


def _stop_stragglers(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            _say(f"{p.name}: no terminó a tiempo; se detiene")
            p.terminate()
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join()


def _observe_window(barrier: Any, task: AtmTask, on_window: Callable[[str], None]) -> None:
    """Leave the barrier with the ATMs, then call back at the window's start, middle and end (their clock)."""
    try:
        barrier.wait(task.barrier_timeout)
    except threading.BrokenBarrierError:
        return  # an ATM could not start: there is no window
    start = time.monotonic() + task.warmup
    for label, at in (("start", start), ("middle", start + task.window / 2), ("end", start + task.window)):
        time.sleep(max(0.0, at - time.monotonic()))
        on_window(label)


def _books(used: list[tuple[str, str]], tasks: list[AtmTask], reports: list[dict[str, Any]], procs: list[Any],
           amount: str, report: dict[str, Any]) -> None:  # fmt: skip
    """Pool every ATM's report into ``report``: per-card books, latencies, CPU, errors."""
    by_index = {r["index"]: r for r in reports}
    errors: dict[str, int] = report["errors"]
    deposited = {card: Decimal(0) for card, _ in used}
    latencies: array[float] = array("d")
    cpu_window = 0.0
    report.update(atms_complete=0, ok_in_window=0, in_doubt={}, balances={}, per_atm=[])
    for i, (card, _pin) in enumerate(used):
        r = by_index.get(i)
        if r is None:
            _count(errors, "proceso_perdido")
            _say(f"cajero {i}: el proceso terminó sin informar (código de salida {procs[i].exitcode})")
            continue
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
        deposited[card] += Decimal(amount) * r["ok_total"]
        if r["in_doubt"]:
            report["in_doubt"][card] = report["in_doubt"].get(card, 0) + r["in_doubt"]
        report["balances"][card] = {"start": r["balance_start"], "end": r["balance_end"]}
        report["per_atm"].append({"card": card, "terminal": tasks[i].key.terminal_id,
                                  "ok_in_window": r["ok_in_window"], "ok_total": r["ok_total"]})  # fmt: skip
        report["ok_in_window"] += r["ok_in_window"]
        report["atms_complete"] += bool(r["complete"])
        latencies.extend(r["latencies"])
        cpu_window += r["cpu_window_s"]
    ok = report["ok_in_window"]
    report.update(
        tx_per_s=round(ok / report["window_s"], 1),
        latency_ms=summary_ms(latencies, with_max=True),
        errors=dict(sorted(errors.items())),
        deposited={c: str(v.quantize(_CENT)) for c, v in deposited.items()},
        client_cpu_window_s=round(cpu_window, 3),
        client_cpu_ms_per_tx=round(cpu_window / ok * 1000, 4) if ok else None,
    )


def run(
    host: str,
    port: int,
    keys: Sequence[KeyLike],
    cards: list[tuple[str, str]],
    n_atms: int,
    warmup: float,
    window: float,
    amount: str = "1.00",
    sessions: int = 0,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    start_method: str | None = None,
    on_window: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The load test; returns the report (the object the CLI prints).

    ``keys[i]`` = the terminal key of ATM ``i`` (one terminal each), ``cards[i]`` = its (card, pin).
    Sessions are measured as terminal ``keys[0]``. ``start_method``: multiprocessing's (None: the platform's).
    ``ValueError`` with a message in Spanish if the arguments do not do. ``on_window`` (for whoever
    measures the server meanwhile) is called with ``"start"``, ``"middle"`` and ``"end"`` of the
    measured window, on the ATMs' own clock: the parent waits at the same barrier.
    """
    cards = [(str(c), str(p)) for c, p in cards]
    own_keys = [TerminalKey(k.terminal_id, k.version, k.key) for k in keys]  # checked, and free of the caller's type
    _check_arguments(own_keys, cards, n_atms, amount, warmup, window, sessions)
    used = cards[:n_atms]
    unique = len({c for c, _ in used}) == n_atms
    if not unique:
        _say("aviso: hay tarjetas repetidas entre los cajeros; no se comprobará la continuidad de los saldos")
    report: dict[str, Any] = {"atms": n_atms, "warmup_s": warmup, "window_s": window, "amount": amount, "errors": {}}
    if sessions:
        report.update(measure_sessions(host, port, own_keys[0], used[0], sessions, timeout=timeout))
    ctx = multiprocessing.get_context(start_method)
    barrier_timeout = 30.0 + 2.0 * n_atms
    tasks = [
        AtmTask(i, host, port, own_keys[i], card, pin, amount, warmup, window, unique, timeout, barrier_timeout)
        for i, (card, pin) in enumerate(used)
    ]
    # a safety net (sockets time out first): start-up, warm-up, window, the last deposit and SALIR, and margin
    deadline = time.monotonic() + barrier_timeout + warmup + window + 4 * timeout + 15.0
    cpu_before = _children_cpu()
    reports, procs = _run_atms(tasks, ctx.Barrier(n_atms + (on_window is not None)), ctx, deadline, on_window)
    report["client_cpu_s"] = round(_children_cpu() - cpu_before, 3)
    _books(used, tasks, reports, procs, amount, report)
    return report


def succeeded(report: dict[str, Any]) -> bool:
    """Every ATM finished its session and nothing went wrong."""
    return report["atms_complete"] == report["atms"] and not report["errors"]


def _load_cards(path: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"No se pudo leer el fichero de tarjetas {path}: {exc}") from None
    good = isinstance(data, list) and all(
        isinstance(item, dict) and isinstance(item.get("tarjeta"), str) and isinstance(item.get("pin"), str)
        for item in data
    )
    if not good:
        raise ValueError(f"El fichero de tarjetas {path} debe ser una lista JSON de {{'tarjeta', 'pin'}} de texto.")
    return [(item["tarjeta"], item["pin"]) for item in data]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.contract_load",
        description="Carga de depósitos contra el banco con un cliente escrito solo a partir de PROTOCOL.md.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="dirección del banco")
    add("--puerto", dest="port", type=int, metavar="PUERTO", required=True, help="puerto del banco")
    add("--llaves", dest="keys", metavar="FICHERO", nargs="+", required=True,
        help="un fichero de llave ATM2 por cajero, en orden (cada cajero es un terminal distinto)")  # fmt: skip
    add("--tarjetas", dest="cards", metavar="FICHERO", required=True, help="JSON: [{'tarjeta', 'pin'}], una por cajero")
    add("--cajeros", dest="n_atms", type=int, metavar="N", required=True, help="número de procesos cajero")
    add("--calentamiento", dest="warmup", type=float, metavar="S", default=1.5, help="segundos sin medir")
    add("--ventana", dest="window", type=float, metavar="S", default=5.0, help="segundos de la ventana medida")
    add("--monto", dest="amount", metavar="IMPORTE", default="1.00", help="importe de cada depósito")
    add("--sesiones", dest="sessions", type=int, metavar="N", default=0, help="conexiones a medir antes de la carga")
    add("--tiempo-limite", dest="timeout", type=float, metavar="S", default=DEFAULT_TIMEOUT, help="plazo por socket")
    add("--arranque", dest="start_method", choices=("fork", "spawn", "forkserver"), help="arranque de los procesos")
    args = parser.parse_args(argv)
    try:
        args.keys, args.cards = [load_key_file(path) for path in args.keys], _load_cards(args.cards)
        report = run(**vars(args))
    except (ValueError, KeyboardInterrupt) as exc:
        _say(f"error: {exc}" if isinstance(exc, ValueError) else "interrumpido")
        return 1
    print(json.dumps(report, ensure_ascii=False))
    if not succeeded(report):
        _say(f"la prueba terminó con errores: {report['errors']} ({report['atms_complete']} de {report['atms']})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

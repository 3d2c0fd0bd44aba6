"""``python -m bench``: the Cajero performance bench, side by side with the disk and PostgreSQL.

    python -m bench --rapido        # ~1-2 min: 100 and 100,000 accounts, 1 and 16 ATMs
    python -m bench                 # full sweep (~5-8 min on 2 cores): 100/10,000/100,000 × 1/4/16/64
    python -m bench --perfil        # py-spy profile of the handlers under 16 ATMs (see bench/profile.py)
    python -m bench --costos        # what one deposit costs the server in one process (see bench/costs.py)

Writes ``bench/results/latest.json``, ``chart.png`` (or ``--salida DIR``) and the run's log
under ``results/runs/`` (ignored by git: run logs are not committed). Nothing here asserts a
timing: it measures, reports, and prints each goal of the performance issue as PASS or MISS.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from argparse import ArgumentParser, Namespace, RawDescriptionHelpFormatter
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/run.py`` as well as ``python -m bench``
    sys.path.insert(0, str(ROOT))

from bench import bank, references  # noqa: E402
from bench.bank import DEPOSIT, BenchBank  # noqa: E402
from bench.machine import code_info, machine_info  # noqa: E402
from bench.report import HEADER, goals, print_report, row  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
_printed: list[str] = []


def say(text: str = "") -> None:
    """Print, and keep the line for the run's log."""
    print(text, flush=True)
    _printed.append(text)


def with_defaults(plan: Namespace) -> Namespace:
    """The sweep's defaults, which depend on ``--rapido``: ledger sizes × ATM counts, window, set-up."""
    quick, sizes = plan.quick, plan.sizes or ([100, 100_000] if plan.quick else [100, 10_000, 100_000])
    window, warm, plan.n_setup, plan.n_login = (3.0, 1.0, 20, 10) if quick else (5.0, 1.5, 50, 20)
    plan.sizes, plan.atms = sizes, plan.atms or ([1, 16] if quick else [1, 4, 16, 64])
    plan.window, plan.warm = plan.window or window, warm if plan.warm is None else plan.warm
    others = [("forkserver", min(sizes), 20), ("spawn", min(sizes), 20), ("spawn", max(sizes), 5)]
    plan.methods = others if plan.methods and not quick else []  # (start method, accounts, connections)
    return plan


# -- the parts of one run ----------------------------------------------------------------------------------------
def _point(bench: BenchBank, n_atms: int, plan: Namespace, deposited: dict[str, Decimal]) -> dict[str, Any]:
    """One ATM count on one ledger; adds what the ATMs saw acknowledged to ``deposited``."""
    point = bench.measure(n_atms, plan.warm, plan.window)
    for card, amount in point.pop("deposited").items():
        deposited[card] = deposited.get(card, Decimal(0)) + Decimal(amount)
    point["accounts"], point["start_method"] = bench.accounts, bench.start_method
    say("  " + row(point))
    if point["errors"] or point["failures"]:
        say(f"      ERRORES: {point['errors']} {point['failures']}")
    return point


def _check_books(bench: BenchBank, deposited: dict[str, Decimal], name: str) -> dict[str, Any]:
    """After a clean stop: every acknowledged deposit in ``cuenta.txt``, and ``verificar`` happy."""
    out: dict[str, Any] = {"stop_status": bench.stop()}
    wrong = bank.book_mismatches(bench.folder / "cuenta.txt", deposited)
    code, text = bank.verify_ledger(bench.folder)
    journal = bench.folder / "cuenta.diario"
    records = int(sum(deposited.values(), Decimal(0)) / Decimal(DEPOSIT))
    out.update(balances_checked=len(deposited), balance_mismatches=wrong, journal_records=records)
    out["verificar"] = {"status": code, "output": text[-500:]}
    out["journal_bytes"] = journal.stat().st_size if journal.exists() else None
    verdict = "correctos" if not wrong else "INCORRECTOS: " + str(list(wrong.items())[:3])
    say(f"{name}: {records:,} depósitos confirmados, saldos {verdict}; verificar -> {code}")
    return out


def run_ledger(tmp: Path, size: int, plan: Namespace, method: str = "fork") -> dict[str, Any]:
    """First start, session set-up, the ATM sweep, the books, and a re-start with the sweep in the journal."""
    out: dict[str, Any] = {"accounts": size, "start_method": method}
    with BenchBank(tmp / f"banco-{method}-{size}", size, method, terminals=max(plan.atms)) as bench:
        out["ledger_write_s"] = bench.ledger_write_s
        out["ledger_bytes"] = (bench.folder / "cuenta.txt").stat().st_size
        out["startup_first_s"] = bench.start()
        name = f"  {size:>7,} cuentas" + (f" (--inicio {method})" if method != "fork" else "")
        say(f"{name}: servidor listo en {out['startup_first_s']:.2f} s (primer arranque)")
        out["setup"] = s = bench.sessions(plan.n_setup, plan.n_login)
        session, login = s["session_ms"], s["login_ms"]
        say(f"{name}: sesión (TCP+saludo+RENOVAR_LLAVE) p50 {session['p50']} ms p99 {session['p99']} ms; "
            f"IDENTIFICAR p50 {login['p50']} ms ({session['n']} conexiones) {s['errors'] or ''}")  # fmt: skip
        deposited: dict[str, Decimal] = {}
        out["points"] = [_point(bench, n, plan, deposited) for n in plan.atms]
        out.update(_check_books(bench, deposited, name))
        out["startup_restart_s"] = bench.start()
        records, seconds = out["journal_records"], out["startup_restart_s"]
        say(f"{name}: rearranque con {records:,} registros en el diario: {seconds:.2f} s")
        bench.stop()
    out["server_problems"], out["log_bytes"] = bench.problems, bench.log_bytes
    return out


def _append_history(journal_path: Path, accounts: int, records: int) -> None:
    """``records`` well-formed DEPOSITO records, as the server writes them (``Record.encode``)."""
    from bank_server.journal import Record
    from bank_server.ledger import Account

    date = datetime.now().astimezone().isoformat(timespec="seconds")
    pin = bank.real_pin_field()
    balances: dict[int, Decimal] = {}
    with open(journal_path, "ab") as journal:
        chunk = []
        for n in range(1, records + 1):
            index = (n * 7919) % accounts
            balances[index] = balances.get(index, bank.START_BALANCE) + Decimal(DEPOSIT)
            account = Account(bank.card_number(index), f"Cliente de prueba {index}", balances[index], pin, 0)
            chunk.append(Record(n, date, "DEPOSITO", account, f"CARGA-001/hist{n:x}", Decimal(DEPOSIT)).encode())
            if len(chunk) >= 10_000:
                journal.write(b"".join(chunk))
                chunk = []
        journal.write(b"".join(chunk))


def run_long_journal(tmp: Path, accounts: int, records: int) -> dict[str, Any]:
    """Start-up when the journal holds a long history: the server starts once (creating the journal), stops,
    ``records`` records are appended, then two starts are timed: the first replays them (crash recovery,
    then a checkpoint), the second only reads them back as history (idempotency ids, movements)."""
    out: dict[str, Any] = {"accounts": accounts, "records": records}
    with BenchBank(tmp / f"banco-diario-{accounts}", accounts) as bench:
        out["startup_empty_s"] = bench.start()
        bench.stop()
        _append_history(bench.folder / "cuenta.diario", accounts, records)
        out["journal_bytes"] = (bench.folder / "cuenta.diario").stat().st_size
        out["startup_replay_s"] = bench.start()
        bench.stop()
        out["startup_history_s"] = bench.start()
        bench.stop()
        say(
            f"  {accounts:,} cuentas y {records:,} registros en el diario ({out['journal_bytes'] / 1e6:.0f} MB): "
            f"arranque que los repite {out['startup_replay_s']:.2f} s; arranque siguiente (solo historia) "
            f"{out['startup_history_s']:.2f} s; sin diario {out['startup_empty_s']:.2f} s"
        )
    out["server_problems"] = bench.problems
    return out


def measure_all(results: dict[str, Any], plan: Namespace, tmp: Path) -> None:
    say("Techo del disco (append + fdatasync bajo candado, mismo sistema de archivos):")
    results["fsync"] = d = references.measure_disk(tmp, 2.0 if plan.quick else 3.0)
    say(f"  1 registro por fdatasync: {d['per_tx']['records_per_s']:,.0f}/s; "
        f"8 por fdatasync: {d['group8']['records_per_s']:,.0f}/s")  # fmt: skip
    say("Firma PIN (scrypt N=2^14, con pimienta de banco.key) para todas las cuentas...")
    t0 = time.perf_counter()
    bank.real_pin_field()
    results["scrypt_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    say(f"  {results['scrypt_ms']} ms por hash")
    say("Cajero: " + HEADER.strip())
    results["sizes"] = [run_ledger(tmp, size, plan) for size in plan.sizes]
    if plan.costs:
        from bench import costs

        say("Costo de un depósito en un solo proceso (sin sockets ni contención; --costos):")
        results["costs"] = costs.measure(plan.sizes, 500 if plan.quick else 1000)
        costs.describe(results["costs"], say)
    if not plan.quick:
        say("Arranque con historia en el diario:")
        results["long_journal"] = run_long_journal(tmp, max(plan.sizes), 100_000)
    if plan.methods:
        say("Otros métodos de inicio de manejadores (16 cajeros, 3 s):")
    results["start_methods"] = []
    for method, accounts, k in plan.methods:
        sixteen = Namespace(**{**vars(plan), "atms": [16], "window": 3.0, "n_setup": k, "n_login": min(5, k)})
        results["start_methods"].append(run_ledger(tmp, accounts, sixteen, method))
    if plan.pgbench:
        say(f"PostgreSQL pgbench TPC-B con {plan.atms} clientes:")
        results["pgbench"] = references.run_pgbench(plan.atms, 5 if plan.quick else 10, log=say)
    else:
        results["pgbench"] = {"skipped": "--sin-pgbench"}


def save(results: dict[str, Any], out_dir: Path, quick: bool) -> None:
    """``latest[-rapido].json``, the chart if matplotlib is there, and this run's log under ``runs/``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-rapido" if quick else ""
    name = out_dir / f"latest{suffix}.json"
    name.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    chart = out_dir / f"chart{suffix}.png"
    try:
        from bench import chart as chart_module

        chart_module.draw(results, chart)
        say(f"\nResultados: {name}; gráfica: {chart}; {results['elapsed_s']:.0f} s en total")
    except ImportError:
        say(f"\nResultados: {name}; sin gráfica (instale matplotlib); {results['elapsed_s']:.0f} s en total")
    log = out_dir / "runs" / f"{results['mode']}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.txt"
    log.parent.mkdir(exist_ok=True)
    log.write_text("\n".join(_printed) + "\n", encoding="utf-8")
    print(f"Registro de esta corrida: {log}")


# -- main ------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> Namespace:
    def numbers(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    p = ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    add, flag = p.add_argument, {"action": "store_true"}
    add("--rapido", dest="quick", **flag, help="corrida rápida: 100 y 100.000 cuentas, 1 y 16 cajeros")
    add("--perfil", dest="profile", **flag, help="en su lugar, perfil de los manejadores (py-spy)")
    add("--costos", dest="costs_only", **flag, help="solo el costo de un depósito en un proceso")
    add("--cuentas", dest="sizes", type=numbers, metavar="N,N", help="tamaños del libro, p. ej. 100,10000")
    add("--cajeros", dest="atms", type=numbers, metavar="N,N", help="cantidades de cajeros, p. ej. 1,4,16,64")
    add("--ventana", dest="window", type=float, metavar="S", help="segundos medidos por punto")
    add("--calentamiento", dest="warm", type=float, metavar="S", help="segundos sin medir antes de cada ventana")
    add("--sin-costos", dest="costs", action="store_false", help="omitir el costo en un proceso")
    add("--sin-pgbench", dest="pgbench", action="store_false", help="omitir PostgreSQL")
    add("--sin-inicios", dest="methods", action="store_false", help="omitir forkserver y spawn")
    add("--salida", dest="out_dir", type=Path, metavar="DIR", default=RESULTS, help="carpeta de latest.json y runs/")
    add("--segundos", dest="seconds", type=float, metavar="S", default=20.0, help="--perfil: segundos de perfil")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.profile:
        from bench import profile

        return profile.main(args)
    if args.costs_only:
        from bench import costs

        costs.describe(costs.measure(args.sizes or [100, 100_000], 1000), say)
        return 0
    plan = with_defaults(args)
    quick, tmp = plan.quick, Path(tempfile.mkdtemp(prefix="cajero-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started_utc": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}", "mode": "rapido" if quick else "completo",
        "params": {**{k: vars(plan)[k] for k in ("sizes", "atms", "window", "warm", "n_setup", "n_login")},
                   "deposit": DEPOSIT, "load": "bench/contract_load.py", "protocol": "ATM2"},
        "machine": machine_info(tmp), "code": code_info(), "loadavg_start": os.getloadavg(),
    }  # fmt: skip
    results["commit"] = results["code"]["commit"]
    say(f"Cajero bench ({results['mode']}): cuentas {plan.sizes}, cajeros {plan.atms}, ventana {plan.window} s "
        f"tras {plan.warm} s; carga: bench/contract_load.py; carpeta temporal {tmp}")  # fmt: skip
    try:
        measure_all(results, plan, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_end"] = os.getloadavg()
    results["goals"] = goals(results)
    print_report(results, say)
    save(results, plan.out_dir, plan.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

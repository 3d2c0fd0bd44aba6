"""``python -m bench``: the Cajero performance bench, side by side with the disk and PostgreSQL.

    python -m bench --rapido        # ~1-2 min: 100 and 100,000 accounts, 1 and 16 ATMs
    python -m bench                 # full sweep (~5-8 min on 2 cores): 100/10,000/100,000 × 1/4/16/64
    python -m bench --perfil        # py-spy profile of the handlers under 16 ATMs (see bench/profile.py)

Writes ``bench/results/latest.json`` and ``bench/results/chart.png``
(or ``--salida DIR``). Nothing here asserts a timing: it measures and
reports, and prints each goal of the performance issue as PASS or MISS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``python bench/run.py`` as well as ``python -m bench``
    sys.path.insert(0, str(ROOT))

from bench import atm_load, disk, pg  # noqa: E402
from bench.atm_load import BenchServer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def say(text: str = "") -> None:
    print(text, flush=True)


# -- what machine, what code -------------------------------------------------------------------------
def machine_info(tmp: Path) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    fs = ""
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(tmp).startswith(mount) and len(mount) > len(best):
                best, fs = mount, f"{kind} on {device} ({mount})"
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "temp_fs": fs,
        "note": "el generador de carga (procesos ATM) y el servidor comparten los mismos núcleos",
    }


def code_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return ""

    dirty = git("status", "--porcelain", "--", "bank_server", "common")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_server_files": dirty.splitlines()}


# -- the parts of one run ----------------------------------------------------------------------------
LOADS = {"contrato": atm_load.run_contract_load, "proyecto": atm_load.run_load}


def run_ledger_size(
    tmp: Path, size: int, atms: list[int], warm: float, window: float, n_setup: int, n_login: int, load: str
) -> dict[str, Any]:
    folder = tmp / f"banco-{size}"
    folder.mkdir()
    t0 = time.perf_counter()
    atm_load.write_bench_ledger(folder, size)
    out: dict[str, Any] = {"accounts": size, "ledger_write_s": round(time.perf_counter() - t0, 2)}
    out["ledger_bytes"] = (folder / "cuenta.txt").stat().st_size
    server = BenchServer(folder)
    totals: dict[str, int] = {}
    points: list[dict[str, Any]] = []
    try:
        out["startup_first_s"] = round(server.start(), 3)
        say(f"  {size:>7,} cuentas: servidor listo en {out['startup_first_s']:.2f} s (primer arranque)")
        out["setup"] = atm_load.measure_setup(server, n_setup, n_login, atm_load.card_number(0))
        s = out["setup"]
        say(
            f"  {size:>7,} cuentas: sesión (TCP+saludo) p50 {s['setup_p50_ms']} ms p99 {s['setup_p99_ms']} ms; "
            f"IDENTIFICAR p50 {s['login_p50_ms']} ms ({s['connections']} conexiones)"
        )
        for n in atms:
            cards = atm_load.cards_for(n, size)
            point = LOADS[load](server, n, cards, warm, window)
            for card, count in point.pop("ok_by_card").items():
                totals[card] = totals.get(card, 0) + count
            point["accounts"] = size
            points.append(point)
            say("  " + row(point))
            if point["errors"] or point["failures"]:
                say(f"      ERRORES: {point['errors']} {point['failures']}")
        out["stop_status"] = server.stop()
        # every acknowledged deposit must be in cuenta.txt after the clean stop (checkpoint)
        balances = atm_load.read_balances(folder / "cuenta.txt", set(totals))
        wrong = {
            c: {
                "esperado": str(atm_load.START_BALANCE + Decimal(totals[c]) * Decimal(atm_load.DEPOSIT)),
                "en_libro": str(balances.get(c)),
            }
            for c in totals
            if balances.get(c) != atm_load.START_BALANCE + Decimal(totals[c]) * Decimal(atm_load.DEPOSIT)
        }
        out["balances_checked"] = len(totals)
        out["balance_mismatches"] = wrong
        code, text = atm_load.verify_ledger(folder)
        out["verificar"] = {"status": code, "output": text[-500:]}
        journal = folder / "cuenta.diario"
        out["journal_bytes"] = journal.stat().st_size if journal.exists() else None
        out["journal_records"] = sum(totals.values())
        say(
            f"  {size:>7,} cuentas: {sum(totals.values()):,} depósitos confirmados, saldos "
            f"{'correctos' if not wrong else 'INCORRECTOS: ' + str(list(wrong.items())[:3])}; verificar -> {code}"
        )
        out["startup_restart_s"] = round(server.start(), 3)
        say(
            f"  {size:>7,} cuentas: rearranque con {out['journal_records']:,} registros en el diario: "
            f"{out['startup_restart_s']:.2f} s"
        )
        server.stop()
    finally:
        server.kill()
        out["server_problems"] = server.stderr_problems()[:30]
        log = folder / "banco.log"
        out["log_bytes"] = log.stat().st_size if log.exists() else None
        atm_load.remove_tree(folder)
    out["points"] = points
    return out


def run_long_journal(tmp: Path, accounts: int, records: int) -> dict[str, Any]:
    """Start-up when the journal holds a long history: a bank that has worked for a while.

    The server starts once (creating the journal), stops; the bench then
    appends ``records`` well-formed DEPOSITO records (as the server writes
    them: ``Record.encode``) and times two starts: the first replays them
    (crash recovery, then a checkpoint), the second only reads them back
    as history (idempotency ids, movements).
    """
    from datetime import datetime

    from bank_server.journal import Record
    from bank_server.ledger import Account

    folder = tmp / f"banco-diario-{accounts}"
    folder.mkdir()
    atm_load.write_bench_ledger(folder, accounts)
    server = BenchServer(folder)
    out: dict[str, Any] = {"accounts": accounts, "records": records}
    try:
        out["startup_empty_s"] = round(server.start(), 3)
        server.stop()
        fecha = datetime.now().astimezone().isoformat(timespec="seconds")
        pin = atm_load.real_pin_field()
        balances: dict[int, Decimal] = {}
        with open(folder / "cuenta.diario", "ab") as journal:
            chunk = []
            for n in range(1, records + 1):
                index = (n * 7919) % accounts
                saldo = balances.get(index, atm_load.START_BALANCE) + Decimal(atm_load.DEPOSIT)
                balances[index] = saldo
                account = Account(atm_load.card_number(index), f"Cliente de prueba {index}", saldo, pin, 0)
                chunk.append(Record(n, fecha, "DEPOSITO", account, f"hist{n:x}", Decimal(atm_load.DEPOSIT)).encode())
                if len(chunk) >= 10_000:
                    journal.write(b"".join(chunk))
                    chunk = []
            journal.write(b"".join(chunk))
        out["journal_bytes"] = (folder / "cuenta.diario").stat().st_size
        out["startup_replay_s"] = round(server.start(), 3)
        server.stop()
        out["startup_history_s"] = round(server.start(), 3)
        server.stop()
        say(
            f"  {accounts:,} cuentas y {records:,} registros en el diario ({out['journal_bytes'] / 1e6:.0f} MB): "
            f"arranque que los repite {out['startup_replay_s']:.2f} s; arranque siguiente (solo historia) "
            f"{out['startup_history_s']:.2f} s; sin diario {out['startup_empty_s']:.2f} s"
        )
    finally:
        server.kill()
        out["server_problems"] = server.stderr_problems()[:30]
        atm_load.remove_tree(folder)
    return out


def run_start_method(
    tmp: Path, method: str, accounts: int, warm: float, window: float, n_setup: int, load: str
) -> dict[str, Any]:
    """Handler start-up under another start method (forkserver, spawn): set-up time and a 16-ATM run."""
    folder = tmp / f"banco-{method}-{accounts}"
    folder.mkdir()
    atm_load.write_bench_ledger(folder, accounts)
    server = BenchServer(folder, start_method=method)
    out: dict[str, Any] = {"start_method": method, "accounts": accounts}
    try:
        out["startup_s"] = round(server.start(), 3)
        out["setup"] = atm_load.measure_setup(server, n_setup, min(5, n_setup), atm_load.card_number(0))
        point = LOADS[load](server, 16, atm_load.cards_for(16, accounts), warm, window)
        totals = point.pop("ok_by_card")
        out["load16"] = point
        server.stop()
        balances = atm_load.read_balances(folder / "cuenta.txt", set(totals))
        out["balance_mismatches"] = sum(
            1
            for c, n in totals.items()
            if balances.get(c) != atm_load.START_BALANCE + Decimal(n) * Decimal(atm_load.DEPOSIT)
        )
        s = out["setup"]
        say(
            f"  --inicio {method:<10} {accounts:>7,} cuentas: arranque {out['startup_s']:.2f} s, "
            f"sesión p50 {s['setup_p50_ms']} ms p99 {s['setup_p99_ms']} ms; "
            f"16 cajeros {point['tx_per_s']} tx/s p99 {point['p99_ms']} ms; "
            f"saldos {'correctos' if not out['balance_mismatches'] else 'INCORRECTOS'}"
        )
        if point["errors"] or point["failures"] or s["failures"]:
            say(f"      ERRORES: {point['errors']} {point['failures']} {s['failures']}")
    finally:
        server.kill()
        out["server_problems"] = server.stderr_problems()[:30]
        atm_load.remove_tree(folder)
    return out


# -- reporting ------------------------------------------------------------------------------------------
HEADER = (
    f"{'cuentas':>8} {'cajeros':>7} {'tx/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
    f"{'CPU srv ms/tx':>13} {'(núcleo SO)':>11} {'núcleos srv':>11} {'núcleos ATM':>11} {'núcleos resto':>13} "
    f"{'PSS manej. MiB':>14} "
    f"{'errores':>7}"
)


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row(p: dict[str, Any]) -> str:
    mem = p.get("memory", {})
    errors = sum(p["errors"].values()) + len(p["failures"])
    return (
        f"{p['accounts']:>8,} {p['atms']:>7} {_f(p['tx_per_s']):>8} {_f(p['p50_ms'], 2):>7} {_f(p['p99_ms'], 2):>7} "
        f"{_f(p['max_ms'], 1):>7} {_f(p['server_cpu_ms_per_tx'], 3):>13} {_f(p.get('server_sys_ms_per_tx'), 3):>11} "
        f"{_f(p['server_cpu_cores'], 2):>11} "
        f"{_f(p['client_cpu_cores'], 2):>11} {_f(p.get('other_cpu_cores'), 2):>13} "
        f"{_f(mem.get('handler_pss_mib'), 1):>14} {errors:>7}"
    )


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def goal(name: str, value: float | None, target: float, higher_is_better: bool, unit: str = "") -> None:
        op = "≥" if higher_is_better else "<"
        if value is None:
            out.append({"goal": name, "value": None, "target": target, "op": op, "verdict": "n/d"})
            return
        ok = value >= target if higher_is_better else value < target
        out.append(
            {
                "goal": name,
                "value": round(value, 3),
                "target": target,
                "unit": unit,
                "op": op,
                "verdict": "PASS" if ok else "MISS",
            }
        )

    sizes = results["sizes"]
    by_size = {s["accounts"]: {p["atms"]: p for p in s["points"]} for s in sizes}
    smallest, largest = min(by_size), max(by_size)
    pg16 = ((results.get("pgbench") or {}).get("by_clients") or {}).get("16", {}).get("tps")
    ceiling = ((results.get("fsync") or {}).get("per_tx") or {}).get("records_per_s")
    for size, points in sorted(by_size.items()):
        if 16 in points:
            tx = points[16]["tx_per_s"]
            goal(f"16 cajeros / pgbench 16 clientes ({size:,} cuentas)", tx / pg16 if pg16 else None, 1.0, True, "×")
            goal(
                f"16 cajeros / techo fsync por tx ({size:,} cuentas)", tx / ceiling if ceiling else None, 0.5, True, "×"
            )
    common = sorted(set(by_size[smallest]) & set(by_size[largest]))
    if largest != smallest and common:
        headline = 16 if 16 in common else common[-1]
        goal(
            f"{largest:,} / {smallest:,} cuentas, tx/s con {headline} cajeros",
            by_size[largest][headline]["tx_per_s"] / by_size[smallest][headline]["tx_per_s"],
            0.8,
            True,
            "×",
        )
        worst = min(by_size[largest][n]["tx_per_s"] / by_size[smallest][n]["tx_per_s"] for n in common)
        goal(f"{largest:,} / {smallest:,} cuentas, peor cociente entre {common} cajeros", worst, 0.8, True, "×")
    big = next((s for s in sizes if s["accounts"] == largest), None)
    if big is not None:
        worst_start = max(v for v in (big.get("startup_first_s"), big.get("startup_restart_s")) if v is not None)
        goal(f"arranque con {largest:,} cuentas (peor de primero y rearranque)", worst_start, 2.0, False, "s")
    lj = results.get("long_journal")
    if lj and lj.get("startup_history_s") is not None:
        goal(
            f"arranque con {lj['accounts']:,} cuentas y {lj['records']:,} registros de historia",
            lj["startup_history_s"],
            2.0,
            False,
            "s",
        )
    for size, points in sorted(by_size.items()):
        if 1 in points:
            goal(f"1 cajero: p99 de DEPOSITAR ({size:,} cuentas)", points[1]["p99_ms"], 5.0, False, "ms")
    small = next((s for s in sizes if s["accounts"] == smallest), None)
    if small is not None:
        goal(f"sesión (TCP+saludo) p50, fork ({smallest:,} cuentas)", small["setup"]["setup_p50_ms"], 30.0, False, "ms")
    return out


def print_report(results: dict[str, Any]) -> None:
    say()
    say("=" * len(HEADER))
    m = results["machine"]
    say(
        f"Máquina: {m['cpus']} núcleos, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; temporales en {m['temp_fs']}"
    )
    say(
        f"Código: commit {results['code']['commit'][:12]}"
        + (
            f" + cambios sin confirmar: {', '.join(results['code']['uncommitted_server_files'])}"
            if results["code"]["uncommitted_server_files"]
            else ""
        )
    )
    load = results["params"].get("load", "proyecto")
    say(
        "Cajeros: "
        + (
            "bench/contract_load.py, escrito solo a partir de PROTOCOL.md (no importa nada del proyecto)"
            if load == "contrato"
            else "BankClient del propio cajero (atm_gui/bank_client.py)"
        )
    )
    say(
        f"Carga media de la máquina (1/5/15 min) al empezar {results['loadavg_start']}, al terminar "
        f"{results['loadavg_end']}: otros procesos ajenos al bench también usan los núcleos si es > 0."
    )
    say("Nota: los procesos ATM y el servidor comparten los núcleos; 'núcleos ATM' es lo que se llevó la carga;")
    say("'CPU srv ms/tx' suma aceptador y manejadores, usuario + sistema; '(núcleo SO)' es la parte de sistema.")
    say("'núcleos resto': CPU del núcleo (softirq de red, jbd2) y de procesos ajenos al bench (ruido).")
    say()
    say("Depósitos durables (DEPOSITAR confirmado tras fsync) por segundo, ida y vuelta vista por el cajero:")
    say(HEADER)
    for s in results["sizes"]:
        for p in s["points"]:
            say(row(p))
    say()
    say(
        f"{'cuentas':>8} {'arranque s':>10} {'rearranque s':>12} {'sesión p50':>10} {'sesión p99':>10} "
        f"{'login p50':>9} {'login p99':>9} {'saldos':>8} {'verificar':>9}"
    )
    for s in results["sizes"]:
        st = s["setup"]
        say(
            f"{s['accounts']:>8,} {_f(s.get('startup_first_s'), 2):>10} {_f(s.get('startup_restart_s'), 2):>12} "
            f"{_f(st['setup_p50_ms'], 1):>10} {_f(st['setup_p99_ms'], 1):>10} {_f(st['login_p50_ms'], 1):>9} "
            f"{_f(st['login_p99_ms'], 1):>9} {'ok' if not s['balance_mismatches'] else 'MAL':>8} "
            f"{s['verificar']['status']:>9}"
        )
    for sm in results.get("start_methods", []):
        st = sm["setup"]
        say(
            f"--inicio {sm['start_method']}: arranque {_f(sm.get('startup_s'), 2)} s, sesión p50 "
            f"{_f(st['setup_p50_ms'])} ms p99 {_f(st['setup_p99_ms'])} ms, 16 cajeros "
            f"{_f(sm.get('load16', {}).get('tx_per_s'))} tx/s"
        )
    lj = results.get("long_journal")
    if lj:
        say(
            f"{lj['accounts']:,} cuentas + {lj['records']:,} registros de historia: arranque que los repite "
            f"{_f(lj.get('startup_replay_s'), 2)} s, arranque siguiente {_f(lj.get('startup_history_s'), 2)} s"
        )
    say()
    d = results.get("fsync") or {}
    if d:
        say(
            f"Disco (mismo sistema de archivos): 1 fdatasync por registro bajo candado: "
            f"{d['per_tx']['records_per_s']:,.0f} registros/s (p50 {d['per_tx']['sync_p50_ms']} ms); "
            f"8 registros por fdatasync: {d['group8']['records_per_s']:,.0f} registros/s"
        )
    pgr = results.get("pgbench") or {}
    if pgr.get("by_clients"):
        cells = ", ".join(f"{c} cl. {v['tps']:,.0f} tps" for c, v in pgr["by_clients"].items() if v.get("tps"))
        say(
            f"PostgreSQL pgbench TPC-B -s {pgr['scale']} -M prepared -T {pgr['seconds']}: {cells}; "
            f"conexión nueva {pgr.get('connect_ms')} ms"
        )
    elif pgr:
        say(f"pgbench: {pgr.get('skipped') or pgr.get('error')}")
    if results.get("costs"):
        say()
        from bench import costs

        costs.print_pieces(results["costs"], say)
    say()
    say("Metas del issue (medidas en esta misma corrida):")
    for g in results["goals"]:
        value = "n/d" if g["value"] is None else f"{g['value']}{g.get('unit', '')}"
        say(f"  {g['verdict']:<5} {g['goal']}: {value} (meta {g['op']} {g['target']}{g.get('unit', '')})")
    problems = [(s["accounts"], s["server_problems"]) for s in results["sizes"] if s["server_problems"]]
    for size, lines in problems:
        say(f"Avisos/errores del servidor con {size:,} cuentas (servidor.err):")
        for line in lines[:10]:
            say(f"    {line}")


# -- main ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rapido", action="store_true", help="quick run: 100 and 100,000 accounts, 1 and 16 ATMs")
    p.add_argument("--perfil", action="store_true", help="profile the handlers with py-spy under load instead")
    p.add_argument("--cuentas", type=lambda t: [int(x) for x in t.split(",")], help="ledger sizes, e.g. 100,10000")
    p.add_argument("--cajeros", type=lambda t: [int(x) for x in t.split(",")], help="ATM counts, e.g. 1,4,16,64")
    p.add_argument("--ventana", type=float, help="measured window per point, seconds")
    p.add_argument("--calentamiento", type=float, help="warm-up before each window, seconds")
    p.add_argument("--costos", action="store_true", help="only the in-process cost breakdown of one deposit")
    p.add_argument("--sin-costos", action="store_true", help="skip the in-process cost breakdown")
    p.add_argument("--sin-pgbench", action="store_true", help="skip PostgreSQL")
    p.add_argument("--sin-inicios", action="store_true", help="skip the forkserver/spawn comparison")
    p.add_argument(
        "--carga",
        choices=sorted(LOADS),
        default="contrato",
        help="load generator: contrato (bench/contract_load.py, written from PROTOCOL.md alone; default) "
        "or proyecto (the project's own BankClient)",
    )
    p.add_argument("--salida", type=Path, default=RESULTS, help="where latest.json and chart.png go")
    p.add_argument("--segundos", type=float, default=20.0, help="--perfil: seconds of profile")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.perfil:
        from bench import profile

        return profile.main(args)
    if args.costos:
        from bench import costs

        result = costs.measure(args.cuentas or [100, 100_000], 1000, say)
        costs.print_pieces(result, say)
        return 0
    quick = args.rapido
    sizes = args.cuentas or ([100, 100_000] if quick else [100, 10_000, 100_000])
    atms = args.cajeros or ([1, 16] if quick else [1, 4, 16, 64])
    window = args.ventana or (3.0 if quick else 5.0)
    warm = args.calentamiento if args.calentamiento is not None else (1.0 if quick else 1.5)
    n_setup, n_login = (20, 10) if quick else (50, 20)
    methods = (
        []
        if quick or args.sin_inicios
        else [("forkserver", min(sizes), 20), ("spawn", min(sizes), 20), ("spawn", max(sizes), 5)]
    )
    tmp = Path(tempfile.mkdtemp(prefix="cajero-bench-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "rapido" if quick else "completo",
        "params": {
            "sizes": sizes,
            "atms": atms,
            "window_s": window,
            "warm_s": warm,
            "setup_connections": n_setup,
            "logins": n_login,
            "deposit": atm_load.DEPOSIT,
            "load": args.carga,
        },
        "machine": machine_info(tmp),
        "code": code_info(),
        "loadavg_start": os.getloadavg(),
    }
    results["commit"] = results["code"]["commit"]
    say(
        f"Cajero bench ({results['mode']}): cuentas {sizes}, cajeros {atms}, ventana {window} s tras {warm} s; "
        f"carga: {args.carga}; "
        f"carpeta temporal {tmp}"
    )
    try:
        say("Techo del disco (append + fdatasync bajo candado, mismo sistema de archivos):")
        results["fsync"] = disk.measure(tmp, 2.0 if quick else 3.0)
        d = results["fsync"]
        say(
            f"  1 registro por fdatasync: {d['per_tx']['records_per_s']:,.0f}/s; "
            f"8 por fdatasync: {d['group8']['records_per_s']:,.0f}/s"
        )
        say("Firma PIN (scrypt N=2^14) para todas las cuentas...")
        t0 = time.perf_counter()
        atm_load.real_pin_field()
        results["scrypt_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        say(f"  {results['scrypt_ms']} ms por hash")
        say("Cajero: " + HEADER.strip())
        results["sizes"] = [run_ledger_size(tmp, s, atms, warm, window, n_setup, n_login, args.carga) for s in sizes]
        if not args.sin_costos:
            from bench import costs

            say("Costo de un depósito en un solo proceso (sin sockets ni contención; --costos):")
            results["costs"] = costs.measure(sizes, 500 if quick else 1000, say)
        if not quick:
            say("Arranque con historia en el diario:")
            results["long_journal"] = run_long_journal(tmp, max(sizes), 100_000)
        results["start_methods"] = []
        if methods:
            say("Otros métodos de inicio de manejadores:")
            results["start_methods"] = [run_start_method(tmp, m, a, warm, 3.0, k, args.carga) for m, a, k in methods]
        if args.sin_pgbench:
            results["pgbench"] = {"skipped": "--sin-pgbench"}
        else:
            say(f"PostgreSQL pgbench TPC-B con {atms} clientes:")
            results["pgbench"] = pg.run_pgbench(atms, 5 if quick else 10, log=say)
    finally:
        atm_load.remove_tree(tmp)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["loadavg_end"] = os.getloadavg()
    results["goals"] = goals(results)
    print_report(results)
    args.salida.mkdir(parents=True, exist_ok=True)
    name = "latest.json" if not quick else "latest-rapido.json"
    (args.salida / name).write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    chart = args.salida / ("chart.png" if not quick else "chart-rapido.png")
    try:
        from bench import chart as chart_module

        chart_module.draw(results, chart)
        say(f"\nResultados: {args.salida / name}; gráfica: {chart}; {results['elapsed_s']:.0f} s en total")
    except ImportError:
        say(f"\nResultados: {args.salida / name}; sin gráfica (instale matplotlib); {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

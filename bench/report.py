"""The bench's printed report and the performance issue's goals, judged on one run's figures.

Nothing here measures: it reads the results dict that ``bench/run.py`` fills
(and writes to ``latest.json``), so a stored run can be reprinted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HEADER = (
    f"{'cuentas':>18} {'cajeros':>7} {'tx/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
    f"{'CPU srv ms/tx':>13} {'(núcleo SO)':>11} {'núcleos srv':>11} {'núcleos ATM':>11} {'núcleos resto':>13} "
    f"{'PSS manej. MiB':>14} {'errores':>7}"
)


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _label(entry: dict[str, Any]) -> str:
    """The ledger size, and the handler start method when it is not the default fork."""
    method = entry.get("start_method", "fork")
    return f"{entry['accounts']:,}" + ("" if method == "fork" else f" {method}")


def row(p: dict[str, Any]) -> str:
    errors = sum(p["errors"].values()) + len(p["failures"])
    cells = [
        (p["tx_per_s"], 1, 8), (p["p50_ms"], 2, 7), (p["p99_ms"], 2, 7), (p["max_ms"], 1, 7),
        (p["server_cpu_ms_per_tx"], 3, 13), (p.get("server_sys_ms_per_tx"), 3, 11), (p["server_cpu_cores"], 2, 11),
        (p["client_cpu_cores"], 2, 11), (p.get("other_cpu_cores"), 2, 13),
        (p.get("memory", {}).get("handler_pss_mib"), 1, 14),
    ]  # fmt: skip
    return f"{_label(p):>18} {p['atms']:>7} " + " ".join(f"{_f(v, d):>{w}}" for v, d, w in cells) + f" {errors:>7}"


# -- goals ---------------------------------------------------------------------------------------------------------
def _goal(name: str, value: float | None, target: float, higher_is_better: bool, unit: str = "") -> dict[str, Any]:
    op = "≥" if higher_is_better else "<"
    if value is None:
        return {"goal": name, "value": None, "target": target, "op": op, "verdict": "n/d"}
    ok = value >= target if higher_is_better else value < target
    verdict = "PASS" if ok else "MISS"
    return {"goal": name, "value": round(value, 3), "target": target, "unit": unit, "op": op, "verdict": verdict}


def _throughput_goals(results: dict[str, Any], by_size: dict[int, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """16 ATMs against pgbench 16 and against the one-fsync-per-tx ceiling; the largest ledger against the smallest."""
    pg16 = ((results.get("pgbench") or {}).get("by_clients") or {}).get("16", {}).get("tps")
    ceiling = ((results.get("fsync") or {}).get("per_tx") or {}).get("records_per_s")
    out = []
    for size, points in sorted(by_size.items()):
        if 16 in points:
            tx = points[16]["tx_per_s"]
            vs_pg, vs_disk = (tx / pg16 if pg16 else None), (tx / ceiling if ceiling else None)
            out.append(_goal(f"16 cajeros / pgbench 16 clientes ({size:,} cuentas)", vs_pg, 1.0, True, "×"))
            out.append(_goal(f"16 cajeros / techo fsync por tx ({size:,} cuentas)", vs_disk, 0.5, True, "×"))
    smallest, largest = min(by_size), max(by_size)
    common = sorted(n for n in set(by_size[smallest]) & set(by_size[largest]) if by_size[smallest][n]["tx_per_s"])
    if largest != smallest and common:
        ratios = {n: by_size[largest][n]["tx_per_s"] / by_size[smallest][n]["tx_per_s"] for n in common}
        headline = 16 if 16 in common else common[-1]
        name = f"{largest:,} / {smallest:,} cuentas"
        out.append(_goal(f"{name}, tx/s con {headline} cajeros", ratios[headline], 0.8, True, "×"))
        out.append(_goal(f"{name}, peor cociente entre {common} cajeros", min(ratios.values()), 0.8, True, "×"))
    return out


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = {s["accounts"]: s for s in results["sizes"]}
    by_size = {size: {p["atms"]: p for p in s["points"]} for size, s in sizes.items()}
    out = _throughput_goals(results, by_size)
    largest, smallest = sizes[max(sizes)], sizes[min(sizes)]
    starts = [v for v in (largest.get("startup_first_s"), largest.get("startup_restart_s")) if v is not None]
    name = f"arranque con {largest['accounts']:,} cuentas (peor de primero y rearranque)"
    out.append(_goal(name, max(starts, default=None), 2.0, False, "s"))
    lj = results.get("long_journal")
    if lj and lj.get("startup_history_s") is not None:
        name = f"arranque con {lj['accounts']:,} cuentas y {lj['records']:,} registros de historia"
        out.append(_goal(name, lj["startup_history_s"], 2.0, False, "s"))
    for size, points in sorted(by_size.items()):
        if 1 in points:
            out.append(_goal(f"1 cajero: p99 de DEPOSITAR ({size:,} cuentas)", points[1]["p99_ms"], 5.0, False, "ms"))
    name = f"sesión (TCP+saludo+RENOVAR_LLAVE) p50, fork ({smallest['accounts']:,} cuentas)"
    out.append(_goal(name, smallest["setup"]["session_ms"]["p50"], 30.0, False, "ms"))
    return out


# -- the printed report ----------------------------------------------------------------------------------------------
def _preamble(results: dict[str, Any], say: Callable[[str], None]) -> None:
    m, code = results["machine"], results["code"]
    say(
        f"Máquina: {m['cpus']} núcleos, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; temporales en {m['temp_fs']}"
    )
    dirty = code["uncommitted_server_files"]
    say(f"Código: commit {code['commit'][:12]}" + (f" + cambios sin confirmar: {', '.join(dirty)}" if dirty else ""))
    say("Cajeros: bench/contract_load.py sobre devtools/contract_client.py, escrito solo a partir de PROTOCOL.md")
    say(
        f"Carga media de la máquina (1/5/15 min) al empezar {results['loadavg_start']}, al terminar "
        f"{results['loadavg_end']}: otros procesos ajenos al bench también usan los núcleos si es > 0."
    )
    say("Nota: los procesos ATM y el servidor comparten los núcleos; 'núcleos ATM' es lo que se llevó la carga;")
    say("'CPU srv ms/tx' suma aceptador y manejadores, usuario + sistema; '(núcleo SO)' es la parte de sistema.")
    say("'núcleos resto': CPU del núcleo (softirq de red, jbd2) y de procesos ajenos al bench (ruido).")


def _sessions_and_startups(results: dict[str, Any], say: Callable[[str], None]) -> None:
    say(
        f"{'cuentas':>18} {'arranque s':>10} {'rearranque s':>12} {'sesión p50':>10} {'sesión p99':>10} "
        f"{'login p50':>9} {'login p99':>9} {'saldos':>8} {'verificar':>9}"
    )
    for s in [*results["sizes"], *results.get("start_methods", [])]:
        session, login = s["setup"]["session_ms"], s["setup"]["login_ms"]
        say(
            f"{_label(s):>18} {_f(s.get('startup_first_s'), 2):>10} {_f(s.get('startup_restart_s'), 2):>12} "
            f"{_f(session['p50']):>10} {_f(session['p99']):>10} {_f(login['p50']):>9} {_f(login['p99']):>9} "
            f"{'ok' if not s['balance_mismatches'] else 'MAL':>8} {s['verificar']['status']:>9}"
        )
    lj = results.get("long_journal")
    if lj:
        say(
            f"{lj['accounts']:,} cuentas + {lj['records']:,} registros de historia: arranque que los repite "
            f"{_f(lj.get('startup_replay_s'), 2)} s, arranque siguiente {_f(lj.get('startup_history_s'), 2)} s"
        )


def _references(results: dict[str, Any], say: Callable[[str], None]) -> None:
    d = results.get("fsync") or {}
    if d:
        say(
            f"Disco (mismo sistema de archivos): 1 fdatasync por registro bajo candado: "
            f"{d['per_tx']['records_per_s']:,.0f} registros/s (p50 {d['per_tx']['sync_p50_ms']} ms); "
            f"8 registros por fdatasync: {d['group8']['records_per_s']:,.0f} registros/s"
        )
    pg = results.get("pgbench") or {}
    if pg.get("by_clients"):
        cells = ", ".join(f"{c} cl. {v['tps']:,.0f} tps" for c, v in pg["by_clients"].items() if v.get("tps"))
        say(f"PostgreSQL pgbench TPC-B -s {pg['scale']} -M prepared -T {pg['seconds']}: {cells}; "
            f"conexión nueva {pg.get('connect_ms')} ms")  # fmt: skip
    elif pg:
        say(f"pgbench: {pg.get('skipped') or pg.get('error')}")


def print_report(results: dict[str, Any], say: Callable[[str], None]) -> None:
    say("\n" + "=" * len(HEADER))
    _preamble(results, say)
    say("\nDepósitos durables (DEPOSITAR confirmado tras fsync) por segundo, ida y vuelta vista por el cajero:")
    say(HEADER)
    for s in [*results["sizes"], *results.get("start_methods", [])]:
        for p in s["points"]:
            say(row(p))
    say("")
    _sessions_and_startups(results, say)
    say("")
    _references(results, say)
    if results.get("costs"):
        from bench import costs

        say("\nCosto de un depósito en un solo proceso (--costos):")
        costs.describe(results["costs"], say)
    say("\nMetas del issue (medidas en esta misma corrida):")
    for g in results["goals"]:
        value = "n/d" if g["value"] is None else f"{g['value']}{g.get('unit', '')}"
        say(f"  {g['verdict']:<5} {g['goal']}: {value} (meta {g['op']} {g['target']}{g.get('unit', '')})")
    for s in [*results["sizes"], *results.get("start_methods", [])]:
        if s["server_problems"]:
            say(f"Avisos/errores del servidor con {_label(s)} cuentas (servidor.err):")
            for line in s["server_problems"][:10]:
                say(f"    {line}")

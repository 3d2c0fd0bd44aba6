"""The PNG chart: durable transactions/s against ATMs, per ledger size, beside the disk and pgbench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LOAD_NAMES = {
    "contrato": "bench/carga_contrato.py (escrita solo desde PROTOCOL.md)",
    "proyecto": "BankClient del cajero",
}


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lat) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    all_atms: set[int] = set()
    for entry in results["sizes"]:
        size, points = entry["accounts"], entry["points"]
        xs = [p["atms"] for p in points]
        all_atms.update(xs)
        label = f"Cajero, {int(size):,} cuentas"
        ax.plot(xs, [p["tx_per_s"] for p in points], marker="o", linewidth=2, label=label)
        ax_lat.plot(xs, [p["p99_ms"] for p in points], marker="o", label=f"p99, {int(size):,} cuentas")
        ax_lat.plot(xs, [p["p50_ms"] for p in points], marker=".", linestyle=":", color=ax_lat.lines[-1].get_color())
    disk = results.get("fsync") or {}
    if "per_tx" in disk:
        ax.axhline(disk["per_tx"]["records_per_s"], color="grey", linestyle="--", label="disco: 1 fsync por tx")
    if "group8" in disk:
        ax.axhline(disk["group8"]["records_per_s"], color="grey", linestyle=":", label="disco: 1 fsync por 8 tx")
    pg = results.get("pgbench") or {}
    rows = pg.get("by_clients") or {}
    if rows:
        xs = sorted(int(c) for c in rows)
        ax.plot(
            xs,
            [rows[str(c)]["tps"] for c in xs],
            marker="s",
            color="black",
            linewidth=2,
            label=f"pgbench TPC-B (PostgreSQL, -s {pg.get('scale')})",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted(all_atms)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("cajeros (procesos ATM concurrentes) / clientes pgbench")
    ax.set_ylabel("transacciones durables por segundo")
    ax.set_title("Depósitos confirmados (fsync) por segundo")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax_lat.set_xscale("log", base=2)
    ax_lat.set_yscale("log")
    ax_lat.set_xticks(ticks, [str(t) for t in ticks])
    ax_lat.set_xlabel("cajeros")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title("Ida y vuelta de un DEPOSITAR (p99 —, p50 ···)")
    ax_lat.grid(True, which="both", alpha=0.3)
    ax_lat.legend(fontsize=8, loc="best")
    machine = results.get("machine", {})
    fig.suptitle(
        f"Cajero bench — {machine.get('cpus', '?')} núcleos, {machine.get('cpu_model', '')}; "
        f"commit {results.get('commit', '?')[:10]}; {results.get('started_utc', '')}; "
        f"carga: {LOAD_NAMES.get(results.get('params', {}).get('load', 'proyecto'), '?')}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

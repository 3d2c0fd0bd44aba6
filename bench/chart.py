"""The PNG chart: durable transactions/s against ATMs, per ledger size, beside the disk and pgbench."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        label = f"pgbench TPC-B (PostgreSQL, -s {pg.get('scale')})"
        ax.plot(xs, [rows[str(c)]["tps"] for c in xs], marker="s", color="black", linewidth=2, label=label)
    ticks = sorted(all_atms)
    x_label = "cajeros (procesos ATM concurrentes) / clientes pgbench"
    _style(ax, ticks, x_label, "transacciones durables por segundo", "Depósitos confirmados (fsync) por segundo")
    _style(ax_lat, ticks, "cajeros", "ms", "Ida y vuelta de un DEPOSITAR (p99 —, p50 ···)")
    machine = results.get("machine", {})
    fig.suptitle(
        f"Cajero bench — {machine.get('cpus', '?')} núcleos, {machine.get('cpu_model', '')}; "
        f"commit {results.get('commit', '?')[:10]}; {results.get('started_utc', '')}; "
        "carga: bench/contract_load.py (cliente escrito solo desde PROTOCOL.md)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _style(axes: Any, ticks: list[int], xlabel: str, ylabel: str, title: str) -> None:
    """Both panels: log-2 ATM axis with the measured counts as ticks, log y, grid, legend."""
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(ticks, [str(t) for t in ticks])
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="best")

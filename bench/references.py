"""What the bank's figures are compared with, in the same run: the disk's fsync ceiling and pgbench.

The disk: one process appending ~200-byte lines (``os.write`` on ``O_APPEND``) and calling
``fdatasync`` under a portalocker lock, as the server's ``LedgerLock`` does, in the ledger's file
system: one record per sync, then 8 (group commit). PostgreSQL, where installed: a throwaway
cluster in a temporary folder with default durability, on a unix socket only; ``pgbench -i -s
16``, then TPC-B (``-M prepared``) for each client count. It is ALWAYS stopped and deleted. As
root it runs as ``nobody`` through ``runuser`` (PostgreSQL refuses root). Anything missing: a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import portalocker

RECORD = b"%08x " + b"x" * 190 + b"\n"  # ~200 bytes, like a journal line
SCALE = 16
TOOLS = ("initdb", "pg_ctl", "postgres", "pgbench")
Log = Callable[[str], None]


# -- the disk ------------------------------------------------------------------------------------------------------
def fsync_ceiling(folder: Path, seconds: float, per_sync: int) -> dict[str, Any]:
    path, lock_path = folder / f"fsync-{per_sync}.diario", folder / f"fsync-{per_sync}.lock"
    sync = getattr(os, "fdatasync", None) or os.fsync
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    records = 0
    latencies: list[float] = []
    try:
        with open(lock_path, "a+b") as lock:
            start = time.perf_counter()
            while (t0 := time.perf_counter()) < start + seconds:
                portalocker.lock(lock, portalocker.LOCK_EX)
                try:
                    os.write(fd, b"".join(RECORD % (records + i) for i in range(per_sync)))
                    sync(fd)
                finally:
                    portalocker.unlock(lock)
                latencies.append(time.perf_counter() - t0)
                records += per_sync
            elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)
    latencies.sort()
    return {
        "records_per_sync": per_sync,
        "seconds": round(elapsed, 2),
        "records_per_s": round(records / elapsed, 1),
        "syncs_per_s": round(len(latencies) / elapsed, 1),
        "sync_p50_ms": round(latencies[len(latencies) // 2] * 1000, 3) if latencies else None,
        "sync_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3) if latencies else None,
    }


def measure_disk(folder: Path, seconds: float) -> dict[str, Any]:
    return {"per_tx": fsync_ceiling(folder, seconds, 1), "group8": fsync_ceiling(folder, seconds, 8)}


# -- PostgreSQL ----------------------------------------------------------------------------------------------------
class Skip(Exception):
    pass


def _find(tool: str) -> str | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    return shutil.which(tool) or (candidates[0] if candidates else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway PostgreSQL cluster, unix socket only, run as ``nobody`` when we are root."""

    def __init__(self, log: Log) -> None:
        self.log = log
        found = {t: _find(t) for t in TOOLS}
        missing = [t for t, p in found.items() if p is None]
        if missing:
            raise Skip(f"PostgreSQL no está instalado (falta {', '.join(missing)}): se omite pgbench")
        self.bins: dict[str, str] = {t: p for t, p in found.items() if p is not None}
        pg_dir = Path(os.path.realpath(self.bins["postgres"])).parent  # initdb and pg_ctl of the same installation
        self.bins.update({t: str(pg_dir / t) for t in ("initdb", "pg_ctl") if (pg_dir / t).exists()})
        self.prefix: list[str] = []
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses root
            runuser = shutil.which("runuser")
            if runuser is None or "nobody" not in {entry.pw_name for entry in pwd.getpwall()}:
                raise Skip("PostgreSQL no corre como root y faltan 'runuser' o el usuario 'nobody': se omite pgbench")
            self.prefix, self.user = [runuser, "-u", "nobody", "--"], "nobody"
        self.folder: Path | None = None
        self.port = _free_port()
        self.started = False
        self.version = ""

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def _run(self, args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.folder)}
        done = subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=self.folder
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} falló ({done.returncode}): {done.stderr.strip()[-800:]}")
        return done

    def create_and_start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cajero-pgbench-"))
        os.chmod(self.folder, 0o700)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            for up in self.folder.parents:  # nobody must be able to reach the folder: every parent needs o+x
                if not os.stat(up).st_mode & 0o001:
                    raise Skip(f"{up} no es accesible para '{self.user}': se omite pgbench")
        self.version = self._run([self.bins["pgbench"], "--version"], 30).stdout.strip()
        self.log(f"  PostgreSQL: se crea un clúster desechable en {self.folder} ({self.version}); se borra al final")
        initdb = [self.bins["initdb"], "-D", str(self.data), "-U", "bench", "--auth=trust", "-E", "UTF8", "--no-sync"]
        self._run(initdb, 180)
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.folder}' -p {self.port}"
        self.started = True  # from here on, always try to stop it
        pg_ctl = [self.bins["pg_ctl"], "-D", str(self.data), "-l", str(self.folder / "pg.log"), "-w", "-t", "120"]
        self._run([*pg_ctl, "-o", options, "start"], 180)
        self.log(f"  PostgreSQL en marcha (puerto {self.port}, solo socket unix); {self.settings()}")

    def settings(self) -> str:
        psql = _find("psql")
        names = "'fsync','synchronous_commit','full_page_writes','wal_sync_method','shared_buffers'"
        query = f"select string_agg(name || '=' || setting, ' ' order by name) from pg_settings where name in ({names})"
        if psql is None:
            return "durabilidad por omisión"
        address = ["-h", str(self.folder), "-p", str(self.port), "-U", "bench", "-d", "postgres"]
        return self._run([psql, *address, "-Atc", query], 30, check=False).stdout.strip() or "durabilidad por omisión"

    def pgbench(self, *args: str, timeout: float = 600) -> str:
        address = ["-h", str(self.folder), "-p", str(self.port), "-U", "bench"]
        done = self._run([self.bins["pgbench"], *address, *args, "postgres"], timeout)
        return done.stdout + done.stderr

    def stop_and_delete(self) -> None:
        try:
            if self.started and self.folder is not None and self.data.exists():
                try:
                    self._run([self.bins["pg_ctl"], "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"], 90)
                except Exception:
                    with contextlib.suppress(Exception):
                        os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
                        time.sleep(1)
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.log(f"  PostgreSQL: clúster detenido y {self.folder} borrado")
            self.started = False


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def _tpcb(cluster: Cluster, clients: list[int], seconds: int, results: dict[str, Any], log: Log) -> None:
    cluster.create_and_start()
    results.update(version=cluster.version, settings=cluster.settings())
    t0 = time.perf_counter()
    cluster.pgbench("-i", "-s", str(SCALE), "-q")
    results["init_s"] = round(time.perf_counter() - t0, 1)
    for c in clients:
        out = cluster.pgbench("-c", str(c), "-j", str(min(2, c)), "-T", str(seconds), "-M", "prepared")
        row = {
            "tps": _number(r"tps = ([0-9.]+) \(without initial connection time\)", out),
            "latency_avg_ms": _number(r"latency average = ([0-9.]+) ms", out),
            "initial_connection_ms": _number(r"initial connection time = ([0-9.]+) ms", out),
            "failed": _number(r"number of failed transactions: ([0-9]+)", out),
        }
        results["by_clients"][str(c)] = row
        log(f"  pgbench TPC-B, {c:>2} clientes: {row['tps']} tps, latencia media {row['latency_avg_ms']} ms")
    out = cluster.pgbench("-C", "-c", "1", "-j", "1", "-T", str(min(seconds, 5)), "-S", "-M", "simple")
    results["connect_ms"] = _number(r"average connection time = ([0-9.]+) ms", out)
    log(f"  pgbench -C (una conexión nueva por transacción): {results['connect_ms']} ms por conexión")


def run_pgbench(clients: list[int], seconds: int, log: Log = print) -> dict[str, Any]:
    """pgbench TPC-B for each client count, or ``{"skipped": reason}``."""
    try:
        cluster = Cluster(log)
    except Skip as exc:
        log(f"  {exc}")
        return {"skipped": str(exc)}
    results: dict[str, Any] = {"scale": SCALE, "seconds": seconds, "by_clients": {}}
    try:
        _tpcb(cluster, clients, seconds, results, log)
    except Skip as exc:
        log(f"  {exc}")
        results["skipped"] = str(exc)
    except Exception as exc:
        log(f"  pgbench falló: {exc}")
        results["error"] = str(exc)
    finally:
        cluster.stop_and_delete()
    return results

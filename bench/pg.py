"""PostgreSQL pgbench TPC-B beside the ATM numbers, on a throwaway cluster.

Where PostgreSQL is installed (initdb, pg_ctl, postgres, pgbench), this
creates a cluster in a temporary folder, starts it with default
durability (fsync on, synchronous_commit on, full_page_writes on) on a
unix socket inside that folder only (no TCP), runs ``pgbench -i -s 16``
and then ``pgbench -c C -j 2 -T T -M prepared`` for each client count,
and ALWAYS stops the cluster and deletes the folder. PostgreSQL refuses
to run as root: as root the cluster runs as the unprivileged ``nobody``
through ``runuser``. Anything missing: a clear message and a skip.
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
from pathlib import Path
from typing import Any

SCALE = 16
TOOLS = ("initdb", "pg_ctl", "postgres", "pgbench")


def _find(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), reverse=True)
    return candidates[0] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Skip(Exception):
    pass


class Cluster:
    def __init__(self, log: Any = print) -> None:
        self.log = log
        self.bins = {t: _find(t) for t in TOOLS}
        missing = [t for t, p in self.bins.items() if p is None]
        if missing:
            raise Skip(f"PostgreSQL no está instalado (falta {', '.join(missing)}): se omite pgbench")
        # initdb/pg_ctl must come from the same installation as postgres
        pg_dir = Path(os.path.realpath(self.bins["postgres"])).parent  # type: ignore[arg-type]
        for tool in ("initdb", "pg_ctl"):
            if (pg_dir / tool).exists():
                self.bins[tool] = str(pg_dir / tool)
        self.prefix: list[str] = []
        self.user = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                pwd.getpwnam("nobody")
            except KeyError:
                raise Skip("PostgreSQL no corre como root y no hay usuario 'nobody': se omite pgbench") from None
            if runuser is None:
                raise Skip("PostgreSQL no corre como root y falta 'runuser': se omite pgbench")
            self.prefix = [runuser, "-u", "nobody", "--"]
            self.user = "nobody"
        self.folder: Path | None = None
        self.port = _free_port()
        self.started = False
        self.version = ""

    def _run(self, args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.folder)}
        done = subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=self.folder
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} falló ({done.returncode}): {done.stderr.strip()[-800:]}")
        return done

    @property
    def data(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    def create_and_start(self, parent: Path | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="cajero-pgbench-", dir=parent))
        os.chmod(self.folder, 0o700)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            # nobody must be able to reach the folder: every parent needs o+x
            for up in self.folder.parents:
                if not os.stat(up).st_mode & 0o001:
                    raise Skip(f"{up} no es accesible para '{self.user}': se omite pgbench")
        self.version = self._run([self.bins["pgbench"], "--version"], 30).stdout.strip()  # type: ignore[list-item]
        self.log(f"  PostgreSQL: se crea un clúster desechable en {self.folder} ({self.version}); se borra al final")
        self._run(
            [self.bins["initdb"], "-D", str(self.data), "-U", "bench", "--auth=trust", "-E", "UTF8", "--no-sync"],
            180,
        )  # type: ignore[list-item]
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.folder}' -p {self.port}"
        self.started = True  # from here on, always try to stop it
        self._run(
            [
                self.bins["pg_ctl"],
                "-D",
                str(self.data),
                "-l",
                str(self.folder / "pg.log"),
                "-w",
                "-t",
                "120",
                "-o",
                options,
                "start",
            ],
            180,
        )  # type: ignore[list-item]
        settings = self.psql_settings()
        self.log(f"  PostgreSQL en marcha (puerto {self.port}, solo socket unix); {settings}")

    def psql_settings(self) -> str:
        psql = _find("psql")
        if psql is None:
            return "durabilidad por omisión"
        done = self._run(
            [
                psql,
                "-h",
                str(self.folder),
                "-p",
                str(self.port),
                "-U",
                "bench",
                "-d",
                "postgres",
                "-Atc",
                "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings "
                "where name in ('fsync','synchronous_commit','full_page_writes','wal_sync_method','shared_buffers')",
            ],
            30,
            check=False,
        )
        return done.stdout.strip() or "durabilidad por omisión"

    def pgbench(self, *args: str, timeout: float = 600) -> str:
        base = [self.bins["pgbench"], "-h", str(self.folder), "-p", str(self.port), "-U", "bench"]
        done = self._run([*base, *args, "postgres"], timeout)  # type: ignore[list-item]
        return done.stdout + done.stderr

    def stop_and_delete(self) -> None:
        try:
            if self.started and self.folder is not None and self.data.exists():
                try:
                    self._run([self.bins["pg_ctl"], "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"], 90)  # type: ignore[list-item]
                except Exception:
                    pid_file = self.data / "postmaster.pid"
                    with contextlib.suppress(Exception):
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                        time.sleep(1)
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.log(f"  PostgreSQL: clúster detenido y {self.folder} borrado")
            self.started = False


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def run_pgbench(clients: list[int], seconds: int, log: Any = print, parent: Path | None = None) -> dict[str, Any]:
    """pgbench TPC-B for each client count, or ``{"skipped": reason}``."""
    try:
        cluster = Cluster(log)
    except Skip as exc:
        log(f"  {exc}")
        return {"skipped": str(exc)}
    results: dict[str, Any] = {"scale": SCALE, "seconds": seconds, "by_clients": {}}
    try:
        cluster.create_and_start(parent)
        results["version"] = cluster.version
        results["settings"] = cluster.psql_settings()
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
    except Skip as exc:
        log(f"  {exc}")
        results["skipped"] = str(exc)
    except Exception as exc:
        log(f"  pgbench falló: {exc}")
        results["error"] = str(exc)
    finally:
        cluster.stop_and_delete()
    return results

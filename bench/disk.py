"""The disk's own ceiling for the server's write path, measured in the ledger's file system.

One process, a portalocker lock around each commit exactly as the
server's ``LedgerLock`` does, ~200-byte lines appended with ``os.write``
on an ``O_APPEND`` descriptor, then ``fdatasync``:

- ``per_tx``: one record per fdatasync (the server's design today);
- ``group``: 8 records in one write and one fdatasync (group commit).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import portalocker

RECORD = b"%08x " + b"x" * 190 + b"\n"  # ~200 bytes, like a journal line


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def fsync_ceiling(folder: Path, seconds: float, per_sync: int) -> dict[str, Any]:
    path = folder / f"fsync-{per_sync}.diario"
    lock_path = folder / f"fsync-{per_sync}.lock"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    lock = open(lock_path, "a+b")  # noqa: SIM115 - closed below
    records = syncs = 0
    latencies: list[float] = []
    try:
        start = time.perf_counter()
        end = start + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            portalocker.lock(lock, portalocker.LOCK_EX)
            try:
                data = b"".join(RECORD % (records + i) for i in range(per_sync))
                os.write(fd, data)
                _sync(fd)
            finally:
                portalocker.unlock(lock)
            latencies.append(time.perf_counter() - t0)
            records += per_sync
            syncs += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        lock.close()
        path.unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)
    latencies.sort()
    return {
        "records_per_sync": per_sync,
        "seconds": round(elapsed, 2),
        "records_per_s": round(records / elapsed, 1),
        "syncs_per_s": round(syncs / elapsed, 1),
        "sync_p50_ms": round(latencies[len(latencies) // 2] * 1000, 3) if latencies else None,
        "sync_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3) if latencies else None,
    }


def measure(folder: Path, seconds: float) -> dict[str, Any]:
    return {"per_tx": fsync_ceiling(folder, seconds, 1), "group8": fsync_ceiling(folder, seconds, 8)}

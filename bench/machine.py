"""What machine and what code a result came from: stored beside every figure, which means nothing without them."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _first(path: str, prefix: str) -> str:
    """The value after ``:`` of the first line of ``path`` that starts with ``prefix``."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(prefix)), "")


def _file_system(folder: Path) -> str:
    """The file system that holds ``folder`` (its longest mount point), as "ext4 on /dev/vda (/)"."""
    try:
        mounts = [line.split()[:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    holding = [(mount, kind, device) for device, mount, kind in mounts if str(folder).startswith(mount)]
    mount, kind, device = max(holding, key=lambda m: len(m[0]), default=("", "", ""))
    return f"{kind} on {device} ({mount})" if mount else ""


def machine_info(tmp: Path) -> dict[str, Any]:
    mem_kib = _first("/proc/meminfo", "MemTotal").split()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "mem_gib": round(int(mem_kib[0]) / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "temp_fs": _file_system(tmp),
        "note": "el generador de carga (procesos ATM) y el servidor comparten los mismos núcleos",
    }


def code_info() -> dict[str, Any]:
    """The commit, and any uncommitted file of the server's code (a figure may come from it)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "bank_server", "common")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_server_files": dirty.splitlines()}

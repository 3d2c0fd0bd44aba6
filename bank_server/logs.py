"""Logging for every process of the server: console plus one rotating file.

``ConcurrentRotatingFileHandler`` (concurrent-log-handler) takes a file
lock around each write and each rotation, so the acceptor and all the
handler processes can share ``banco.log`` without interleaving or losing
lines. Each process sets logging up for itself (after ``fork`` too: an
inherited lock handle would be shared with the parent, not exclusive).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler

FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5


def setup_logging(log_file: Path | None, *, console: bool = True, detailed: bool = False) -> None:
    """Console and ``log_file`` for this process; ``detailed`` adds the DEBUG lines (each accepted operation)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    if log_file is not None:
        rotating = ConcurrentRotatingFileHandler(
            str(log_file), mode="a", maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
        )
        rotating.setFormatter(formatter)
        root.addHandler(rotating)
    root.setLevel(logging.INFO)
    logging.getLogger("bank_server").setLevel(logging.DEBUG if detailed else logging.NOTSET)

"""The server's settings, one picklable object handed to every handler process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bank_server.rules import Limits

HANDSHAKE_TIMEOUT = 10.0  # PROTOCOL.md section 7


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000
    ledger: Path = Path("cuenta.txt")
    key_file: Path = Path("llave.key")
    log_file: Path | None = Path("banco.log")
    detailed_log: bool = False  # also log every accepted read and movement (the journal already keeps movements)
    max_handlers: int = 100
    idle_timeout: float = 120.0
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    start_method: str = "fork"
    grace: float = 10.0
    checkpoint_interval: float = 30.0  # seconds between the acceptor's checkpoints (when something changed)
    limits: Limits = field(default_factory=Limits)

"""The server's settings, one picklable object handed to every handler process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bank_server.rules import Limits

HANDSHAKE_TIMEOUT = 10.0  # PROTOCOL.md section 8: from accept to the first valid record


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8000
    ledger: Path = Path("cuenta.txt")
    key_file: Path = Path("banco.key")  # the bank key: peppers PIN hashes and wraps the terminals' keys
    log_file: Path | None = Path("banco.log")
    detailed_log: bool = False  # also log every accepted read and movement (the journal already keeps movements)
    max_handlers: int = 100
    idle_timeout: float = 120.0
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    start_method: str = "fork"
    grace: float = 10.0
    checkpoint_interval: float = 30.0  # seconds between the acceptor's checkpoints (when something changed)
    limits: Limits = field(default_factory=Limits)
    max_wrong_pins_per_terminal: int = 10  # PROTOCOL.md section 6: more than this in an hour suspends PIN checks
    # Connections one address may hold before its handshake ends (waiting ones included); None: a quarter
    # of max_handlers, at least 2. Confirmed sessions are not limited per address (ATMs behind one NAT).
    max_unconfirmed_per_address: int | None = None

    @property
    def unconfirmed_limit(self) -> int:
        if self.max_unconfirmed_per_address is not None:
            return self.max_unconfirmed_per_address
        return max(2, self.max_handlers // 4)

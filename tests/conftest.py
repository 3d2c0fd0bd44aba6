from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bank_fixture import RunningBank, start_bank


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[RunningBank]:
    """A real bank server process on the demo accounts, stopped (and reaped) after the test."""
    running = start_bank(tmp_path / "banco")
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.stop()
        else:
            running._cleanup()

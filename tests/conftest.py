from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bank_fixture import RunningBank, start_bank
from tests.display import start_xvfb


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


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private Xvfb display; else $DISPLAY; else skip with the reason."""
    if sys.platform.startswith("linux"):
        started = start_xvfb()
        if started is not None:
            proc, name = started
            try:
                yield name
            finally:
                proc.terminate()
                proc.wait(10)
            return
    if os.environ.get("DISPLAY") or os.name == "nt" or sys.platform == "darwin":
        yield os.environ.get("DISPLAY", "")
        return
    pytest.skip(
        "no hay pantalla: Xvfb no está instalado o no arrancó (apt-get install xvfb) y DISPLAY no está definido"
    )

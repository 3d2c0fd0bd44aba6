from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.bank_process import DEMO_ACCOUNTS, RunningBank, start_bank
from devtools.display import start_xvfb


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[RunningBank]:
    """A real bank server process on the demo accounts, stopped (and reaped) after the test."""
    running = start_bank(tmp_path / "banco")
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def make_bank(tmp_path: Path) -> Iterator[Callable[..., RunningBank]]:
    """Start banks with chosen accounts/flags; every one is stopped (or killed) at the end."""
    started: list[RunningBank] = []

    def make(accounts: Any = DEMO_ACCOUNTS, extra_args: tuple[str, ...] = (), name: str = "banco") -> RunningBank:
        running = start_bank(tmp_path / name, accounts=accounts, extra_args=extra_args)
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            running.close()


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

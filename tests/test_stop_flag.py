"""The acceptor's stop flag survives handlers killed while they read it.

The rare hang of ``test_single_handlers_killed`` came from a
``multiprocessing.Event``: ``is_set()`` holds a shared semaphore, and a
handler SIGKILLed inside it left every other handler blocked forever. The
first test shows that mechanism on a real Event (a child dies holding its
lock: the parent's ``is_set()`` cannot finish); the second kills readers of
``StopFlag`` at random instants, hundreds of times, and the flag still
answers at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from bank_server.stop_flag import StopFlag

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
CTX = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _answers_within(call, seconds: float) -> bool:
    done = threading.Event()
    thread = threading.Thread(target=lambda: (call(), done.set()), daemon=True)
    thread.start()
    return done.wait(seconds)


def _die_holding_the_event_lock(event) -> None:
    event._cond.acquire()  # what is_set() does first; SIGKILL at that instant leaves it held
    os.kill(os.getpid(), signal.SIGKILL)


def _read_forever(flag: StopFlag) -> None:
    while not flag.is_set():
        pass


def test_an_event_read_by_a_killed_process_blocks_everyone():
    event = CTX.Event()
    child = CTX.Process(target=_die_holding_the_event_lock, args=(event,))
    child.start()
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert not _answers_within(event.is_set, 1.0)  # the reason the handlers' stop is not an Event


def test_stop_flag_survives_readers_killed_at_any_instant():
    flag = StopFlag(CTX)
    for _ in range(200):
        reader = CTX.Process(target=_read_forever, args=(flag,))
        reader.start()
        time.sleep(0.001)
        reader.kill()
        reader.join(10)
    assert _answers_within(flag.is_set, 1.0) and not flag.is_set()
    flag.set()
    reader = CTX.Process(target=_read_forever, args=(flag,))
    reader.start()
    reader.join(10)
    assert reader.exitcode == 0  # a reader sees the stop

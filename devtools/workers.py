"""Worker processes for tests: every worker reports, every wait is bounded, every process ends.

A worker that dies of an assertion, loops forever or hangs in a ``recv``
must fail its test with *why*, not with a bare ``queue.Empty`` a minute
later. So:

- each worker runs inside ``_worker_main``, which catches every exception
  and sends a report home: its name, the traceback, what it was doing and
  the last answer it got (the worker says so with ``progress.note``);
- each worker has its own pipe to the parent, not a shared queue: a queue
  takes a lock that a worker killed at the wrong instant would keep, and
  the parent can also see a worker die without a word (its sentinel);
- what a worker is doing is also kept in shared memory (no lock), and it
  dumps its Python stack on SIGUSR1 (``faulthandler``), so a worker that
  is still running at the deadline is reported with both;
- ``Workers`` is a context manager: on leaving it every worker still
  alive is killed and reaped, whatever happened.

Usage::

    with Workers(ctx) as workers:
        for seed in range(10):
            workers.start(f"atm {seed}", atm, port, seed, until)   # atm(progress, port, seed, until)
        ...                                                        # disturb the system meanwhile
        values = workers.results(deadline)                         # raises WorkersFailed with every report
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

_NOTE_SIZE = 4096


class WorkersFailed(AssertionError):
    """One or more workers failed, died or did not finish; the message holds every report."""


class Progress:
    """A worker's "what am I doing, what did I last hear": kept in shared memory, readable if it hangs."""

    def __init__(self, shared: Any) -> None:
        self._shared = shared
        self.doing = "starting"
        self.last: Any = None

    def note(self, doing: str, last: Any = None) -> None:
        self.doing, self.last = doing, last
        text = f"{doing} | last: {last!r}".encode("utf-8", "replace")[: _NOTE_SIZE - 1]
        self._shared.value = text

    def __str__(self) -> str:
        return f"doing: {self.doing}\nlast response: {self.last!r}"


@dataclass
class Report:
    name: str
    ok: bool
    value: Any = None
    problem: str = ""  # for a failure: the traceback, or how the worker was lost

    def __str__(self) -> str:
        return f"--- worker {self.name}: {self.problem}"


def _worker_main(name: str, target: Callable[..., Any], args: tuple, sender: Any, shared: Any, dump: str) -> None:
    """Runs in the child: the target, and a report home whatever happens."""
    progress = Progress(shared)
    with contextlib.suppress(Exception):  # a stack dump on demand, for a worker that hangs
        dump_file = open(dump, "w")  # noqa: SIM115 - lives as long as the process
        faulthandler.register(signal.SIGUSR1, file=dump_file, all_threads=True)
    progress.note("started")  # from here SIGUSR1 dumps the stack instead of killing
    try:
        value = target(progress, *args)
    except BaseException:
        report = Report(name, False, problem=f"raised\n{traceback.format_exc()}{progress}")
    else:
        report = Report(name, True, value)
    try:
        sender.send(report)
    except Exception:  # e.g. a value that does not pickle: say so rather than nothing
        sender.send(Report(name, False, problem=f"could not send its report\n{traceback.format_exc()}{progress}"))
    finally:
        sender.close()


class Workers:
    """Start workers, collect their reports with one deadline, end them all on exit."""

    def __init__(self, ctx: Any, context: Callable[[], str] | None = None) -> None:
        self.ctx = ctx
        self.context = context  # more text for a failure (e.g. the server's log tail)
        self._folder = Path(tempfile.mkdtemp(prefix="workers-"))
        self._workers: list[tuple[str, Any, Any, Any, Path]] = []  # name, process, receiver, shared note, dump

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end()

    def start(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        """Run ``target(progress, *args)`` in a new process; its return value is its result."""
        receiver, sender = self.ctx.Pipe(duplex=False)
        shared = self.ctx.RawArray("c", _NOTE_SIZE)
        dump = self._folder / f"{len(self._workers)}.stack"
        process = self.ctx.Process(
            target=_worker_main, args=(name, target, args, sender, shared, str(dump)), name=name, daemon=True
        )
        process.start()
        sender.close()
        self._workers.append((name, process, receiver, shared, dump))

    def results(self, deadline: float) -> list[Any]:
        """Every worker's return value, in start order; or ``WorkersFailed`` with every report.

        ``deadline`` is a ``time.monotonic()`` instant: the reports of all
        workers, failed ones included, are awaited until then.
        """
        reports: dict[int, Report] = {}
        pending = {index: (receiver, process) for index, (_, process, receiver, _, _) in enumerate(self._workers)}
        while pending and time.monotonic() < deadline:
            waitables = [r for r, _ in pending.values()] + [p.sentinel for _, p in pending.values()]
            ready = set(wait(waitables, timeout=max(0.0, min(1.0, deadline - time.monotonic()))))
            for index, (receiver, process) in list(pending.items()):
                if receiver in ready or receiver.poll():
                    try:
                        reports[index] = receiver.recv()
                    except EOFError:  # closed without a report: it died
                        reports[index] = self._lost(index, "died without a report")
                    del pending[index]
                elif process.sentinel in ready:
                    process.join(1)
                    if receiver.poll(0.5):  # a report sent just before the end
                        continue
                    reports[index] = self._lost(index, "died without a report")
                    del pending[index]
        for index in pending:
            reports[index] = self._lost(index, "still running at the deadline")
        failed = [reports[i] for i in sorted(reports) if not reports[i].ok]
        if failed:
            text = f"{len(failed)} of {len(self._workers)} workers failed:\n" + "\n".join(map(str, failed))
            if self.context is not None:
                with contextlib.suppress(Exception):
                    text += "\n--- context:\n" + self.context()
            raise WorkersFailed(text)
        return [reports[i].value for i in range(len(self._workers))]

    def _lost(self, index: int, how: str) -> Report:
        name, process, _, shared, dump = self._workers[index]
        stack = ""
        note = bytes(shared.value).decode("utf-8", "replace")
        if process.is_alive() and note and hasattr(signal, "SIGUSR1"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGUSR1)
                time.sleep(0.3)
        with contextlib.suppress(OSError):
            stack = dump.read_text(encoding="utf-8", errors="replace")
        problem = f"{how} (exit code {process.exitcode})\nlast note: {note}\n"
        return Report(name, False, problem=problem + (f"stack:\n{stack}" if stack else ""))

    def end(self) -> None:
        """Kill and reap every worker still alive; close the pipes."""
        for _, process, receiver, _, _ in self._workers:
            if process.is_alive():
                process.kill()
            process.join(10)
            receiver.close()
        shutil.rmtree(self._folder, ignore_errors=True)

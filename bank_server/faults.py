"""Crash points for the fault-injection tests: inert unless ``CAJERO_FALLOS`` is set.

``CAJERO_FALLOS="escritura_a_medias=0.05,antes_de_sincronizar=0.05"`` makes a
process kill itself (SIGKILL: no clean-up, no flush, as a power cut to the
process) with that probability each time it passes the named point. The
tests use it to stop the write path at every interesting instant; in
normal runs the variable is absent and every check is one dict lookup.

Points: ``antes_de_escribir``, ``escritura_a_medias`` (half a journal
record is written, then death), ``antes_de_sincronizar``,
``antes_de_responder``, ``checkpoint_temporal`` (the temporary file is
half written), ``checkpoint_antes_de_reemplazar``.
"""

from __future__ import annotations

import os
import random
import signal

ENV = "CAJERO_FALLOS"


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, probability = item.partition("=")
        points[name] = float(probability or 1)
    return points


_POINTS = _parse(os.environ.get(ENV, ""))


def triggered(point: str) -> bool:
    """True if this pass through ``point`` should crash."""
    probability = _POINTS.get(point)
    return probability is not None and random.random() < probability


def die() -> None:
    """End this process at once, as ``kill -9`` would."""
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


def crash_point(point: str) -> None:
    if _POINTS and triggered(point):
        die()

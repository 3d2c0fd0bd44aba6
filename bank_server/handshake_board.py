"""Which handlers have finished their handshake: what the acceptor needs for per-address fairness.

Why: a connection that sent nothing, or only a ClientHello, proves
nothing (PROTOCOL.md section 8: for the server the handshake ends at the
first valid record). The acceptor limits how many such connections one
address may hold, so that a flood from one address cannot keep the
others out; to count them it must know which of its handlers are past
that point. Each handler has a slot: one shared byte, written by that
handler alone (1 once its session is confirmed), read by the acceptor,
with no lock (a handler killed at any instant holds nothing; see
``stop_flag.py``). The acceptor clears a slot before reusing it.
"""

from __future__ import annotations

from typing import Any


class HandshakeBoard:
    def __init__(self, words: Any) -> None:
        self._words = words

    @classmethod
    def create(cls, ctx: Any, size: int) -> HandshakeBoard:
        return cls(ctx.RawArray("b", size))

    @property
    def words(self) -> Any:
        """The shared bytes, to hand to a handler process (picklable at process creation)."""
        return self._words

    def confirm(self, slot: int) -> None:
        self._words[slot] = 1

    def clear(self, slot: int) -> None:
        self._words[slot] = 0

    def confirmed(self, slot: int) -> bool:
        return self._words[slot] != 0

"""Length-prefixed frames: ``length (u32, big-endian) || payload``.

The decoder is incremental: feed it whatever ``recv`` returned and it
yields complete payloads. It refuses zero and oversized lengths as soon
as the 4-byte header arrives, so a hostile peer cannot make us buffer
more than one maximal frame.
"""

from __future__ import annotations

import struct

from common.errors import LocalProtocolError, RemoteProtocolError

MAX_FRAME = 65_536
_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length; refuse what a peer would reject."""
    if not 0 < len(payload) <= MAX_FRAME:
        raise LocalProtocolError(f"frame payload of {len(payload)} bytes is outside 1..{MAX_FRAME}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream into frame payloads."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._expected: int | None = None
        self._deferred: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every payload they complete.

        A bad header raises ``RemoteProtocolError``; if good frames came
        before it in the same data, they are returned first and the error
        is raised by ``check()`` or the next ``feed``.
        """
        self.check()
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._expected is None:
                if len(self._buffer) < HEADER_SIZE:
                    return frames
                (length,) = _HEADER.unpack_from(self._buffer)
                problem = None
                if length == 0:
                    problem = RemoteProtocolError("frame with length zero")
                elif length > MAX_FRAME:
                    problem = RemoteProtocolError(f"frame length {length} exceeds {MAX_FRAME}")
                if problem is not None:
                    if not frames:
                        raise problem
                    self._deferred = problem
                    return frames
                del self._buffer[:HEADER_SIZE]
                self._expected = length
            if len(self._buffer) < self._expected:
                return frames
            frames.append(bytes(self._buffer[: self._expected]))
            del self._buffer[: self._expected]
            self._expected = None

    def check(self) -> None:
        """Raise the bad header found after the frames last returned, if any."""
        if self._deferred is not None:
            problem, self._deferred = self._deferred, None
            raise problem

    @property
    def mid_frame(self) -> bool:
        """True when a frame has started but not finished.

        A connection that closes in this state broke the contract.
        """
        return self._expected is not None or bool(self._buffer)

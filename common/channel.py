"""Records: AES-256-CBC + HMAC-SHA256 with an implicit sequence number (PROTOCOL.md section 4).

AES comes from pycryptodome, HMAC-SHA256 from the standard library
(OpenSSL underneath); this module only wires them the way the contract
says (the key schedule that feeds it is ``common.handshake``'s). Nothing here keeps a socket or
decides what to do on failure: an ``open`` that fails raises
``RemoteProtocolError`` and the caller closes the connection.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad

from common.errors import IntegrityError, RemoteProtocolError

IV_SIZE = 16
TAG_SIZE = 32
BLOCK = 16
MIN_RECORD = IV_SIZE + BLOCK + TAG_SIZE  # 64: one block of ciphertext at least
_SEQ = struct.Struct(">Q")

Random = Callable[[int], bytes]


@dataclass(frozen=True)
class SessionKeys:
    """The four 32-byte keys of one connection, split as the contract says."""

    enc_c2s: bytes
    mac_c2s: bytes
    enc_s2c: bytes
    mac_s2c: bytes


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 from the standard library: the same function as pycryptodome's
    ``HMAC`` (the vectors check it), but in C, 10 times faster per record."""
    return hmac.digest(key, message, "sha256")


def _xor(*blocks: bytes) -> bytes:
    """XOR of equal-length byte strings, through Python's big integers (one C call each)."""
    value = 0
    for block in blocks:
        value ^= int.from_bytes(block, "big")
    return value.to_bytes(len(blocks[0]), "big")


class RecordSealer:
    """Encrypts and authenticates records in one direction, counting ``seq``.

    One AES-CBC object lives as long as the connection: creating one per
    record (``AES.new``) cost twice the encryption itself. A CBC object
    chains across calls, feeding each block XORed with the previous
    ciphertext block (``chain``); to start a record at its own ``IV``
    instead, its first block goes in XORed with both, since
    ``E(P1 ^ IV) == E((P1 ^ IV ^ chain) ^ chain)``. The test vectors check it.
    """

    def __init__(self, enc_key: bytes, mac_key: bytes, random: Random = os.urandom) -> None:
        self._cbc = AES.new(enc_key, AES.MODE_CBC, iv=bytes(BLOCK))
        self._chain = bytes(BLOCK)  # the last ciphertext block the CBC object produced
        self._mac_key = mac_key
        self._random = random
        self.seq = 0

    def seal(self, plaintext: bytes, iv: bytes | None = None) -> bytes:
        """Return the record payload ``IV || C || T`` (not yet framed).

        ``iv`` exists for the test vectors only; real callers let the
        CSPRNG choose it.
        """
        iv = self._random(IV_SIZE) if iv is None else iv
        padded = pad(plaintext, BLOCK)
        ciphertext = self._cbc.encrypt(_xor(padded[:BLOCK], iv, self._chain) + padded[BLOCK:])
        self._chain = ciphertext[-BLOCK:]
        tag = hmac_sha256(self._mac_key, _SEQ.pack(self.seq) + iv + ciphertext)
        self.seq += 1
        return iv + ciphertext + tag


class RecordOpener:
    """Checks and decrypts records in one direction, in the contract's order.

    Decryption is CBC written out: one AES-ECB object for the connection
    decrypts every block at once, then each block is XORed with the block
    before it (the IV for the first). No per-record ``AES.new``, no state
    carried between records.
    """

    def __init__(self, enc_key: bytes, mac_key: bytes) -> None:
        self._ecb = AES.new(enc_key, AES.MODE_ECB)
        self._mac_key = mac_key
        self.seq = 0

    def open(self, payload: bytes) -> bytes:
        """Return the plaintext of one record payload or raise ``RemoteProtocolError``.

        Order matters (PROTOCOL.md section 4): sizes, then the MAC in
        constant time, and only then decryption and padding. A bad MAC
        and a bad padding therefore leave through the same door.
        """
        if len(payload) < MIN_RECORD or (len(payload) - IV_SIZE - TAG_SIZE) % BLOCK:
            raise RemoteProtocolError(f"record of {len(payload)} bytes has an impossible size")
        iv = payload[:IV_SIZE]
        ciphertext = payload[IV_SIZE:-TAG_SIZE]
        tag = payload[-TAG_SIZE:]
        expected = hmac_sha256(self._mac_key, _SEQ.pack(self.seq) + iv + ciphertext)
        if not hmac.compare_digest(expected, tag):
            raise IntegrityError(f"record {self.seq} failed its integrity check")
        padded = _xor(self._ecb.decrypt(ciphertext), iv + ciphertext[:-BLOCK])
        try:
            plaintext = unpad(padded, BLOCK)
        except ValueError:
            raise RemoteProtocolError(f"record {self.seq} has bad padding") from None
        self.seq += 1
        return plaintext

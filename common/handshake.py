"""The ATM2 handshake as pure functions (PROTOCOL.md section 3).

Hello encoding and parsing, the ephemeral X25519 exchange, the transcript
hash, the key schedule and the server's proof. No state and no I/O: the
state machines in ``common.endpoints`` call these in the contract's order,
and the tests check each one against the contract's vectors.

X25519 comes from pycryptodome (``Crypto.Protocol.DH``, RFC 7748),
SHA-256 and HMAC from the standard library, HKDF from pycryptodome as in
ATM1. Parsing a peer's bytes raises ``RemoteProtocolError`` with a reason
fit for the bank's log line (it never holds key material); building a
hello from bad values raises ``LocalProtocolError``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey.ECC import EccKey

from common.channel import Random, SessionKeys
from common.errors import LocalProtocolError, RemoteProtocolError

MAGIC = b"ATM2"
ATM1_MAGIC = b"ATM1"
NONCE_SIZE = 32
PUBLIC_KEY_SIZE = 32  # an X25519 public key, RFC 7748
PRIVATE_KEY_SIZE = 32
TERMINAL_KEY_SIZE = 32
PROOF_SIZE = 32
DH_SIZE = 32
MAX_TERMINAL_ID = 32
MAX_VERSION = 0xFFFF_FFFF
OKM_SIZE = 128
INFO_LABEL = b"ATM2 session keys"
PROOF_LABEL = b"ATM2 server proof"

_VERSION = struct.Struct(">I")
# magic, id_len, id, version, e_c, nonce_c
CLIENT_HELLO_FIXED = len(MAGIC) + 1 + _VERSION.size + PUBLIC_KEY_SIZE + NONCE_SIZE  # 73, plus the id
MIN_CLIENT_HELLO = CLIENT_HELLO_FIXED + 1  # 74
MAX_CLIENT_HELLO = CLIENT_HELLO_FIXED + MAX_TERMINAL_ID  # 105
SERVER_HELLO_SIZE = len(MAGIC) + PUBLIC_KEY_SIZE + NONCE_SIZE + PROOF_SIZE  # 100
_ZERO_DH = bytes(DH_SIZE)
_TERMINAL_ID = re.compile(r"[A-Z0-9-]{1,32}")


def is_valid_terminal_id(value: object) -> bool:
    """1 to 32 characters of ``[A-Z0-9-]`` (ASCII only)."""
    return isinstance(value, str) and _TERMINAL_ID.fullmatch(value) is not None


def is_valid_version(value: object) -> bool:
    """An integer from 1 to 4,294,967,295 (a ``bool`` is not a version)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_VERSION


@dataclass(frozen=True)
class ClientHello:
    """The ATM's first frame: who it is, which key version, its ephemeral key and nonce."""

    terminal_id: str
    version: int
    e_c: bytes
    nonce_c: bytes

    def __post_init__(self) -> None:
        if not is_valid_terminal_id(self.terminal_id):
            raise LocalProtocolError(f"terminal id {self.terminal_id!r} is not 1 to 32 characters of [A-Z0-9-]")
        if not is_valid_version(self.version):
            raise LocalProtocolError(f"key version {self.version!r} is outside 1..{MAX_VERSION}")
        if len(self.e_c) != PUBLIC_KEY_SIZE or len(self.nonce_c) != NONCE_SIZE:
            raise LocalProtocolError("e_c and nonce_c must be 32 bytes each")

    def encode(self) -> bytes:
        """The payload (not yet framed)."""
        terminal_id = self.terminal_id.encode("ascii")
        return MAGIC + bytes([len(terminal_id)]) + terminal_id + _VERSION.pack(self.version) + self.e_c + self.nonce_c

    @classmethod
    def parse(cls, payload: bytes) -> ClientHello:
        """Read a ClientHello payload; raise ``RemoteProtocolError`` saying what is wrong."""
        magic = payload[: len(MAGIC)]
        if magic == ATM1_MAGIC:
            raise RemoteProtocolError("ATM1 ClientHello: that protocol is retired, only ATM2 is accepted")
        if magic != MAGIC:
            raise RemoteProtocolError(f"ClientHello with magic {magic!r} instead of {MAGIC!r}")
        if not MIN_CLIENT_HELLO <= len(payload) <= MAX_CLIENT_HELLO:
            raise RemoteProtocolError(
                f"ClientHello of {len(payload)} bytes is outside {MIN_CLIENT_HELLO}..{MAX_CLIENT_HELLO}"
            )
        id_len = payload[4]
        if not 1 <= id_len <= MAX_TERMINAL_ID or len(payload) != CLIENT_HELLO_FIXED + id_len:
            raise RemoteProtocolError(f"ClientHello of {len(payload)} bytes does not match its id length {id_len}")
        raw_id = payload[5 : 5 + id_len]
        terminal_id = raw_id.decode("ascii", errors="replace")
        if not is_valid_terminal_id(terminal_id):
            raise RemoteProtocolError(f"terminal id {raw_id!r} breaks the grammar [A-Z0-9-]{{1,32}}")
        at = 5 + id_len
        (version,) = _VERSION.unpack_from(payload, at)
        if version == 0:
            raise RemoteProtocolError(f"terminal {terminal_id}: key version 0 is outside 1..{MAX_VERSION}")
        at += _VERSION.size
        return cls(terminal_id, version, payload[at : at + PUBLIC_KEY_SIZE], payload[at + PUBLIC_KEY_SIZE :])


@dataclass(frozen=True)
class ServerHello:
    """The bank's answer: its ephemeral key, its nonce and the proof that it holds the same key."""

    e_s: bytes
    nonce_s: bytes
    proof: bytes

    def __post_init__(self) -> None:
        if (len(self.e_s), len(self.nonce_s), len(self.proof)) != (PUBLIC_KEY_SIZE, NONCE_SIZE, PROOF_SIZE):
            raise LocalProtocolError("e_s, nonce_s and proof must be 32 bytes each")

    def encode(self) -> bytes:
        """The payload (not yet framed): always 100 bytes."""
        return MAGIC + self.e_s + self.nonce_s + self.proof

    @classmethod
    def parse(cls, payload: bytes) -> ServerHello:
        if len(payload) != SERVER_HELLO_SIZE:
            raise RemoteProtocolError(f"ServerHello of {len(payload)} bytes instead of {SERVER_HELLO_SIZE}")
        if payload[: len(MAGIC)] != MAGIC:
            raise RemoteProtocolError(f"ServerHello with magic {payload[:4]!r} instead of {MAGIC!r}")
        return cls(payload[4:36], payload[36:68], payload[68:100])


class EphemeralKey:
    """One connection's X25519 private key. Use it once (``exchange``), then drop it.

    ``random`` hands out the 32-byte private key (RFC 7748 clamps it);
    the default everywhere is ``os.urandom``, the OS's CSPRNG. Neither
    ``repr`` nor ``str`` shows the private key.
    """

    __slots__ = ("_private", "public")

    def __init__(self, random: Random) -> None:
        private = random(PRIVATE_KEY_SIZE)
        if len(private) != PRIVATE_KEY_SIZE:
            raise LocalProtocolError("an X25519 private key is 32 bytes")
        self._private = import_x25519_private_key(private)
        self.public: bytes = self._private.public_key().export_key(format="raw")

    def exchange(self, peer_public: bytes) -> bytes:
        """``dh = X25519(own private key, peer's e)``; a low-order peer key is a protocol error."""
        return x25519(self._private, peer_public)

    def __repr__(self) -> str:
        return f"EphemeralKey(public={self.public.hex()})"


def x25519(private: EccKey, peer_public: bytes) -> bytes:
    """The shared secret, or ``RemoteProtocolError`` when the peer's key gives no secret.

    pycryptodome refuses the low-order points (0, 1, the points of order 4
    and 8, and their non-canonical spellings) when the key is imported;
    the contract's own check, a ``dh`` of 32 zero bytes, is kept as well.
    """
    if len(peer_public) != PUBLIC_KEY_SIZE:
        raise RemoteProtocolError(f"X25519 public key of {len(peer_public)} bytes instead of 32")
    try:
        dh = key_agreement(eph_priv=private, eph_pub=import_x25519_public_key(peer_public), kdf=bytes)
    except ValueError:
        raise RemoteProtocolError("the peer's X25519 key has low order: the shared secret would be zero") from None
    if hmac.compare_digest(dh, _ZERO_DH):
        raise RemoteProtocolError("the X25519 shared secret is all zeros")
    return dh


def transcript_hash(client_hello: bytes, e_s: bytes, nonce_s: bytes) -> bytes:
    """``th = SHA-256(ClientHello payload || "ATM2" || e_s || nonce_s)``."""
    return hashlib.sha256(client_hello + MAGIC + e_s + nonce_s).digest()


def derive_okm(terminal_key: bytes, dh: bytes, nonce_c: bytes, nonce_s: bytes, th: bytes) -> bytes:
    """``HKDF-SHA256(IKM = K || dh, salt = nonce_c || nonce_s, info = "ATM2 session keys" || th, L = 128)``."""
    if len(terminal_key) != TERMINAL_KEY_SIZE:
        raise LocalProtocolError("a terminal key is 32 bytes")
    okm = HKDF(terminal_key + dh, OKM_SIZE, nonce_c + nonce_s, SHA256, context=INFO_LABEL + th)
    assert isinstance(okm, bytes)
    return okm


def derive_session_keys(terminal_key: bytes, dh: bytes, nonce_c: bytes, nonce_s: bytes, th: bytes) -> SessionKeys:
    """The four record keys, split from ``okm`` as the contract says."""
    okm = derive_okm(terminal_key, dh, nonce_c, nonce_s, th)
    return SessionKeys(okm[0:32], okm[32:64], okm[64:96], okm[96:128])


def server_proof(keys: SessionKeys, th: bytes) -> bytes:
    """``proof = HMAC-SHA256(key = mac_s2c, msg = "ATM2 server proof" || th)``."""
    return hmac.digest(keys.mac_s2c, PROOF_LABEL + th, "sha256")


def proof_matches(keys: SessionKeys, th: bytes, proof: bytes) -> bool:
    """The ATM's check of the server's proof, in constant time."""
    return hmac.compare_digest(server_proof(keys, th), proof)

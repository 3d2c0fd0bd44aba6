"""The independent ATM2 client, written from PROTOCOL.md and vectors.json alone.

Why it exists: the server is tested, and measured, through a second
implementation of the protocol. It imports nothing from ``common/``,
``bank_server/`` or ``atm_gui/``, so a place where the server and the
project's own client bend the contract the same way (a key derived wrong,
a transcript hashed over the wrong bytes, a MAC over the wrong bytes, a
balance rounded wrong) still shows up, and a bench figure cannot come from
a bug both sides share. Crypto: X25519, HKDF and AES-CBC from pycryptodome;
HMAC-SHA256 from the standard library (C, and it is the hot path).

The layers, from the bottom:

- the terminal key and its file (section 2): ``TerminalKey``, ``parse_key_file``,
  ``write_key_file`` (atomic, for ``RENOVAR_LLAVE``);
- the handshake taken literally (``client_hello_payload``, ``transcript_hash``,
  ``derive_keys``, ``server_proof``, ``verify_server_hello``), which the vectors pin;
- records: the literal path (``seal``, ``open_record``: a new AES-CBC per record)
  and ``RecordSealer`` / ``RecordOpener``, the same bytes with one AES object per
  direction, the fast path the load generator (``bench/contract_load.py``) runs
  millions of times;
- ``AtmClient``: one TCP connection. Besides the polite path (``request``) it
  exposes the raw parts attack tests need: send any bytes or frame, a ClientHello
  naming any terminal and version, a record with a chosen ``seq``/IV/padding,
  whatever the server sends until it closes. A handshake that fails says which
  way: ``HelloRefused`` (the bank closed before its ServerHello: unknown or revoked
  terminal, or a key version it does not accept) or ``BadProof`` (it answered,
  but under another key);
- ``check_reply``: every field of a reply checked against section 5.

Run as a module it is a small load generator for tests that need several
ATM *processes*::

    python -m devtools.contract_client depositar --port P --llave llave.key --tarjeta T --pin X \\
        --monto 1.01 --id a1 --monto 2.02 --id a2 ...

It prints one JSON line per answered request (``{"id", "monto", "respuesta"}``),
flushing each, so a parent can tell which deposits were acknowledged even
if the bank is killed midway.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

MAGIC = b"ATM2"
KEY_SIZE = 32
NONCE_SIZE = 32
POINT_SIZE = 32  # an X25519 public key (RFC 7748)
MAX_ID = 32
MAX_VERSION = 2**32 - 1
MAX_FRAME = 65_536
INFO = b"ATM2 session keys"
PROOF_LABEL = b"ATM2 server proof"
BLOCK = 16
TAG_SIZE = 32
SERVER_HELLO_SIZE = 4 + POINT_SIZE + NONCE_SIZE + TAG_SIZE  # 100
MIN_RECORD = BLOCK + BLOCK + TAG_SIZE  # IV, at least one block, tag
KEY_FILE = "llave.key"

ERROR_CODES = frozenset(
    {
        "PETICION_INVALIDA",
        "NO_IDENTIFICADO",
        "TARJETA_INVALIDA",
        "PIN_INCORRECTO",
        "TARJETA_BLOQUEADA",
        "CAJERO_SUSPENDIDO",
        "MONTO_INVALIDO",
        "FONDOS_INSUFICIENTES",
        "LIMITE_DIARIO",
        "DESTINO_INVALIDO",
        "ID_REPETIDO",
        "ID_ANULADO",
        "REVERSO_INVALIDO",
        "PIN_INVALIDO",
        "ERROR_INTERNO",
    }
)
MOVEMENT_TYPES = frozenset({"DEPOSITO", "RETIRO", "REVERSO", "TRANSFERENCIA_ENVIADA", "TRANSFERENCIA_RECIBIDA"})
TOTALS = ("retiros", "reversos", "depositos", "transferencias")
_TERMINAL_ID = re.compile(r"[A-Z0-9-]{1,32}")
_REQUEST_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_REPLY_AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")
_TX_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{64}")
_DECIMAL = re.compile(r"[0-9]{1,10}")
_PADS = tuple(bytes((n,)) * n for n in range(BLOCK + 1))  # _PADS[n]: n bytes of value n
_ZERO_BLOCK = bytes(BLOCK)
_ZERO_DH = bytes(POINT_SIZE)


class ContractError(Exception):
    """The server broke the contract as seen from this client; the connection is no longer usable.

    ``kind`` is the short label the load generator counts errors by.
    """

    def __init__(self, message: str, kind: str = "contrato") -> None:
        super().__init__(message)
        self.kind = kind


class BadProof(ContractError):
    """The ServerHello's proof does not match: the bank answered, but the two sides hold different keys."""


class Closed(ContractError):
    """The connection closed; ``data`` holds whatever arrived before."""

    def __init__(self, message: str, data: bytes = b"", kind: str = "conexion_cerrada") -> None:
        super().__init__(message, kind)
        self.data = data


class HelloRefused(Closed):
    """The bank closed before sending any ServerHello byte: it refused this terminal.

    Section 3: an unknown or revoked terminal, a version that is neither its current nor its
    pending one, or a malformed ClientHello. Unlike ``BadProof`` this says nothing about the key's
    bytes, only that the bank will not talk to this terminal id and version.
    """


class ReplyError(ContractError):
    """A reply that passed MAC and padding but breaks section 5 (fields, types, id).

    The channel is still in step (the sequence advanced), but the operation is in doubt.
    """


class ServerError(Exception):
    """A well-formed refusal from the bank: ``{"ok": false, "error": CODE, "mensaje": ...}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- the terminal key and its file (section 2) ----------------------------------------------------------------
class KeyLike(Protocol):
    """Anything that names a terminal key: this module's ``TerminalKey``, or another with the same fields
    (the tests may hand in the one the bank's registry returned)."""

    @property
    def terminal_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def key(self) -> bytes: ...


def is_terminal_id(value: object) -> bool:
    return isinstance(value, str) and _TERMINAL_ID.fullmatch(value) is not None


def is_version(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_VERSION


@dataclass(frozen=True)
class TerminalKey:
    """A terminal's key ``K`` with its id and version; ``repr`` never shows the key."""

    terminal_id: str
    version: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not is_terminal_id(self.terminal_id):
            raise ValueError(f"identificador de cajero no válido: {self.terminal_id!r} (1 a 32 de A-Z, 0-9, '-')")
        if not is_version(self.version):
            raise ValueError(f"versión de llave fuera de 1..{MAX_VERSION}: {self.version!r}")
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise ValueError("una llave de cajero tiene 32 bytes")

    def line(self) -> str:
        """``ATM2 <id> <version> <hex>``: the key file's line, which holds the key."""
        return f"ATM2 {self.terminal_id} {self.version} {self.key.hex()}"


def parse_key_file(text: str, name: str = KEY_FILE) -> TerminalKey:
    """The key from a key file's text: the first line that is neither blank nor ``#...`` must be
    ``ATM2 <terminal id> <version> <64 hex digits>``, single spaces, nothing else.

    Errors name the file and the field, never show the line: it holds the key.
    """
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(" ")
        problem = (
            "debe tener cuatro campos separados por un espacio: ATM2, identificador, versión y llave"
            if len(parts) != 4
            else "el primer campo debe ser ATM2"
            if parts[0] != "ATM2"
            else "el identificador del cajero debe tener de 1 a 32 caracteres de A-Z, 0-9 y '-'"
            if not is_terminal_id(parts[1])
            else f"la versión debe ser un número decimal de 1 a {MAX_VERSION}"
            if not _DECIMAL.fullmatch(parts[2]) or not is_version(int(parts[2]))
            else "la llave debe tener exactamente 64 dígitos hexadecimales"
            if not _HEX_KEY.fullmatch(parts[3])
            else None
        )
        if problem:
            raise ValueError(
                f"El fichero de llave {name} no es válido: la primera línea que no es comentario {problem}."
            )
        return TerminalKey(parts[1], int(parts[2]), bytes.fromhex(parts[3]))
    raise ValueError(f"El fichero de llave {name} no contiene ninguna línea ATM2 con la llave del cajero.")


def load_key_file(path: str | os.PathLike[str]) -> TerminalKey:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"No se pudo leer el fichero de llave {path}: {exc.__class__.__name__}") from None
    return parse_key_file(text, str(path))


def write_key_file(path: str | os.PathLike[str], key: KeyLike) -> None:
    """Replace ``path`` with ``key`` atomically (section 6: never a half-written key file), owner-only.

    A temporary file in the same folder, synced, renamed over the old one, then the folder synced:
    after a crash the file is the old key or the new one, whole.
    """
    target = Path(path)
    text = f"# llave del cajero {key.terminal_id}\n{TerminalKey(key.terminal_id, key.version, key.key).line()}\n"
    fd, temporary = tempfile.mkstemp(prefix=".llave-", dir=target.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if os.name != "nt":
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


# -- primitives: frames, handshake (sections 1 and 3) ------------------------------------------------------------
def frame(payload: bytes) -> bytes:
    """``length (u32 BE) || payload`` with no checks: attack tests send bad lengths on purpose."""
    return struct.pack(">I", len(payload)) + payload


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


class Ephemeral:
    """One connection's X25519 key pair (RFC 7748). ``private`` is 32 raw bytes: fresh from the CSPRNG,
    or fixed by a test to reproduce the vectors. ``repr`` shows only the public half."""

    __slots__ = ("_key", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != POINT_SIZE:
            raise ValueError("an X25519 private key is 32 bytes")
        self._key = ECC.construct(curve="Curve25519", seed=private)
        self.public: bytes = self._key.public_key().export_key(format="raw")

    @classmethod
    def generate(cls, random: Callable[[int], bytes] = os.urandom) -> Ephemeral:
        return cls(random(POINT_SIZE))

    def exchange(self, peer_public: bytes) -> bytes:
        """``X25519(own private, peer's e)``; ``ContractError`` for a point pycryptodome refuses
        (small order, and so on) or a ``dh`` of 32 zero bytes (section 3: a protocol error)."""
        try:
            peer = import_x25519_public_key(peer_public)
            dh: bytes = key_agreement(eph_priv=self._key, eph_pub=peer, kdf=lambda z: z)
        except ValueError:
            raise ContractError("la clave efímera del servidor no es un punto X25519 válido", "dh_invalido") from None
        if hmac.compare_digest(dh, _ZERO_DH):
            raise ContractError("el intercambio X25519 dio 32 bytes en cero", "dh_invalido")
        return dh

    def __repr__(self) -> str:
        return f"Ephemeral(public={self.public.hex()})"


def client_hello_payload(terminal_id: str | bytes, version: int, e_c: bytes, nonce_c: bytes) -> bytes:
    """``"ATM2" || id_len || id || version (u32 BE) || e_c || nonce_c``, no checks (attack tests send
    ids that break the grammar); ``version`` is cut to 32 bits."""
    raw_id = terminal_id.encode("ascii") if isinstance(terminal_id, str) else terminal_id
    return MAGIC + bytes((len(raw_id) & 0xFF,)) + raw_id + (version & MAX_VERSION).to_bytes(4, "big") + e_c + nonce_c


def transcript_hash(client_hello: bytes, e_s: bytes, nonce_s: bytes) -> bytes:
    """``th = SHA-256(ClientHello payload || "ATM2" || e_s || nonce_s)``."""
    return hashlib.sha256(client_hello + MAGIC + e_s + nonce_s).digest()


@dataclass(frozen=True)
class Keys:
    enc_c2s: bytes = field(repr=False)
    mac_c2s: bytes = field(repr=False)
    enc_s2c: bytes = field(repr=False)
    mac_s2c: bytes = field(repr=False)

    @property
    def okm(self) -> bytes:
        return self.enc_c2s + self.mac_c2s + self.enc_s2c + self.mac_s2c


def derive_okm(key: bytes, dh: bytes, nonce_c: bytes, nonce_s: bytes, th: bytes) -> bytes:
    """``HKDF-SHA256(IKM = K || dh, salt = nonce_c || nonce_s, info = "ATM2 session keys" || th, L = 128)``."""
    okm: bytes = HKDF(key + dh, 128, nonce_c + nonce_s, SHA256, context=INFO + th)
    return okm


def derive_keys(key: bytes, dh: bytes, nonce_c: bytes, nonce_s: bytes, th: bytes) -> Keys:
    """The okm cut in four: ``enc_c2s``, ``mac_c2s``, ``enc_s2c``, ``mac_s2c``."""
    okm = derive_okm(key, dh, nonce_c, nonce_s, th)
    return Keys(okm[0:32], okm[32:64], okm[64:96], okm[96:128])


def server_proof(keys: Keys, th: bytes) -> bytes:
    """``HMAC-SHA256(key = mac_s2c, msg = "ATM2 server proof" || th)``."""
    return hmac_sha256(keys.mac_s2c, PROOF_LABEL + th)


@dataclass(frozen=True)
class Session:
    """What a verified ServerHello yields: the server's half and the keys of the connection."""

    e_s: bytes
    nonce_s: bytes
    th: bytes
    keys: Keys


def verify_server_hello(
    key: bytes, client_hello: bytes, ephemeral: Ephemeral, payload: bytes, check_proof: bool = True
) -> Session:
    """Keys from a ServerHello ``payload`` answering ``client_hello`` (the payload sent); ``BadProof``,
    in plain words, when the proof does not match (the sides hold different keys). The proof is
    compared in constant time."""
    if len(payload) != SERVER_HELLO_SIZE or payload[:4] != MAGIC:
        raise ContractError(f"ServerHello de {len(payload)} bytes o sin la marca ATM2", "saludo_invalido")
    e_s, nonce_s, proof = payload[4:36], payload[36:68], payload[68:]
    dh = ephemeral.exchange(e_s)
    th = transcript_hash(client_hello, e_s, nonce_s)
    keys = derive_keys(key, dh, client_hello[-NONCE_SIZE:], nonce_s, th)
    if check_proof and not hmac.compare_digest(proof, server_proof(keys, th)):
        raise BadProof(
            "el banco respondió, pero no demostró conocer la llave de este cajero: el cajero y el banco "
            "tienen llaves distintas",
            "prueba_invalida",
        )
    return Session(e_s, nonce_s, th, keys)


# -- records (section 4) ------------------------------------------------------------------------------------------
def pkcs7(data: bytes) -> bytes:
    return data + _PADS[BLOCK - len(data) % BLOCK]


def unpad(padded: bytes) -> bytes:
    """Strip PKCS#7 padding, checking every pad byte."""
    n = padded[-1] if padded else 0
    if not 1 <= n <= BLOCK or len(padded) < n or padded[-n:] != _PADS[n]:
        raise ContractError("relleno PKCS#7 incorrecto", "relleno_invalido")
    return padded[:-n]


def _check_record_size(payload: bytes) -> None:
    if len(payload) < MIN_RECORD or (len(payload) - BLOCK - TAG_SIZE) % BLOCK:
        raise ContractError(f"registro de {len(payload)} bytes: tamaño inválido", "registro_invalido")


def seal_padded(enc: bytes, mac: bytes, seq: int, iv: bytes, padded: bytes) -> bytes:
    """Record payload for an already padded plaintext (any bytes, length a multiple of 16)."""
    c = AES.new(enc, AES.MODE_CBC, iv=iv).encrypt(padded)
    return iv + c + hmac_sha256(mac, struct.pack(">Q", seq) + iv + c)


def seal(enc: bytes, mac: bytes, seq: int, plaintext: bytes, iv: bytes | None = None) -> bytes:
    """The reference: ``IV || AES-256-CBC(pad(p)) || HMAC(seq || IV || C)``, a new cipher per record."""
    return seal_padded(enc, mac, seq, iv if iv is not None else os.urandom(BLOCK), pkcs7(plaintext))


def open_record(enc: bytes, mac: bytes, seq: int, payload: bytes) -> bytes:
    """The reference receive, in the contract's order: size, MAC, decrypt, padding."""
    _check_record_size(payload)
    iv, c, t = payload[:BLOCK], payload[BLOCK:-TAG_SIZE], payload[-TAG_SIZE:]
    if not hmac.compare_digest(t, hmac_sha256(mac, struct.pack(">Q", seq) + iv + c)):
        raise ContractError(f"el MAC del registro {seq} no coincide", "mac_invalida")
    return unpad(AES.new(enc, AES.MODE_CBC, iv=iv).decrypt(c))


def _xor_block(a: bytes, b: int, c: bytes) -> bytes:
    """a ^ b ^ c over 16 bytes (b already an int)."""
    return (int.from_bytes(a, "big") ^ b ^ int.from_bytes(c, "big")).to_bytes(BLOCK, "big")


class RecordSealer:
    """Seals one direction's records, keeping its ``seq``: the same bytes as ``seal``, for less CPU.

    Creating an AES object costs about three times encrypting ~100 bytes, so
    there is ONE CBC object per direction. A reused CBC object chains on the
    last ciphertext block ``S``; to get CBC under a fresh IV ``X`` the first
    block is encrypted as ``P1 ^ S ^ X``: AES(P1 ^ S ^ X ^ S) = AES(P1 ^ X),
    exactly the first block of CBC with IV ``X``, and the rest chains as
    usual. The IV is still random and new for every record. The HMAC object
    is keyed once and copied per record.
    """

    __slots__ = ("_cbc", "_chain", "_iv_source", "_mac", "seq")

    def __init__(self, enc: bytes, mac: bytes, iv_source: Callable[[int], bytes] = os.urandom) -> None:
        self._cbc = AES.new(enc, AES.MODE_CBC, iv=_ZERO_BLOCK)
        self._chain = 0
        self._mac = hmac.new(mac, digestmod=hashlib.sha256)
        self._iv_source = iv_source
        self.seq = 0

    def seal_padded(self, padded: bytes, iv: bytes | None = None, seq: int | None = None) -> bytes:
        """Payload ``IV || C || T``; advances ``seq`` only when ``seq`` is not given."""
        if not padded or len(padded) % BLOCK:
            raise ValueError("padded plaintext must be a non-empty multiple of 16 bytes")
        if iv is None:
            iv = self._iv_source(BLOCK)
        if seq is None:
            seq = self.seq
            self.seq += 1
        c = self._cbc.encrypt(_xor_block(padded[:BLOCK], self._chain, iv) + padded[BLOCK:])
        self._chain = int.from_bytes(c[-BLOCK:], "big")
        h = self._mac.copy()
        h.update(seq.to_bytes(8, "big"))
        h.update(iv)
        h.update(c)
        return iv + c + h.digest()

    def seal(self, plaintext: bytes, iv: bytes | None = None, seq: int | None = None) -> bytes:
        return self.seal_padded(plaintext + _PADS[BLOCK - len(plaintext) % BLOCK], iv, seq)


class RecordOpener:
    """Checks and decrypts one direction's records, keeping its ``seq`` (the sealer's trick in reverse:
    the reused decryptor returns ``D(C1) ^ S`` for the first block, corrected with ``^ S ^ IV``)."""

    __slots__ = ("_cbc", "_chain", "_mac", "seq")

    def __init__(self, enc: bytes, mac: bytes) -> None:
        self._cbc = AES.new(enc, AES.MODE_CBC, iv=_ZERO_BLOCK)
        self._chain = 0
        self._mac = hmac.new(mac, digestmod=hashlib.sha256)
        self.seq = 0

    def open(self, payload: bytes) -> bytes:
        _check_record_size(payload)
        h = self._mac.copy()
        h.update(self.seq.to_bytes(8, "big"))
        h.update(memoryview(payload)[:-TAG_SIZE])
        if not hmac.compare_digest(h.digest(), payload[-TAG_SIZE:]):
            raise ContractError(f"el MAC del registro {self.seq} no coincide", "mac_invalida")
        self.seq += 1
        c = payload[BLOCK:-TAG_SIZE]
        raw = self._cbc.decrypt(c)
        self._chain, chain = int.from_bytes(c[-BLOCK:], "big"), self._chain
        return unpad(_xor_block(raw[:BLOCK], chain, payload[:BLOCK]) + raw[BLOCK:])


# -- messages (section 5) -----------------------------------------------------------------------------------------
def encode_json(message: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII unescaped, as in the vectors."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def is_request_amount(text: str) -> bool:
    """The request amount grammar, and more than zero."""
    return bool(_REQUEST_AMOUNT.fullmatch(text)) and Decimal(text) > 0


def deposit_encoder(amount: str) -> Callable[[str], bytes]:
    """id -> DEPOSITAR plaintext, the same bytes as ``encode_json`` without ``json.dumps`` per request
    (amount and id hold only characters JSON does not escape: both are checked)."""
    if not is_request_amount(amount):
        raise ValueError(f"Importe no válido para el contrato: {amount!r}")
    head = b'{"op":"DEPOSITAR","monto":"' + amount.encode("ascii") + b'","id":"'

    def encode(tx_id: str) -> bytes:
        if not _TX_ID.fullmatch(tx_id):
            raise ValueError(f"id de transacción fuera de la gramática: {tx_id!r}")
        return head + tx_id.encode("ascii") + b'"}'

    return encode


def decode_reply(plaintext: bytes) -> dict[str, Any]:
    """Strict UTF-8 (else the channel is broken) holding a JSON object (else the reply is)."""
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractError("el texto claro no es UTF-8", "utf8_invalido") from None
    try:
        value = json.loads(text)
    except ValueError:
        raise ReplyError("la respuesta no es JSON", "json_invalido") from None
    if not isinstance(value, dict):
        raise ReplyError(f"la respuesta no es un objeto JSON: {value!r}", "respuesta_invalida")
    return value


def mask_card(card: str) -> str:
    """A card as replies show it: all but the last 4 digits as ``*``."""
    return "*" * (len(card) - 4) + card[-4:]


def _bad(message: str) -> ReplyError:
    return ReplyError(message, "respuesta_invalida")


def _reply_amount(reply: dict[str, Any], name: str) -> Decimal:
    value = reply.get(name)
    if type(value) is not str or not _REPLY_AMOUNT.fullmatch(value):
        raise _bad(f"'{name}' no es un importe con dos decimales: {value!r}")
    return Decimal(value)


def _check_masked(value: object, name: str, card: str | None) -> None:
    """A masked card: ``*`` then 4 digits, 12 to 19 in all; exactly ``card``'s mask when it is known."""
    good = isinstance(value, str) and re.fullmatch(r"\*{8,15}[0-9]{4}", value) is not None
    if not good or (card is not None and value != mask_card(card)):
        raise _bad(f"'{name}' no es la tarjeta enmascarada esperada: {value!r}")


def _check_timestamp(value: object, name: str) -> None:
    """ISO 8601 with an offset (``2026-11-23T10:15:02-06:00``)."""
    try:
        good = isinstance(value, str) and "T" in value and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        good = False
    if not good:
        raise _bad(f"'{name}' no es una fecha ISO 8601 con desfase: {value!r}")


def _check_id_and_repeat(reply: dict[str, Any], tx_id: str | None) -> None:
    if reply.get("id") != tx_id:
        raise ReplyError(f"la respuesta trae el id {reply.get('id')!r} y se envió {tx_id!r}", "id_distinto")
    if type(reply.get("repetida", False)) is not bool:
        raise _bad("'repetida' no es booleano")


def _check_movement(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    _check_id_and_repeat(reply, tx_id)
    _reply_amount(reply, "saldo")


def _check_transfer(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    _check_movement(reply, tx_id, None)
    _check_masked(reply.get("destino"), "destino", card)


def _check_reversal(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    _check_id_and_repeat(reply, tx_id)
    _reply_amount(reply, "reversado")


def _check_holder(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    if type(reply.get("titular")) is not str:
        raise _bad("falta 'titular'")


def _check_balance(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    _check_holder(reply, tx_id, card)
    _check_masked(reply.get("tarjeta"), "tarjeta", card)
    _reply_amount(reply, "saldo")


def _check_history_entry(entry: object) -> None:
    if not isinstance(entry, dict) or type(entry.get("id")) is not str:
        raise _bad(f"un movimiento no es un objeto con 'id': {entry!r}")
    _check_timestamp(entry.get("fecha"), "fecha")
    kind = entry.get("tipo")
    if kind not in MOVEMENT_TYPES:
        raise _bad(f"tipo de movimiento fuera del contrato: {kind!r}")
    _reply_amount(entry, "monto")
    _reply_amount(entry, "saldo")
    if kind.startswith("TRANSFERENCIA_"):
        _check_masked(entry.get("contraparte"), "contraparte", None)


def _check_history(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    entries = reply.get("movimientos")
    if not isinstance(entries, list) or len(entries) > 50:
        raise _bad("'movimientos' no es una lista de hasta 50")
    for entry in entries:
        _check_history_entry(entry)


def _check_totals(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    _check_timestamp(reply.get("desde"), "desde")
    if "hasta" in reply:
        _check_timestamp(reply["hasta"], "hasta")
    for name in TOTALS:
        total = reply.get(name)
        if not isinstance(total, dict) or type(total.get("n")) is not int or total["n"] < 0:
            raise _bad(f"'{name}' no es {{'n': entero, 'monto': importe}}: {total!r}")
        _reply_amount(total, "monto")
    if type(reply.get("repetida", False)) is not bool:
        raise _bad("'repetida' no es booleano")


def _check_renewal(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    if not is_version(reply.get("version")):
        raise _bad(f"'version' no es un entero de 1 a {MAX_VERSION}: {reply.get('version')!r}")
    if "llave" in reply and (type(reply["llave"]) is not str or not _HEX_KEY.fullmatch(reply["llave"])):
        raise _bad("'llave' no tiene 64 dígitos hexadecimales")  # never the value: it may be a key


_SUCCESS_CHECKS: dict[str, Callable[[dict[str, Any], str | None, str | None], None]] = {
    "IDENTIFICAR": _check_holder,
    "CONSULTAR": _check_balance,
    "DEPOSITAR": _check_movement,
    "RETIRAR": _check_movement,
    "TRANSFERIR": _check_transfer,
    "MOVIMIENTOS": _check_history,
    "REVERSAR": _check_reversal,
    "TOTALES": _check_totals,
    "RENOVAR_LLAVE": _check_renewal,
}


def _refusal(reply: dict[str, Any]) -> Exception:
    """A ``"ok": false`` reply as ``ServerError``, or ``ReplyError`` when it breaks the contract."""
    code = reply.get("error")
    if type(code) is not str or code not in ERROR_CODES:
        return ReplyError(f"código de error fuera del contrato: {code!r}", "codigo_desconocido")
    if type(reply.get("mensaje")) is not str:
        return _bad(f"error {code} sin 'mensaje' de texto")
    if code == "PIN_INCORRECTO" and type(reply.get("intentos_restantes")) is not int:
        return _bad("PIN_INCORRECTO sin 'intentos_restantes' entero")
    return ServerError(code, reply["mensaje"])


def check_reply(op: str, reply: dict[str, Any], tx_id: str | None = None, card: str | None = None) -> dict[str, Any]:
    """``reply`` to ``op`` checked against section 5 and returned if it is a success.

    A well-formed refusal raises ``ServerError``; a reply that breaks the contract, ``ReplyError``.
    ``tx_id``: the ``id`` sent (DEPOSITAR, RETIRAR, TRANSFERIR, REVERSAR). ``card``: the card whose
    mask the reply must show (CONSULTAR: the identified card; TRANSFERIR: ``destino``).
    """
    ok = reply.get("ok")
    if ok is False:
        raise _refusal(reply)
    if ok is not True:
        raise _bad(f"'ok' no es booleano: {ok!r}")
    check = _SUCCESS_CHECKS.get(op)
    if check is not None:
        check(reply, tx_id, card)
    return reply


# -- a connection -----------------------------------------------------------------------------------------------
class AtmClient:
    """One TCP connection to the bank as terminal ``terminal_key``, spoken in ATM2 from the contract alone.

    Records go through a ``RecordSealer``/``RecordOpener`` pair built when
    ``keys`` is set (by ``handshake``, or by hand); ``send_seq`` and
    ``recv_seq`` are theirs. Reads are buffered so that a reply usually
    costs one ``recv``; ``read_until_closed`` hands over what is buffered first.
    The ephemeral private key lives only between ClientHello and ServerHello.
    """

    def __init__(
        self,
        host: str,
        port: int,
        terminal_key: KeyLike,
        timeout: float = 10.0,
        *,
        keep_frames: bool = True,
        iv_source: Callable[[int], bytes] = os.urandom,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.terminal_key = terminal_key
        self.sock: socket.socket | None = None
        self.hello = b""  # the ClientHello payload sent (the transcript's first part)
        self.nonce_c = self.nonce_s = self.e_c = self.e_s = self.th = b""
        self.sent_frames: list[bytes] = []  # every record frame sent, for replay tests (unless keep_frames=False)
        self._keep_frames = keep_frames
        self._iv_source = iv_source
        self._random = random
        self._ephemeral: Ephemeral | None = None
        self._keys: Keys | None = None
        self._sealer: RecordSealer | None = None
        self._opener: RecordOpener | None = None
        self._buffer = bytearray()

    # -- keys and sequence numbers --
    @property
    def keys(self) -> Keys | None:
        return self._keys

    @keys.setter
    def keys(self, keys: Keys) -> None:
        self._keys = keys
        self._sealer = RecordSealer(keys.enc_c2s, keys.mac_c2s, self._iv_source)
        self._opener = RecordOpener(keys.enc_s2c, keys.mac_s2c)

    @property
    def send_seq(self) -> int:
        return self._sealer.seq if self._sealer is not None else 0

    @send_seq.setter
    def send_seq(self, seq: int) -> None:
        assert self._sealer is not None
        self._sealer.seq = seq

    @property
    def recv_seq(self) -> int:
        return self._opener.seq if self._opener is not None else 0

    @recv_seq.setter
    def recv_seq(self, seq: int) -> None:
        assert self._opener is not None
        self._opener.seq = seq

    # -- socket level --
    def connect(self) -> AtmClient:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def close(self) -> None:
        self._ephemeral = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> AtmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        assert self.sock is not None
        buffer = self._buffer
        while len(buffer) < n:
            chunk = self.sock.recv(max(65_536, n - len(buffer)))
            if not chunk:
                data, buffer[:] = bytes(buffer), b""
                kind = "trama_truncada" if data else "conexion_cerrada"
                raise Closed(f"la conexión se cerró tras {len(data)} de {n} bytes", data, kind)
            buffer += chunk
        data = bytes(buffer[:n])
        del buffer[:n]
        return data

    def recv_frame(self) -> bytes:
        (length,) = struct.unpack(">I", self.recv_exact(4))
        if not 0 < length <= MAX_FRAME:
            raise ContractError(f"el servidor envió una trama de {length} bytes", "trama_invalida")
        return self.recv_exact(length)

    def read_until_closed(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        """Everything the server sends until it closes: ``(data, closed)``; ``closed`` False on timeout."""
        assert self.sock is not None
        data, self._buffer = self._buffer, bytearray()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(data), False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65_536)
            except TimeoutError:
                return bytes(data), False
            except ConnectionResetError:
                return bytes(data), True
            if not chunk:
                return bytes(data), True
            data += chunk

    # -- handshake --
    def client_hello(
        self,
        nonce_c: bytes | None = None,
        ephemeral_private: bytes | None = None,
        *,
        terminal_id: str | bytes | None = None,
        version: int | None = None,
    ) -> bytes:
        """The ClientHello frame, with a fresh ephemeral key and nonce unless given (the vectors fix both).

        ``terminal_id``/``version`` override the key's (attack tests: unknown ids, old versions)."""
        self._ephemeral = (
            Ephemeral(ephemeral_private) if ephemeral_private is not None else Ephemeral.generate(self._random)
        )
        self.e_c = self._ephemeral.public
        self.nonce_c = nonce_c if nonce_c is not None else self._random(NONCE_SIZE)
        key = self.terminal_key
        self.hello = client_hello_payload(
            key.terminal_id if terminal_id is None else terminal_id,
            key.version if version is None else version,
            self.e_c,
            self.nonce_c,
        )
        return frame(self.hello)

    def receive_server_hello(self, check_proof: bool = True) -> AtmClient:
        """Read the ServerHello for the ClientHello sent and set the keys.

        ``HelloRefused`` when the bank closed before a single byte of it (it refused the terminal or
        version); ``BadProof`` (and the connection closed) when it answered under another key."""
        assert self._ephemeral is not None, "no ClientHello sent"
        try:
            payload = self.recv_frame()
        except Closed as exc:
            if exc.data:
                raise
            raise self._refused() from None
        except ConnectionResetError:
            raise self._refused() from None
        try:
            session = verify_server_hello(self.terminal_key.key, self.hello, self._ephemeral, payload, check_proof)
        except BadProof:
            self.close()
            raise
        finally:
            self._ephemeral = None  # forgotten as soon as it has served
        self.e_s, self.nonce_s, self.th, self.keys = session.e_s, session.nonce_s, session.th, session.keys
        return self

    def _refused(self) -> HelloRefused:
        key = self.terminal_key
        return HelloRefused(
            f"el banco cerró la conexión sin responder al saludo del cajero {key.terminal_id} (llave versión "
            f"{key.version}): no lo reconoce, lo dio de baja o no acepta esa versión de la llave (o no admite "
            "más conexiones ahora)",
            kind="saludo_rechazado",
        )

    def handshake(
        self, check_proof: bool = True, nonce_c: bytes | None = None, ephemeral_private: bytes | None = None
    ) -> AtmClient:
        """ClientHello, then ServerHello and keys (see ``receive_server_hello`` for the two failures)."""
        if self.sock is None:
            self.connect()
        self.send_raw(self.client_hello(nonce_c, ephemeral_private))
        return self.receive_server_hello(check_proof)

    # -- records --
    def seal(self, plaintext: bytes, seq: int | None = None, iv: bytes | None = None) -> bytes:
        """A c2s record frame; advances ``send_seq`` only when ``seq`` is not given."""
        assert self._sealer is not None
        return frame(self._sealer.seal(plaintext, iv, seq))

    def seal_padded(self, padded: bytes, seq: int | None = None, iv: bytes | None = None) -> bytes:
        assert self._sealer is not None
        return frame(self._sealer.seal_padded(padded, iv, seq))

    def send_record(self, plaintext: bytes) -> bytes:
        data = self.seal(plaintext)
        if self._keep_frames:
            self.sent_frames.append(data)
        self.send_raw(data)
        return data

    def recv_message(self) -> dict[str, Any]:
        assert self._opener is not None
        return decode_reply(self._opener.open(self.recv_frame()))

    def request(self, message: Any) -> dict[str, Any]:
        """Send one request (an object, or plaintext bytes as they are) and return the reply, unchecked."""
        self.send_record(message if isinstance(message, bytes) else encode_json(message))
        return self.recv_message()

    # -- conveniences --
    def renew_key(self) -> TerminalKey | None:
        """RENOVAR_LLAVE, checked: the pending key when the bank hands one over, else None.

        Without ``llave`` the bank names the version in force, which is the one this session used
        (a pending version becomes current with the session's first valid record); with it, a
        newer one. The caller stores a new key (``write_key_file``) and uses it from the next connection.
        """
        reply = check_reply("RENOVAR_LLAVE", self.request({"op": "RENOVAR_LLAVE"}))
        used, version = self.terminal_key.version, reply["version"]
        if "llave" not in reply:
            if version != used:
                raise _bad(f"RENOVAR_LLAVE sin llave nombra la versión {version}, y esta sesión usó la {used}")
            return None
        if version <= used:
            raise _bad(f"RENOVAR_LLAVE entrega la versión {version}, no posterior a la {used} en uso")
        return TerminalKey(self.terminal_key.terminal_id, version, bytes.fromhex(reply["llave"]))

    def identify(self, tarjeta: str, pin: str) -> dict[str, Any]:
        return self.request({"op": "IDENTIFICAR", "tarjeta": tarjeta, "pin": pin})

    def saldo(self) -> str:
        response = self.request({"op": "CONSULTAR"})
        if not response.get("ok"):
            raise ContractError(f"CONSULTAR falló: {response}")
        return response["saldo"]

    def logout(self, timeout: float = 5.0) -> None:
        """SALIR, checked; then the server must close without sending anything more."""
        check_reply("SALIR", self.request({"op": "SALIR"}))
        data, closed = self.read_until_closed(timeout)
        if data:
            raise ContractError("el servidor envió datos después de responder a SALIR", "datos_tras_salir")
        if not closed:
            raise ContractError("el servidor no cerró la conexión tras SALIR", "salir_sin_cierre")


def open_session(
    port: int,
    terminal_key: KeyLike,
    tarjeta: str | None = None,
    pin: str | None = None,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
) -> AtmClient:
    """A handshaken connection, identified when ``tarjeta`` is given (asserting success)."""
    client = AtmClient(host, port, terminal_key, timeout).connect()
    try:
        client.handshake()
        if tarjeta is not None:
            assert pin is not None
            response = client.identify(tarjeta, pin)
            if not response.get("ok"):
                raise ContractError(f"IDENTIFICAR falló: {response}")
    except BaseException:
        client.close()
        raise
    return client


# -- a load generator, for tests that need ATM processes ------------------------------------------------------
def _deposit(args: argparse.Namespace) -> int:
    if len(args.monto) != len(args.id):
        print("--monto y --id deben ir en pares", file=sys.stderr)
        return 2
    try:
        key = load_key_file(args.llave)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        with open_session(args.port, key, args.tarjeta, args.pin, timeout=args.timeout) as client:
            for amount, tx_id in zip(args.monto, args.id, strict=True):
                response = client.request({"op": args.op, "monto": amount, "id": tx_id})
                print(json.dumps({"id": tx_id, "monto": amount, "respuesta": response}), flush=True)
                if args.pausa:
                    time.sleep(args.pausa)
            client.request({"op": "SALIR"})
    except (OSError, ContractError) as exc:
        print(json.dumps({"fin": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.contract_client")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("depositar", help="identificarse y enviar DEPOSITAR (o --op RETIRAR) por cada monto/id")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--llave", required=True, help="el fichero de llave del cajero (ATM2 <id> <versión> <hex>)")
    d.add_argument("--tarjeta", required=True)
    d.add_argument("--pin", required=True)
    d.add_argument("--op", default="DEPOSITAR")
    d.add_argument("--monto", action="append", default=[])
    d.add_argument("--id", action="append", default=[])
    d.add_argument("--pausa", type=float, default=0.0, help="segundos entre peticiones")
    d.add_argument("--timeout", type=float, default=20.0)
    return _deposit(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

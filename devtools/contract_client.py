"""The independent ATM1 client, written from PROTOCOL.md and vectors.json alone.

Why it exists: the server is tested, and measured, through a second
implementation of the protocol. It imports nothing from ``common/``,
``bank_server/`` or ``atm_gui/``, so a place where the server and the
project's own client bend the contract the same way (a key derived wrong,
a MAC over the wrong bytes, a balance rounded wrong) still shows up, and a
bench figure cannot come from a bug both sides share. Crypto: AES-CBC from
pycryptodome; HMAC-SHA256 and HKDF from the standard library.

The layers, from the bottom:

- the contract taken literally (``derive_keys``, ``seal``, ``open_record``:
  a new AES-CBC per record), the reference that ``tests/test_fuzz.py`` and
  the vectors pin;
- ``RecordSealer`` / ``RecordOpener``: the same bytes with one AES object
  per direction, the fast path the load generator (``bench/contract_load.py``)
  runs millions of times;
- ``AtmClient``: one TCP connection. Besides the polite path (``request``)
  it exposes the raw parts attack tests need: send any bytes or frame, seal
  a record with a chosen ``seq``/IV/padding, read whatever the server sends
  until it closes;
- ``check_reply``: every field of a reply checked against section 5.

Run as a module it is a small load generator for tests that need several
ATM *processes*::

    python -m devtools.contract_client depositar --port P --tarjeta T --pin X --psk HEX \
        --monto 1.01 --id a1 --monto 2.02 --id a2 ...

It prints one JSON line per answered request (``{"id", "monto", "respuesta"}``),
flushing each, so a parent can tell which deposits were acknowledged even
if the bank is killed midway.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES

MAGIC = b"ATM1"
NONCE_SIZE = 32
MAX_FRAME = 65_536
INFO = b"ATM1 session keys"
PROOF_LABEL = b"ATM1 server proof"
BLOCK = 16
TAG_SIZE = 32
SERVER_HELLO_SIZE = 4 + NONCE_SIZE + TAG_SIZE
MIN_RECORD = BLOCK + BLOCK + TAG_SIZE  # IV, at least one block, tag

ERROR_CODES = frozenset(
    {
        "PETICION_INVALIDA",
        "NO_IDENTIFICADO",
        "TARJETA_INVALIDA",
        "PIN_INCORRECTO",
        "TARJETA_BLOQUEADA",
        "MONTO_INVALIDO",
        "FONDOS_INSUFICIENTES",
        "LIMITE_DIARIO",
        "ID_REPETIDO",
        "PIN_INVALIDO",
        "ERROR_INTERNO",
    }
)
_REQUEST_AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_REPLY_AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")
_HEX_KEY = re.compile(r"[0-9A-Fa-f]{64}")
_PADS = tuple(bytes((n,)) * n for n in range(BLOCK + 1))  # _PADS[n]: n bytes of value n
_ZERO_BLOCK = bytes(BLOCK)


class ContractError(Exception):
    """The server broke the contract as seen from this client; the connection is no longer usable.

    ``kind`` is the short label the load generator counts errors by.
    """

    def __init__(self, message: str, kind: str = "contrato") -> None:
        super().__init__(message)
        self.kind = kind


class BadProof(ContractError):
    """The ServerHello's proof does not match: the sides hold different keys."""


class Closed(ContractError):
    """The connection closed; ``data`` holds whatever arrived before."""

    def __init__(self, message: str, data: bytes = b"", kind: str = "conexion_cerrada") -> None:
        super().__init__(message, kind)
        self.data = data


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


# -- the key file (section 2) -----------------------------------------------------------------------------------
def parse_psk(text: str, name: str = "llave.key") -> bytes:
    """The PSK from a key file's text: the first line that is neither blank nor ``#`` must be 64 hex digits.

    Errors name the file and never show the line: it could be the key.
    """
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not _HEX_KEY.fullmatch(line):
            raise ValueError(
                f"El fichero de llave {name} no es válido: la primera línea que no es comentario "
                "debe tener exactamente 64 dígitos hexadecimales y nada más."
            )
        return bytes.fromhex(line)
    raise ValueError(f"El fichero de llave {name} no contiene ninguna llave (64 dígitos hexadecimales).")


def load_psk(path: str | os.PathLike[str]) -> bytes:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"No se pudo leer el fichero de llave {path}: {exc.__class__.__name__}") from None
    return parse_psk(text, str(path))


# -- primitives: frames, keys, records (sections 1, 3, 4) --------------------------------------------------------
def frame(payload: bytes) -> bytes:
    """``length (u32 BE) || payload`` with no checks: attack tests send bad lengths on purpose."""
    return struct.pack(">I", len(payload)) + payload


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 as RFC 5869 has it (extract, then expand)."""
    prk = hmac_sha256(salt, ikm)
    okm = block = b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac_sha256(prk, block + info + bytes((counter,)))
        okm += block
    return okm[:length]


@dataclass(frozen=True)
class Keys:
    enc_c2s: bytes
    mac_c2s: bytes
    enc_s2c: bytes
    mac_s2c: bytes

    @property
    def okm(self) -> bytes:
        return self.enc_c2s + self.mac_c2s + self.enc_s2c + self.mac_s2c


def derive_keys(psk: bytes, nonce_c: bytes, nonce_s: bytes) -> Keys:
    """okm = HKDF(PSK, salt = nonce_c || nonce_s, info = "ATM1 session keys", L = 128), cut in four."""
    okm = hkdf_sha256(psk, nonce_c + nonce_s, INFO, 128)
    return Keys(okm[0:32], okm[32:64], okm[64:96], okm[96:128])


def server_proof(keys: Keys, nonce_c: bytes, nonce_s: bytes) -> bytes:
    return hmac_sha256(keys.mac_s2c, PROOF_LABEL + nonce_c + nonce_s)


def verify_server_hello(psk: bytes, nonce_c: bytes, payload: bytes, check_proof: bool = True) -> tuple[bytes, Keys]:
    """``(nonce_s, keys)`` from a ServerHello payload; ``BadProof`` (in plain words) when the keys differ."""
    if len(payload) != SERVER_HELLO_SIZE or payload[:4] != MAGIC:
        raise ContractError(f"ServerHello de {len(payload)} bytes o sin la marca ATM1", "saludo_invalido")
    nonce_s, proof = payload[4:36], payload[36:]
    keys = derive_keys(psk, nonce_c, nonce_s)
    if check_proof and not hmac.compare_digest(proof, server_proof(keys, nonce_c, nonce_s)):
        raise BadProof(
            "el servidor no demostró conocer la llave compartida: el cajero y el banco tienen llaves distintas",
            "prueba_invalida",
        )
    return nonce_s, keys


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
    return lambda tx_id: head + tx_id.encode("ascii") + b'"}'


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
    """The card as CONSULTAR returns it: all but the last 4 digits as ``*``."""
    return "*" * (len(card) - 4) + card[-4:]


def _reply_amount(reply: dict[str, Any], field: str) -> Decimal:
    value = reply.get(field)
    if type(value) is not str or not _REPLY_AMOUNT.fullmatch(value):
        raise ReplyError(f"'{field}' no es un importe con dos decimales: {value!r}", "respuesta_invalida")
    return Decimal(value)


def _refusal(reply: dict[str, Any]) -> Exception:
    """A ``"ok": false`` reply as ``ServerError``, or ``ReplyError`` when it breaks the contract."""
    code = reply.get("error")
    if type(code) is not str or code not in ERROR_CODES:
        return ReplyError(f"código de error fuera del contrato: {code!r}", "codigo_desconocido")
    if type(reply.get("mensaje")) is not str:
        return ReplyError(f"error {code} sin 'mensaje' de texto", "respuesta_invalida")
    if code == "PIN_INCORRECTO" and type(reply.get("intentos_restantes")) is not int:
        return ReplyError("PIN_INCORRECTO sin 'intentos_restantes' entero", "respuesta_invalida")
    return ServerError(code, reply["mensaje"])


def _check_movement(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    if reply.get("id") != tx_id:
        raise ReplyError(f"la respuesta trae el id {reply.get('id')!r} y se envió {tx_id!r}", "id_distinto")
    _reply_amount(reply, "saldo")
    if type(reply.get("repetida", False)) is not bool:
        raise ReplyError("'repetida' no es booleano", "respuesta_invalida")


def _check_holder(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    if type(reply.get("titular")) is not str:
        raise ReplyError("falta 'titular'", "respuesta_invalida")


def _check_balance(reply: dict[str, Any], tx_id: str | None, card: str | None) -> None:
    _check_holder(reply, tx_id, card)
    if card is not None and reply.get("tarjeta") != mask_card(card):
        raise ReplyError("CONSULTAR devuelve la tarjeta mal enmascarada", "respuesta_invalida")
    _reply_amount(reply, "saldo")


_SUCCESS_CHECKS = {
    "DEPOSITAR": _check_movement,
    "RETIRAR": _check_movement,
    "IDENTIFICAR": _check_holder,
    "CONSULTAR": _check_balance,
}


def check_reply(op: str, reply: dict[str, Any], tx_id: str | None = None, card: str | None = None) -> dict[str, Any]:
    """``reply`` to ``op`` checked against section 5 and returned if it is a success.

    A well-formed refusal raises ``ServerError``; a reply that breaks the contract, ``ReplyError``.
    ``card`` (CONSULTAR) checks the masked card.
    """
    ok = reply.get("ok")
    if ok is False:
        raise _refusal(reply)
    if ok is not True:
        raise ReplyError(f"'ok' no es booleano: {ok!r}", "respuesta_invalida")
    check = _SUCCESS_CHECKS.get(op)
    if check is not None:
        check(reply, tx_id, card)
    return reply


# -- a connection -----------------------------------------------------------------------------------------------
class AtmClient:
    """One TCP connection to the bank, spoken in ATM1 from the contract alone.

    Records go through a ``RecordSealer``/``RecordOpener`` pair built when
    ``keys`` is set (by ``handshake``, or by hand); ``send_seq`` and
    ``recv_seq`` are theirs. Reads are buffered so that a reply usually
    costs one ``recv``; ``read_until_closed`` hands over what is buffered first.
    """

    def __init__(
        self,
        host: str,
        port: int,
        psk: bytes,
        timeout: float = 10.0,
        *,
        keep_frames: bool = True,
        iv_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.host, self.port, self.psk, self.timeout = host, port, psk, timeout
        self.sock: socket.socket | None = None
        self.nonce_c = b""
        self.nonce_s = b""
        self.sent_frames: list[bytes] = []  # every record frame sent, for replay tests (unless keep_frames=False)
        self._keep_frames = keep_frames
        self._iv_source = iv_source
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
    def client_hello(self, nonce_c: bytes | None = None) -> bytes:
        self.nonce_c = nonce_c if nonce_c is not None else os.urandom(NONCE_SIZE)
        return frame(MAGIC + self.nonce_c)

    def handshake(self, check_proof: bool = True, nonce_c: bytes | None = None) -> AtmClient:
        """ClientHello, ServerHello, keys; raise ``BadProof`` on a proof mismatch (and close)."""
        if self.sock is None:
            self.connect()
        self.send_raw(self.client_hello(nonce_c))
        try:
            self.nonce_s, self.keys = verify_server_hello(self.psk, self.nonce_c, self.recv_frame(), check_proof)
        except BadProof:
            self.close()
            raise
        return self

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
    psk: bytes,
    tarjeta: str | None = None,
    pin: str | None = None,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
) -> AtmClient:
    """A handshaken connection, identified when ``tarjeta`` is given (asserting success)."""
    client = AtmClient(host, port, psk, timeout).connect()
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
        with open_session(args.port, bytes.fromhex(args.psk), args.tarjeta, args.pin, timeout=args.timeout) as client:
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
    d.add_argument("--psk", required=True, help="la PSK en hexadecimal")
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

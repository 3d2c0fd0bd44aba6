"""An independent ATM1 client, written from PROTOCOL.md alone.

It imports nothing from ``common/`` or ``atm_gui/``: the server's tests
talk to it through this second implementation so that a place where the
server and the project's own client bend the contract the same way still
shows up. Crypto comes from pycryptodome (HKDF, AES-CBC, HMAC-SHA256).

Besides the polite path (``AtmClient.request``) it exposes the raw parts
that attack tests need: send any bytes or frame, seal a record with a
chosen ``seq``/IV/padding, read whatever the server sends until it closes.

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
import hmac
import json
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from Crypto.Cipher import AES
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.KDF import HKDF

MAGIC = b"ATM1"
NONCE_SIZE = 32
MAX_FRAME = 65_536
INFO = b"ATM1 session keys"
PROOF_LABEL = b"ATM1 server proof"
BLOCK = 16
TAG_SIZE = 32


class ContractError(Exception):
    """The server broke the protocol as seen from this client."""


class BadProof(ContractError):
    """The ServerHello's proof does not match: the sides hold different keys."""


class Closed(ContractError):
    """The connection closed; ``data`` holds whatever arrived before."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(message)
        self.data = data


# -- primitives ---------------------------------------------------------------------------------------------------
def frame(payload: bytes) -> bytes:
    """``length (u32 BE) || payload`` with no checks: attack tests send bad lengths on purpose."""
    return struct.pack(">I", len(payload)) + payload


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    return HMAC.new(key, msg, digestmod=SHA256).digest()


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
    okm = HKDF(psk, 128, nonce_c + nonce_s, SHA256, context=INFO)
    assert isinstance(okm, bytes) and len(okm) == 128
    return Keys(okm[0:32], okm[32:64], okm[64:96], okm[96:128])


def server_proof(keys: Keys, nonce_c: bytes, nonce_s: bytes) -> bytes:
    return hmac_sha256(keys.mac_s2c, PROOF_LABEL + nonce_c + nonce_s)


def pkcs7(data: bytes) -> bytes:
    n = BLOCK - len(data) % BLOCK
    return data + bytes([n]) * n


def seal_padded(enc: bytes, mac: bytes, seq: int, iv: bytes, padded: bytes) -> bytes:
    """Record payload for an already padded plaintext (any bytes, length a multiple of 16)."""
    c = AES.new(enc, AES.MODE_CBC, iv=iv).encrypt(padded)
    t = hmac_sha256(mac, struct.pack(">Q", seq) + iv + c)
    return iv + c + t


def seal(enc: bytes, mac: bytes, seq: int, plaintext: bytes, iv: bytes | None = None) -> bytes:
    return seal_padded(enc, mac, seq, iv if iv is not None else os.urandom(BLOCK), pkcs7(plaintext))


def open_record(enc: bytes, mac: bytes, seq: int, payload: bytes) -> bytes:
    """Check and decrypt one record payload in the contract's order; raise ``ContractError`` on any failure."""
    if len(payload) < BLOCK + BLOCK + TAG_SIZE or (len(payload) - BLOCK - TAG_SIZE) % BLOCK:
        raise ContractError(f"record of {len(payload)} bytes has a bad size")
    iv, c, t = payload[:BLOCK], payload[BLOCK:-TAG_SIZE], payload[-TAG_SIZE:]
    if not hmac.compare_digest(t, hmac_sha256(mac, struct.pack(">Q", seq) + iv + c)):
        raise ContractError(f"record seq {seq} fails its MAC")
    padded = AES.new(enc, AES.MODE_CBC, iv=iv).decrypt(c)
    n = padded[-1]
    if not 1 <= n <= BLOCK or padded[-n:] != bytes([n]) * n:
        raise ContractError("bad padding")
    return padded[:-n]


def encode_json(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- a connection -----------------------------------------------------------------------------------------------
class AtmClient:
    """One TCP connection to the bank, spoken in ATM1 from the contract alone."""

    def __init__(self, host: str, port: int, psk: bytes, timeout: float = 10.0) -> None:
        self.host, self.port, self.psk, self.timeout = host, port, psk, timeout
        self.sock: socket.socket | None = None
        self.keys: Keys | None = None
        self.nonce_c = b""
        self.nonce_s = b""
        self.send_seq = 0
        self.recv_seq = 0
        self.sent_frames: list[bytes] = []  # every record frame sent, for replay tests

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
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise Closed(f"connection closed after {len(data)} of {n} bytes", bytes(data))
            data += chunk
        return bytes(data)

    def recv_frame(self) -> bytes:
        header = self.recv_exact(4)
        (length,) = struct.unpack(">I", header)
        if not 0 < length <= MAX_FRAME:
            raise ContractError(f"server sent a frame length of {length}")
        return self.recv_exact(length)

    def read_until_closed(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        """Everything the server sends until it closes: ``(data, closed)``; ``closed`` False on timeout."""
        assert self.sock is not None
        data = bytearray()
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

    def handshake(self, check_proof: bool = True) -> AtmClient:
        """ClientHello, ServerHello, keys; raise ``BadProof`` on a proof mismatch (and close)."""
        if self.sock is None:
            self.connect()
        self.send_raw(self.client_hello())
        hello = self.recv_frame()
        if len(hello) != 4 + NONCE_SIZE + 32 or hello[:4] != MAGIC:
            raise ContractError(f"bad ServerHello of {len(hello)} bytes")
        self.nonce_s, proof = hello[4:36], hello[36:]
        self.keys = derive_keys(self.psk, self.nonce_c, self.nonce_s)
        if check_proof and not hmac.compare_digest(proof, server_proof(self.keys, self.nonce_c, self.nonce_s)):
            self.close()
            raise BadProof("the bank's proof does not match: different keys")
        return self

    # -- records --
    def seal(self, plaintext: bytes, seq: int | None = None, iv: bytes | None = None) -> bytes:
        """A c2s record frame; advances ``send_seq`` only when ``seq`` is not given."""
        assert self.keys is not None
        if seq is None:
            seq = self.send_seq
            self.send_seq += 1
        return frame(seal(self.keys.enc_c2s, self.keys.mac_c2s, seq, plaintext, iv))

    def seal_padded(self, padded: bytes, seq: int | None = None, iv: bytes | None = None) -> bytes:
        assert self.keys is not None
        if seq is None:
            seq = self.send_seq
            self.send_seq += 1
        iv = iv if iv is not None else os.urandom(BLOCK)
        return frame(seal_padded(self.keys.enc_c2s, self.keys.mac_c2s, seq, iv, padded))

    def send_record(self, plaintext: bytes) -> bytes:
        data = self.seal(plaintext)
        self.sent_frames.append(data)
        self.send_raw(data)
        return data

    def recv_message(self) -> dict[str, Any]:
        assert self.keys is not None
        payload = self.recv_frame()
        plaintext = open_record(self.keys.enc_s2c, self.keys.mac_s2c, self.recv_seq, payload)
        self.recv_seq += 1
        value = json.loads(plaintext.decode("utf-8"))
        if not isinstance(value, dict):
            raise ContractError(f"response is not a JSON object: {value!r}")
        return value

    def request(self, message: Any) -> dict[str, Any]:
        self.send_record(message if isinstance(message, bytes) else encode_json(message))
        return self.recv_message()

    # -- conveniences --
    def identify(self, tarjeta: str, pin: str) -> dict[str, Any]:
        return self.request({"op": "IDENTIFICAR", "tarjeta": tarjeta, "pin": pin})

    def saldo(self) -> str:
        response = self.request({"op": "CONSULTAR"})
        if not response.get("ok"):
            raise ContractError(f"CONSULTAR failed: {response}")
        return response["saldo"]


def open_session(
    port: int, psk: bytes, tarjeta: str | None = None, pin: str | None = None, timeout: float = 10.0
) -> AtmClient:
    """A handshaken connection, identified when ``tarjeta`` is given (asserting success)."""
    client = AtmClient("127.0.0.1", port, psk, timeout).connect()
    try:
        client.handshake()
        if tarjeta is not None:
            assert pin is not None
            response = client.identify(tarjeta, pin)
            if not response.get("ok"):
                raise ContractError(f"IDENTIFICAR failed: {response}")
    except BaseException:
        client.close()
        raise
    return client


# -- a load generator, for tests that need ATM processes ------------------------------------------------------
def _depositar(args: argparse.Namespace) -> int:
    if len(args.monto) != len(args.id):
        print("--monto and --id must pair up", file=sys.stderr)
        return 2
    psk = bytes.fromhex(args.psk)
    try:
        client = open_session(args.port, psk, args.tarjeta, args.pin, timeout=args.timeout)
        with client:
            for monto, tx_id in zip(args.monto, args.id, strict=True):
                response = client.request({"op": args.op, "monto": monto, "id": tx_id})
                print(json.dumps({"id": tx_id, "monto": monto, "respuesta": response}), flush=True)
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
    d = sub.add_parser("depositar", help="identify, then send DEPOSITAR (or --op RETIRAR) for each monto/id")
    d.add_argument("--port", type=int, required=True)
    d.add_argument("--psk", required=True, help="the PSK in hex")
    d.add_argument("--tarjeta", required=True)
    d.add_argument("--pin", required=True)
    d.add_argument("--op", default="DEPOSITAR")
    d.add_argument("--monto", action="append", default=[])
    d.add_argument("--id", action="append", default=[])
    d.add_argument("--pausa", type=float, default=0.0, help="seconds between requests")
    d.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    return _depositar(args)


if __name__ == "__main__":
    sys.exit(main())

"""The independent client (``devtools/contract_client.py``) reproduces the contract's vectors byte for byte.

The server's tests talk through this client and the bench's figures come from it
(``bench/contract_load.py``), so it is pinned to the published vectors first: if it did not
reproduce them, a failing server test could be the client's fault, and a figure could measure
a variant of ATM1 instead of ATM1. Both of its record paths are checked: the literal one (a
new AES-CBC per record) and the fast one the load generator uses (one AES object per
direction), with every way a reply can break the contract.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from hashlib import scrypt
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES

from devtools import contract_client as cc

# This client speaks ATM1. While the protocol moves on, its vectors may live beside the newer ones.
_ATM1 = Path(__file__).with_name("vectors_atm1.json")
VECTORS: dict[str, Any] = json.loads(
    (_ATM1 if _ATM1.exists() else Path(__file__).with_name("vectors.json")).read_text(encoding="utf-8")
)
CARD, TX = "1111111111111111", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def h(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


def records(direction: str) -> list[dict[str, Any]]:
    return [r for r in VECTORS["records"] if r["dir"] == direction]


def payload(frame_hex: str) -> bytes:
    data = bytes.fromhex(frame_hex)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    return data[4:]


def keys() -> cc.Keys:
    return cc.derive_keys(h("psk"), h("nonce_c"), h("nonce_s"))


def direction_keys(direction: str) -> tuple[bytes, bytes]:
    return h(f"enc_{direction}"), h(f"mac_{direction}")


def ivs(direction: str) -> Iterator[bytes]:
    return iter(bytes.fromhex(r["iv"]) for r in records(direction))


# -- key file and key schedule --------------------------------------------------------------------------------------
def test_key_file_vector() -> None:
    lines = [line for line in VECTORS["llave_key_file"].splitlines() if line.strip() and not line.startswith("#")]
    assert bytes.fromhex(lines[0]) == h("psk")
    assert cc.parse_psk(VECTORS["llave_key_file"]) == h("psk")


@pytest.mark.parametrize(
    "text", ["", "# solo comentario\n", "00" * 31 + "\n", "00" * 32 + " x\n", "zz" * 32 + "\n", "00" * 33 + "\n"]
)
def test_a_bad_key_file_is_refused_naming_the_file(text: str) -> None:
    with pytest.raises(ValueError, match=r"mi_llave\.key"):
        cc.parse_psk(text, "mi_llave.key")


def test_hkdf_gives_the_vector_okm() -> None:
    assert cc.hkdf_sha256(h("psk"), h("nonce_c") + h("nonce_s"), b"ATM1 session keys", 128) == h("okm")


def test_key_schedule_and_proof() -> None:
    derived = keys()
    assert derived.okm == h("okm")
    assert (derived.enc_c2s, derived.mac_c2s, derived.enc_s2c, derived.mac_s2c) == (
        h("enc_c2s"),
        h("mac_c2s"),
        h("enc_s2c"),
        h("mac_s2c"),
    )
    assert cc.server_proof(derived, h("nonce_c"), h("nonce_s")) == h("proof")


# -- hellos ------------------------------------------------------------------------------------------------------------
def test_hello_frames() -> None:
    client = cc.AtmClient("127.0.0.1", 0, h("psk"))
    assert client.client_hello(h("nonce_c")) == h("client_hello_frame")
    assert cc.frame(cc.MAGIC + h("nonce_s") + h("proof")) == h("server_hello_frame")


def test_the_vector_server_hello_is_accepted() -> None:
    assert cc.verify_server_hello(h("psk"), h("nonce_c"), payload(VECTORS["server_hello_frame"])) == (
        h("nonce_s"),
        keys(),
    )


def test_a_server_hello_under_another_key_is_refused() -> None:
    with pytest.raises(cc.BadProof) as info:
        cc.verify_server_hello(bytes(32), h("nonce_c"), payload(VECTORS["server_hello_frame"]))
    assert info.value.kind == "prueba_invalida"


@pytest.mark.parametrize("cut", [lambda p: p[:-1], lambda p: b"ATM2" + p[4:], lambda p: p + b"\0"])
def test_a_malformed_server_hello_is_refused(cut: Any) -> None:
    with pytest.raises(cc.ContractError) as info:
        cc.verify_server_hello(h("psk"), h("nonce_c"), cut(payload(VECTORS["server_hello_frame"])))
    assert info.value.kind == "saludo_invalido"


# -- records: the literal path and the fast one ------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(len(VECTORS["records"])))
def test_records_seal_and_open(index: int) -> None:
    vector = VECTORS["records"][index]
    enc, mac = direction_keys(vector["dir"])
    plaintext = vector["plaintext_utf8"].encode("utf-8")
    expected = bytes.fromhex(vector["frame"])
    assert cc.frame(cc.seal(enc, mac, vector["seq"], plaintext, bytes.fromhex(vector["iv"]))) == expected
    assert cc.open_record(enc, mac, vector["seq"], expected[4:]) == plaintext
    with pytest.raises(cc.ContractError):
        cc.open_record(enc, mac, vector["seq"] + 1, expected[4:])


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_the_chained_sealer_gives_the_vector_frames(direction: str) -> None:
    """One reused CBC object with the first block corrected must give what a fresh CBC per record gives."""
    source = ivs(direction)
    sealer = cc.RecordSealer(*direction_keys(direction), iv_source=lambda n: next(source))
    for vector in records(direction):
        assert sealer.seq == vector["seq"]
        assert cc.frame(sealer.seal(vector["plaintext_utf8"].encode())).hex() == vector["frame"]


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_the_chained_opener_opens_the_vector_frames(direction: str) -> None:
    opener = cc.RecordOpener(*direction_keys(direction))
    for vector in records(direction):
        assert opener.open(payload(vector["frame"])) == vector["plaintext_utf8"].encode()
    assert opener.seq == len(records(direction))


def test_client_session_reproduces_c2s_frames() -> None:
    """The stateful client seals with seq 0, 1, 2 in order, exactly as the vectors."""
    client = cc.AtmClient("127.0.0.1", 0, h("psk"))
    client.nonce_c, client.nonce_s = h("nonce_c"), h("nonce_s")
    client.keys = cc.derive_keys(client.psk, client.nonce_c, client.nonce_s)
    for vector in records("c2s"):
        sealed = client.seal(vector["plaintext_utf8"].encode("utf-8"), iv=bytes.fromhex(vector["iv"]))
        assert sealed.hex() == vector["frame"]


def test_tampered_record_is_rejected() -> None:
    tampered = payload(VECTORS["tampered"]["frame"])
    with pytest.raises(cc.ContractError, match="MAC"):
        cc.open_record(*direction_keys("c2s"), 0, tampered)
    with pytest.raises(cc.ContractError) as info:
        cc.RecordOpener(*direction_keys("c2s")).open(tampered)
    assert info.value.kind == "mac_invalida"


def test_a_record_under_the_wrong_seq_is_rejected() -> None:
    """seq is implicit: the second s2c record does not pass as the first (a replay, or a loss)."""
    with pytest.raises(cc.ContractError) as info:
        cc.RecordOpener(*direction_keys("s2c")).open(payload(records("s2c")[1]["frame"]))
    assert info.value.kind == "mac_invalida"


@pytest.mark.parametrize("size", [0, 48, 63, 65, 81])
def test_a_record_of_a_bad_length_is_rejected(size: int) -> None:
    with pytest.raises(cc.ContractError) as info:
        cc.RecordOpener(*direction_keys("s2c")).open(bytes(size))
    assert info.value.kind == "registro_invalido"


def test_bad_padding_is_rejected_after_a_good_mac() -> None:
    enc, mac = direction_keys("s2c")
    iv = bytes(16)
    c = AES.new(enc, AES.MODE_CBC, iv=iv).encrypt(bytes(16))  # a block whose last byte is 0: no valid PKCS#7
    record = iv + c + cc.hmac_sha256(mac, struct.pack(">Q", 0) + iv + c)
    with pytest.raises(cc.ContractError) as info:
        cc.RecordOpener(enc, mac).open(record)
    assert info.value.kind == "relleno_invalido"


# -- messages ----------------------------------------------------------------------------------------------------------
def test_the_vector_messages_encode_the_same() -> None:
    plain = [r["plaintext_utf8"].encode() for r in records("c2s")]
    assert cc.encode_json({"op": "IDENTIFICAR", "tarjeta": CARD, "pin": "1234"}) == plain[0]
    assert cc.encode_json({"op": "CONSULTAR"}) == plain[1]
    assert cc.deposit_encoder("2222.00")(TX) == plain[2]


def test_the_vector_replies_pass_their_checks() -> None:
    replies = [cc.decode_reply(r["plaintext_utf8"].encode()) for r in records("s2c")]
    assert cc.check_reply("IDENTIFICAR", replies[0])["titular"] == "Gustavo Ali Gómez Trejo"
    assert cc.check_reply("CONSULTAR", replies[1], card=CARD)["saldo"] == "234444.00"
    after = cc.check_reply("DEPOSITAR", replies[2], TX)
    assert Decimal(after["saldo"]) == Decimal(replies[1]["saldo"]) + Decimal("2222.00")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", replies[2], "otro-id")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("CONSULTAR", replies[1], card="1111111111112222")


def test_an_error_reply_is_classified_by_its_code() -> None:
    with pytest.raises(cc.ServerError) as info:
        cc.check_reply("DEPOSITAR", {"ok": False, "error": "MONTO_INVALIDO", "mensaje": "Importe no válido."}, "x")
    assert info.value.code == "MONTO_INVALIDO"
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", {"ok": False, "error": "INVENTADO", "mensaje": "?"}, "x")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", {"ok": True, "id": "x", "saldo": 10.5}, "x")


def test_a_plaintext_that_is_not_utf8_breaks_the_channel() -> None:
    with pytest.raises(cc.ContractError) as info:
        cc.decode_reply(b'{"ok":true,"titular":"\xff"}')
    assert info.value.kind == "utf8_invalido"


@pytest.mark.parametrize("amount", ["1", "1.00", "0.5", "999999999999.99"])
def test_valid_amounts(amount: str) -> None:
    assert cc.is_request_amount(amount)


@pytest.mark.parametrize("amount", ["0", "0.00", "-1", "1.", ".5", "1.001", "1e3", "1000000000000"])
def test_invalid_amounts(amount: str) -> None:
    assert not cc.is_request_amount(amount)


def test_pin_hash() -> None:
    vector = VECTORS["pin_hash"]
    kind, n, r, p, salt, digest = vector["field"].split("$")
    assert kind == "scrypt"
    computed = scrypt(
        vector["pin"].encode("ascii"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32, maxmem=2**26
    )
    assert computed.hex() == digest


# -- a whole session against a fake server that only replays the vectors -------------------------------------------
def test_a_whole_session_sends_exactly_the_vector_bytes() -> None:
    client_sock, server_sock = socket.socketpair()
    received: list[bytes] = []

    def fake_server() -> None:
        with server_sock, server_sock.makefile("rb") as reader:
            received.append(reader.read(len(h("client_hello_frame"))))
            server_sock.sendall(h("server_hello_frame"))
            for c2s, s2c in zip(records("c2s"), records("s2c"), strict=True):
                received.append(reader.read(len(bytes.fromhex(c2s["frame"]))))
                server_sock.sendall(bytes.fromhex(s2c["frame"]))

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    client_sock.settimeout(5)
    source = ivs("c2s")
    client = cc.AtmClient("127.0.0.1", 0, h("psk"), iv_source=lambda n: next(source))
    client.sock = client_sock
    try:
        client.handshake(nonce_c=h("nonce_c"))
        assert cc.check_reply("IDENTIFICAR", client.identify(CARD, "1234"))["titular"] == "Gustavo Ali Gómez Trejo"
        assert cc.check_reply("CONSULTAR", client.request({"op": "CONSULTAR"}), card=CARD)["saldo"] == "234444.00"
        reply = cc.check_reply("DEPOSITAR", client.request(cc.deposit_encoder("2222.00")(TX)), TX)
        assert reply["saldo"] == "236666.00"
    finally:
        client.close()
        thread.join(5)
    assert received[0] == h("client_hello_frame")
    assert [r.hex() for r in received[1:]] == [r["frame"] for r in records("c2s")]


@pytest.mark.parametrize(
    ("sent", "kind"),
    [(b"\0\0\0\0" + b"x" * 10, "trama_invalida"), ((65_537).to_bytes(4, "big") + b"x" * 10, "trama_invalida"),
     (b"\0\0\0\x10abc", "trama_truncada")],
)  # fmt: skip
def test_a_frame_of_zero_or_excessive_length_or_cut_short_breaks_the_channel(sent: bytes, kind: str) -> None:
    mine, theirs = socket.socketpair()
    theirs.sendall(sent)
    theirs.close()
    client = cc.AtmClient("127.0.0.1", 0, h("psk"))
    client.sock = mine
    with client, pytest.raises(cc.ContractError) as info:
        client.recv_frame()
    assert info.value.kind == kind

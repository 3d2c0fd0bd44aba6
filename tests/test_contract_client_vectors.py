"""The independent client (``devtools/contract_client.py``) reproduces the contract's ATM2 vectors byte for byte.

The server's tests talk through this client and the bench's figures come from it
(``bench/contract_load.py``), so it is pinned to the published vectors first: if it did not
reproduce them, a failing server test could be the client's fault, and a figure could measure
a variant of ATM2 instead of ATM2. The vectors fix both ephemeral keys and both nonces, so the
whole handshake (hello frames, X25519, transcript hash, HKDF, proof) is checked, then both of
its record paths: the literal one (a new AES-CBC per record) and the fast one the load
generator uses (one AES object per direction), with every way a reply can break the contract.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from Crypto.Cipher import AES

from devtools import contract_client as cc

VECTORS: dict[str, Any] = json.loads(Path(__file__).with_name("vectors.json").read_text(encoding="utf-8"))
CARD, TX, REVERSAL = "1111111111111111", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "a1b2c3d4e5f60718293a4b5c6d7e8f90"
HOLDER = "Gustavo Ali Gómez Trejo"


def h(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


def records(direction: str) -> list[dict[str, Any]]:
    return [r for r in VECTORS["records"] if r["dir"] == direction]


def payload(frame_hex: str) -> bytes:
    data = bytes.fromhex(frame_hex)
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    return data[4:]


def vector_key() -> cc.TerminalKey:
    return cc.TerminalKey(VECTORS["terminal_id"], VECTORS["version"], h("terminal_key"))


def client_hello_payload() -> bytes:
    return payload(VECTORS["client_hello_frame"])


def server_hello_payload() -> bytes:
    return payload(VECTORS["server_hello_frame"])


def keys() -> cc.Keys:
    return cc.derive_keys(h("terminal_key"), h("dh"), h("nonce_c"), h("nonce_s"), h("transcript_hash"))


def direction_keys(direction: str) -> tuple[bytes, bytes]:
    return h(f"enc_{direction}"), h(f"mac_{direction}")


def ivs(direction: str) -> Iterator[bytes]:
    return iter(bytes.fromhex(r["iv"]) for r in records(direction))


# -- the key file ---------------------------------------------------------------------------------------------------
def test_key_file_vector() -> None:
    key = cc.parse_key_file(VECTORS["atm_key_file"])
    assert key == vector_key()
    assert h("terminal_key").hex() not in repr(key)


def test_a_key_file_round_trips_and_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "llave.key"
    path.write_text("old\n", encoding="utf-8")
    cc.write_key_file(path, vector_key())
    assert cc.load_key_file(path) == vector_key()
    if os.name != "nt":
        assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["llave.key"], "no temporary file left behind"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# solo comentario\n",
        "00" * 32 + "\n",  # an ATM1 key file
        "ATM2 SUC-CENTRO-01 1 " + "00" * 31 + "\n",
        "ATM2 SUC-CENTRO-01 1 " + "zz" * 32 + "\n",
        "ATM2 SUC-CENTRO-01 1 " + "00" * 32 + " x\n",
        "ATM2  SUC-CENTRO-01 1 " + "00" * 32 + "\n",
        "ATM2 SUC-CENTRO-01 1 " + "00" * 32 + " \n",
        "ATM1 SUC-CENTRO-01 1 " + "00" * 32 + "\n",
        "ATM2 suc-centro-01 1 " + "00" * 32 + "\n",
        "ATM2 " + "A" * 33 + " 1 " + "00" * 32 + "\n",
        "ATM2 SUC-CENTRO-01 0 " + "00" * 32 + "\n",
        "ATM2 SUC-CENTRO-01 4294967296 " + "00" * 32 + "\n",
        "ATM2 SUC-CENTRO-01 -1 " + "00" * 32 + "\n",
        "ATM2 SUC-CENTRO-01 1\n",
    ],
)
def test_a_bad_key_file_is_refused_naming_the_file_never_the_key(text: str) -> None:
    with pytest.raises(ValueError, match=r"mi_llave\.key") as info:
        cc.parse_key_file(text, "mi_llave.key")
    assert "00" * 16 not in str(info.value)


# -- the handshake --------------------------------------------------------------------------------------------------
def test_the_ephemeral_keys_and_dh() -> None:
    client, server = cc.Ephemeral(h("ephemeral_private_c")), cc.Ephemeral(h("ephemeral_private_s"))
    assert (client.public, server.public) == (h("e_c"), h("e_s"))
    assert client.exchange(h("e_s")) == server.exchange(h("e_c")) == h("dh")
    assert h("ephemeral_private_c").hex() not in repr(client)


@pytest.mark.parametrize("point", [bytes(32), (1).to_bytes(32, "little")])
def test_a_small_order_server_key_is_a_protocol_error(point: bytes) -> None:
    with pytest.raises(cc.ContractError) as info:
        cc.Ephemeral(h("ephemeral_private_c")).exchange(point)
    assert info.value.kind == "dh_invalido"


def test_hello_frames() -> None:
    client = cc.AtmClient("127.0.0.1", 0, vector_key())
    assert client.client_hello(h("nonce_c"), h("ephemeral_private_c")) == h("client_hello_frame")
    assert client.hello == client_hello_payload()
    assert (client.e_c, client.nonce_c) == (h("e_c"), h("nonce_c"))
    assert cc.frame(cc.MAGIC + h("e_s") + h("nonce_s") + h("proof")) == h("server_hello_frame")
    assert len(server_hello_payload()) == cc.SERVER_HELLO_SIZE == 100


def test_transcript_hash() -> None:
    assert cc.transcript_hash(client_hello_payload(), h("e_s"), h("nonce_s")) == h("transcript_hash")
    expected = hashlib.sha256(client_hello_payload() + server_hello_payload()[:68]).digest()
    assert h("transcript_hash") == expected, "th covers the ClientHello and the ServerHello up to the proof"


def test_key_schedule_and_proof() -> None:
    derived = keys()
    assert derived.okm == h("okm")
    assert (derived.enc_c2s, derived.mac_c2s, derived.enc_s2c, derived.mac_s2c) == (
        h("enc_c2s"),
        h("mac_c2s"),
        h("enc_s2c"),
        h("mac_s2c"),
    )
    assert cc.server_proof(derived, h("transcript_hash")) == h("proof")
    assert h("enc_c2s").hex() not in repr(derived)


def test_the_vector_server_hello_is_accepted() -> None:
    session = cc.verify_server_hello(
        h("terminal_key"), client_hello_payload(), cc.Ephemeral(h("ephemeral_private_c")), server_hello_payload()
    )
    assert (session.e_s, session.nonce_s, session.th, session.keys) == (
        h("e_s"),
        h("nonce_s"),
        h("transcript_hash"),
        keys(),
    )


def test_a_server_hello_under_another_key_is_a_bad_proof() -> None:
    with pytest.raises(cc.BadProof) as info:
        cc.verify_server_hello(
            bytes(32), client_hello_payload(), cc.Ephemeral(h("ephemeral_private_c")), server_hello_payload()
        )
    assert info.value.kind == "prueba_invalida"
    assert "llaves distintas" in str(info.value)


def test_the_same_hello_with_version_2_does_not_verify() -> None:
    """The vectors' note: the version is in the transcript, so another version derives other keys."""
    client = cc.AtmClient("127.0.0.1", 0, cc.TerminalKey(VECTORS["terminal_id"], 2, h("terminal_key")))
    client.client_hello(h("nonce_c"), h("ephemeral_private_c"))
    assert client.hello != client_hello_payload() and client.hello[-64:] == client_hello_payload()[-64:]
    with pytest.raises(cc.BadProof):
        cc.verify_server_hello(
            h("terminal_key"), client.hello, cc.Ephemeral(h("ephemeral_private_c")), server_hello_payload()
        )


@pytest.mark.parametrize("cut", [lambda p: p[:-1], lambda p: b"ATM1" + p[4:], lambda p: p + b"\0"])
def test_a_malformed_server_hello_is_refused(cut: Any) -> None:
    with pytest.raises(cc.ContractError) as info:
        cc.verify_server_hello(
            h("terminal_key"),
            client_hello_payload(),
            cc.Ephemeral(h("ephemeral_private_c")),
            cut(server_hello_payload()),
        )
    assert info.value.kind == "saludo_invalido"


def test_fresh_handshakes_use_fresh_ephemeral_keys_and_nonces() -> None:
    client = cc.AtmClient("127.0.0.1", 0, vector_key())
    client.client_hello()
    first = (client.e_c, client.nonce_c)
    client.client_hello()
    assert client.e_c != first[0] and client.nonce_c != first[1]
    assert client.hello[:22] == client_hello_payload()[:22], "magic, id and version as in the vector"


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
    """The stateful client seals with seq 0, 1, 2, 3 in order, exactly as the vectors."""
    client = cc.AtmClient("127.0.0.1", 0, vector_key())
    client.keys = keys()
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


def test_a_record_under_the_other_direction_keys_is_rejected() -> None:
    with pytest.raises(cc.ContractError) as info:
        cc.RecordOpener(*direction_keys("s2c")).open(payload(records("c2s")[0]["frame"]))
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
    assert cc.encode_json({"op": "RENOVAR_LLAVE"}) == plain[0]
    assert cc.encode_json({"op": "IDENTIFICAR", "tarjeta": CARD, "pin": "1234"}) == plain[1]
    assert cc.deposit_encoder("2222.00")(TX) == plain[2]
    reversal = {"op": "REVERSAR", "id": REVERSAL, "monto": "500.00", "motivo": "DISPENSADOR"}
    assert cc.encode_json(reversal) == plain[3]


def test_the_deposit_encoder_refuses_what_the_grammar_does() -> None:
    with pytest.raises(ValueError):
        cc.deposit_encoder("0.00")
    with pytest.raises(ValueError):
        cc.deposit_encoder("1.00")('a"b')


def test_the_vector_replies_pass_their_checks() -> None:
    replies = [cc.decode_reply(r["plaintext_utf8"].encode()) for r in records("s2c")]
    assert cc.check_reply("RENOVAR_LLAVE", replies[0])["version"] == 1
    assert cc.check_reply("IDENTIFICAR", replies[1])["titular"] == HOLDER
    assert cc.check_reply("DEPOSITAR", replies[2], TX)["saldo"] == "236666.00"
    assert cc.check_reply("REVERSAR", replies[3], REVERSAL)["reversado"] == "500.00"
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", replies[2], "otro-id")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("REVERSAR", replies[3], TX)


HISTORY = [
    {"id": TX, "fecha": "2026-11-23T10:15:02-06:00", "tipo": "TRANSFERENCIA_RECIBIDA", "monto": "5.00", "saldo": "6.00",
     "contraparte": "************2222"},
    {"id": "x", "fecha": "2026-11-23T10:15:01+00:00", "tipo": "DEPOSITO", "monto": "1.00", "saldo": "1.00"},
]  # fmt: skip
GOOD_TOTALS = {
    "ok": True,
    "desde": "2026-11-23T10:15:02-06:00",
    **{name: {"n": 1, "monto": "10.00"} for name in cc.TOTALS},
}


@pytest.mark.parametrize(
    ("op", "reply", "card"),
    [
        ("CONSULTAR", {"ok": True, "titular": HOLDER, "tarjeta": "************1111", "saldo": "1.00"}, CARD),
        ("TRANSFERIR", {"ok": True, "id": TX, "saldo": "1.00", "destino": "************2222"}, "1111111111112222"),
        ("TOTALES", GOOD_TOTALS, None),
        ("TOTALES", {**GOOD_TOTALS, "hasta": "2026-11-24T10:15:02-06:00", "repetida": True}, None),
        ("RENOVAR_LLAVE", {"ok": True, "version": 2, "llave": "ab" * 32}, None),
        ("MOVIMIENTOS", {"ok": True, "movimientos": []}, None),
        ("MOVIMIENTOS", {"ok": True, "movimientos": HISTORY}, None),
        ("CAMBIAR_PIN", {"ok": True}, None),
    ],
)
def test_good_replies_of_every_op_pass(op: str, reply: dict[str, Any], card: str | None) -> None:
    assert cc.check_reply(op, reply, TX, card) is reply


@pytest.mark.parametrize(
    ("op", "reply", "card"),
    [
        ("CONSULTAR", {"ok": True, "titular": HOLDER, "tarjeta": "************1112", "saldo": "1.00"}, CARD),
        ("CONSULTAR", {"ok": True, "titular": HOLDER, "tarjeta": CARD, "saldo": "1.00"}, None),
        ("DEPOSITAR", {"ok": True, "id": TX, "saldo": 10.5}, None),
        ("DEPOSITAR", {"ok": True, "id": TX, "saldo": "10.5"}, None),
        ("DEPOSITAR", {"ok": True, "id": TX, "saldo": "10.50", "repetida": "no"}, None),
        ("TRANSFERIR", {"ok": True, "id": TX, "saldo": "1.00", "destino": "1111111111112222"}, None),
        ("REVERSAR", {"ok": True, "id": TX, "reversado": 0}, None),
        ("TOTALES", {**GOOD_TOTALS, "desde": "2026-11-23T10:15:02"}, None),
        ("TOTALES", {**GOOD_TOTALS, "retiros": {"n": "1", "monto": "1.00"}}, None),
        ("TOTALES", {**GOOD_TOTALS, "depositos": {"n": 1}}, None),
        ("RENOVAR_LLAVE", {"ok": True, "version": 0}, None),
        ("RENOVAR_LLAVE", {"ok": True, "version": True}, None),
        ("RENOVAR_LLAVE", {"ok": True, "version": 2, "llave": "ab" * 31}, None),
        ("MOVIMIENTOS", {"ok": True, "movimientos": {}}, None),
        ("MOVIMIENTOS", {"ok": True, "movimientos": [{"id": "x", "fecha": "2026-11-23T10:15:01+00:00",
                                                       "tipo": "OTRO", "monto": "1.00", "saldo": "1.00"}]}, None),
        ("SALIR", {"ok": "true"}, None),
    ],
)  # fmt: skip
def test_replies_that_break_section_5_are_reply_errors(op: str, reply: dict[str, Any], card: str | None) -> None:
    with pytest.raises(cc.ReplyError):
        cc.check_reply(op, reply, TX, card)


def test_an_error_reply_is_classified_by_its_code() -> None:
    for code in ("CAJERO_SUSPENDIDO", "DESTINO_INVALIDO", "ID_ANULADO", "REVERSO_INVALIDO", "MONTO_INVALIDO"):
        with pytest.raises(cc.ServerError) as info:
            cc.check_reply("DEPOSITAR", {"ok": False, "error": code, "mensaje": "No."}, "x")
        assert info.value.code == code
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", {"ok": False, "error": "INVENTADO", "mensaje": "?"}, "x")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("IDENTIFICAR", {"ok": False, "error": "PIN_INCORRECTO", "mensaje": "?"})


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


def test_pin_hashes_of_both_forms() -> None:
    """LEDGER.md's two forms, recomputed from the page alone (the bench writes peppered ones)."""
    pepper = hmac.digest(h("bank_key"), b"ATM2 PIN pepper", "sha256")
    assert pepper == h("pin_pepper")
    for name, password in (
        ("pin_hash", VECTORS["pin_hash"]["pin"].encode("ascii")),
        ("pin_hash_peppered", hmac.digest(pepper, VECTORS["pin_hash_peppered"]["pin"].encode("ascii"), "sha256")),
    ):
        kind, n, r, p, salt, digest = VECTORS[name]["field"].split("$")
        assert kind == ("scrypt-p" if name.endswith("peppered") else "scrypt")
        computed = hashlib.scrypt(password, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32,
                                  maxmem=2**26)  # fmt: skip
        assert computed.hex() == digest


# -- whole sessions against a fake server that only replays the vectors -------------------------------------------
def _fake_server(sock: socket.socket, received: list[bytes], steps: int) -> None:
    with sock, sock.makefile("rb") as reader:
        received.append(reader.read(len(h("client_hello_frame"))))
        sock.sendall(h("server_hello_frame"))
        for c2s, s2c in list(zip(records("c2s"), records("s2c"), strict=True))[:steps]:
            received.append(reader.read(len(bytes.fromhex(c2s["frame"]))))
            sock.sendall(bytes.fromhex(s2c["frame"]))


def test_a_whole_session_sends_exactly_the_vector_bytes() -> None:
    client_sock, server_sock = socket.socketpair()
    received: list[bytes] = []
    thread = threading.Thread(target=_fake_server, args=(server_sock, received, 4), daemon=True)
    thread.start()
    client_sock.settimeout(5)
    source = ivs("c2s")
    client = cc.AtmClient("127.0.0.1", 0, vector_key(), iv_source=lambda n: next(source))
    client.sock = client_sock
    try:
        client.handshake(nonce_c=h("nonce_c"), ephemeral_private=h("ephemeral_private_c"))
        assert client.th == h("transcript_hash") and client.keys == keys()
        assert client.renew_key() is None
        assert cc.check_reply("IDENTIFICAR", client.identify(CARD, "1234"))["titular"] == HOLDER
        reply = cc.check_reply("DEPOSITAR", client.request(cc.deposit_encoder("2222.00")(TX)), TX)
        assert Decimal(reply["saldo"]) == Decimal("236666.00")
        reversal = {"op": "REVERSAR", "id": REVERSAL, "monto": "500.00", "motivo": "DISPENSADOR"}
        assert cc.check_reply("REVERSAR", client.request(reversal), REVERSAL)["reversado"] == "500.00"
    finally:
        client.close()
        thread.join(5)
    assert received[0] == h("client_hello_frame")
    assert [r.hex() for r in received[1:]] == [r["frame"] for r in records("c2s")]


def test_a_server_hello_under_another_key_closes_and_says_wrong_key() -> None:
    client_sock, server_sock = socket.socketpair()
    thread = threading.Thread(target=_fake_server, args=(server_sock, [], 0), daemon=True)
    thread.start()
    client_sock.settimeout(5)
    client = cc.AtmClient("127.0.0.1", 0, cc.TerminalKey(VECTORS["terminal_id"], 1, bytes(32)))
    client.sock = client_sock
    with pytest.raises(cc.BadProof):
        client.handshake(nonce_c=h("nonce_c"), ephemeral_private=h("ephemeral_private_c"))
    assert client.sock is None, "the connection is closed"
    thread.join(5)


@pytest.mark.parametrize("reset", [False, True])
def test_a_close_before_the_server_hello_is_a_refusal_not_a_wrong_key(reset: bool) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(200)
            if reset:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    key = vector_key()
    with (
        listener,
        pytest.raises(cc.HelloRefused) as info,
        cc.AtmClient("127.0.0.1", listener.getsockname()[1], key, 5) as c,
    ):
        c.handshake()
    thread.join(5)
    assert info.value.kind == "saludo_rechazado"
    assert not isinstance(info.value, cc.BadProof)
    assert "SUC-CENTRO-01" in str(info.value) and key.key.hex() not in str(info.value)


@contextlib.contextmanager
def _renewal_client(reply: dict[str, Any]) -> Iterator[cc.AtmClient]:
    """A client whose next reply is ``reply``, sealed under the vector keys (no server needed)."""
    client = cc.AtmClient("127.0.0.1", 0, vector_key(), keep_frames=False)
    client.keys = keys()
    mine, theirs = socket.socketpair()
    client.sock = mine
    theirs.sendall(cc.frame(cc.RecordSealer(*direction_keys("s2c")).seal(cc.encode_json(reply))))
    with theirs, client:
        yield client


def test_renew_key_hands_over_the_pending_key() -> None:
    with _renewal_client({"ok": True, "version": 2, "llave": "cd" * 32}) as client:
        new = client.renew_key()
    assert new == cc.TerminalKey(VECTORS["terminal_id"], 2, bytes.fromhex("cd" * 32))


@pytest.mark.parametrize("reply", [{"ok": True, "version": 2}, {"ok": True, "version": 1, "llave": "cd" * 32}])
def test_renew_key_checks_the_versions(reply: dict[str, Any]) -> None:
    with _renewal_client(reply) as client, pytest.raises(cc.ReplyError):
        client.renew_key()


@pytest.mark.parametrize(
    ("sent", "kind"),
    [(b"\0\0\0\0" + b"x" * 10, "trama_invalida"), ((65_537).to_bytes(4, "big") + b"x" * 10, "trama_invalida"),
     (b"\0\0\0\x10abc", "trama_truncada")],
)  # fmt: skip
def test_a_frame_of_zero_or_excessive_length_or_cut_short_breaks_the_channel(sent: bytes, kind: str) -> None:
    mine, theirs = socket.socketpair()
    theirs.sendall(sent)
    theirs.close()
    client = cc.AtmClient("127.0.0.1", 0, vector_key())
    client.sock = mine
    with client, pytest.raises(cc.ContractError) as info:
        client.recv_frame()
    assert info.value.kind == kind


def test_the_client_imports_nothing_of_the_project() -> None:
    """Its value is its independence: a bug the server and the ATM share cannot hide behind it."""
    source = Path(cc.__file__).read_text(encoding="utf-8")
    for package in ("common", "bank_server", "atm_gui"):
        assert f"from {package}" not in source and f"import {package}" not in source

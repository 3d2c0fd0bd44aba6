"""The contract's ATM2 vectors (``vectors.json``, from an independent implementation), byte for byte.

Every field of the file is checked: ``test_every_vector_is_checked``
fails if the contract adds one that no test here reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bank_server.pins import hash_pin, needs_rehash, parse_field, pin_pepper, verify_pin
from common.channel import RecordOpener, RecordSealer
from common.endpoints import (
    ClientConnection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    ServerConnection,
    SessionConfirmed,
    State,
)
from common.errors import RemoteProtocolError, WrongKeyError
from common.framing import FrameDecoder, encode_frame
from common.handshake import (
    ClientHello,
    EphemeralKey,
    ServerHello,
    derive_okm,
    derive_session_keys,
    proof_matches,
    server_proof,
    transcript_hash,
)
from common.keys import TerminalKey, parse_bank_key, parse_terminal_key

V = json.loads((Path(__file__).with_name("vectors.json")).read_text(encoding="utf-8"))
CHECKED = {
    "about",
    "terminal_id",
    "version",
    "terminal_key",
    "atm_key_file",
    "ephemeral_private_c",
    "ephemeral_private_s",
    "e_c",
    "e_s",
    "dh",
    "nonce_c",
    "nonce_s",
    "transcript_hash",
    "okm",
    "enc_c2s",
    "mac_c2s",
    "enc_s2c",
    "mac_s2c",
    "proof",
    "client_hello_frame",
    "server_hello_frame",
    "records",
    "tampered",
    "wrong_version_note",
    "bank_key",
    "bank_key_file",
    "pin_pepper",
    "pin_hash",
    "pin_hash_peppered",
}


def h(name: str) -> bytes:
    return bytes.fromhex(V[name])


KEY = TerminalKey(V["terminal_id"], V["version"], h("terminal_key"))
C2S = [r for r in V["records"] if r["dir"] == "c2s"]
S2C = [r for r in V["records"] if r["dir"] == "s2c"]


def fixed(*chunks: bytes) -> Callable[[int], bytes]:
    """A 'random' source that hands out the given bytes in order (and insists on the sizes)."""
    queue = list(chunks)

    def take(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return take


def unframe(frame_hex: str) -> bytes:
    (payload,) = FrameDecoder().feed(bytes.fromhex(frame_hex))
    return payload


def vector_keys():
    th = h("transcript_hash")
    return derive_session_keys(h("terminal_key"), h("dh"), h("nonce_c"), h("nonce_s"), th)


def test_every_vector_is_checked() -> None:
    assert set(V) == CHECKED
    assert V["about"].startswith("ATM2")


def test_atm_key_file_vector() -> None:
    assert parse_terminal_key(V["atm_key_file"], "llave.key") == KEY


def test_ephemeral_public_keys_and_dh() -> None:
    client = EphemeralKey(fixed(h("ephemeral_private_c")))
    server = EphemeralKey(fixed(h("ephemeral_private_s")))
    assert client.public == h("e_c")
    assert server.public == h("e_s")
    assert client.exchange(h("e_s")) == h("dh")
    assert server.exchange(h("e_c")) == h("dh")


def test_hello_payloads() -> None:
    hello = ClientHello(V["terminal_id"], V["version"], h("e_c"), h("nonce_c"))
    assert encode_frame(hello.encode()).hex() == V["client_hello_frame"]
    assert ClientHello.parse(unframe(V["client_hello_frame"])) == hello
    reply = ServerHello(h("e_s"), h("nonce_s"), h("proof"))
    assert encode_frame(reply.encode()).hex() == V["server_hello_frame"]
    assert ServerHello.parse(unframe(V["server_hello_frame"])) == reply


def test_transcript_hash_key_schedule_and_proof() -> None:
    th = transcript_hash(unframe(V["client_hello_frame"]), h("e_s"), h("nonce_s"))
    assert th == h("transcript_hash")
    assert derive_okm(h("terminal_key"), h("dh"), h("nonce_c"), h("nonce_s"), th) == h("okm")
    keys = vector_keys()
    assert (keys.enc_c2s, keys.mac_c2s, keys.enc_s2c, keys.mac_s2c) == (
        h("enc_c2s"),
        h("mac_c2s"),
        h("enc_s2c"),
        h("mac_s2c"),
    )
    assert server_proof(keys, th) == h("proof")
    assert proof_matches(keys, th, h("proof"))


@pytest.mark.parametrize("record", V["records"], ids=lambda r: f"{r['dir']}-{r['seq']}")
def test_record_frames(record) -> None:
    keys = vector_keys()
    enc, mac = (keys.enc_c2s, keys.mac_c2s) if record["dir"] == "c2s" else (keys.enc_s2c, keys.mac_s2c)
    sealer = RecordSealer(enc, mac)
    sealer.seq = record["seq"]
    plaintext = record["plaintext_utf8"].encode("utf-8")
    assert encode_frame(sealer.seal(plaintext, iv=bytes.fromhex(record["iv"]))).hex() == record["frame"]
    opener = RecordOpener(enc, mac)
    opener.seq = record["seq"]
    assert opener.open(unframe(record["frame"])) == plaintext


def handshaken_pair() -> tuple[ClientConnection, ServerConnection]:
    """Both ends with the vectors' ephemeral keys, nonces and IVs, past the handshake."""
    client = ClientConnection(
        KEY, random=fixed(h("ephemeral_private_c"), h("nonce_c"), *[bytes.fromhex(r["iv"]) for r in C2S])
    )
    server = ServerConnection(
        random=fixed(h("ephemeral_private_s"), h("nonce_s"), *[bytes.fromhex(r["iv"]) for r in S2C])
    )
    client.start()
    hello = client.data_to_send()
    assert hello.hex() == V["client_hello_frame"]
    assert server.receive_data(hello) == [HelloReceived(V["terminal_id"], V["version"])]
    assert server.data_to_send() == b""  # nothing before the bank has looked the key up
    server.accept(KEY)
    reply = server.data_to_send()
    assert reply.hex() == V["server_hello_frame"]
    assert client.receive_data(reply) == [HandshakeComplete()]
    return client, server


def test_whole_conversation_matches_vectors() -> None:
    """Client and server connections, with the vectors' randomness, produce the vectors' bytes."""
    client, server = handshaken_pair()
    assert server.state is State.AWAIT_CONFIRM
    for n, (request, response) in enumerate(zip(C2S, S2C, strict=True)):
        client.send_message(request["plaintext_utf8"])
        wire = client.data_to_send()
        assert wire.hex() == request["frame"]
        confirmed = [SessionConfirmed(V["terminal_id"], V["version"])] if n == 0 else []
        assert server.receive_data(wire) == [*confirmed, MessageReceived(request["plaintext_utf8"])]
        server.send_message(response["plaintext_utf8"])
        wire = server.data_to_send()
        assert wire.hex() == response["frame"]
        assert client.receive_data(wire) == [MessageReceived(response["plaintext_utf8"])]


def test_tampered_vector_is_rejected() -> None:
    _client, server = handshaken_pair()
    with pytest.raises(RemoteProtocolError):
        server.receive_data(bytes.fromhex(V["tampered"]["frame"]))
    assert server.state is State.CLOSED
    keys = vector_keys()
    with pytest.raises(RemoteProtocolError):
        RecordOpener(keys.enc_c2s, keys.mac_c2s).open(unframe(V["tampered"]["frame"]))


def test_wrong_version_does_not_verify_the_proof() -> None:
    """wrong_version_note: the same ClientHello with version 2 derives other keys, so the proof fails."""
    assert "version 2" in V["wrong_version_note"]
    client = ClientConnection(
        TerminalKey(V["terminal_id"], 2, h("terminal_key")), random=fixed(h("ephemeral_private_c"), h("nonce_c"))
    )
    client.start()
    hello = client.data_to_send()
    assert hello != bytes.fromhex(V["client_hello_frame"])
    assert ClientHello.parse(hello[4:]) == ClientHello(V["terminal_id"], 2, h("e_c"), h("nonce_c"))
    with pytest.raises(WrongKeyError):
        client.receive_data(bytes.fromhex(V["server_hello_frame"]))
    assert client.state is State.CLOSED


def test_bank_key_file_and_pepper() -> None:
    assert parse_bank_key(V["bank_key_file"], "banco.key") == h("bank_key")
    assert pin_pepper(h("bank_key")) == h("pin_pepper")


def test_unpeppered_pin_hash_vector() -> None:
    pepper = h("pin_pepper")
    field = V["pin_hash"]["field"]
    assert verify_pin(V["pin_hash"]["pin"], field, pepper)
    assert not verify_pin("4321", field, pepper)
    assert needs_rehash(field)


def test_peppered_pin_hash_vector() -> None:
    pepper = h("pin_pepper")
    field = V["pin_hash_peppered"]["field"]
    parsed = parse_field(field)
    assert parsed.peppered
    assert hash_pin(V["pin_hash_peppered"]["pin"], pepper, parsed.n, parsed.r, parsed.p, salt=parsed.salt) == field
    assert verify_pin(V["pin_hash_peppered"]["pin"], field, pepper)
    assert not verify_pin("4321", field, pepper)
    assert not verify_pin(V["pin_hash_peppered"]["pin"], field, bytes(32))  # another bank key: no match
    assert not needs_rehash(field)

"""ATM1 (retired): the old vectors, reproduced byte for byte, while callers still use ATM1.

Delete this file and ``vectors_atm1.json`` when the callers move to ATM2
(``test_protocol_vectors.py`` covers the contract's current vectors).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.channel import RecordOpener, RecordSealer, SessionKeys, server_proof
from common.connection import ClientConnection, HandshakeComplete, MessageReceived, ServerConnection
from common.errors import RemoteProtocolError
from common.framing import FrameDecoder, encode_frame
from common.keyfile import parse_key_text

V = json.loads((Path(__file__).with_name("vectors_atm1.json")).read_text(encoding="utf-8"))
PSK = bytes.fromhex(V["psk"])
NONCE_C = bytes.fromhex(V["nonce_c"])
NONCE_S = bytes.fromhex(V["nonce_s"])


def fixed(*chunks: bytes):
    """A 'random' source that hands out the given bytes in order."""
    queue = list(chunks)

    def take(n: int) -> bytes:
        chunk = queue.pop(0)
        assert len(chunk) == n
        return chunk

    return take


def test_key_derivation_and_proof():
    keys = SessionKeys.derive(PSK, NONCE_C, NONCE_S)
    okm = keys.enc_c2s + keys.mac_c2s + keys.enc_s2c + keys.mac_s2c
    assert okm.hex() == V["okm"]
    assert keys.enc_c2s.hex() == V["enc_c2s"]
    assert keys.mac_s2c.hex() == V["mac_s2c"]
    assert server_proof(keys, NONCE_C, NONCE_S).hex() == V["proof"]


def test_hello_frames_from_connections():
    client = ClientConnection(PSK, random=fixed(NONCE_C))
    client.start()
    hello = client.data_to_send()
    assert hello.hex() == V["client_hello_frame"]
    server = ServerConnection(PSK, random=fixed(NONCE_S))
    assert server.receive_data(hello) == [HandshakeComplete()]
    reply = server.data_to_send()
    assert reply.hex() == V["server_hello_frame"]
    assert client.receive_data(reply) == [HandshakeComplete()]


@pytest.mark.parametrize("record", V["records"], ids=lambda r: f"{r['dir']}-{r['seq']}")
def test_record_frames(record):
    keys = SessionKeys.derive(PSK, NONCE_C, NONCE_S)
    enc, mac = (keys.enc_c2s, keys.mac_c2s) if record["dir"] == "c2s" else (keys.enc_s2c, keys.mac_s2c)
    sealer = RecordSealer(enc, mac)
    sealer.seq = record["seq"]
    plaintext = record["plaintext_utf8"].encode("utf-8")
    frame = encode_frame(sealer.seal(plaintext, iv=bytes.fromhex(record["iv"])))
    assert frame.hex() == record["frame"]
    opener = RecordOpener(enc, mac)
    opener.seq = record["seq"]
    (payload,) = FrameDecoder().feed(bytes.fromhex(record["frame"]))
    assert opener.open(payload) == plaintext


def test_whole_conversation_matches_vectors():
    """Client and server connections, with the vectors' nonces and IVs, produce the vectors' bytes."""
    c2s = [r for r in V["records"] if r["dir"] == "c2s"]
    s2c = [r for r in V["records"] if r["dir"] == "s2c"]
    client = ClientConnection(PSK, random=fixed(NONCE_C, *[bytes.fromhex(r["iv"]) for r in c2s]))
    server = ServerConnection(PSK, random=fixed(NONCE_S, *[bytes.fromhex(r["iv"]) for r in s2c]))
    client.start()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    for request, response in zip(c2s, s2c, strict=False):
        client.send_message(request["plaintext_utf8"])
        wire = client.data_to_send()
        assert wire.hex() == request["frame"]
        assert server.receive_data(wire) == [MessageReceived(request["plaintext_utf8"])]
        server.send_message(response["plaintext_utf8"])
        wire = server.data_to_send()
        assert wire.hex() == response["frame"]
        assert client.receive_data(wire) == [MessageReceived(response["plaintext_utf8"])]


def test_tampered_vector_is_rejected():
    client = ClientConnection(PSK, random=fixed(NONCE_C))
    server = ServerConnection(PSK, random=fixed(NONCE_S))
    client.start()
    server.receive_data(client.data_to_send())
    with pytest.raises(RemoteProtocolError):
        server.receive_data(bytes.fromhex(V["tampered"]["frame"]))


def test_pin_hash_vector():
    from bank_server.pins import verify_pin

    assert verify_pin(V["pin_hash"]["pin"], V["pin_hash"]["field"])
    assert not verify_pin("4321", V["pin_hash"]["field"])


def test_key_file_vector():
    assert parse_key_text(V["llave_key_file"], "llave.key") == PSK

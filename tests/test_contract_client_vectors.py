"""The independent contract client reproduces vectors.json byte for byte.

If it did not, a failure in the server tests could be the client's fault;
these checks pin the client to the contract's published vectors first.
"""

from __future__ import annotations

import json
from hashlib import scrypt
from pathlib import Path

import pytest

from devtools import contract_client as cc

VECTORS = json.loads((Path(__file__).with_name("vectors.json")).read_text(encoding="utf-8"))


def h(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


def test_key_schedule_and_proof() -> None:
    keys = cc.derive_keys(h("psk"), h("nonce_c"), h("nonce_s"))
    assert keys.okm == h("okm")
    assert (keys.enc_c2s, keys.mac_c2s, keys.enc_s2c, keys.mac_s2c) == (
        h("enc_c2s"),
        h("mac_c2s"),
        h("enc_s2c"),
        h("mac_s2c"),
    )
    assert cc.server_proof(keys, h("nonce_c"), h("nonce_s")) == h("proof")


def test_hello_frames() -> None:
    client = cc.AtmClient("127.0.0.1", 0, h("psk"))
    assert client.client_hello(h("nonce_c")) == h("client_hello_frame")
    assert cc.frame(cc.MAGIC + h("nonce_s") + h("proof")) == h("server_hello_frame")


@pytest.mark.parametrize("index", range(len(VECTORS["records"])))
def test_records_seal_and_open(index: int) -> None:
    vector = VECTORS["records"][index]
    keys = cc.derive_keys(h("psk"), h("nonce_c"), h("nonce_s"))
    enc, mac = (keys.enc_c2s, keys.mac_c2s) if vector["dir"] == "c2s" else (keys.enc_s2c, keys.mac_s2c)
    plaintext = vector["plaintext_utf8"].encode("utf-8")
    expected = bytes.fromhex(vector["frame"])
    sealed = cc.frame(cc.seal(enc, mac, vector["seq"], plaintext, bytes.fromhex(vector["iv"])))
    assert sealed == expected
    assert cc.open_record(enc, mac, vector["seq"], expected[4:]) == plaintext
    with pytest.raises(cc.ContractError):
        cc.open_record(enc, mac, vector["seq"] + 1, expected[4:])


def test_tampered_record_is_rejected() -> None:
    keys = cc.derive_keys(h("psk"), h("nonce_c"), h("nonce_s"))
    with pytest.raises(cc.ContractError, match="MAC"):
        cc.open_record(keys.enc_c2s, keys.mac_c2s, 0, bytes.fromhex(VECTORS["tampered"]["frame"])[4:])


def test_client_session_reproduces_c2s_frames() -> None:
    """The stateful client seals with seq 0, 1, 2 in order, exactly as the vectors."""
    client = cc.AtmClient("127.0.0.1", 0, h("psk"))
    client.nonce_c, client.nonce_s = h("nonce_c"), h("nonce_s")
    client.keys = cc.derive_keys(client.psk, client.nonce_c, client.nonce_s)
    for vector in [v for v in VECTORS["records"] if v["dir"] == "c2s"]:
        sealed = client.seal(vector["plaintext_utf8"].encode("utf-8"), iv=bytes.fromhex(vector["iv"]))
        assert sealed.hex() == vector["frame"]


def test_pin_hash() -> None:
    vector = VECTORS["pin_hash"]
    kind, n, r, p, salt, digest = vector["field"].split("$")
    assert kind == "scrypt"
    computed = scrypt(
        vector["pin"].encode("ascii"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32, maxmem=2**26
    )
    assert computed.hex() == digest


def test_key_file_vector() -> None:
    lines = [line for line in VECTORS["llave_key_file"].splitlines() if line.strip() and not line.startswith("#")]
    assert bytes.fromhex(lines[0]) == h("psk")

"""El cliente de carga independiente (bench/contract_load.py) reproduce vectors.json byte a byte.

El generador de carga se escribió solo a partir de PROTOCOL.md; estas
pruebas comprueban que su cifrado, sus tramas, su saludo y sus registros dan
exactamente los bytes de los vectores del contrato, de modo que sus cifras de
rendimiento midan de verdad el protocolo ATM1 y no una variante.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench import contract_load as cc

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors.json").read_text(encoding="utf-8"))


def _h(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


def _records(direction: str) -> list[dict[str, Any]]:
    return [r for r in VECTORS["records"] if r["dir"] == direction]


def _payload(frame_hex: str) -> bytes:
    frame = bytes.fromhex(frame_hex)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


def _keys() -> cc.SessionKeys:
    return cc.derive_session_keys(_h("psk"), _h("nonce_c"), _h("nonce_s"))


def _ivs(direction: str) -> Iterator[bytes]:
    return iter(bytes.fromhex(r["iv"]) for r in _records(direction))


# --- llave y derivación -------------------------------------------------------


def test_llave_del_fichero_de_ejemplo() -> None:
    assert cc.parse_psk(VECTORS["llave_key_file"]) == _h("psk")


@pytest.mark.parametrize(
    "text",
    ["", "# solo comentario\n", "00" * 31 + "\n", "00" * 32 + " x\n", "zz" * 32 + "\n", "00" * 33 + "\n"],
)
def test_llave_invalida_se_rechaza_nombrando_el_fichero(text: str) -> None:
    with pytest.raises(ValueError, match=r"mi_llave\.key"):
        cc.parse_psk(text, "mi_llave.key")


def test_hkdf_da_el_okm_del_vector() -> None:
    okm = cc.hkdf_sha256(_h("psk"), _h("nonce_c") + _h("nonce_s"), b"ATM1 session keys", 128)
    assert okm == _h("okm")


def test_claves_de_sesion_del_vector() -> None:
    keys = _keys()
    assert keys.enc_c2s == _h("enc_c2s")
    assert keys.mac_c2s == _h("mac_c2s")
    assert keys.enc_s2c == _h("enc_s2c")
    assert keys.mac_s2c == _h("mac_s2c")


def test_prueba_del_servidor_del_vector() -> None:
    assert cc.server_proof(_h("mac_s2c"), _h("nonce_c"), _h("nonce_s")) == _h("proof")


# --- saludo ---------------------------------------------------------------------


def test_client_hello_del_vector() -> None:
    assert cc.client_hello(_h("nonce_c")) == _h("client_hello_frame")


def test_server_hello_del_vector_se_acepta() -> None:
    payload = _payload(VECTORS["server_hello_frame"])
    assert cc.parse_server_hello(payload) == (_h("nonce_s"), _h("proof"))
    assert cc.verify_server_hello(_h("psk"), _h("nonce_c"), payload) == _keys()


def test_server_hello_con_otra_llave_se_rechaza() -> None:
    payload = _payload(VECTORS["server_hello_frame"])
    with pytest.raises(cc.ProtocolError) as info:
        cc.verify_server_hello(bytes(32), _h("nonce_c"), payload)
    assert info.value.kind == "prueba_invalida"


@pytest.mark.parametrize("cut", [lambda p: p[:-1], lambda p: b"ATM2" + p[4:], lambda p: p + b"\0"])
def test_server_hello_mal_formado_se_rechaza(cut: Any) -> None:
    with pytest.raises(cc.ProtocolError) as info:
        cc.verify_server_hello(_h("psk"), _h("nonce_c"), cut(_payload(VECTORS["server_hello_frame"])))
    assert info.value.kind == "saludo_invalido"


# --- registros: versión de referencia y versión rápida ----------------------------


def _dir_keys(direction: str) -> tuple[bytes, bytes]:
    return _h(f"enc_{direction}"), _h(f"mac_{direction}")


@pytest.mark.parametrize("rec", VECTORS["records"], ids=lambda r: f"{r['dir']}-{r['seq']}")
def test_seal_record_de_referencia(rec: dict[str, Any]) -> None:
    enc, mac = _dir_keys(rec["dir"])
    payload = cc.seal_record(enc, mac, rec["seq"], bytes.fromhex(rec["iv"]), rec["plaintext_utf8"].encode())
    assert cc.encode_frame(payload).hex() == rec["frame"]


@pytest.mark.parametrize("rec", VECTORS["records"], ids=lambda r: f"{r['dir']}-{r['seq']}")
def test_open_record_de_referencia(rec: dict[str, Any]) -> None:
    enc, mac = _dir_keys(rec["dir"])
    assert cc.open_record(enc, mac, rec["seq"], _payload(rec["frame"])) == rec["plaintext_utf8"].encode()


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_sealer_encadenado_da_las_tramas_del_vector(direction: str) -> None:
    """El CBC reutilizado con corrección del primer bloque debe dar lo mismo que un CBC nuevo por registro."""
    ivs = _ivs(direction)
    sealer = cc.RecordSealer(*_dir_keys(direction), iv_source=lambda n: next(ivs))
    for rec in _records(direction):
        assert sealer.seq == rec["seq"]
        assert cc.encode_frame(sealer.seal(rec["plaintext_utf8"].encode())).hex() == rec["frame"]


@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_opener_encadenado_abre_las_tramas_del_vector(direction: str) -> None:
    opener = cc.RecordOpener(*_dir_keys(direction))
    for rec in _records(direction):
        assert opener.open(_payload(rec["frame"])) == rec["plaintext_utf8"].encode()
    assert opener.seq == len(_records(direction))


def test_registro_alterado_se_rechaza() -> None:
    payload = _payload(VECTORS["tampered"]["frame"])
    with pytest.raises(cc.ProtocolError) as info:
        cc.RecordOpener(*_dir_keys("c2s")).open(payload)
    assert info.value.kind == "mac_invalida"
    with pytest.raises(cc.ProtocolError):
        cc.open_record(*_dir_keys("c2s"), 0, payload)


def test_registro_con_seq_equivocado_se_rechaza() -> None:
    """seq es implícito: el segundo registro s2c no pasa como primero (repetición o pérdida)."""
    with pytest.raises(cc.ProtocolError) as info:
        cc.RecordOpener(*_dir_keys("s2c")).open(_payload(_records("s2c")[1]["frame"]))
    assert info.value.kind == "mac_invalida"


@pytest.mark.parametrize("size", [0, 48, 63, 65, 80 + 1])
def test_registro_de_longitud_invalida_se_rechaza(size: int) -> None:
    with pytest.raises(cc.ProtocolError) as info:
        cc.RecordOpener(*_dir_keys("s2c")).open(bytes(size))
    assert info.value.kind == "registro_invalido"


def test_relleno_invalido_se_rechaza_tras_un_mac_correcto() -> None:
    enc, mac = _dir_keys("s2c")
    # Un bloque cifrado sin relleno PKCS#7 válido (último byte 0), pero con MAC correcto.
    from Crypto.Cipher import AES

    iv = bytes(16)
    c = AES.new(enc, AES.MODE_CBC, iv=iv).encrypt(bytes(16))
    payload = iv + c + cc._record_tag(mac, 0, iv + c)
    with pytest.raises(cc.ProtocolError) as info:
        cc.RecordOpener(enc, mac).open(payload)
    assert info.value.kind == "relleno_invalido"


# --- mensajes --------------------------------------------------------------------


def test_mensajes_del_vector_se_codifican_igual() -> None:
    plain = [r["plaintext_utf8"].encode() for r in _records("c2s")]
    assert cc.encode_message({"op": "IDENTIFICAR", "tarjeta": "1111111111111111", "pin": "1234"}) == plain[0]
    assert cc.encode_message({"op": "CONSULTAR"}) == plain[1]
    assert cc.deposit_encoder("2222.00")("0f1e2d3c4b5a69788796a5b4c3d2e1f0") == plain[2]


def test_respuestas_del_vector_se_validan() -> None:
    replies = [cc.decode_reply(r["plaintext_utf8"].encode()) for r in _records("s2c")]
    assert cc.check_reply("IDENTIFICAR", replies[0])["titular"] == "Gustavo Ali Gómez Trejo"
    assert cc.check_reply("CONSULTAR", replies[1], card="1111111111111111")["saldo"] == "234444.00"
    tx = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    after = cc.check_reply("DEPOSITAR", replies[2], tx)
    assert Decimal(after["saldo"]) == Decimal(replies[1]["saldo"]) + Decimal("2222.00")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", replies[2], "otro-id")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("CONSULTAR", replies[1], card="1111111111112222")


def test_respuesta_de_error_se_clasifica_por_codigo() -> None:
    with pytest.raises(cc.ServerError) as info:
        cc.check_reply("DEPOSITAR", {"ok": False, "error": "MONTO_INVALIDO", "mensaje": "Importe no válido."}, "x")
    assert info.value.code == "MONTO_INVALIDO"
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", {"ok": False, "error": "INVENTADO", "mensaje": "?"}, "x")
    with pytest.raises(cc.ReplyError):
        cc.check_reply("DEPOSITAR", {"ok": True, "id": "x", "saldo": 10.5}, "x")


def test_texto_claro_que_no_es_utf8_es_error_de_protocolo() -> None:
    with pytest.raises(cc.ProtocolError) as info:
        cc.decode_reply(b'{"ok":true,"titular":"\xff"}')
    assert info.value.kind == "utf8_invalido"


@pytest.mark.parametrize("amount", ["1", "1.00", "0.5", "999999999999.99"])
def test_importes_validos(amount: str) -> None:
    assert cc.is_request_amount(amount)


@pytest.mark.parametrize("amount", ["0", "0.00", "-1", "1.", ".5", "1.001", "1e3", "1000000000000"])
def test_importes_invalidos(amount: str) -> None:
    assert not cc.is_request_amount(amount)


# --- saludo e identificación de punta a punta contra un servidor falso -------------


def test_sesion_completa_reproduce_los_bytes_del_vector() -> None:
    """Un servidor falso que solo reproduce los vectores: el cliente debe enviar exactamente sus bytes."""
    client_sock, server_sock = socket.socketpair()
    received: list[bytes] = []

    def fake_server() -> None:
        with server_sock, server_sock.makefile("rb") as reader:
            received.append(reader.read(len(_h("client_hello_frame"))))
            server_sock.sendall(_h("server_hello_frame"))
            for c2s, s2c in zip(_records("c2s"), _records("s2c"), strict=True):
                received.append(reader.read(len(bytes.fromhex(c2s["frame"]))))
                server_sock.sendall(bytes.fromhex(s2c["frame"]))

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    client_sock.settimeout(5)
    ivs = _ivs("c2s")
    try:
        conn = cc.Connection.handshake(client_sock, _h("psk"), nonce_c=_h("nonce_c"), iv_source=lambda n: next(ivs))
        assert conn.identify("1111111111111111", "1234") == "Gustavo Ali Gómez Trejo"
        assert conn.balance("1111111111111111") == Decimal("234444.00")
        tx = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
        reply = cc.check_reply("DEPOSITAR", conn.request_bytes(cc.deposit_encoder("2222.00")(tx)), tx)
        assert reply["saldo"] == "236666.00"
        conn.close()
    finally:
        client_sock.close()
        thread.join(5)
    assert received[0] == _h("client_hello_frame")
    assert [r.hex() for r in received[1:]] == [r["frame"] for r in _records("c2s")]


def test_trama_de_longitud_cero_o_excesiva_es_error_de_protocolo() -> None:
    import io

    for header in (b"\0\0\0\0", (65_537).to_bytes(4, "big")):
        with pytest.raises(cc.ProtocolError) as info:
            cc.read_frame(io.BytesIO(header + b"x" * 10))
        assert info.value.kind == "trama_invalida"
    with pytest.raises(cc.ProtocolError) as info:
        cc.read_frame(io.BytesIO(b"\0\0\0\x10abc"))
    assert info.value.kind == "trama_truncada"

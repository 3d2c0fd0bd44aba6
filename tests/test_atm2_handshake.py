"""ATM2 state machines, handshake failures, key files and the atomic key writer.

The byte-for-byte vectors are in ``test_protocol_vectors.py``; here the
ends run with real randomness and with hostile or broken peers.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import common.handshake as hs
from bank_server.pins import PinFieldError, hash_pin, needs_rehash, parse_field, pin_pepper, verify_pin
from common.channel import RecordSealer
from common.endpoints import (
    ClientConnection,
    HandshakeComplete,
    HelloReceived,
    MessageReceived,
    ServerConnection,
    SessionConfirmed,
    State,
)
from common.errors import (
    HandshakeRefusedError,
    IntegrityError,
    KeyFileError,
    LocalProtocolError,
    RemoteProtocolError,
    WrongKeyError,
)
from common.framing import FrameDecoder, encode_frame
from common.keys import (
    TerminalKey,
    create_bank_key,
    format_terminal_key_file,
    load_bank_key,
    load_terminal_key,
    parse_bank_key,
    parse_terminal_key,
    write_terminal_key,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = TerminalKey("SUC-CENTRO-01", 7, bytes(range(32)))
OTHER_KEY = TerminalKey("SUC-CENTRO-01", 7, bytes(range(1, 33)))
P = 2**255 - 19
# RFC 7748 points of small order (libsodium's list), and non-canonical spellings of 0 and 1.
LOW_ORDER = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
    P,
    P + 1,
]
LOW_ORDER_KEYS = [u.to_bytes(32, "little") for u in LOW_ORDER] + [
    (u + 2**255).to_bytes(32, "little")
    for u in LOW_ORDER[:5]  # the top bit is ignored (RFC 7748)
]


def hello_for(key: TerminalKey = KEY) -> tuple[ClientConnection, bytes]:
    client = ClientConnection(key)
    client.start()
    return client, client.data_to_send()


def pair(server_key: TerminalKey = KEY) -> tuple[ClientConnection, ServerConnection]:
    client, hello = hello_for()
    server = ServerConnection()
    assert server.receive_data(hello) == [HelloReceived(KEY.terminal_id, KEY.version)]
    server.accept(server_key)
    return client, server


def payload_of(wire: bytes) -> bytes:
    (payload,) = FrameDecoder().feed(wire)
    return payload


def hello_payload(terminal_id: bytes = b"SUC-01", version: int = 1, e_c: bytes | None = None) -> bytes:
    e_c = hs.EphemeralKey(os.urandom).public if e_c is None else e_c
    return b"ATM2" + bytes([len(terminal_id)]) + terminal_id + version.to_bytes(4, "big") + e_c + os.urandom(32)


# -- the happy path and the state table -----------------------------------------------------------


def test_handshake_and_conversation_with_real_randomness() -> None:
    client, server = pair()
    assert server.state is State.AWAIT_CONFIRM
    assert client.receive_data(server.data_to_send()) == [HandshakeComplete()]
    assert client.state is State.OPEN
    client.send_message('{"op":"CONSULTAR"}')
    assert server.receive_data(client.data_to_send()) == [
        SessionConfirmed(KEY.terminal_id, KEY.version),
        MessageReceived('{"op":"CONSULTAR"}'),
    ]
    assert server.state is State.OPEN
    server.send_message('{"ok":true}')
    assert client.receive_data(server.data_to_send()) == [MessageReceived('{"ok":true}')]
    client.send_message("dos")
    client.send_message("tres")
    assert server.receive_data(client.data_to_send()) == [MessageReceived("dos"), MessageReceived("tres")]


def test_two_connections_never_share_keys_or_hellos() -> None:
    (_c1, h1), (_c2, h2) = hello_for(), hello_for()
    assert h1 != h2
    assert h1[: 4 + 5 + len(KEY.terminal_id) + 4] == h2[: 4 + 5 + len(KEY.terminal_id) + 4]


def test_server_needs_no_key_before_the_hello_and_sends_nothing_until_accept() -> None:
    server = ServerConnection()
    assert (server.terminal_id, server.version) == (None, None)
    _client, hello = hello_for()
    for byte in hello[:-1]:  # one byte at a time: nothing until the frame is whole
        assert server.receive_data(bytes([byte])) == []
    assert server.receive_data(hello[-1:]) == [HelloReceived("SUC-CENTRO-01", 7)]
    assert (server.terminal_id, server.version, server.state) == ("SUC-CENTRO-01", 7, State.AWAIT_KEY)
    assert server.data_to_send() == b""


def test_server_cannot_speak_before_the_first_record() -> None:
    _client, server = pair()
    with pytest.raises(LocalProtocolError):
        server.send_message('{"ok":true}')


def test_ephemeral_secrets_are_dropped_once_keys_exist() -> None:
    client, hello = hello_for()
    assert client._ephemeral is not None
    server = ServerConnection()
    server.receive_data(hello)
    assert server._dh is not None  # only dh waits for K; the server's private key is already gone
    assert not hasattr(server, "_ephemeral")
    server.accept(KEY)
    assert server._dh is None
    client.receive_data(server.data_to_send())
    assert client._ephemeral is None
    assert client._terminal_key is None


def test_secrets_are_dropped_when_the_handshake_fails() -> None:
    client, server = pair(OTHER_KEY)
    with pytest.raises(WrongKeyError):
        client.receive_data(server.data_to_send())
    assert client._ephemeral is None and client._terminal_key is None
    server = ServerConnection()
    server.receive_data(hello_for()[1])
    server.close()
    assert server._dh is None


def test_start_and_receive_are_checked_on_the_client() -> None:
    client = ClientConnection(KEY)
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"\x00")
    client.start()
    with pytest.raises(LocalProtocolError):
        client.start()
    with pytest.raises(LocalProtocolError):
        client.send_message("antes del saludo")


def test_accept_is_checked() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.accept(KEY)  # no hello yet
    server.receive_data(hello_for()[1])
    with pytest.raises(LocalProtocolError):
        server.accept(TerminalKey("SUC-CENTRO-01", 8, KEY.key))  # another version than the hello's
    with pytest.raises(LocalProtocolError):
        server.accept(TerminalKey("OTRO", 7, KEY.key))
    with pytest.raises(LocalProtocolError):
        server.accept(b"\x00" * 31)
    server.accept(KEY.key)  # the bare 32 bytes are fine too
    with pytest.raises(LocalProtocolError):
        server.accept(KEY)


def test_refusal_sends_nothing_and_the_atm_says_refused() -> None:
    client, hello = hello_for()
    server = ServerConnection()
    server.receive_data(hello)
    server.close()  # unknown, revoked or wrong version: the bank's call
    assert server.state is State.CLOSED
    assert server.data_to_send() == b""
    with pytest.raises(HandshakeRefusedError):
        client.receive_eof()
    assert client.state is State.CLOSED


def test_eof_inside_the_server_hello_is_not_a_refusal() -> None:
    client, server = pair()
    reply = server.data_to_send()
    client.receive_data(reply[:50])
    with pytest.raises(RemoteProtocolError) as caught:
        client.receive_eof()
    assert not isinstance(caught.value, HandshakeRefusedError)


# -- wrong keys ----------------------------------------------------------------------------------


def test_wrong_key_at_the_bank_is_a_wrong_key_error_at_the_atm() -> None:
    client, server = pair(OTHER_KEY)
    with pytest.raises(WrongKeyError):
        client.receive_data(server.data_to_send())
    assert client.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send_message("x")


@pytest.mark.parametrize("where", [68, 80, 99], ids=["proof-first", "proof-middle", "proof-last"])
def test_a_flipped_proof_bit_is_a_wrong_key_error(where: int) -> None:
    client, server = pair()
    reply = bytearray(server.data_to_send())
    reply[4 + where] ^= 0x01
    with pytest.raises(WrongKeyError):
        client.receive_data(bytes(reply))


def test_flipped_nonce_or_ephemeral_key_also_fails_the_proof() -> None:
    for where in (4, 40):  # e_s, nonce_s
        client, server = pair()
        reply = bytearray(server.data_to_send())
        reply[4 + where] ^= 0x40
        with pytest.raises(RemoteProtocolError):
            client.receive_data(bytes(reply))


def _rogue_client_first_record(key: TerminalKey, server: ServerConnection, hello: bytes, ephemeral) -> bytes:
    """What an ATM holding ``key`` would send first, ignoring the proof (to test the bank's side)."""
    reply = hs.ServerHello.parse(payload_of(server.data_to_send()))
    parsed = hs.ClientHello.parse(payload_of(hello))
    th = hs.transcript_hash(payload_of(hello), reply.e_s, reply.nonce_s)
    keys = hs.derive_session_keys(key.key, ephemeral.exchange(reply.e_s), parsed.nonce_c, reply.nonce_s, th)
    return encode_frame(RecordSealer(keys.enc_c2s, keys.mac_c2s).seal(b'{"op":"CONSULTAR"}'))


def _manual_hello(key: TerminalKey) -> tuple[bytes, hs.EphemeralKey]:
    ephemeral = hs.EphemeralKey(os.urandom)
    hello = hs.ClientHello(key.terminal_id, key.version, ephemeral.public, os.urandom(32))
    return encode_frame(hello.encode()), ephemeral


def test_wrong_key_at_the_atm_shows_at_the_bank_on_the_first_record() -> None:
    hello, ephemeral = _manual_hello(OTHER_KEY)
    server = ServerConnection()
    server.receive_data(hello)
    server.accept(KEY)
    with pytest.raises(WrongKeyError):
        server.receive_data(_rogue_client_first_record(OTHER_KEY, server, hello, ephemeral))
    assert server.state is State.CLOSED


def test_a_bad_later_record_is_an_integrity_error_not_a_wrong_key() -> None:
    client, server = pair()
    client.receive_data(server.data_to_send())
    client.send_message("uno")
    server.receive_data(client.data_to_send())
    client.send_message("dos")
    wire = bytearray(client.data_to_send())
    wire[30] ^= 0x80
    with pytest.raises(IntegrityError) as caught:
        server.receive_data(bytes(wire))
    assert not isinstance(caught.value, WrongKeyError)


def test_first_record_not_utf8_confirms_the_key_then_fails() -> None:
    client, server = pair()
    client.receive_data(server.data_to_send())
    assert client._sealer is not None
    wire = encode_frame(client._sealer.seal(b"\xff\xfe"))
    assert server.receive_data(wire) == [SessionConfirmed(KEY.terminal_id, KEY.version)]
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        server.check()


# -- hostile or broken hellos --------------------------------------------------------------------


@pytest.mark.parametrize("e_c", LOW_ORDER_KEYS, ids=lambda k: k.hex()[:8] + "-" + k.hex()[-2:])
def test_low_order_client_key_is_refused_before_the_bank_looks_anything_up(e_c: bytes) -> None:
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError, match="SUC-01"):
        server.receive_data(encode_frame(hello_payload(e_c=e_c)))
    assert server.state is State.CLOSED
    assert server.data_to_send() == b""


@pytest.mark.parametrize("e_s", LOW_ORDER_KEYS[:3], ids=["zero", "one", "order8"])
def test_low_order_server_key_is_a_protocol_error_not_a_wrong_key(e_s: bytes) -> None:
    client, _hello = hello_for()
    with pytest.raises(RemoteProtocolError) as caught:
        client.receive_data(encode_frame(b"ATM2" + e_s + os.urandom(64)))
    assert not isinstance(caught.value, WrongKeyError)
    assert client.state is State.CLOSED


def test_an_all_zero_dh_is_refused_even_if_the_library_let_it_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hs, "key_agreement", lambda **_: bytes(32))
    with pytest.raises(RemoteProtocolError, match="all zeros"):
        hs.EphemeralKey(os.urandom).exchange(hs.EphemeralKey(os.urandom).public)


def test_atm1_hello_is_refused() -> None:
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError, match="ATM1"):
        server.receive_data(encode_frame(b"ATM1" + os.urandom(32)))
    assert server.data_to_send() == b""


BAD_CLIENT_HELLOS = {
    "magic-ATM3": b"ATM3" + hello_payload()[4:],
    "lower-magic": b"atm2" + hello_payload()[4:],
    "one-byte-short": hello_payload()[:-1],
    "one-byte-long": hello_payload() + b"\x00",
    "bare-magic": b"ATM2",
    "id-len-0": b"ATM2\x00" + bytes(4 + 64),
    "id-len-33": b"ATM2\x21" + b"A" * 33 + (1).to_bytes(4, "big") + bytes(64),
    "id-len-too-big-for-frame": b"ATM2\x20" + b"A" * 10 + (1).to_bytes(4, "big") + bytes(64),
    "lowercase-id": hello_payload(b"suc-01"),
    "space-in-id": hello_payload(b"SUC 01"),
    "underscore-in-id": hello_payload(b"SUC_01"),
    "utf8-id": hello_payload("SUCÑ".encode()),
    "newline-id": hello_payload(b"SUC\n01"),
    "version-0": hello_payload(version=0),
}


@pytest.mark.parametrize("payload", BAD_CLIENT_HELLOS.values(), ids=BAD_CLIENT_HELLOS.keys())
def test_malformed_client_hello_closes_without_a_server_hello(payload: bytes) -> None:
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError) as caught:
        server.receive_data(encode_frame(payload))
    assert "\n" not in str(caught.value)  # one log line, even for a hostile id
    assert server.state is State.CLOSED
    assert server.data_to_send() == b""


def test_longest_and_shortest_ids_and_extreme_versions_are_fine() -> None:
    for terminal_id, version in (("A", 1), ("Z" * 32, 2**32 - 1), ("-", 4)):
        key = TerminalKey(terminal_id, version, os.urandom(32))
        client, hello = hello_for(key)
        server = ServerConnection()
        assert server.receive_data(hello) == [HelloReceived(terminal_id, version)]
        server.accept(key)
        assert client.receive_data(server.data_to_send()) == [HandshakeComplete()]


@pytest.mark.parametrize("size", [99, 101, 68, 4])
def test_server_hello_of_the_wrong_length(size: int) -> None:
    client, _hello = hello_for()
    with pytest.raises(RemoteProtocolError, match="ServerHello"):
        client.receive_data(encode_frame(b"ATM2" + os.urandom(size - 4)))


def test_server_hello_with_the_wrong_magic() -> None:
    client, server = pair()
    reply = bytearray(server.data_to_send())
    reply[4:8] = b"ATM1"
    with pytest.raises(RemoteProtocolError, match="magic"):
        client.receive_data(bytes(reply))


def test_a_frame_before_the_server_hello_is_a_violation() -> None:
    _client, hello = hello_for()
    server = ServerConnection()
    events = server.receive_data(hello + encode_frame(os.urandom(64)))
    assert events == [HelloReceived(KEY.terminal_id, KEY.version)]
    with pytest.raises(RemoteProtocolError, match="before the ServerHello"):
        server.accept(KEY)
    assert server.data_to_send() == b""
    assert server.state is State.CLOSED


def test_hello_values_are_checked_when_we_build_one() -> None:
    with pytest.raises(LocalProtocolError):
        hs.ClientHello("suc", 1, bytes(32), bytes(32))
    with pytest.raises(LocalProtocolError):
        hs.ClientHello("SUC", 0, bytes(32), bytes(32))
    with pytest.raises(LocalProtocolError):
        hs.ClientHello("SUC", 1, bytes(31), bytes(32))
    with pytest.raises(LocalProtocolError):
        hs.ServerHello(bytes(32), bytes(32), bytes(31))


def test_private_keys_stay_out_of_reprs() -> None:
    secret = bytes(range(100, 132))
    ephemeral = hs.EphemeralKey(lambda n: secret)
    key = TerminalKey("SUC-01", 3, secret)
    for text in (repr(ephemeral), str(ephemeral), repr(key), str(key), repr(ClientConnection(key))):
        assert secret.hex() not in text.lower()


# -- the ATM's key file ------------------------------------------------------------------------------

HEX = "00112233445566778899aabbccddeeff" * 2


@pytest.mark.parametrize(
    "text",
    [
        f"ATM2 SUC-01 3 {HEX}",
        f"ATM2 SUC-01 3 {HEX}\n",
        f"# comentario\n\n   \n# otro\nATM2 SUC-01 3 {HEX}\n",
        f"\r\n# windows\r\nATM2 SUC-01 3 {HEX}\r\n",
        f"\ufeffATM2 SUC-01 3 {HEX}\n",
        f"  # comentario con sangría\nATM2 SUC-01 3 {HEX}\n",
        f"ATM2 SUC-01 3 {HEX.upper()}\n",
        f"ATM2 SUC-01 003 {HEX}\n",
        f"ATM2 SUC-01 3 {HEX}\nlo que siga después de la primera línea no se lee\n",
    ],
    ids=["bare", "newline", "comments", "crlf", "bom", "indented-comment", "upper-hex", "leading-zeros", "trailer"],
)
def test_key_file_grammar_accepts(text: str) -> None:
    assert parse_terminal_key(text, "llave.key") == TerminalKey("SUC-01", 3, bytes.fromhex(HEX))


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("", None, "ninguna llave"),
        ("# solo comentarios\n\n", None, "ninguna llave"),
        (f"{HEX}\n", 1, "ATM1"),
        (f"# llave vieja\nATM1 SUC-01 3 {HEX}\n", 2, "ATM2"),
        (f"atm2 SUC-01 3 {HEX}\n", 1, "ATM2"),
        (f"ATM2 SUC-01 {HEX}\n", 1, "cuatro campos"),
        (f"ATM2 SUC-01 3 {HEX} extra\n", 1, "cuatro campos"),
        (f"ATM2  SUC-01 3 {HEX}\n", 1, "cuatro campos"),
        (f"ATM2 SUC-01 3 {HEX} \n", 1, "cuatro campos"),
        (f" ATM2 SUC-01 3 {HEX}\n", 1, "cuatro campos"),
        (f"ATM2\tSUC-01 3 {HEX}\n", 1, "cuatro campos"),
        (f"ATM2 suc-01 3 {HEX}\n", 1, "identificador"),
        (f"ATM2 {'A' * 33} 3 {HEX}\n", 1, "identificador"),
        (f"ATM2 SUC_01 3 {HEX}\n", 1, "identificador"),
        (f"ATM2 SUC-01 0 {HEX}\n", 1, "versión"),
        (f"ATM2 SUC-01 4294967296 {HEX}\n", 1, "versión"),
        (f"ATM2 SUC-01 +3 {HEX}\n", 1, "versión"),
        (f"ATM2 SUC-01 1_0 {HEX}\n", 1, "versión"),
        (f"ATM2 SUC-01 ٣ {HEX}\n", 1, "versión"),
        (f"ATM2 SUC-01 3 {HEX[:-1]}\n", 1, "64 dígitos"),
        (f"ATM2 SUC-01 3 {HEX}0\n", 1, "64 dígitos"),
        (f"ATM2 SUC-01 3 {HEX[:-1]}g\n", 1, "64 dígitos"),
        (f"\n\n# x\nATM2 SUC-01 3 {HEX[:-2]}\n", 4, "64 dígitos"),
    ],
)
def test_key_file_grammar_refuses_naming_file_and_line_without_the_key(text: str, line: int | None, says: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_terminal_key(text, "C:/cajero/llave.key")
    message = str(caught.value)
    assert message.startswith("C:/cajero/llave.key")
    if line is not None:
        assert f"línea {line}:" in message
    assert says in message
    assert HEX[:16] not in message.lower()


def test_key_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "llave.key"
    with pytest.raises(KeyFileError, match="no existe"):
        load_terminal_key(path)
    path.write_bytes(b"\xff\xfe ATM2")
    with pytest.raises(KeyFileError, match="UTF-8"):
        load_terminal_key(path)
    write_terminal_key(path, KEY)
    assert load_terminal_key(path) == KEY
    assert path.read_text(encoding="utf-8") == format_terminal_key_file(KEY)
    if os.name != "nt":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "llave.key"
    path.write_text(f"ATM2 SUC-01 1 {HEX}\n", encoding="utf-8")
    if os.name != "nt":
        path.chmod(0o644)
    stray = tmp_path / "llave.key.tmp"  # what a writer killed mid-way leaves
    stray.write_text("medio archivo", encoding="utf-8")
    unrelated = tmp_path / ".otra.key.abc123.tmp"
    unrelated.write_text("no es nuestro", encoding="utf-8")
    write_terminal_key(path, KEY)
    assert load_terminal_key(path) == KEY
    assert not stray.exists()
    assert unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".otra.key.abc123.tmp", "llave.key"]
    if os.name != "nt":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "falta" / "llave.key"
    with pytest.raises(KeyFileError, match="anterior"):
        write_terminal_key(path, KEY)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from common.keys import TerminalKey, write_terminal_key
    path, version = Path(sys.argv[1]), int(sys.argv[2])
    print("listo", flush=True)
    while True:
        version += 1
        write_terminal_key(path, TerminalKey("SUC-01", version, bytes([version % 256]) * 32))
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
@pytest.mark.timeout(60)
def test_kill_9_during_writes_leaves_the_old_or_the_new_key(tmp_path: Path) -> None:
    """A writer rewriting the key in a loop, killed at random moments: the file always loads whole."""
    path = tmp_path / "llave.key"
    write_terminal_key(path, TerminalKey("SUC-01", 1, bytes([1]) * 32))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(20240501)
    version, kills, advanced = 1, 0, 0
    deadline = time.monotonic() + 20
    while kills < 25 and time.monotonic() < deadline:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(version)], stdout=subprocess.PIPE, env=env, cwd=ROOT
        )
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"listo\n"
            time.sleep(rng.uniform(0, 0.03))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(10)
            if writer.stdout is not None:
                writer.stdout.close()
        kills += 1
        key = load_terminal_key(path)  # never a broken file
        assert key.terminal_id == "SUC-01"
        assert key.version >= version
        assert key.key == bytes([key.version % 256]) * 32  # a whole file, never a mix of two
        advanced += key.version > version
        version = key.version
    assert kills >= 5
    assert advanced >= 1, "the writer never got to write: the kills proved nothing"
    write_terminal_key(path, TerminalKey("SUC-01", version + 1, bytes(32)))
    assert [p.name for p in tmp_path.iterdir()] == ["llave.key"]  # strays of killed writers are gone


# -- the bank key ----------------------------------------------------------------------------------


def test_bank_key_is_created_once_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "banco.key"
    key = create_bank_key(path)
    assert len(key) == 32
    assert load_bank_key(path) == key
    if os.name != "nt":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="ya existe"):
        create_bank_key(path)
    assert path.read_bytes() == before
    assert create_bank_key(tmp_path / "otro.key") != key


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "ninguna"),
        ("# nada\n", "ninguna"),
        (f"{HEX[:-1]}\n", "línea 1"),
        (f"# x\n{HEX} \n", "línea 2"),
        (f"ATM2 SUC-01 1 {HEX}\n", "línea 1"),
    ],
)
def test_bank_key_grammar(text: str, says: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_bank_key(text, "banco.key")
    assert str(caught.value).startswith("banco.key")
    assert says in str(caught.value)
    assert HEX[:16] not in str(caught.value)


def test_bank_key_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no existe"):
        load_bank_key(tmp_path / "banco.key")


# -- peppered PINs beyond the vectors ----------------------------------------------------------------


def test_peppered_pin_round_trip_and_refusals() -> None:
    pepper = pin_pepper(bytes(range(32)))
    field = hash_pin("123456", pepper, n=16, r=1, p=1)
    assert field.startswith("scrypt-p$16$1$1$")
    assert not needs_rehash(field)
    assert verify_pin("123456", field, pepper)
    assert not verify_pin("123457", field, pepper)
    assert not verify_pin("١٢٣٤٥٦", field, pepper)  # non-ASCII digits never match
    assert not verify_pin("123456", field.replace("scrypt-p$", "scrypt$"), pepper)
    assert hash_pin("123456", pepper, n=16, r=1, p=1) != field  # a fresh salt every time
    assert verify_pin("123456", field.upper().replace("SCRYPT-P", "scrypt-p"), pepper)


@pytest.mark.parametrize(
    "field",
    [
        "scrypt-p$16$1$1$00$" + "00" * 32,  # salt under 16 bytes
        "scrypt-p$15$1$1$" + "00" * 16 + "$" + "00" * 32,  # N not a power of two
        "scrypt-p$16$0$1$" + "00" * 16 + "$" + "00" * 32,
        "scrypt-q$16$1$1$" + "00" * 16 + "$" + "00" * 32,
        "scrypt-p$16$1$1$" + "00" * 16 + "$" + "00" * 31,
        "1234",
    ],
)
def test_malformed_pin_fields(field: str) -> None:
    with pytest.raises(PinFieldError):
        parse_field(field)
    assert not verify_pin("1234", field, bytes(32))


def test_good_records_before_a_bad_one_in_the_same_read_are_answered_first() -> None:
    client, server = pair()
    client.receive_data(server.data_to_send())
    client.send_message("uno")
    client.send_message("dos")
    wire = client.data_to_send() + encode_frame(os.urandom(64))
    assert server.receive_data(wire) == [
        SessionConfirmed(KEY.terminal_id, KEY.version),
        MessageReceived("uno"),
        MessageReceived("dos"),
    ]
    server.send_message("respuesta a uno")
    server.send_message("respuesta a dos")
    assert client.receive_data(server.data_to_send()) == [
        MessageReceived("respuesta a uno"),
        MessageReceived("respuesta a dos"),
    ]
    with pytest.raises(IntegrityError):
        server.check()
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        server.send_message("ya no")
    server.check()  # raised once


def test_a_bad_frame_header_after_good_records_is_held_back_too() -> None:
    client, server = pair()
    client.receive_data(server.data_to_send())
    client.send_message("uno")
    events = server.receive_data(client.data_to_send() + b"\x00\x00\x00\x00")
    assert events[-1] == MessageReceived("uno")
    server.send_message("ok")
    with pytest.raises(RemoteProtocolError, match="length zero"):
        server.receive_data(b"")
    assert server.state is State.CLOSED

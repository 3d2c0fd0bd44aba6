"""Property-based fuzzing of every parser a peer or an administrator can feed.

Each one must either succeed or fail with its documented error, never with
an unexpected exception: a crash in a handler is a denial of service, and a
crash in the ledger loader is a bank that will not start.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank_server.journal import decode_record
from bank_server.ledger import parse_ledger
from common.channel import RecordOpener, RecordSealer
from common.endpoints import ClientConnection, HelloReceived, ServerConnection
from common.errors import RemoteProtocolError
from common.framing import MAX_FRAME, FrameDecoder, encode_frame
from common.keys import TerminalKey
from common.messages import OPS, RequestError, decode_object, parse_request
from common.money import AmountError, parse_request_amount
from devtools import contract_client

KEY = bytes(range(32))
TERMINAL = TerminalKey("CAJERO-FUZZ", 7, KEY)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_frame_decoder_only_raises_remote_protocol_error(chunks):
    decoder = FrameDecoder()
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert 0 < len(frame) <= MAX_FRAME
    except RemoteProtocolError:
        pass


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=5), st.integers(1, 50))
def test_frames_survive_any_split(payloads, cut):
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    got = []
    for start in range(0, len(stream), cut):
        got += decoder.feed(stream[start : start + cut])
    assert got == payloads and not decoder.mid_frame


@FUZZ
@given(st.binary(max_size=400))
def test_record_opener_rejects_garbage_cleanly(payload):
    with pytest.raises(RemoteProtocolError):
        RecordOpener(KEY, KEY).open(payload)


@FUZZ
@given(st.binary(min_size=0, max_size=200), st.integers(0, 10_000), st.integers(0, 7))
def test_any_single_bit_flip_of_a_record_is_rejected(plaintext, position, bit):
    payload = bytearray(RecordSealer(KEY, KEY[::-1]).seal(plaintext))
    payload[position % len(payload)] ^= 1 << bit
    with pytest.raises(RemoteProtocolError):
        RecordOpener(KEY, KEY[::-1]).open(bytes(payload))


def _feed(connection: ServerConnection | ClientConnection, chunks: list[bytes]) -> None:
    """Feed ``chunks`` until the end or a protocol error (including one held back for ``check``)."""
    try:
        for chunk in chunks:
            connection.receive_data(chunk)
            connection.check()
    except RemoteProtocolError:
        pass


def _hello_like(tail: bytes) -> bytes:
    """A frame that starts as a ClientHello/ServerHello does, so garbage reaches the fields behind the magic."""
    return encode_frame(b"ATM2" + tail)


garbage = st.binary(max_size=500) | st.binary(max_size=140).map(_hello_like)


@FUZZ
@given(st.lists(garbage, min_size=1, max_size=3))
def test_server_connection_survives_garbage_before_handshake(chunks):
    _feed(ServerConnection(), chunks)


@FUZZ
@given(garbage)
def test_client_connection_survives_garbage_as_server_hello(data):
    client = ClientConnection(TERMINAL)
    client.start()
    _feed(client, [data])


def _handshaken(*, confirmed: bool) -> tuple[ClientConnection, ServerConnection]:
    """A client and a server past the ServerHello; ``confirmed``: the first record passed too."""
    client, server = ClientConnection(TERMINAL), ServerConnection()
    client.start()
    assert server.receive_data(client.data_to_send()) == [HelloReceived(TERMINAL.terminal_id, TERMINAL.version)]
    server.accept(TERMINAL)
    client.receive_data(server.data_to_send())
    if confirmed:
        client.send_message('{"op":"CONSULTAR"}')
        assert len(server.receive_data(client.data_to_send())) == 2  # SessionConfirmed, MessageReceived
    return client, server


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=6), st.booleans())
def test_server_connection_survives_garbage_after_handshake(chunks, confirmed):
    """Garbage where the first record belongs (the record that confirms the key), or after it."""
    _, server = _handshaken(confirmed=confirmed)
    _feed(server, chunks)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_client_connection_survives_garbage_after_handshake(chunks):
    client, _ = _handshaken(confirmed=True)
    _feed(client, chunks)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(OPS)) | st.text(max_size=12)},
    optional={
        "tarjeta": json_values | st.from_regex(r"[0-9]{10,21}", fullmatch=True),
        "pin": json_values | st.from_regex(r"[0-9]{3,7}", fullmatch=True),
        "monto": json_values | st.from_regex(r"-?[0-9]{0,14}(\.[0-9]{0,3})?", fullmatch=True),
        "id": json_values | st.from_regex(r"[A-Za-z0-9_-]{0,70}", fullmatch=True),
        "n": json_values,
        "pin_actual": json_values,
        "pin_nuevo": json_values,
    },
)


def assert_parsed_or_contract_code(text: str) -> None:
    try:
        parse_request(decode_object(text))
    except RequestError as exc:
        assert exc.code in {"PETICION_INVALIDA", "TARJETA_INVALIDA", "MONTO_INVALIDO", "PIN_INVALIDO"}


@FUZZ
@given(requests)
def test_message_parser_answers_with_a_contract_code(message):
    assert_parsed_or_contract_code(json.dumps(message))


@FUZZ
@given(st.text(max_size=200))
def test_text_that_is_not_a_request_is_peticion_invalida(text):
    assert_parsed_or_contract_code(text)


@FUZZ
@given(st.text(max_size=20))
def test_amount_parser(text):
    try:
        value = parse_request_amount(text)
    except AmountError:
        return
    assert value > 0 and value == value.quantize(value.__class__("0.01"))


@FUZZ
@given(st.binary(max_size=600))
def test_ledger_parser_reports_instead_of_crashing(data):
    _, errors = parse_ledger(data, "cuenta.txt")
    for error in errors:
        assert error.path == "cuenta.txt" and error.line >= 1 and error.message


@FUZZ
@given(st.binary(max_size=300))
def test_journal_line_decoder_raises_value_error_only(line):
    try:
        decode_record(line)
    except (ValueError, KeyError, TypeError):
        pass


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=300), st.binary(min_size=16, max_size=16)), min_size=1, max_size=8))
def test_long_lived_ciphers_match_a_fresh_cbc_per_record(records):
    """Our sealer and opener keep one AES object per connection; every record of a sequence must still
    be exactly what an independent implementation (a new AES-CBC per record) makes and reads."""
    mac = bytes(range(100, 132))
    sealer, opener = RecordSealer(KEY, mac), RecordOpener(KEY, mac)
    for seq, (plaintext, iv) in enumerate(records):
        sealed = sealer.seal(plaintext, iv=iv)
        assert sealed == contract_client.seal(KEY, mac, seq, plaintext, iv)
        assert opener.open(sealed) == plaintext
        assert contract_client.open_record(KEY, mac, seq, sealed) == plaintext

"""Every operation and every error code of PROTOCOL.md, over real TCP, against a real server process.

The client is ``devtools/contract_client.py``, written from the contract alone.
Where the contract leaves a choice open, the test follows the server's
decision and says so in its docstring ("Server decision: ...").
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from devtools.bank_process import DEMO_ACCOUNTS, DemoAccount, RunningBank, start_bank
from devtools.contract_client import AtmClient, encode_json, open_session

pytestmark = pytest.mark.timeout(60)

GUSTAVO, MARIA, JUAN, ANA = DEMO_ACCOUNTS  # ANA's card 6011000000000012 is blocked in the demo ledger
UNKNOWN_CARD = "9999999999999999"
SALDO_RE = re.compile(r"^[0-9]+\.[0-9]{2}$")
ERROR_CODES = {
    "PETICION_INVALIDA",
    "NO_IDENTIFICADO",
    "TARJETA_INVALIDA",
    "PIN_INCORRECTO",
    "TARJETA_BLOQUEADA",
    "CAJERO_SUSPENDIDO",
    "MONTO_INVALIDO",
    "FONDOS_INSUFICIENTES",
    "LIMITE_DIARIO",
    "DESTINO_INVALIDO",
    "ID_REPETIDO",
    "ID_ANULADO",
    "REVERSO_INVALIDO",
    "PIN_INVALIDO",
    "ERROR_INTERNO",
}


# -- helpers ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBank]:
    """One bank for the tests that must leave every account as it was (each checks that it does).

    Its tests make a dozen wrong PINs from one terminal in all, beyond the default guessing limit per
    terminal (PROTOCOL.md section 6), which is not what they test: the limit is raised."""
    running = start_bank(
        tmp_path_factory.mktemp("compartido") / "banco", extra_args=("--max-pin-fallidos-cajero", "1000")
    )
    try:
        yield running
    finally:
        running.close()


def session(bank: RunningBank, account: DemoAccount | None = None, pin: str | None = None) -> AtmClient:
    """A handshaken connection from the bank's terminal CAJERO-01, identified as ``account`` if given."""
    assert bank.terminal_key is not None
    if account is None:
        return open_session(bank.port, bank.terminal_key)
    return open_session(bank.port, bank.terminal_key, account.tarjeta, pin or account.pin)


def new_id() -> str:
    return uuid.uuid4().hex


def assert_error(response: dict[str, Any], code: str) -> None:
    assert response.get("ok") is False, response
    assert response.get("error") == code, response
    assert code in ERROR_CODES
    assert isinstance(response.get("mensaje"), str) and response["mensaje"].strip(), response


def assert_ok(response: dict[str, Any]) -> dict[str, Any]:
    assert response.get("ok") is True, response
    return response


def balance(bank: RunningBank, account: DemoAccount) -> Decimal:
    with session(bank, account) as client:
        saldo = client.saldo()
    assert SALDO_RE.match(saldo), saldo
    return Decimal(saldo)


def assert_closed_cleanly(client: AtmClient) -> None:
    data, closed = client.read_until_closed(5)
    assert data == b"", f"server sent {len(data)} more bytes"
    assert closed, "server did not close"


# -- IDENTIFICAR -----------------------------------------------------------------------------------------------
def test_identificar_ok_returns_titular(bank: RunningBank) -> None:
    with session(bank) as client:
        response = assert_ok(client.identify(GUSTAVO.tarjeta, GUSTAVO.pin))
        assert response["titular"] == GUSTAVO.titular


def test_identificar_unknown_card_is_tarjeta_invalida(bank: RunningBank) -> None:
    """Server decision ("one card per connection" is read as "one *identified* card"): after a failed
    IDENTIFICAR the same connection may try another card."""
    with session(bank) as client:
        assert_error(client.identify(UNKNOWN_CARD, "1234"), "TARJETA_INVALIDA")
        assert_ok(client.identify(MARIA.tarjeta, MARIA.pin))  # the connection goes on


@pytest.mark.parametrize("tarjeta", ["123", "12345678901", "1" * 20, "abcdabcdabcdabcd", "1111 1111 1111 1111", ""])
def test_identificar_card_not_12_to_19_digits_is_tarjeta_invalida(shared_bank: RunningBank, tarjeta: str) -> None:
    """Server decision: a card *string* that is not 12-19 digits is TARJETA_INVALIDA (no such card)."""
    with session(shared_bank) as client:
        assert_error(client.identify(tarjeta, "1234"), "TARJETA_INVALIDA")


@pytest.mark.parametrize("pin", ["123", "1234567", "12a4", "", " 1234"])
def test_identificar_pin_not_4_to_6_digits_is_peticion_invalida(shared_bank: RunningBank, pin: str) -> None:
    """Server decision: a PIN string that is not 4-6 digits is PETICION_INVALIDA and counts no attempt."""
    with session(shared_bank) as client:
        assert_error(client.identify(JUAN.tarjeta, pin), "PETICION_INVALIDA")
        response = client.identify(JUAN.tarjeta, "0000")
        assert_error(response, "PIN_INCORRECTO")
        assert response["intentos_restantes"] == 2
        assert_ok(client.identify(JUAN.tarjeta, JUAN.pin))  # resets the count for the next test


def test_wrong_pin_counts_down_and_a_retype_succeeds(bank: RunningBank) -> None:
    with session(bank) as client:
        response = client.identify(MARIA.tarjeta, "0000")
        assert_error(response, "PIN_INCORRECTO")
        assert response["intentos_restantes"] == 2 and type(response["intentos_restantes"]) is int
        assert_ok(client.identify(MARIA.tarjeta, MARIA.pin))
    with session(bank) as client:  # the success reset the count: "in a row"
        response = client.identify(MARIA.tarjeta, "0000")
        assert response["intentos_restantes"] == 2


def test_three_wrong_pins_across_connections_block_the_card(bank: RunningBank) -> None:
    """Server decision: the 3rd wrong PIN answers PIN_INCORRECTO with intentos_restantes 0; later, BLOQUEADA."""
    for expected in (2, 1, 0):
        with session(bank) as client:
            response = client.identify(MARIA.tarjeta, "9999")
            assert_error(response, "PIN_INCORRECTO")
            assert response["intentos_restantes"] == expected
    with session(bank) as client:
        assert_error(client.identify(MARIA.tarjeta, MARIA.pin), "TARJETA_BLOQUEADA")
        assert_error(client.identify(MARIA.tarjeta, "9999"), "TARJETA_BLOQUEADA")
    with session(bank, GUSTAVO) as client:  # other cards are unaffected
        assert_ok(client.request({"op": "CONSULTAR"}))


def test_block_survives_a_restart(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank()
    with session(bank) as client:
        for expected in (2, 1, 0):
            assert client.identify(JUAN.tarjeta, "1111")["intentos_restantes"] == expected
        assert_error(client.identify(JUAN.tarjeta, JUAN.pin), "TARJETA_BLOQUEADA")
    assert bank.stop() == 0
    bank.start()
    with session(bank) as client:
        assert_error(client.identify(JUAN.tarjeta, JUAN.pin), "TARJETA_BLOQUEADA")


def test_two_wrong_pins_survive_a_kill(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank()
    with session(bank) as client:
        assert client.identify(JUAN.tarjeta, "1111")["intentos_restantes"] == 2
        assert client.identify(JUAN.tarjeta, "1111")["intentos_restantes"] == 1
    bank.kill()
    bank.start()
    with session(bank) as client:
        response = client.identify(JUAN.tarjeta, "1111")
        assert_error(response, "PIN_INCORRECTO")
        assert response["intentos_restantes"] == 0
        assert_error(client.identify(JUAN.tarjeta, JUAN.pin), "TARJETA_BLOQUEADA")


def test_preblocked_demo_card(bank: RunningBank) -> None:
    assert ANA.tarjeta == "6011000000000012" and ANA.intentos == 3
    with session(bank) as client:
        assert_error(client.identify(ANA.tarjeta, ANA.pin), "TARJETA_BLOQUEADA")
        assert_error(client.identify(ANA.tarjeta, "0000"), "TARJETA_BLOQUEADA")
        assert_error(client.request({"op": "CONSULTAR"}), "NO_IDENTIFICADO")


def test_identificar_after_success_is_peticion_invalida(bank: RunningBank) -> None:
    with session(bank, GUSTAVO) as client:
        assert_error(client.identify(GUSTAVO.tarjeta, GUSTAVO.pin), "PETICION_INVALIDA")
        assert_error(client.identify(MARIA.tarjeta, MARIA.pin), "PETICION_INVALIDA")
        for _ in range(3):  # not PIN attempts: they must not block MARIA's card
            assert_error(client.identify(MARIA.tarjeta, "0000"), "PETICION_INVALIDA")
        response = assert_ok(client.request({"op": "CONSULTAR"}))
        assert response["titular"] == GUSTAVO.titular  # still the first card
    with session(bank, MARIA):  # and the wrong PIN after success counted nothing
        pass


# -- PETICION_INVALIDA / NO_IDENTIFICADO ----------------------------------------------------------------------------
NOT_REQUESTS = [
    b"not json",
    b"",
    b"[1, 2]",
    b'"CONSULTAR"',
    b"42",
    b"null",
    b"{",
    b"{}",
    b'{"op": null}',
    b'{"op": 5}',
    b'{"op": "NADA"}',
    b'{"op": "consultar"}',
    b'{"op": "Identificar", "tarjeta": "1111111111111111", "pin": "1234"}',
    b'{"op": " SALIR"}',
    b'{"op": "IDENTIFICAR"}',
    b'{"op": "IDENTIFICAR", "tarjeta": "1111111111111111"}',
    b'{"op": "IDENTIFICAR", "pin": "1234"}',
    b'{"op": "IDENTIFICAR", "tarjeta": 1111111111111111, "pin": "1234"}',
    b'{"op": "IDENTIFICAR", "tarjeta": "1111111111111111", "pin": 1234}',
    b'{"op": "IDENTIFICAR", "tarjeta": ["1111111111111111"], "pin": "1234"}',
    b'{"op": "IDENTIFICAR", "tarjeta": "1111111111111111", "pin": null}',
    b'{"op": "IDENTIFICAR", "tarjeta": "1111111111111111", "pin": NaN}',
]


@pytest.mark.parametrize("plaintext", NOT_REQUESTS)
def test_not_a_request_is_peticion_invalida_before_identification(shared_bank: RunningBank, plaintext: bytes) -> None:
    with session(shared_bank) as client:
        assert_error(client.request(plaintext), "PETICION_INVALIDA")
        assert_ok(client.identify(GUSTAVO.tarjeta, GUSTAVO.pin))  # the connection goes on, nothing counted
        assert_ok(client.request({"op": "CONSULTAR"}))


IDENTIFIED_BAD = [
    {"op": "DEPOSITAR", "monto": "5.00"},
    {"op": "DEPOSITAR", "id": "abc"},
    {"op": "DEPOSITAR", "monto": "5.00", "id": 12345},
    {"op": "DEPOSITAR", "monto": "5.00", "id": ""},
    {"op": "DEPOSITAR", "monto": "5.00", "id": "a" * 65},
    {"op": "DEPOSITAR", "monto": "5.00", "id": "with space"},
    {"op": "DEPOSITAR", "monto": "5.00", "id": "ñandú"},
    {"op": "RETIRAR", "monto": "5.00", "id": "a.b"},
    {"op": "RETIRAR", "monto": "5.00"},
    {"op": "MOVIMIENTOS", "n": 0},
    {"op": "MOVIMIENTOS", "n": 51},
    {"op": "MOVIMIENTOS", "n": -1},
    {"op": "MOVIMIENTOS", "n": "5"},
    {"op": "MOVIMIENTOS", "n": 2.5},
    {"op": "MOVIMIENTOS", "n": True},
    {"op": "MOVIMIENTOS", "n": None},
    {"op": "CAMBIAR_PIN", "pin_nuevo": "5678"},
    {"op": "CAMBIAR_PIN", "pin_actual": 1234, "pin_nuevo": "5678"},
    {"op": "depositar", "monto": "5.00", "id": "abc"},
    {"op": "BORRAR"},
]


@pytest.mark.parametrize("message", IDENTIFIED_BAD, ids=lambda m: encode_json(m).decode()[:60])
def test_missing_or_mistyped_field_is_peticion_invalida(shared_bank: RunningBank, message: dict[str, Any]) -> None:
    with session(shared_bank, JUAN) as client:
        assert_error(client.request(message), "PETICION_INVALIDA")
        assert assert_ok(client.request({"op": "CONSULTAR"}))["saldo"] == JUAN.saldo  # nothing applied


@pytest.mark.parametrize("monto", [None, True, [], {}, ["5.00"]])
def test_non_string_non_number_monto_is_peticion_invalida(shared_bank: RunningBank, monto: Any) -> None:
    """Server decision: a monto that is neither a string nor a JSON number is PETICION_INVALIDA (mistyped)."""
    with session(shared_bank, JUAN) as client:
        for op in ("DEPOSITAR", "RETIRAR"):
            assert_error(client.request({"op": op, "monto": monto, "id": new_id()}), "PETICION_INVALIDA")
        assert client.saldo() == JUAN.saldo


@pytest.mark.parametrize(
    "message",
    [
        {"op": "CONSULTAR"},
        {"op": "DEPOSITAR", "monto": "5.00", "id": "x1"},
        {"op": "RETIRAR", "monto": "5.00", "id": "x2"},
        {"op": "MOVIMIENTOS"},
        {"op": "MOVIMIENTOS", "n": 5},
        {"op": "CAMBIAR_PIN", "pin_actual": "1234", "pin_nuevo": "5678"},
        {"op": "DEPOSITAR"},
    ],
    ids=lambda m: m["op"] + str(len(m)),
)
def test_account_request_before_identification_is_no_identificado(shared_bank: RunningBank, message: dict) -> None:
    with session(shared_bank) as client:
        assert_error(client.request(message), "NO_IDENTIFICADO")
        assert_error(client.identify(GUSTAVO.tarjeta, "0000"), "PIN_INCORRECTO")
        assert_error(client.request(message), "NO_IDENTIFICADO")  # a failed IDENTIFICAR identifies nothing
        assert_ok(client.identify(GUSTAVO.tarjeta, GUSTAVO.pin))  # resets the count for the next test
    assert balance(shared_bank, GUSTAVO) == Decimal(GUSTAVO.saldo)


def test_unknown_fields_are_ignored(bank: RunningBank) -> None:
    with session(bank) as client:
        assert_ok(client.request({"op": "IDENTIFICAR", "tarjeta": JUAN.tarjeta, "pin": JUAN.pin, "extra": [1, {}]}))
        assert_ok(client.request({"op": "CONSULTAR", "tarjeta": MARIA.tarjeta, "n": "x"}))
        response = assert_ok(client.request({"op": "DEPOSITAR", "monto": "1.00", "id": "u1", "moneda": "USD"}))
        assert response["saldo"] == "821.00"


def test_pipelined_requests_are_answered_in_order(bank: RunningBank) -> None:
    """Several records in one TCP write: one response each, in order."""
    with session(bank) as client:
        frames = [
            client.seal(encode_json({"op": "IDENTIFICAR", "tarjeta": JUAN.tarjeta, "pin": JUAN.pin})),
            client.seal(encode_json({"op": "DEPOSITAR", "monto": "10.00", "id": "p1"})),
            client.seal(encode_json({"op": "CONSULTAR"})),
            client.seal(encode_json({"op": "SALIR"})),
        ]
        client.send_raw(b"".join(frames))
        responses = [client.recv_message() for _ in frames]
        assert responses[0]["titular"] == JUAN.titular
        assert responses[1] == {"ok": True, "id": "p1", "saldo": "830.00"}
        assert responses[2]["saldo"] == "830.00"
        assert responses[3] == {"ok": True}
        assert_closed_cleanly(client)


# -- CONSULTAR ------------------------------------------------------------------------------------------------
def test_consultar(bank: RunningBank) -> None:
    with session(bank, GUSTAVO) as client:
        response = assert_ok(client.request({"op": "CONSULTAR"}))
    assert response == {
        "ok": True,
        "titular": "Gustavo Ali Gómez Trejo",
        "tarjeta": "************1111",
        "saldo": "234444.00",
    }


def test_consultar_masks_12_and_19_digit_cards(make_bank: Callable[..., RunningBank]) -> None:
    short = DemoAccount("123456789012", "Corto", "0.00", "1234")
    long = DemoAccount("1234567890123456789", "Largo", "7.50", "123456")
    bank = make_bank(accounts=(short, long))
    with session(bank, short) as client:
        response = assert_ok(client.request({"op": "CONSULTAR"}))
        assert (response["tarjeta"], response["saldo"]) == ("********9012", "0.00")
    with session(bank, long) as client:
        response = assert_ok(client.request({"op": "CONSULTAR"}))
        assert (response["tarjeta"], response["saldo"]) == ("***************6789", "7.50")


# -- DEPOSITAR / RETIRAR ----------------------------------------------------------------------------------------
def test_deposit_and_withdraw(bank: RunningBank) -> None:
    with session(bank, JUAN) as client:
        response = assert_ok(client.request({"op": "DEPOSITAR", "monto": "180", "id": "d-1"}))
        assert response == {"ok": True, "id": "d-1", "saldo": "1000.00"}
        response = assert_ok(client.request({"op": "RETIRAR", "monto": "0.5", "id": "r_1"}))
        assert response == {"ok": True, "id": "r_1", "saldo": "999.50"}
        assert client.saldo() == "999.50"
        for tx in ("a" * 64, "-", "_", "Z9-_z"):  # the whole id alphabet, and its longest
            assert assert_ok(client.request({"op": "DEPOSITAR", "monto": "0.01", "id": tx}))["id"] == tx
    assert balance(bank, JUAN) == Decimal("999.54")


def test_exact_decimal_arithmetic(bank: RunningBank) -> None:
    with session(bank, JUAN) as client:
        assert assert_ok(client.request({"op": "DEPOSITAR", "monto": "0.10", "id": new_id()}))["saldo"] == "820.10"
        assert assert_ok(client.request({"op": "DEPOSITAR", "monto": "0.20", "id": new_id()}))["saldo"] == "820.30"
        for _ in range(10):
            client.request({"op": "DEPOSITAR", "monto": "0.01", "id": new_id()})
        assert client.saldo() == "820.40"
        assert assert_ok(client.request({"op": "RETIRAR", "monto": "820.39", "id": new_id()}))["saldo"] == "0.01"
        big = "999999999999.99"  # 12 digits: grammatical, above the per-operation maximum
        assert_error(client.request({"op": "DEPOSITAR", "monto": big, "id": new_id()}), "MONTO_INVALIDO")


BAD_AMOUNTS: list[Any] = [
    "0",
    "0.00",
    "0.0",
    "00",
    "1.234",
    "-5",
    "+5",
    "1e3",
    " 5",
    "5 ",
    "1234567890123",
    "1234567890123.00",
    ".5",
    "5.",
    "1,00",
    "12,50",
    "",
    "٥",
    "5\n",
    "0x10",
    "Infinity",
    "NaN",
    5,
    5.0,
    0,
    10000,
]


@pytest.mark.parametrize("op", ["DEPOSITAR", "RETIRAR"])
def test_amount_grammar_is_monto_invalido(shared_bank: RunningBank, op: str) -> None:
    with session(shared_bank, GUSTAVO) as client:
        for monto in BAD_AMOUNTS:
            response = client.request({"op": op, "monto": monto, "id": new_id()})
            assert response.get("error") == "MONTO_INVALIDO", (monto, response)
            assert_error(response, "MONTO_INVALIDO")
        assert client.saldo() == GUSTAVO.saldo


@pytest.mark.parametrize("op", ["DEPOSITAR", "RETIRAR"])
def test_default_per_operation_maximum_is_10000(bank: RunningBank, op: str) -> None:
    with session(bank, GUSTAVO) as client:
        assert_error(client.request({"op": op, "monto": "10000.01", "id": new_id()}), "MONTO_INVALIDO")
        assert client.saldo() == GUSTAVO.saldo
        assert_ok(client.request({"op": op, "monto": "10000.00", "id": new_id()}))
        expected = Decimal(GUSTAVO.saldo) + (Decimal(10000) if op == "DEPOSITAR" else Decimal(-10000))
        assert Decimal(client.saldo()) == expected


def test_configured_per_operation_maximum(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank(extra_args=("--max-operacion", "50.00"))
    with session(bank, JUAN) as client:
        assert_error(client.request({"op": "DEPOSITAR", "monto": "50.01", "id": new_id()}), "MONTO_INVALIDO")
        assert_ok(client.request({"op": "DEPOSITAR", "monto": "50", "id": new_id()}))
        assert client.saldo() == "870.00"


def test_fondos_insuficientes(bank: RunningBank) -> None:
    with session(bank, JUAN) as client:
        failed_id = new_id()
        assert_error(client.request({"op": "RETIRAR", "monto": "820.01", "id": failed_id}), "FONDOS_INSUFICIENTES")
        assert client.saldo() == "820.00"
        assert assert_ok(client.request({"op": "RETIRAR", "monto": "820.00", "id": new_id()}))["saldo"] == "0.00"
        assert_error(client.request({"op": "RETIRAR", "monto": "0.01", "id": new_id()}), "FONDOS_INSUFICIENTES")
        # a failed request changes nothing: its id is still free
        response = assert_ok(client.request({"op": "DEPOSITAR", "monto": "3.00", "id": failed_id}))
        assert response == {"ok": True, "id": failed_id, "saldo": "3.00"}


def test_default_daily_limit_is_20000(bank: RunningBank) -> None:
    with session(bank, GUSTAVO) as client:
        assert_ok(client.request({"op": "RETIRAR", "monto": "10000.00", "id": new_id()}))
        assert_ok(client.request({"op": "RETIRAR", "monto": "10000.00", "id": new_id()}))
        assert_error(client.request({"op": "RETIRAR", "monto": "0.01", "id": new_id()}), "LIMITE_DIARIO")
        assert client.saldo() == "214444.00"


def test_configured_daily_limit_across_connections(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank(extra_args=("--limite-diario", "1000.00"))
    with session(bank, MARIA) as client:
        assert assert_ok(client.request({"op": "RETIRAR", "monto": "600.00", "id": new_id()}))["saldo"] == "14650.50"
    with session(bank, MARIA) as client:
        assert_error(client.request({"op": "RETIRAR", "monto": "400.01", "id": new_id()}), "LIMITE_DIARIO")
        assert_ok(client.request({"op": "DEPOSITAR", "monto": "5000.00", "id": new_id()}))  # deposits don't count
        assert assert_ok(client.request({"op": "RETIRAR", "monto": "400", "id": new_id()}))["saldo"] == "19250.50"
        assert_error(client.request({"op": "RETIRAR", "monto": "0.01", "id": new_id()}), "LIMITE_DIARIO")
    with session(bank, JUAN) as client:  # the limit is per card
        assert_ok(client.request({"op": "RETIRAR", "monto": "800.00", "id": new_id()}))
    assert bank.stop() == 0
    bank.start()
    with session(bank, MARIA) as client:  # and survives a restart
        assert_error(client.request({"op": "RETIRAR", "monto": "0.01", "id": new_id()}), "LIMITE_DIARIO")


def test_error_interno_applies_nothing(make_bank: Callable[..., RunningBank]) -> None:
    """ERROR_INTERNO: "the server failed; nothing was applied". A balance of 26 integer digits (valid per
    LEDGER.md) is beyond what the server's decimal context can add exactly: the deposit is either exact or
    refused with ERROR_INTERNO, and then nothing changed and the session goes on."""
    rich = DemoAccount("777788889999", "Rica", "9" * 26 + ".99", "1234")
    bank = make_bank(accounts=(rich, JUAN))
    with session(bank, rich) as client:
        response = client.request({"op": "DEPOSITAR", "monto": "0.01", "id": "r1"})
        if response.get("ok"):
            assert response["saldo"] == "1" + "0" * 26 + ".00", response
        else:
            assert_error(response, "ERROR_INTERNO")
            assert client.saldo() == rich.saldo
            assert (
                assert_ok(client.request({"op": "RETIRAR", "monto": "0.99", "id": "r2"}))["saldo"] == "9" * 26 + ".00"
            )
            assert client.request({"op": "MOVIMIENTOS"})["movimientos"][0]["id"] == "r2"
            assert len(client.request({"op": "MOVIMIENTOS"})["movimientos"]) == 1


# -- idempotency --------------------------------------------------------------------------------------------------
def test_repeated_deposit_is_applied_once(bank: RunningBank) -> None:
    tx = new_id()
    with session(bank, JUAN) as client:
        first = assert_ok(client.request({"op": "DEPOSITAR", "monto": "12.34", "id": tx}))
        assert first == {"ok": True, "id": tx, "saldo": "832.34"}
        again = assert_ok(client.request({"op": "DEPOSITAR", "monto": "12.34", "id": tx}))
        assert again == {"ok": True, "id": tx, "saldo": "832.34", "repetida": True}
        assert_ok(client.request({"op": "DEPOSITAR", "monto": "1.00", "id": new_id()}))
    with session(bank, JUAN) as client:  # another connection; the answer is the original result
        again = assert_ok(client.request({"op": "DEPOSITAR", "monto": "12.34", "id": tx}))
        assert again == {"ok": True, "id": tx, "saldo": "832.34", "repetida": True}
        assert client.saldo() == "833.34"
        movimientos = assert_ok(client.request({"op": "MOVIMIENTOS", "n": 50}))["movimientos"]
        assert [m["id"] for m in movimientos].count(tx) == 1


def test_repeated_withdrawal_is_applied_once(bank: RunningBank) -> None:
    tx = new_id()
    with session(bank, JUAN) as client:
        assert assert_ok(client.request({"op": "RETIRAR", "monto": "20", "id": tx}))["saldo"] == "800.00"
        again = assert_ok(client.request({"op": "RETIRAR", "monto": "20.00", "id": tx}))
        assert again.get("repetida") is True and again["saldo"] == "800.00"
        assert client.saldo() == "800.00"


def test_same_id_with_other_amount_op_or_card_is_id_repetido(bank: RunningBank) -> None:
    tx = new_id()
    with session(bank, JUAN) as client:
        assert_ok(client.request({"op": "DEPOSITAR", "monto": "10.00", "id": tx}))
        assert_error(client.request({"op": "DEPOSITAR", "monto": "10.01", "id": tx}), "ID_REPETIDO")
        assert_error(client.request({"op": "RETIRAR", "monto": "10.00", "id": tx}), "ID_REPETIDO")
        assert client.saldo() == "830.00"
    with session(bank, MARIA) as client:
        assert_error(client.request({"op": "DEPOSITAR", "monto": "10.00", "id": tx}), "ID_REPETIDO")
        assert client.saldo() == MARIA.saldo


def test_equal_amounts_written_differently(bank: RunningBank) -> None:
    """Contract ambiguity: is "5.5" the same amount as "5.50"? Either way it must be applied only once."""
    tx = new_id()
    with session(bank, JUAN) as client:
        assert_ok(client.request({"op": "DEPOSITAR", "monto": "5.5", "id": tx}))
        response = client.request({"op": "DEPOSITAR", "monto": "5.50", "id": tx})
        assert response.get("repetida") is True or response.get("error") == "ID_REPETIDO", response
        assert client.saldo() == "825.50"


# -- MOVIMIENTOS ----------------------------------------------------------------------------------------------
def test_movimientos_of_a_fresh_account_is_empty(bank: RunningBank) -> None:
    with session(bank, MARIA) as client:
        assert assert_ok(client.request({"op": "MOVIMIENTOS"})) == {"ok": True, "movimientos": []}


def test_movimientos_newest_first_default_and_bounds(bank: RunningBank) -> None:
    done: list[tuple[str, str, str, str]] = []  # id, tipo, monto, saldo
    with session(bank, JUAN) as client:
        for i in range(12):
            op, tipo = ("DEPOSITAR", "DEPOSITO") if i % 3 else ("RETIRAR", "RETIRO")
            tx, monto = f"m{i}", f"{i + 1}.{i:02d}"
            response = assert_ok(client.request({"op": op, "monto": monto, "id": tx}))
            done.append((tx, tipo, f"{Decimal(monto):.2f}", response["saldo"]))
        client.request({"op": "DEPOSITAR", "monto": "1.01", "id": "m0"})  # ID_REPETIDO: not a movement
        client.request({"op": "RETIRAR", "monto": "1.00", "id": "m0"})  # repetida: not a new movement
        with session(bank, GUSTAVO) as other:  # another card's movements are not shown
            other.request({"op": "DEPOSITAR", "monto": "3.00", "id": "otro"})
        newest_first = list(reversed(done))

        default = assert_ok(client.request({"op": "MOVIMIENTOS"}))["movimientos"]
        assert len(default) == 10
        assert [(m["id"], m["tipo"], m["monto"], m["saldo"]) for m in default] == newest_first[:10]
        for m in default:
            assert set(m) == {"id", "fecha", "tipo", "monto", "saldo"}, m
            fecha = datetime.fromisoformat(m["fecha"].replace("Z", "+00:00"))
            assert fecha.tzinfo is not None and fecha.utcoffset() is not None, m["fecha"]
            assert re.search(r"(Z|[+-][0-9]{2}:?[0-9]{2})$", m["fecha"]), m["fecha"]
            assert SALDO_RE.match(m["monto"]) and SALDO_RE.match(m["saldo"]), m
        fechas = [datetime.fromisoformat(m["fecha"].replace("Z", "+00:00")) for m in default]
        assert fechas == sorted(fechas, reverse=True)

        assert len(assert_ok(client.request({"op": "MOVIMIENTOS", "n": 1}))["movimientos"]) == 1
        assert assert_ok(client.request({"op": "MOVIMIENTOS", "n": 1}))["movimientos"][0]["id"] == "m11"
        everything = assert_ok(client.request({"op": "MOVIMIENTOS", "n": 50}))["movimientos"]
        assert [m["id"] for m in everything] == [d[0] for d in newest_first]
        five = assert_ok(client.request({"op": "MOVIMIENTOS", "n": 5}))["movimientos"]
        assert [m["id"] for m in five] == [d[0] for d in newest_first[:5]]
        for n in (0, 51):
            assert_error(client.request({"op": "MOVIMIENTOS", "n": n}), "PETICION_INVALIDA")


def test_movimientos_survive_a_restart(make_bank: Callable[..., RunningBank]) -> None:
    bank = make_bank()
    with session(bank, JUAN) as client:
        client.request({"op": "DEPOSITAR", "monto": "1.00", "id": "a1"})
        client.request({"op": "RETIRAR", "monto": "2.00", "id": "a2"})
    assert bank.stop() == 0
    bank.start()
    with session(bank, JUAN) as client:
        movimientos = assert_ok(client.request({"op": "MOVIMIENTOS"}))["movimientos"]
        assert [(m["id"], m["tipo"], m["monto"], m["saldo"]) for m in movimientos] == [
            ("a2", "RETIRO", "2.00", "819.00"),
            ("a1", "DEPOSITO", "1.00", "821.00"),
        ]


# -- CAMBIAR_PIN --------------------------------------------------------------------------------------------------
def test_cambiar_pin(bank: RunningBank) -> None:
    with session(bank, JUAN) as client:
        assert client.request({"op": "CAMBIAR_PIN", "pin_actual": JUAN.pin, "pin_nuevo": "975310"}) == {"ok": True}
        assert_ok(client.request({"op": "CONSULTAR"}))  # the session goes on
    with session(bank) as client:
        response = client.identify(JUAN.tarjeta, JUAN.pin)
        assert_error(response, "PIN_INCORRECTO")
        assert_ok(client.identify(JUAN.tarjeta, "975310"))


@pytest.mark.parametrize("pin_nuevo", ["123", "1234567", "12a4", "", " 1234", "١٢٣٤"])
def test_cambiar_pin_bad_new_pin_is_pin_invalido(bank: RunningBank, pin_nuevo: str) -> None:
    with session(bank, JUAN) as client:
        assert_error(
            client.request({"op": "CAMBIAR_PIN", "pin_actual": JUAN.pin, "pin_nuevo": pin_nuevo}), "PIN_INVALIDO"
        )
    with session(bank, JUAN):  # the old PIN still works
        pass


def test_three_wrong_current_pins_block_the_card_mid_session(bank: RunningBank) -> None:
    """Server decision: wrong pin_actual values count toward the block; once blocked, the identified session
    gets TARJETA_BLOQUEADA for every account request (SALIR still works). (The new PIN is one that
    is not too easy to guess, so that only pin_actual is wrong.)"""
    with session(bank, JUAN) as client:
        for expected in (2, 1, 0):
            response = client.request({"op": "CAMBIAR_PIN", "pin_actual": "0000", "pin_nuevo": "2580"})
            assert response["intentos_restantes"] == expected, response
        for message in (
            {"op": "CAMBIAR_PIN", "pin_actual": JUAN.pin, "pin_nuevo": "2580"},
            {"op": "CONSULTAR"},
            {"op": "DEPOSITAR", "monto": "1.00", "id": new_id()},
            {"op": "MOVIMIENTOS"},
        ):
            assert_error(client.request(message), "TARJETA_BLOQUEADA")
        assert client.request({"op": "SALIR"}) == {"ok": True}
    with session(bank) as client:
        assert_error(client.identify(JUAN.tarjeta, JUAN.pin), "TARJETA_BLOQUEADA")


def test_cambiar_pin_wrong_current_pin(bank: RunningBank) -> None:
    """Server decision: a wrong pin_actual counts as a wrong PIN in a row (intentos_restantes goes down)."""
    with session(bank, JUAN) as client:
        response = client.request({"op": "CAMBIAR_PIN", "pin_actual": "0000", "pin_nuevo": "5793"})
        assert_error(response, "PIN_INCORRECTO")
        assert response["intentos_restantes"] == 2
    with session(bank) as client:
        assert_error(client.identify(JUAN.tarjeta, "5793"), "PIN_INCORRECTO")
        assert_ok(client.identify(JUAN.tarjeta, JUAN.pin))


# -- SALIR ------------------------------------------------------------------------------------------------------
def test_salir_before_identification(bank: RunningBank) -> None:
    with session(bank) as client:
        assert client.request({"op": "SALIR"}) == {"ok": True}
        assert_closed_cleanly(client)


def test_salir_after_identification(bank: RunningBank) -> None:
    with session(bank, GUSTAVO) as client:
        assert client.request({"op": "SALIR", "motivo": "fin"}) == {"ok": True}
        assert_closed_cleanly(client)


def test_server_never_speaks_first(bank: RunningBank) -> None:
    with session(bank, GUSTAVO) as client:
        data, closed = client.read_until_closed(0.5)
        assert (data, closed) == (b"", False)
        assert_ok(client.request({"op": "CONSULTAR"}))

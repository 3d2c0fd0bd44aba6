"""Typed request -> wire dict -> ``parse_request``: the ATM's encoder agrees with the bank's parser."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.messages import (
    CambiarPin,
    Consultar,
    Depositar,
    Identificar,
    Movimientos,
    Request,
    Retirar,
    Salir,
    decode_object,
    encode,
    parse_request,
    request_op_name,
    request_to_wire,
)

REQUESTS: list[Request] = [
    Identificar("1111111111111111", "1234"),
    Consultar(),
    Depositar(Decimal("500"), "a" * 32),
    Retirar(Decimal("200.50"), "tx_1-B"),
    Movimientos(10),
    CambiarPin("1234", "567890"),
    Salir(),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_round_trip_through_the_wire_and_parse_request(request_: Request) -> None:
    wire = request_to_wire(request_)
    assert wire["op"] == request_op_name(request_)
    assert parse_request(decode_object(encode(wire))) == request_


def test_amounts_go_on_the_wire_as_two_decimal_strings() -> None:
    assert request_to_wire(Depositar(Decimal("500"), "x")) == {"op": "DEPOSITAR", "monto": "500.00", "id": "x"}
    assert request_to_wire(Retirar(Decimal("0.5"), "y"))["monto"] == "0.50"

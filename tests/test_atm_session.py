"""The ATM's session logic, driven by keys and fake bank answers, without Tk or sockets."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atm_gui.session import ACEPTAR, BORRAR, CANCELAR, TECLAS, Ajustes, Pantalla, Sesion

pytestmark = pytest.mark.timeout(60)

CARD = "1111111111111111"
PIN = "1234"


class FakeBank:
    """Answers the session's commands the way the worker would, from an in-memory account."""

    def __init__(self, saldo: str = "1000.00", pin: str = PIN) -> None:
        self.saldo = Decimal(saldo)
        self.pin = pin
        self.intentos = 3
        self.aplicadas: dict[str, tuple[str, Decimal]] = {}
        self.comandos: list[tuple[str, dict[str, Any]]] = []
        self.abiertas = 0

    def responder(self, sesion: Sesion, ahora: float = 0.0) -> None:
        while comandos := sesion.tomar_comandos():
            for kind, payload in comandos:
                self.responder_uno(sesion, kind, payload, ahora)

    def responder_uno(self, sesion: Sesion, kind: str, payload: dict[str, Any], ahora: float) -> None:
        if True:
            self.comandos.append((kind, payload))
            if kind == "abrir":
                self.abiertas += 1
                sesion.evento("conectado", {"sesion": payload["sesion"]}, ahora)
            elif kind == "cerrar":
                self.abiertas -= 1
            elif kind == "recibo":
                sesion.evento("recibo_guardado", {"sesion": payload["sesion"], "nombre": payload["nombre"]}, ahora)
            elif kind == "pedir":
                respuesta = self.atender(payload["mensaje"])
                evento = {"sesion": payload["sesion"], "op": payload["op"], "respuesta": respuesta}
                sesion.evento("respuesta", evento, ahora)

    def atender(self, m: dict[str, Any]) -> dict[str, Any]:
        op = m["op"]
        if op == "IDENTIFICAR":
            if self.intentos == 0:
                return {"ok": False, "error": "TARJETA_BLOQUEADA", "mensaje": "Su tarjeta está bloqueada."}
            if m["pin"] != self.pin:
                self.intentos -= 1
                if self.intentos == 0:
                    return {"ok": False, "error": "TARJETA_BLOQUEADA", "mensaje": "Su tarjeta está bloqueada."}
                return {
                    "ok": False,
                    "error": "PIN_INCORRECTO",
                    "mensaje": "El PIN es incorrecto.",
                    "intentos_restantes": self.intentos,
                }
            self.intentos = 3
            return {"ok": True, "titular": "Gustavo Ali Gómez Trejo"}
        if op == "CONSULTAR":
            return {"ok": True, "titular": "G", "tarjeta": "************1111", "saldo": f"{self.saldo:.2f}"}
        if op in ("DEPOSITAR", "RETIRAR"):
            monto = Decimal(m["monto"])
            if m["id"] in self.aplicadas:
                return {"ok": True, "id": m["id"], "saldo": f"{self.saldo:.2f}", "repetida": True}
            if op == "RETIRAR" and monto > self.saldo:
                return {"ok": False, "error": "FONDOS_INSUFICIENTES", "mensaje": "Fondos insuficientes."}
            self.saldo += monto if op == "DEPOSITAR" else -monto
            self.aplicadas[m["id"]] = (op, monto)
            return {"ok": True, "id": m["id"], "saldo": f"{self.saldo:.2f}"}
        if op == "MOVIMIENTOS":
            return {
                "ok": True,
                "movimientos": [
                    {
                        "id": "a",
                        "fecha": "2026-11-23T10:00:00-06:00",
                        "tipo": "DEPOSITO",
                        "monto": "500.00",
                        "saldo": "1500.00",
                    }
                ],
            }
        if op == "CAMBIAR_PIN":
            if m["pin_actual"] != self.pin:
                return {"ok": False, "error": "PIN_INCORRECTO", "mensaje": "PIN incorrecto.", "intentos_restantes": 2}
            self.pin = m["pin_nuevo"]
            return {"ok": True}
        return {"ok": True}


def keys(text: str) -> list[str]:
    """'1234⏎' style: digits, ⏎ ACEPTAR, ⎋ CANCELAR, ⌫ BORRAR, and F1..F8 written as [F1]."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            end = text.index("]", i)
            out.append(text[i + 1 : end])
            i = end + 1
            continue
        out.append({"⏎": ACEPTAR, "⎋": CANCELAR, "⌫": BORRAR}.get(ch, ch))
        i += 1
    return out


def press(sesion: Sesion, bank: FakeBank, text: str, ahora: float = 0.0) -> None:
    for k in keys(text):
        sesion.tecla(k, ahora)
        bank.responder(sesion, ahora)


def logged_in(bank: FakeBank | None = None, **ajustes: Any) -> tuple[Sesion, FakeBank]:
    bank = bank or FakeBank()
    sesion = Sesion(Ajustes(**ajustes), reloj=lambda: datetime(2026, 11, 23, 14, 5, 9))
    press(sesion, bank, f"{CARD}⏎{PIN}⏎")
    assert sesion.pantalla is Pantalla.MENU
    return sesion, bank


def test_welcome_shows_card_prompt_and_groups_digits():
    sesion = Sesion()
    v = sesion.vista(0)
    assert v.subtitulo == "Inserte su tarjeta"
    for k in "11112222":
        sesion.tecla(k, 0)
    assert sesion.vista(0).entrada == "1111 2222"
    sesion.tecla(BORRAR, 0)
    assert sesion.vista(0).entrada == "1111 222"


def test_short_card_is_refused_with_a_message():
    sesion = Sesion()
    press(sesion, FakeBank(), "123⏎")
    assert sesion.pantalla is Pantalla.BIENVENIDA
    assert "12 a 19" in sesion.vista(0).aviso
    assert sesion.tomar_comandos() == []


def test_card_opens_one_connection_and_pin_is_masked():
    sesion = Sesion()
    press(sesion, FakeBank(), f"{CARD}⏎")
    assert sesion.pantalla is Pantalla.PIN
    for k in "123":
        sesion.tecla(k, 0)
    v = sesion.vista(0)
    assert v.entrada == "●●●"
    assert "123" not in repr(v)


def test_pin_length_is_checked():
    sesion = Sesion()
    bank = FakeBank()
    press(sesion, bank, f"{CARD}⏎123⏎")
    assert sesion.pantalla is Pantalla.PIN and "4 a 6" in sesion.vista(0).aviso
    press(sesion, bank, "4567890")  # at most 6 digits are taken
    assert sesion.vista(0).entrada == "●" * 6


def test_wrong_pin_shows_attempts_left_then_blocks_and_returns_card():
    sesion = Sesion()
    bank = FakeBank()
    press(sesion, bank, f"{CARD}⏎9999⏎")
    assert sesion.pantalla is Pantalla.PIN
    assert "Le quedan 2 intentos" in sesion.vista(0).aviso
    press(sesion, bank, "9999⏎")
    assert "Le queda 1 intento" in sesion.vista(0).aviso
    press(sesion, bank, "9999⏎")
    v = sesion.vista(0)
    assert sesion.pantalla is Pantalla.RETIRE_TARJETA and v.titulo == "Retire su tarjeta"
    assert any("bloqueada" in linea for linea in v.lineas)
    assert bank.abiertas == 0
    sesion.tick(100)
    assert sesion.pantalla is Pantalla.BIENVENIDA


def test_menu_by_digit_and_by_side_key():
    sesion, bank = logged_in()
    v = sesion.vista(0)
    assert v.izquierda[0] == "1 · Consultar saldo" and v.derecha[1] == "Salir · 6"
    assert "Gustavo" in v.aviso
    press(sesion, bank, "1")
    assert sesion.pantalla is Pantalla.RESULTADO
    assert "Saldo disponible: $1,000.00" in sesion.vista(0).lineas
    press(sesion, bank, "⏎[F2]")
    assert sesion.pantalla is Pantalla.DEPOSITO_MONTO


def test_must_show_sequence_deposit_then_withdraw():
    """The issue's key sequence: 2 500 ⏎ ⏎ deposits; ⏎ 3 200 ⏎ ⏎ withdraws."""
    sesion, bank = logged_in()
    press(sesion, bank, "2500⏎")
    assert sesion.pantalla is Pantalla.DEPOSITO_CONFIRMAR
    assert "Monto: $500.00" in sesion.vista(0).lineas
    press(sesion, bank, "⏎")
    assert sesion.pantalla is Pantalla.RESULTADO
    assert "Nuevo saldo: $1,500.00" in sesion.vista(0).lineas
    press(sesion, bank, "⏎3200⏎")
    assert sesion.pantalla is Pantalla.RETIRO_CONFIRMAR
    press(sesion, bank, "⏎")
    assert "Nuevo saldo: $1,300.00" in sesion.vista(0).lineas
    assert bank.saldo == Decimal("1300.00")
    ops = [p["mensaje"] for k, p in bank.comandos if k == "pedir" and p["op"] in ("DEPOSITAR", "RETIRAR")]
    assert [(m["op"], m["monto"]) for m in ops] == [("DEPOSITAR", "500.00"), ("RETIRAR", "200.00")]
    assert all(len(m["id"]) == 32 for m in ops)


def test_withdrawal_must_be_a_multiple_of_the_smallest_note():
    sesion, bank = logged_in()
    press(sesion, bank, "3250⏎")
    assert sesion.pantalla is Pantalla.RETIRO_MONTO
    assert "múltiplo de $100.00" in sesion.vista(0).aviso
    press(sesion, bank, "300⏎")
    assert sesion.pantalla is Pantalla.RETIRO_CONFIRMAR


def test_smallest_note_is_configurable_and_quick_amounts_follow_it():
    sesion, bank = logged_in(billete_minimo=Decimal(200))
    press(sesion, bank, "3")
    v = sesion.vista(0)
    assert "$100.00" not in v.izquierda and "$200.00" in v.izquierda
    press(sesion, bank, "[F1]")
    assert sesion.pantalla is Pantalla.RETIRO_CONFIRMAR
    assert "Monto: $200.00" in sesion.vista(0).lineas


def test_quick_amount_side_key_and_correct():
    sesion, bank = logged_in()
    press(sesion, bank, "3[F3]")
    assert "Monto: $500.00" in sesion.vista(0).lineas
    press(sesion, bank, "[F4]")
    assert sesion.pantalla is Pantalla.RETIRO_MONTO
    press(sesion, bank, "[F8]")
    assert sesion.pantalla is Pantalla.MENU


def test_insufficient_funds_is_a_result_with_the_banks_message():
    sesion, bank = logged_in(FakeBank(saldo="100.00"))
    press(sesion, bank, "3[F4]⏎")
    v = sesion.vista(0)
    assert v.titulo == "Retiro no realizado" and "Fondos insuficientes" in v.lineas[0]


def test_receipt_has_masked_card_and_no_pin():
    sesion, bank = logged_in()
    press(sesion, bank, "2500⏎⏎[F4]")
    assert sesion.pantalla is Pantalla.RECIBO
    recibos = [p for k, p in bank.comandos if k == "recibo"]
    assert len(recibos) == 1
    texto = recibos[0]["texto"]
    assert "************1111" in texto and CARD not in texto and PIN not in texto.replace("1234", "", 0)
    for needed in ("23/11/2026", "14:05:09", "CAJERO-01", "Depósito", "$500.00", "$1,500.00", "Folio:"):
        assert needed in texto
    assert recibos[0]["nombre"].startswith("recibo-20261123-140509-")
    assert sesion.vista(0).subtitulo.startswith("Recibo guardado")
    press(sesion, bank, "⏎")
    assert sesion.pantalla is Pantalla.MENU


def test_movements_and_change_pin():
    sesion, bank = logged_in()
    press(sesion, bank, "4")
    v = sesion.vista(0)
    assert v.tabla and "Depósito" in v.lineas[0] and "     +$500.00" in v.lineas[0]
    press(sesion, bank, "⏎5")
    assert sesion.pantalla is Pantalla.PIN_ACTUAL
    press(sesion, bank, "1234⏎5678⏎5679⏎")
    assert sesion.pantalla is Pantalla.PIN_NUEVO and "no coinciden" in sesion.vista(0).aviso
    press(sesion, bank, "5678⏎5678⏎")
    assert sesion.vista(0).titulo == "PIN cambiado" and bank.pin == "5678"
    pedidos = [p for k, p in bank.comandos if k == "pedir"]
    assert pedidos[-1]["mensaje"] == {"op": "CAMBIAR_PIN", "pin_actual": "1234", "pin_nuevo": "5678"}
    assert "5678" not in repr(sesion.pendiente)


def test_after_result_aceptar_goes_to_menu_and_cancelar_ends():
    sesion, bank = logged_in()
    press(sesion, bank, "1⏎")
    assert sesion.pantalla is Pantalla.MENU
    press(sesion, bank, "1⎋")
    assert sesion.pantalla is Pantalla.RETIRE_TARJETA
    assert bank.comandos[-1][0] == "cerrar" and bank.abiertas == 0
    sesion.tick(3.9)
    assert sesion.pantalla is Pantalla.RETIRE_TARJETA
    sesion.tick(4.0)
    assert sesion.pantalla is Pantalla.BIENVENIDA


def test_menu_six_is_salir():
    sesion, bank = logged_in()
    press(sesion, bank, "6")
    assert sesion.pantalla is Pantalla.RETIRE_TARJETA and bank.abiertas == 0


def test_inactivity_asks_for_more_time_then_ends():
    sesion, bank = logged_in()
    sesion.tick(29.9)
    assert sesion.pantalla is Pantalla.MENU
    sesion.tick(30.0)
    assert sesion.pantalla is Pantalla.MAS_TIEMPO
    assert sesion.vista(30.0).lineas[0] == "Su sesión terminará en 15 s."
    assert sesion.vista(40.2).lineas[0] == "Su sesión terminará en 5 s."
    sesion.tecla(ACEPTAR, 41)
    assert sesion.pantalla is Pantalla.MENU
    sesion.tick(71)
    assert sesion.pantalla is Pantalla.MAS_TIEMPO
    sesion.tick(86)
    assert sesion.pantalla is Pantalla.RETIRE_TARJETA
    bank.responder(sesion)
    assert bank.abiertas == 0


def test_no_inactivity_prompt_while_waiting_for_the_bank():
    sesion = Sesion()
    bank = FakeBank()
    press(sesion, bank, f"{CARD}⏎")
    for k in keys(f"{PIN}⏎"):
        sesion.tecla(k, 0)
    sesion.tick(100)
    assert sesion.pantalla is Pantalla.ESPERA


def test_late_answer_of_an_ended_session_is_ignored():
    sesion = Sesion()
    bank = FakeBank()
    press(sesion, bank, f"{CARD}⏎{PIN}⏎2500⏎")
    sesion.tecla(ACEPTAR, 0)
    pedido = next(p for k, p in sesion.tomar_comandos() if k == "pedir")
    sesion.tecla(CANCELAR, 0)
    assert sesion.pendiente is None
    sesion.tick(10)
    respuesta = {"ok": True, "id": pedido["mensaje"]["id"], "saldo": "1500.00"}
    sesion.evento("respuesta", {"sesion": pedido["sesion"], "op": "DEPOSITAR", "respuesta": respuesta}, 10)
    assert sesion.pantalla is Pantalla.BIENVENIDA


def test_unreachable_bank_at_card_then_recovers():
    sesion = Sesion()
    press(sesion, FakeBank(), f"{CARD}")
    sesion.tecla(ACEPTAR, 0)
    ((kind, payload),) = sesion.tomar_comandos()
    assert kind == "abrir"
    sesion.evento("sin_conexion", {"sesion": payload["sesion"], "motivo": "inalcanzable"}, 0)
    v = sesion.vista(0)
    assert v.titulo == "Fuera de servicio" and "No hay comunicación con el banco." in v.lineas
    sesion.evento("conectado", {"sesion": payload["sesion"]}, 1)
    assert sesion.pantalla is Pantalla.PIN


def test_wrong_key_screen_and_welcome_out_of_service():
    sesion = Sesion()
    sesion.evento("estado", {"en_linea": False, "motivo": "llave"}, 0)
    v = sesion.vista(0)
    assert v.titulo == "Fuera de servicio"
    assert "Este cajero no tiene la llave del banco." in v.lineas
    for k in CARD + ACEPTAR:
        sesion.tecla(k, 0)
    assert sesion.tomar_comandos() == []
    sesion.evento("estado", {"en_linea": True}, 0)
    assert sesion.vista(0).subtitulo == "Inserte su tarjeta"


def test_lost_request_ends_session_with_a_true_message():
    sesion, _bank = logged_in()
    sesion.tecla("2", 0)
    for k in "500":
        sesion.tecla(k, 0)
    sesion.tecla(ACEPTAR, 0)
    sesion.tecla(ACEPTAR, 0)
    n = sesion.numero
    sesion.tomar_comandos()
    sesion.evento("reconectando", {"sesion": n, "intento": 2}, 0)
    assert "intento 2" in sesion.vista(0).aviso
    sesion.evento("fallo", {"sesion": n, "op": "DEPOSITAR"}, 0)
    v = sesion.vista(0)
    assert sesion.pantalla is Pantalla.RETIRE_TARJETA and "No se pudo confirmar" in v.lineas[0]
    assert sesion.pendiente is None


def test_everything_the_customer_reads_is_spanish_text():
    sesion, bank = logged_in()
    for seq in ("1⏎", "2500⏎", "⏎", "[F4]⏎", "3", "⎋"):
        press(sesion, bank, seq)
        v = sesion.vista(0)
        textos = [v.titulo, v.subtitulo, v.aviso, v.ayuda, v.entrada or "", *v.lineas, *v.izquierda, *v.derecha]
        assert v.titulo and not any("None" in t or "Traceback" in t or "Error" in t for t in textos)


# Worker events that may arrive at any moment, besides the bank's answers.
TROUBLE = {
    "!sin_conexion": ("sin_conexion", {"motivo": "inalcanzable"}),
    "!llave": ("sin_conexion", {"motivo": "llave"}),
    "!conectado": ("conectado", {}),
    "!reconectando": ("reconectando", {"intento": 1}),
    "!fallo": ("fallo", {"op": "DEPOSITAR"}),
    "!fuera": ("estado", {"en_linea": False, "motivo": "inalcanzable"}),
    "!dentro": ("estado", {"en_linea": True}),
}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TECLAS + ("1",) * 5 + (ACEPTAR,) * 5 + tuple(TROUBLE)), max_size=60),
    st.lists(st.floats(min_value=0, max_value=20), max_size=60),
    st.booleans(),
)
def test_cancelar_always_ends_on_welcome_with_nothing_pending(teclas, pausas, answer_bank):
    """Any keys, pauses, connection trouble, bank answering or silent: CANCELAR ends safely."""
    bank = FakeBank()
    sesion = Sesion()
    ahora = 0.0
    prefix = keys(f"{CARD}⏎{PIN}⏎")
    for i, k in enumerate(prefix + teclas):
        ahora += pausas[i] if i < len(pausas) else 0.1
        sesion.tick(ahora)
        if k in TROUBLE:
            kind, payload = TROUBLE[k]
            sesion.evento(kind, {"sesion": sesion.numero, **payload}, ahora)
        else:
            sesion.tecla(k, ahora)
        if answer_bank:
            bank.responder(sesion, ahora)
        v = sesion.vista(ahora)
        assert v.titulo
    sesion.tecla(CANCELAR, ahora)
    if answer_bank:
        bank.responder(sesion, ahora)
    assert sesion.pendiente is None
    assert not sesion.abierta
    comandos = bank.comandos if answer_bank else sesion.tomar_comandos()
    abiertos = sum(1 for k, _ in comandos if k == "abrir") - sum(1 for k, _ in comandos if k == "cerrar")
    assert abiertos == 0
    sesion.tick(ahora + 10)
    assert sesion.pantalla is Pantalla.BIENVENIDA
    sesion.evento("estado", {"en_linea": True}, ahora + 10)
    assert sesion.vista(ahora + 10).entrada == ""


def test_keys_typed_while_the_bank_answers_are_replayed_in_order():
    """The must-show sequence typed at full speed, every bank answer arriving late."""
    sesion = Sesion()
    bank = FakeBank()
    for k in keys(f"{CARD}⏎{PIN}⏎2500⏎⏎⏎3200⏎⏎"):
        sesion.tecla(k, 0)
    assert sesion.pantalla is Pantalla.ESPERA
    bank.responder(sesion)
    assert sesion.pantalla is Pantalla.RESULTADO
    assert "Nuevo saldo: $1,300.00" in sesion.vista(0).lineas
    ops = [p["op"] for k, p in bank.comandos if k == "pedir"]
    assert ops == ["IDENTIFICAR", "DEPOSITAR", "RETIRAR"]


def test_cancelar_while_waiting_drops_the_type_ahead():
    sesion = Sesion()
    bank = FakeBank()
    for k in keys(f"{CARD}⏎{PIN}⏎2500"):
        sesion.tecla(k, 0)
    sesion.tecla(CANCELAR, 0)
    bank.responder(sesion)
    sesion.tick(10)
    assert sesion.pantalla is Pantalla.BIENVENIDA and sesion.vista(10).entrada == ""

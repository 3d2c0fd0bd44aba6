"""Each screen of the ATM as a ``Vista``: titles, lines, side-key labels, the input field.

Why a function of the session rather than part of it: the rules
(``session``) decide which screen is current; this module only says
what that screen shows, so wording and layout change without touching
the state machine, and the state machine stays small.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from atm_gui.model import PIN_PANTALLAS, Pantalla, Vista
from atm_gui.wording import MENU_OPCIONES, MOTIVOS, agrupar_tarjeta, pesos

if TYPE_CHECKING:
    from atm_gui.session import Sesion


def construir(s: Sesion, ahora: float) -> Vista:
    """The screen for the session's current state (reads the session, changes nothing)."""
    p = s.pantalla
    banco = s.aj.banco
    aviso = s._aviso
    if p is Pantalla.BIENVENIDA:
        if not s.en_linea:
            linea1, linea2 = MOTIVOS.get(s.motivo_fuera, MOTIVOS["inalcanzable"])
            return Vista(p.value, "Fuera de servicio", banco, (linea1, linea2, "Disculpe las molestias."))
        return Vista(
            p.value,
            banco,
            "Inserte su tarjeta",
            ("Teclee el número de su tarjeta", "y oprima ACEPTAR."),
            etiqueta="Tarjeta:",
            entrada=agrupar_tarjeta(s._entrada),
            aviso=aviso,
            ayuda="ACEPTAR continuar · BORRAR corregir",
        )
    if p is Pantalla.PIN:
        return Vista(
            p.value,
            banco,
            "Teclee su PIN",
            ("Cubra el teclado al teclear su PIN.",),
            etiqueta="PIN:",
            entrada="●" * len(s._entrada),
            aviso=aviso,
            ayuda="ACEPTAR continuar · CANCELAR salir",
        )
    if p is Pantalla.MENU:
        e = [f"{n} · {t}" for n, t in MENU_OPCIONES[:4]]
        d = [f"{t} · {n}" for n, t in MENU_OPCIONES[4:]]
        return Vista(
            p.value,
            banco,
            "Seleccione una operación",
            (),
            (e[0], e[1], e[2], e[3]),
            (d[0], d[1], "", ""),
            aviso=aviso,
            ayuda="Oprima la tecla lateral o el número",
        )
    if p is Pantalla.ESPERA:
        progreso = int(ahora * 2) % 4  # a slow pulse, so a long wait visibly is not a frozen screen
        puntos = " ".join("●" if i < progreso else "○" for i in range(3))
        return Vista(p.value, s._espera or "Procesando…", "Por favor espere", (puntos,), aviso=aviso)
    if p is Pantalla.DEPOSITO_MONTO:
        return Vista(
            p.value,
            "Depósito",
            "Teclee el monto a depositar",
            ("Solo pesos completos.",),
            derecha=("", "", "", "Regresar"),
            etiqueta="Monto:",
            entrada=pesos(Decimal(s._entrada or "0")),
            aviso=aviso,
            ayuda="ACEPTAR continuar · BORRAR corregir",
        )
    if p is Pantalla.RETIRO_MONTO:
        rapidos = [pesos(m) for m in s._montos_rapidos()] + [""] * 8
        return Vista(
            p.value,
            "Retiro",
            "Elija o teclee el monto",
            (f"Múltiplos de {pesos(s.aj.billete_minimo)}",),
            (rapidos[0], rapidos[1], rapidos[2], rapidos[3]),
            (rapidos[4], rapidos[5], rapidos[6], "Regresar"),
            etiqueta="Monto:",
            entrada=pesos(Decimal(s._entrada or "0")),
            aviso=aviso,
            ayuda="ACEPTAR continuar · BORRAR corregir",
        )
    if p in (Pantalla.DEPOSITO_CONFIRMAR, Pantalla.RETIRO_CONFIRMAR):
        nombre = "depósito" if p is Pantalla.DEPOSITO_CONFIRMAR else "retiro"
        return Vista(
            p.value,
            f"Confirme su {nombre}",
            "",
            (f"Monto: {pesos(s._monto)}", "", "¿Es correcto?"),
            ("", "", "", "Corregir"),
            ("", "", "", "Confirmar"),
            aviso=aviso,
            ayuda="ACEPTAR confirmar · CANCELAR salir",
        )
    if p in PIN_PANTALLAS:
        subtitulos = {
            Pantalla.PIN_ACTUAL: "Teclee su PIN actual",
            Pantalla.PIN_NUEVO: "Teclee su PIN nuevo (4 a 6 dígitos)",
            Pantalla.PIN_REPETIR: "Teclee otra vez su PIN nuevo",
        }
        return Vista(
            p.value,
            "Cambio de PIN",
            subtitulos[p],
            (),
            etiqueta="PIN:",
            entrada="●" * len(s._entrada),
            aviso=aviso,
            ayuda="ACEPTAR continuar · CANCELAR salir",
        )
    if p is Pantalla.RESULTADO:
        r = s._resultado
        assert r is not None
        return Vista(
            p.value,
            r.titulo,
            "",
            tuple(r.lineas),
            ("", "", "", "Recibo"),
            ("", "", "", "Menú"),
            aviso=aviso,
            ayuda="ACEPTAR menú · CANCELAR terminar",
            tabla=r.operacion == "Movimientos",
        )
    if p is Pantalla.RECIBO:
        return Vista(
            p.value,
            "Su recibo",
            s._recibo_estado,
            tuple(s._recibo),
            derecha=("", "", "", "Menú"),
            ayuda="ACEPTAR menú · CANCELAR terminar",
            tabla=True,
        )
    if p is Pantalla.MAS_TIEMPO:
        restante = max(0, int(s._hasta - ahora + 0.999))
        return Vista(
            p.value,
            "¿Necesita más tiempo?",
            "",
            (f"Su sesión terminará en {restante} s.",),
            ("", "", "", "No"),
            ("", "", "", "Sí"),
            ayuda="ACEPTAR sí · CANCELAR no",
        )
    if p is Pantalla.RETIRE_TARJETA:
        lineas = (s._mensaje_final,) if s._mensaje_final else ()
        return Vista(p.value, "Retire su tarjeta", "Gracias por usar " + banco, (*lineas, "", "Hasta pronto."))
    # FUERA_SERVICIO during a session
    linea1, linea2 = MOTIVOS.get(s._motivo, MOTIVOS["inalcanzable"])
    return Vista(p.value, "Fuera de servicio", banco, (linea1, linea2), ayuda="CANCELAR terminar")

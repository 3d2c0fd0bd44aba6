"""The Tk window: paints the session's ``Vista``, turns clicks and keys into session keys.

Why it is thin: every decision lives in ``session.Sesion`` (tested
without a display) and every slow thing in ``worker.Worker``. This
module only draws, binds keys, and pumps: every ``PERIODO_MS`` it
drains the worker's result queue with ``after()``, advances the
session's clock and hands the session's commands to the worker. Nothing
here waits on a socket, a lock or a thread, so the window never freezes.

The screen is a ``Canvas`` redrawn from the ``Vista`` whenever it
changes or the window is resized: font sizes are computed from the
canvas size, and each side-key label is placed at the height of its
button, so labels stay beside their keys at any window size.
"""

from __future__ import annotations

import logging
import queue
import time
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable
from pathlib import Path
from tkinter import ttk

from atm_gui.session import ACEPTAR, BORRAR, CANCELAR, LATERALES, Sesion, Vista
from atm_gui.worker import Worker

PERIODO_MS = 25
log = logging.getLogger("cajero.atm")

# Colours: a dark green phosphor screen in a graphite cabinet.
GABINETE = "#2b3035"
GABINETE_CLARO = "#3a4047"
PANTALLA = "#04140b"
BORDE_PANTALLA = "#16402a"
VERDE = "#7dffa4"
VERDE_MEDIO = "#48d17c"
VERDE_TENUE = "#2f8a55"
AMBAR = "#ffd166"
TEXTO_GABINETE = "#d7dde3"
ORO = "#e9c46a"

TECLAS_FISICAS = {
    "Return": ACEPTAR,
    "KP_Enter": ACEPTAR,
    "Escape": CANCELAR,
    "BackSpace": BORRAR,
    "Delete": BORRAR,
    **{f"F{i}": f"F{i}" for i in range(1, 9)},
}


def _familia(root: tk.Misc, preferidas: tuple[str, ...], reserva: str) -> str:
    disponibles = {f.lower() for f in tkfont.families(root)}
    return next((f for f in preferidas if f.lower() in disponibles), reserva)


class CajeroApp:
    """The ATM window. ``worker`` may be ``None`` in tests that only look at drawing."""

    def __init__(
        self,
        root: tk.Tk,
        sesion: Sesion,
        worker: Worker | None,
        destino: str = "",
        reloj: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.sesion = sesion
        self.worker = worker
        self.reloj = reloj
        self._vista: Vista | None = None
        self._estado_texto = f"Conectando con el banco ({destino})…" if destino else "Sin banco"
        self._en_linea: bool | None = None
        self._cerrado = False
        aj = sesion.aj

        root.title(f"Cajero · {aj.banco} · {aj.cajero_id}")
        self._icono(root)
        root.configure(background=GABINETE)
        root.geometry("900x820")
        root.minsize(620, 600)
        mono = _familia(root, ("DejaVu Sans Mono", "Consolas", "Menlo", "Courier New"), "TkFixedFont")
        sans = _familia(root, ("DejaVu Sans", "Segoe UI", "Helvetica Neue", "Arial"), "TkDefaultFont")
        self.f_pantalla = mono
        self.f_teclas = tkfont.Font(root, family=sans, size=-22, weight="bold")
        self.f_laterales = tkfont.Font(root, family=sans, size=-20, weight="bold")
        self.f_estado = tkfont.Font(root, family=sans, size=-14)
        self.f_marca = tkfont.Font(root, family=sans, size=-24, weight="bold")
        self.f_marca_sub = tkfont.Font(root, family=sans, size=-13)
        # One font object for measuring, reused: Tk objects must never be freed outside the Tk thread.
        self.f_medida = tkfont.Font(root, family=mono, size=-20, weight="bold")
        self._estilos()
        self._construir()
        self._atajos()
        root.protocol("WM_DELETE_WINDOW", self.cerrar)
        root.report_callback_exception = self._error_interno
        root.bind("<Configure>", self._al_redimensionar, add="+")
        self._pintar(forzar=True)
        self._bomba = self.root.after(PERIODO_MS, self._bombear)

    def _icono(self, root: tk.Tk) -> None:
        """The window icon, found relative to this module: the same from source and inside a bundle."""
        ruta = Path(__file__).resolve().parent.parent / "packaging" / "cajero.png"
        try:
            self._imagen_icono = tk.PhotoImage(master=root, file=str(ruta))
            root.iconphoto(True, self._imagen_icono)
        except tk.TclError:
            log.info("sin icono de ventana (%s)", ruta)

    # -- construction --------------------------------------------------------------
    def _estilos(self) -> None:
        s = ttk.Style(self.root)
        if "clam" in s.theme_names():
            s.theme_use("clam")
        s.configure("Gabinete.TFrame", background=GABINETE)
        s.configure("Marca.TLabel", background=GABINETE, foreground=ORO, font=self.f_marca)
        s.configure("MarcaSub.TLabel", background=GABINETE, foreground=TEXTO_GABINETE, font=self.f_marca_sub)
        s.configure(
            "Estado.TLabel", background="#1f2327", foreground=TEXTO_GABINETE, font=self.f_estado, padding=(10, 4)
        )
        s.configure("Punto.TLabel", background="#1f2327", font=self.f_estado, padding=(10, 4, 0, 4))
        comunes = {"font": self.f_teclas, "borderwidth": 2, "relief": "raised", "padding": 6, "focusthickness": 0}
        colores = {
            "Tecla": ("#e4e7ea", "#1b1f23", "#f4f6f8", "#c9ced3"),
            "Cancelar": ("#c62828", "#ffffff", "#e53935", "#9f1f1f"),
            "Borrar": ("#f9c80e", "#1b1f23", "#ffd84d", "#d4a90a"),
            "Aceptar": ("#2e7d32", "#ffffff", "#43a047", "#1f5f23"),
            "Lateral": ("#9aa3ab", "#1b1f23", "#b7bec5", "#7d858c"),
        }
        for nombre, (fondo, texto, activo, presionado) in colores.items():
            estilo = f"{nombre}.TButton"
            s.configure(
                estilo,
                background=fondo,
                foreground=texto,
                bordercolor=GABINETE_CLARO,
                lightcolor=activo,
                darkcolor=presionado,
                **comunes,
            )
            s.map(estilo, background=[("pressed", presionado), ("active", activo)], foreground=[("disabled", "#777")])
        s.configure("Lateral.TButton", font=self.f_laterales, padding=(14, 4))

    def _construir(self) -> None:
        root = self.root
        root.columnconfigure(0, weight=1)
        root.rowconfigure(1, weight=1)

        marca = ttk.Frame(root, style="Gabinete.TFrame", padding=(20, 12, 20, 4))
        marca.grid(row=0, column=0, sticky="ew")
        ttk.Label(marca, text=self.sesion.aj.banco.upper(), style="Marca.TLabel").pack(side="left")
        ttk.Label(marca, text=f"   Cajero automático · {self.sesion.aj.cajero_id}", style="MarcaSub.TLabel").pack(
            side="left", pady=(8, 0)
        )

        zona = ttk.Frame(root, style="Gabinete.TFrame", padding=(12, 6))
        zona.grid(row=1, column=0, sticky="nsew")
        zona.columnconfigure(1, weight=1)
        for fila, peso in ((0, 5), (1, 3), (2, 3), (3, 3), (4, 3), (5, 6)):
            zona.rowconfigure(fila, weight=peso, uniform="filas")  # proportional: labels track their keys
        self.canvas = tk.Canvas(
            zona, background=PANTALLA, highlightthickness=6, highlightbackground=BORDE_PANTALLA, borderwidth=0
        )
        self.canvas.grid(row=0, column=1, rowspan=6, sticky="nsew", padx=10)
        self.canvas.bind("<Configure>", lambda _e: self._pintar(forzar=True))
        self.laterales: dict[str, ttk.Button] = {}
        for i, tecla in enumerate(LATERALES):
            columna, fila = (0, i + 1) if i < 4 else (2, i - 3)
            boton = ttk.Button(
                zona,
                text="▶" if columna == 0 else "◀",
                style="Lateral.TButton",
                width=3,
                takefocus=False,
                command=lambda t=tecla: self.tecla(t),
            )
            boton.grid(row=fila, column=columna, sticky="ew", pady=6)
            self.laterales[tecla] = boton

        teclado = ttk.Frame(root, style="Gabinete.TFrame", padding=(0, 10, 0, 14))
        teclado.grid(row=2, column=0)
        self.botones: dict[str, ttk.Button] = {}
        for i, d in enumerate("123456789"):
            self._boton(teclado, d, d, "Tecla", i // 3, i % 3)
        self._boton(teclado, "0", "0", "Tecla", 3, 1)
        self._boton(teclado, "CANCELAR", CANCELAR, "Cancelar", 0, 3)
        self._boton(teclado, "BORRAR", BORRAR, "Borrar", 1, 3)
        self._boton(teclado, "ACEPTAR", ACEPTAR, "Aceptar", 2, 3)

        barra = tk.Frame(root, background="#1f2327")
        barra.grid(row=3, column=0, sticky="ew")
        self.punto = ttk.Label(barra, text="●", style="Punto.TLabel", foreground=AMBAR)
        self.punto.pack(side="left")
        self.estado = ttk.Label(barra, text=self._estado_texto, style="Estado.TLabel")
        self.estado.pack(side="left", fill="x", expand=True)
        self.hora = ttk.Label(barra, text="", style="Estado.TLabel")
        self.hora.pack(side="right")

    def _boton(self, padre: ttk.Frame, texto: str, tecla: str, estilo: str, fila: int, columna: int) -> None:
        ancho = 10 if estilo != "Tecla" else 4
        boton = ttk.Button(
            padre,
            text=texto,
            style=f"{estilo}.TButton",
            width=ancho,
            takefocus=False,
            command=lambda: self.tecla(tecla),
        )
        boton.grid(row=fila, column=columna, padx=(18 if columna == 3 else 5, 5), pady=5, ipady=6, sticky="nsew")
        self.botones[tecla] = boton

    def _atajos(self) -> None:
        """Keyboard as well as mouse: digits, Return, Escape, BackSpace, F1-F8."""
        self.root.bind("<Key>", self._al_teclear)
        self.root.focus_force()

    def _error_interno(self, tipo: type[BaseException], valor: BaseException, tb: object) -> None:
        """A bug must not show a traceback to a customer nor kill the ATM: log it, end the session."""
        log.error("error interno en la ventana", exc_info=(tipo, valor, tb))  # type: ignore[arg-type]
        try:
            if self.sesion.abierta:
                self.sesion.tecla(CANCELAR, self.reloj())
                self._despachar()
            self._pintar(forzar=True)
        except Exception:
            log.exception("no se pudo recuperar la ventana")

    # -- input ----------------------------------------------------------------------------
    def _al_teclear(self, event: tk.Event) -> str | None:
        tecla = TECLAS_FISICAS.get(event.keysym)
        if tecla is None and event.char and event.char in "0123456789":
            tecla = event.char
        if tecla is None:
            return None
        self._destello(tecla)
        self.tecla(tecla)
        return "break"

    def _destello(self, tecla: str) -> None:
        """Show the key as pressed for a moment, so keyboard use looks like a key press."""
        boton = self.botones.get(tecla) or self.laterales.get(tecla)
        if boton is None:
            return
        boton.state(["pressed"])
        self.root.after(120, lambda: boton.state(["!pressed"]))

    def tecla(self, tecla: str) -> None:
        self.sesion.tecla(tecla, self.reloj())
        self._despachar()
        self._pintar()

    # -- the pump ---------------------------------------------------------------------------
    def _bombear(self) -> None:
        if self._cerrado:
            return
        # Rescheduled first, so that even a bug below (reported by _error_interno) cannot stop the pump.
        self._bomba = self.root.after(PERIODO_MS, self._bombear)
        ahora = self.reloj()
        if self.worker is not None:
            while True:
                try:
                    kind, payload = self.worker.resultados.get_nowait()
                except queue.Empty:
                    break
                if kind == "estado":
                    self._poner_estado(bool(payload.get("en_linea")), str(payload.get("texto", "")))
                self.sesion.evento(kind, payload, ahora)
        self.sesion.tick(ahora)
        self._despachar()
        self._pintar()
        self.hora.configure(text=time.strftime("%H:%M"))

    def _despachar(self) -> None:
        for kind, payload in self.sesion.tomar_comandos():
            if self.worker is not None:
                self.worker.enviar(kind, payload)

    def _poner_estado(self, en_linea: bool, texto: str) -> None:
        self._en_linea = en_linea
        self.estado.configure(text=texto)
        self.punto.configure(foreground=VERDE_MEDIO if en_linea else "#ef5350")

    def cerrar(self) -> None:
        """Closing the window ends any session (SALIR to the bank) and stops the worker."""
        if self._cerrado:
            return
        self._cerrado = True
        self.root.after_cancel(self._bomba)
        if self.sesion.abierta:
            self.sesion.tecla(CANCELAR, self.reloj())
            self._despachar()
        self.root.withdraw()  # gone from the screen at once, while the worker says SALIR
        if self.worker is not None:
            self.worker.detener(timeout=3.0)
        self.root.destroy()

    # -- drawing ------------------------------------------------------------------------------
    def _al_redimensionar(self, event: tk.Event) -> None:
        if event.widget is not self.root:
            return
        escala = max(0.7, min(event.width / 900, event.height / 820))
        self.f_teclas.configure(size=-round(22 * escala))
        self.f_laterales.configure(size=-round(20 * escala))
        self.f_estado.configure(size=-round(14 * escala))
        self.f_marca.configure(size=-round(24 * escala))
        self.f_marca_sub.configure(size=-round(13 * escala))

    def _pintar(self, forzar: bool = False) -> None:
        vista = self.sesion.vista(self.reloj())
        if vista == self._vista and not forzar:
            return
        self._vista = vista
        self._dibujar(vista)

    def _fuente(self, px: float, negrita: bool = False) -> tuple[str, int, str]:
        return (self.f_pantalla, -max(8, round(px)), "bold" if negrita else "normal")

    def _dibujar(self, v: Vista) -> None:
        c = self.canvas
        c.delete("all")
        w, h = c.winfo_width(), c.winfo_height()
        if w < 50 or h < 50:
            return
        margen = w * 0.035
        c.create_text(w / 2, h * 0.085, text=v.titulo, fill=VERDE, font=self._fuente(h * 0.058, True), tags="titulo")
        if v.subtitulo:
            c.create_text(w / 2, h * 0.155, text=v.subtitulo, fill=VERDE_MEDIO, font=self._fuente(h * 0.038))
        c.create_line(margen, h * 0.195, w - margen, h * 0.195, fill=BORDE_PANTALLA, width=2)

        # Side-key labels at the height of their buttons.
        c_y = self.canvas.winfo_rooty()
        f_lado = self._fuente(min(h * 0.042, w * 0.032), True)
        fila_y: list[float] = []
        for i, tecla in enumerate(LATERALES[:4]):
            boton = self.laterales[tecla]
            y = boton.winfo_rooty() + boton.winfo_height() / 2 - c_y
            if boton.winfo_height() <= 1:
                y = h * (0.3 + 0.14 * i)
            fila_y.append(y)
        for i in range(4):
            if v.izquierda[i]:
                c.create_text(margen, fila_y[i], text=f"◀ {v.izquierda[i]}", anchor="w", fill=VERDE, font=f_lado)
            if v.derecha[i]:
                c.create_text(w - margen, fila_y[i], text=f"{v.derecha[i]} ▶", anchor="e", fill=VERDE, font=f_lado)

        # Body: centred below the header, either full width above the bottom row of labels or
        # narrowed to pass between the labels, whichever lets the text be larger.
        arriba = h * 0.22
        abajo = h * (0.70 if v.entrada is not None else 0.87)
        lineas = list(v.lineas)
        if lineas:
            largo = max(len(linea) for linea in lineas) or 1
            tope = h * (0.042 if not v.tabla else 0.038)

            def tamano(alto: float, ancho: float) -> float:
                return min(tope, alto / (len(lineas) * 1.35), ancho / (largo * 0.62))

            medida = self.f_medida
            medida.configure(size=f_lado[1])
            usados = [f"◀ {t}" for t in (*v.izquierda, *v.derecha) if t]
            lado = max((medida.measure(t) for t in usados), default=0)
            px = tamano(abajo - arriba, max(w * 0.3, w - 2 * margen - (2 * (lado + w * 0.03) if lado else 0)))
            if (v.izquierda[3] or v.derecha[3]) and not any((*v.izquierda[:3], *v.derecha[:3])):
                px_ancho = tamano(fila_y[3] - h * 0.05 - arriba, w - 2 * margen)
                if px_ancho > px:
                    px, abajo = px_ancho, fila_y[3] - h * 0.05
            paso = px * 1.35
            y0 = (arriba + abajo) / 2 - paso * (len(lineas) - 1) / 2
            fuente = self._fuente(px)
            for j, linea in enumerate(lineas):
                if v.tabla:
                    c.create_text(w / 2, y0 + j * paso, text=linea.ljust(largo), fill=VERDE_MEDIO, font=fuente)
                else:
                    c.create_text(w / 2, y0 + j * paso, text=linea, fill=VERDE_MEDIO, font=fuente)

        if v.entrada is not None:
            y = h * 0.78
            texto = f"{v.etiqueta} {v.entrada}" if v.etiqueta else v.entrada
            fuente = self._fuente(h * 0.062, True)
            item = c.create_text(w / 2, y, text=texto + "▌", fill=VERDE, font=fuente, tags="entrada")
            x1, y1, x2, y2 = c.bbox(item)
            ancho = max(x2 - x1 + h * 0.06, w * 0.5)
            c.create_rectangle(
                w / 2 - ancho / 2, y1 - h * 0.012, w / 2 + ancho / 2, y2 + h * 0.012, outline=VERDE_TENUE, width=2
            )
        if v.aviso:
            c.create_text(
                w / 2,
                h * 0.885,
                text=v.aviso,
                fill=AMBAR,
                font=self._fuente(min(h * 0.034, w * 0.95 / max(1, len(v.aviso)) / 0.62)),
                tags="aviso",
            )
        if v.ayuda:
            c.create_text(w / 2, h * 0.955, text=v.ayuda, fill=VERDE_TENUE, font=self._fuente(h * 0.028))


def ejecutar(root: tk.Tk, sesion: Sesion, worker: Worker, destino: str) -> CajeroApp:
    """Build the window around a started worker; the caller runs ``mainloop()``."""
    return CajeroApp(root, sesion, worker, destino)

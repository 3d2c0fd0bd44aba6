"""The Tk window: paints the session's screen, turns clicks and keys into session keys.

Why it is thin: every decision lives in ``session.AtmSession`` (tested
without a display), every word in ``wording``, every layout of a screen
in ``screens``, and every slow thing in ``worker.Worker``. This module
only draws, binds keys, and pumps: every ``PUMP_PERIOD_MS`` it drains
the worker's events with ``after()``, advances the session's clock and
hands the session's commands to the worker. Nothing here waits on a
socket, a lock or a thread, so the window never freezes.

The screen is a ``Canvas`` redrawn from the ``ScreenView`` whenever it
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
from collections.abc import Callable, Iterator
from pathlib import Path
from tkinter import ttk

from atm_gui import screens, wording
from atm_gui.events import BankStatus, Event
from atm_gui.model import ACCEPT, CANCEL, CLEAR, DIGITS, SIDE_KEYS, ScreenView
from atm_gui.session import AtmSession
from atm_gui.worker import Worker

PUMP_PERIOD_MS = 25
KEY_FLASH_MS = 120  # how long a key typed on the keyboard shows as pressed
log = logging.getLogger("cajero.atm")

# -- the cabinet -------------------------------------------------------------------------
WINDOW_SIZE = (900, 820)  # width, height at which the fonts have their nominal sizes
MIN_WINDOW_SIZE = (620, 600)
MIN_FONT_SCALE = 0.7
# Nominal cabinet font sizes in pixels, scaled with the window.
KEY_FONT_PX = 22
SIDE_KEY_FONT_PX = 20
STATUS_FONT_PX = 14
BRAND_FONT_PX = 24
BRAND_SUB_FONT_PX = 13
# Rows beside the screen: the header row, four rows of side keys, the bottom row.
# Proportional weights, so the labels drawn on the screen track their keys.
SCREEN_ROW_WEIGHTS = (5, 3, 3, 3, 3, 6)
SCREEN_BORDER_PX = 6

# Colours: a dark green phosphor screen in a graphite cabinet.
CABINET = "#2b3035"
CABINET_LIGHT = "#3a4047"
STATUS_BAR = "#1f2327"
SCREEN_BG = "#04140b"
SCREEN_BORDER = "#16402a"
GREEN = "#7dffa4"
GREEN_MID = "#48d17c"
GREEN_DIM = "#2f8a55"
AMBER = "#ffd166"
RED_DOT = "#ef5350"
CABINET_TEXT = "#d7dde3"
GOLD = "#e9c46a"
DISABLED_TEXT = "#777"
# Key styles: face, text, hovered, pressed.
KEY_COLOURS = {
    "Digit": ("#e4e7ea", "#1b1f23", "#f4f6f8", "#c9ced3"),
    "Cancel": ("#c62828", "#ffffff", "#e53935", "#9f1f1f"),
    "Clear": ("#f9c80e", "#1b1f23", "#ffd84d", "#d4a90a"),
    "Accept": ("#2e7d32", "#ffffff", "#43a047", "#1f5f23"),
    "Side": ("#9aa3ab", "#1b1f23", "#b7bec5", "#7d858c"),
}
STATUS_DOT = "●"
LEFT_KEY_GLYPH, RIGHT_KEY_GLYPH = "▶", "◀"  # on the side keys, pointing at the screen
LEFT_LABEL_GLYPH, RIGHT_LABEL_GLYPH = "◀", "▶"  # on the screen, pointing at the keys
CURSOR = "▌"

# -- the screen's layout, as fractions of the canvas height (h) or width (w) -----------------
MIN_CANVAS_PX = 50  # smaller than this (while the window is being built): draw nothing
MIN_TEXT_PX = 8
MARGIN_W = 0.035  # left and right margin
TITLE_Y, TITLE_PX = 0.085, 0.058
SUBTITLE_Y, SUBTITLE_PX = 0.155, 0.038
RULE_Y = 0.195  # the line under the header
SIDE_LABEL_PX, SIDE_LABEL_MAX_PX_W = 0.042, 0.032
# Where the side rows are assumed to be before the buttons have a size.
SIDE_ROW_FALLBACK_TOP, SIDE_ROW_FALLBACK_STEP = 0.3, 0.14
BODY_TOP = 0.22
BODY_BOTTOM_ABOVE_ENTRY = 0.70
BODY_BOTTOM = 0.87
BODY_MAX_PX, TABLE_MAX_PX = 0.042, 0.038
LINE_SPACING = 1.35  # line pitch / font size
CHAR_WIDTH = 0.62  # width of a monospaced character / font size
BODY_MIN_W = 0.3
SIDE_LABEL_GAP_W = 0.03  # between a side label and the body
BOTTOM_LABEL_CLEARANCE = 0.05  # between the body and the bottom row of labels
ENTRY_Y, ENTRY_PX = 0.78, 0.062
ENTRY_BOX_PAD_X, ENTRY_BOX_PAD_Y, ENTRY_BOX_MIN_W = 0.06, 0.012, 0.5
NOTICE_Y, NOTICE_PX, NOTICE_MAX_W = 0.885, 0.034, 0.95
HELP_Y, HELP_PX = 0.955, 0.028

PHYSICAL_KEYS = {
    "Return": ACCEPT,
    "KP_Enter": ACCEPT,
    "Escape": CANCEL,
    "BackSpace": CLEAR,
    "Delete": CLEAR,
    **{key: key for key in SIDE_KEYS},
}

Font = tuple[str, int, str]


def _family(root: tk.Misc, preferred: tuple[str, ...], fallback: str) -> str:
    available = {f.lower() for f in tkfont.families(root)}
    return next((f for f in preferred if f.lower() in available), fallback)


class AtmWindow:
    """The ATM window. ``worker`` may be ``None`` in tests that only look at drawing."""

    def __init__(
        self,
        root: tk.Tk,
        session: AtmSession,
        worker: Worker | None,
        destination: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.session = session
        self.worker = worker
        self.clock = clock
        self._view: ScreenView | None = None
        self._status_text = wording.connecting(destination) if destination else wording.NO_BANK
        self._closed = False
        settings = session.settings

        root.title(wording.window_title(settings))
        self._set_icon(root)
        root.configure(background=CABINET)
        root.geometry(f"{WINDOW_SIZE[0]}x{WINDOW_SIZE[1]}")
        root.minsize(*MIN_WINDOW_SIZE)
        mono = _family(root, ("DejaVu Sans Mono", "Consolas", "Menlo", "Courier New"), "TkFixedFont")
        sans = _family(root, ("DejaVu Sans", "Segoe UI", "Helvetica Neue", "Arial"), "TkDefaultFont")
        self.screen_family = mono
        self.key_font = tkfont.Font(root, family=sans, size=-KEY_FONT_PX, weight="bold")
        self.side_key_font = tkfont.Font(root, family=sans, size=-SIDE_KEY_FONT_PX, weight="bold")
        self.status_font = tkfont.Font(root, family=sans, size=-STATUS_FONT_PX)
        self.brand_font = tkfont.Font(root, family=sans, size=-BRAND_FONT_PX, weight="bold")
        self.brand_sub_font = tkfont.Font(root, family=sans, size=-BRAND_SUB_FONT_PX)
        # One font object for measuring, reused: Tk objects must never be freed outside the Tk thread.
        self._measure_font = tkfont.Font(root, family=mono, size=-20, weight="bold")
        self._styles()
        self._build()
        self._bind_keyboard()
        root.protocol("WM_DELETE_WINDOW", self.close)
        root.report_callback_exception = self._internal_error
        root.bind("<Configure>", self._on_resize, add="+")
        self._paint(force=True)
        self._pump_job = self.root.after(PUMP_PERIOD_MS, self._pump)

    def _set_icon(self, root: tk.Tk) -> None:
        """The window icon, found relative to this module: the same from source and inside a bundle."""
        path = Path(__file__).resolve().parent.parent / "packaging" / "cajero.png"
        try:
            self._icon_image = tk.PhotoImage(master=root, file=str(path))
            root.iconphoto(True, self._icon_image)
        except tk.TclError:
            log.info("sin icono de ventana (%s)", path)

    # -- construction --------------------------------------------------------------
    def _styles(self) -> None:
        s = ttk.Style(self.root)
        if "clam" in s.theme_names():
            s.theme_use("clam")
        s.configure("Cabinet.TFrame", background=CABINET)
        s.configure("Brand.TLabel", background=CABINET, foreground=GOLD, font=self.brand_font)
        s.configure("BrandSub.TLabel", background=CABINET, foreground=CABINET_TEXT, font=self.brand_sub_font)
        s.configure(
            "Status.TLabel", background=STATUS_BAR, foreground=CABINET_TEXT, font=self.status_font, padding=(10, 4)
        )
        s.configure("Dot.TLabel", background=STATUS_BAR, font=self.status_font, padding=(10, 4, 0, 4))
        common = {"font": self.key_font, "borderwidth": 2, "relief": "raised", "padding": 6, "focusthickness": 0}
        for name, (face, text, hovered, pressed) in KEY_COLOURS.items():
            style = f"{name}.TButton"
            s.configure(
                style,
                background=face,
                foreground=text,
                bordercolor=CABINET_LIGHT,
                lightcolor=hovered,
                darkcolor=pressed,
                **common,
            )
            s.map(
                style, background=[("pressed", pressed), ("active", hovered)], foreground=[("disabled", DISABLED_TEXT)]
            )
        s.configure("Side.TButton", font=self.side_key_font, padding=(14, 4))

    def _build(self) -> None:
        root = self.root
        root.columnconfigure(0, weight=1)
        root.rowconfigure(1, weight=1)
        self._build_brand()
        self._build_screen_and_side_keys()
        self._build_keypad()
        self._build_status_bar()

    def _build_brand(self) -> None:
        brand = ttk.Frame(self.root, style="Cabinet.TFrame", padding=(20, 12, 20, 4))
        brand.grid(row=0, column=0, sticky="ew")
        ttk.Label(brand, text=self.session.settings.bank_name.upper(), style="Brand.TLabel").pack(side="left")
        self.brand_subtitle = ttk.Label(
            brand, text=wording.brand_subtitle(self.session.settings), style="BrandSub.TLabel"
        )
        self.brand_subtitle.pack(side="left", pady=(8, 0))

    def _build_screen_and_side_keys(self) -> None:
        area = ttk.Frame(self.root, style="Cabinet.TFrame", padding=(12, 6))
        area.grid(row=1, column=0, sticky="nsew")
        area.columnconfigure(1, weight=1)
        for row, weight in enumerate(SCREEN_ROW_WEIGHTS):
            area.rowconfigure(row, weight=weight, uniform="rows")
        self.canvas = tk.Canvas(
            area,
            background=SCREEN_BG,
            highlightthickness=SCREEN_BORDER_PX,
            highlightbackground=SCREEN_BORDER,
            borderwidth=0,
        )
        self.canvas.grid(row=0, column=1, rowspan=len(SCREEN_ROW_WEIGHTS), sticky="nsew", padx=10)
        self.canvas.bind("<Configure>", lambda _e: self._paint(force=True))
        self.side_buttons: dict[str, ttk.Button] = {}
        for i, key in enumerate(SIDE_KEYS):
            column, row = (0, i + 1) if i < 4 else (2, i - 3)
            button = ttk.Button(
                area,
                text=LEFT_KEY_GLYPH if column == 0 else RIGHT_KEY_GLYPH,
                style="Side.TButton",
                width=3,
                takefocus=False,
                command=lambda k=key: self.press_key(k),
            )
            button.grid(row=row, column=column, sticky="ew", pady=6)
            self.side_buttons[key] = button

    def _build_keypad(self) -> None:
        keypad = ttk.Frame(self.root, style="Cabinet.TFrame", padding=(0, 10, 0, 14))
        keypad.grid(row=2, column=0)
        self.buttons: dict[str, ttk.Button] = {}
        for i, digit in enumerate(DIGITS[1:]):
            self._key_button(keypad, digit, digit, "Digit", i // 3, i % 3)
        self._key_button(keypad, "0", "0", "Digit", 3, 1)
        for row, (key, style) in enumerate(((CANCEL, "Cancel"), (CLEAR, "Clear"), (ACCEPT, "Accept"))):
            self._key_button(keypad, wording.KEY_LABELS[key], key, style, row, 3)

    def _build_status_bar(self) -> None:
        bar = tk.Frame(self.root, background=STATUS_BAR)
        bar.grid(row=3, column=0, sticky="ew")
        self.status_dot = ttk.Label(bar, text=STATUS_DOT, style="Dot.TLabel", foreground=AMBER)
        self.status_dot.pack(side="left")
        self.status_label = ttk.Label(bar, text=self._status_text, style="Status.TLabel")
        self.status_label.pack(side="left", fill="x", expand=True)
        self.time_label = ttk.Label(bar, text="", style="Status.TLabel")
        self.time_label.pack(side="right")

    def _key_button(self, parent: ttk.Frame, text: str, key: str, style: str, row: int, column: int) -> None:
        button = ttk.Button(
            parent,
            text=text,
            style=f"{style}.TButton",
            width=10 if style != "Digit" else 4,
            takefocus=False,
            command=lambda: self.press_key(key),
        )
        button.grid(row=row, column=column, padx=(18 if column == 3 else 5, 5), pady=5, ipady=6, sticky="nsew")
        self.buttons[key] = button

    def _bind_keyboard(self) -> None:
        """Keyboard as well as mouse: digits, Return, Escape, BackSpace, F1-F8."""
        self.root.bind("<Key>", self._on_key)
        self.root.focus_force()

    def _internal_error(self, kind: type[BaseException], value: BaseException, tb: object) -> None:
        """A bug must not show a traceback to a customer nor kill the ATM: log it, end the session."""
        log.error("error interno en la ventana", exc_info=(kind, value, tb))  # type: ignore[arg-type]
        try:
            if self.session.is_open:
                self.session.press_key(CANCEL, self.clock())
                self._dispatch()
            self._paint(force=True)
        except Exception:
            log.exception("no se pudo recuperar la ventana")

    # -- input ----------------------------------------------------------------------------
    def _on_key(self, event: tk.Event) -> str | None:
        key = PHYSICAL_KEYS.get(event.keysym)
        if key is None and event.char and event.char in DIGITS:
            key = event.char
        if key is None:
            return None
        self._flash(key)
        self.press_key(key)
        return "break"

    def _flash(self, key: str) -> None:
        """Show the key as pressed for a moment, so keyboard use looks like a key press."""
        button = self.buttons.get(key) or self.side_buttons.get(key)
        if button is None:
            return
        button.state(["pressed"])
        self.root.after(KEY_FLASH_MS, lambda: button.state(["!pressed"]))

    def press_key(self, key: str) -> None:
        self.session.press_key(key, self.clock())
        self._dispatch()
        self._paint()

    # -- the pump ---------------------------------------------------------------------------
    def _pump(self) -> None:
        if self._closed:
            return
        # Rescheduled first, so that even a bug below (reported by _internal_error) cannot stop the pump.
        self._pump_job = self.root.after(PUMP_PERIOD_MS, self._pump)
        now = self.clock()
        for event in self._pending_events():
            self.session.handle_event(event, now)
            match event:
                case BankStatus(online=online, reason=reason, destination=destination):
                    self._show_bank_status(online, wording.bank_status(online, reason, destination))
                    self._show_terminal_id()
        self.session.tick(now)
        self._dispatch()
        self._paint()
        self.time_label.configure(text=time.strftime("%H:%M"))

    def _pending_events(self) -> Iterator[Event]:
        """The worker's events so far, without waiting."""
        if self.worker is None:
            return
        while True:
            try:
                yield self.worker.events.get_nowait()
            except queue.Empty:
                return

    def _dispatch(self) -> None:
        for command in self.session.take_commands():
            if self.worker is not None:
                self.worker.send(command)

    def _show_terminal_id(self) -> None:
        """The terminal id in the title and the cabinet, as the session now knows it (from the key file)."""
        settings = self.session.settings
        if self.root.title() != wording.window_title(settings):
            self.root.title(wording.window_title(settings))
            self.brand_subtitle.configure(text=wording.brand_subtitle(settings))

    def _show_bank_status(self, online: bool, text: str) -> None:
        self.status_label.configure(text=text)
        self.status_dot.configure(foreground=GREEN_MID if online else RED_DOT)

    def close(self) -> None:
        """Closing the window ends any session (SALIR to the bank) and stops the worker."""
        if self._closed:
            return
        self._closed = True
        self.root.after_cancel(self._pump_job)
        if self.session.is_open:
            self.session.press_key(CANCEL, self.clock())
            self._dispatch()
        self.root.withdraw()  # gone from the screen at once, while the worker says SALIR
        if self.worker is not None:
            self.worker.stop(timeout=3.0)
        self.root.destroy()

    # -- drawing ------------------------------------------------------------------------------
    def _on_resize(self, event: tk.Event) -> None:
        if event.widget is not self.root:
            return
        scale = max(MIN_FONT_SCALE, min(event.width / WINDOW_SIZE[0], event.height / WINDOW_SIZE[1]))
        self.key_font.configure(size=-round(KEY_FONT_PX * scale))
        self.side_key_font.configure(size=-round(SIDE_KEY_FONT_PX * scale))
        self.status_font.configure(size=-round(STATUS_FONT_PX * scale))
        self.brand_font.configure(size=-round(BRAND_FONT_PX * scale))
        self.brand_sub_font.configure(size=-round(BRAND_SUB_FONT_PX * scale))

    def _paint(self, force: bool = False) -> None:
        view = screens.render(self.session.snapshot(), self.clock())
        if view == self._view and not force:
            return
        self._view = view
        self._draw(view)

    def _font(self, px: float, bold: bool = False) -> Font:
        return (self.screen_family, -max(MIN_TEXT_PX, round(px)), "bold" if bold else "normal")

    def _draw(self, view: ScreenView) -> None:
        self.canvas.delete("all")
        w, h = self.canvas.winfo_width(), self.canvas.winfo_height()
        if w < MIN_CANVAS_PX or h < MIN_CANVAS_PX:
            return
        self._draw_header(view, w, h)
        rows_y = self._side_rows_y(h)
        side_font = self._font(min(h * SIDE_LABEL_PX, w * SIDE_LABEL_MAX_PX_W), True)
        self._draw_side_labels(view, w, rows_y, side_font)
        self._draw_body(view, w, h, rows_y, side_font)
        self._draw_entry(view, w, h)
        self._draw_notice(view, w, h)
        self._draw_help(view, w, h)

    def _draw_header(self, view: ScreenView, w: int, h: int) -> None:
        c = self.canvas
        margin = w * MARGIN_W
        c.create_text(
            w / 2, h * TITLE_Y, text=view.title, fill=GREEN, font=self._font(h * TITLE_PX, True), tags="title"
        )
        if view.subtitle:
            c.create_text(w / 2, h * SUBTITLE_Y, text=view.subtitle, fill=GREEN_MID, font=self._font(h * SUBTITLE_PX))
        c.create_line(margin, h * RULE_Y, w - margin, h * RULE_Y, fill=SCREEN_BORDER, width=2)

    def _side_rows_y(self, h: int) -> list[float]:
        """The canvas height of each of the four rows of side keys: labels go level with their buttons."""
        canvas_top = self.canvas.winfo_rooty()
        rows_y: list[float] = []
        for i, key in enumerate(SIDE_KEYS[:4]):
            button = self.side_buttons[key]
            if button.winfo_height() <= 1:  # not laid out yet
                rows_y.append(h * (SIDE_ROW_FALLBACK_TOP + SIDE_ROW_FALLBACK_STEP * i))
            else:
                rows_y.append(button.winfo_rooty() + button.winfo_height() / 2 - canvas_top)
        return rows_y

    def _draw_side_labels(self, view: ScreenView, w: int, rows_y: list[float], font: Font) -> None:
        margin = w * MARGIN_W
        for y, left, right in zip(rows_y, view.left, view.right, strict=True):
            if left:
                self.canvas.create_text(margin, y, text=f"{LEFT_LABEL_GLYPH} {left}", anchor="w", fill=GREEN, font=font)
            if right:
                self.canvas.create_text(
                    w - margin, y, text=f"{right} {RIGHT_LABEL_GLYPH}", anchor="e", fill=GREEN, font=font
                )

    def _draw_body(self, view: ScreenView, w: int, h: int, rows_y: list[float], side_font: Font) -> None:
        """The lines, centred below the header, as large as fits.

        Either full width above the bottom row of labels, or narrowed to
        pass between the labels, whichever lets the text be larger.
        """
        if not view.lines:
            return
        longest = max(len(line) for line in view.lines) or 1
        px, top, bottom = self._body_size(view, w, h, rows_y, side_font, longest)
        pitch = px * LINE_SPACING
        y0 = (top + bottom) / 2 - pitch * (len(view.lines) - 1) / 2
        font = self._font(px)
        for j, line in enumerate(view.lines):
            text = line.ljust(longest) if view.table else line  # a table keeps its columns aligned
            self.canvas.create_text(w / 2, y0 + j * pitch, text=text, fill=GREEN_MID, font=font)

    def _body_size(
        self, view: ScreenView, w: int, h: int, rows_y: list[float], side_font: Font, longest: int
    ) -> tuple[float, float, float]:
        """Font size, top and bottom of the body."""
        margin = w * MARGIN_W
        top = h * BODY_TOP
        bottom = h * (BODY_BOTTOM_ABOVE_ENTRY if view.entry is not None else BODY_BOTTOM)
        max_px = h * (TABLE_MAX_PX if view.table else BODY_MAX_PX)
        n = len(view.lines)

        def fitting(height: float, width: float) -> float:
            return min(max_px, height / (n * LINE_SPACING), width / (longest * CHAR_WIDTH))

        self._measure_font.configure(size=side_font[1])
        labels = [f"{LEFT_LABEL_GLYPH} {t}" for t in (*view.left, *view.right) if t]
        label_w = max((self._measure_font.measure(t) for t in labels), default=0)
        between_labels = w - 2 * margin - (2 * (label_w + w * SIDE_LABEL_GAP_W) if label_w else 0)
        px = fitting(bottom - top, max(w * BODY_MIN_W, between_labels))
        only_bottom_labels = (view.left[3] or view.right[3]) and not any((*view.left[:3], *view.right[:3]))
        if only_bottom_labels:
            above_labels = rows_y[3] - h * BOTTOM_LABEL_CLEARANCE
            px_full_width = fitting(above_labels - top, w - 2 * margin)
            if px_full_width > px:
                px, bottom = px_full_width, above_labels
        return px, top, bottom

    def _draw_entry(self, view: ScreenView, w: int, h: int) -> None:
        if view.entry is None:
            return
        c = self.canvas
        text = f"{view.label} {view.entry}" if view.label else view.entry
        item = c.create_text(
            w / 2, h * ENTRY_Y, text=text + CURSOR, fill=GREEN, font=self._font(h * ENTRY_PX, True), tags="entry"
        )
        x1, y1, x2, y2 = c.bbox(item)
        box_w = max(x2 - x1 + h * ENTRY_BOX_PAD_X, w * ENTRY_BOX_MIN_W)
        pad_y = h * ENTRY_BOX_PAD_Y
        c.create_rectangle(w / 2 - box_w / 2, y1 - pad_y, w / 2 + box_w / 2, y2 + pad_y, outline=GREEN_DIM, width=2)

    def _draw_notice(self, view: ScreenView, w: int, h: int) -> None:
        if not view.notice:
            return
        px = min(h * NOTICE_PX, w * NOTICE_MAX_W / max(1, len(view.notice)) / CHAR_WIDTH)  # long notices shrink
        self.canvas.create_text(w / 2, h * NOTICE_Y, text=view.notice, fill=AMBER, font=self._font(px), tags="notice")

    def _draw_help(self, view: ScreenView, w: int, h: int) -> None:
        if view.help:
            self.canvas.create_text(w / 2, h * HELP_Y, text=view.help, fill=GREEN_DIM, font=self._font(h * HELP_PX))

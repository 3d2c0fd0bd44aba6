"""``python -m atm_gui [HOST PORT]``: start one ATM window.

Why the order below: configuration errors are reported before any
window opens (in Spanish, naming the file), the log goes to a file so a
customer never sees a traceback, and the worker thread starts before
the window so the bank probe runs while Tk draws.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import RotatingFileHandler

from atm_gui import config
from atm_gui.session import Sesion
from atm_gui.worker import Worker
from common.keyfile import load_key


def _registro(cfg: config.Config) -> None:
    """Log to a rotating file beside the data (never card numbers, PINs or the key).

    Several ATM windows may share one folder (the demo opens two), so the
    handler must rotate safely across processes: concurrent-log-handler,
    already a dependency of the bank, does; the standard one is the fallback.
    """
    raiz = logging.getLogger("cajero")
    raiz.setLevel(logging.INFO)
    handler: logging.Handler
    try:
        cfg.registro.parent.mkdir(parents=True, exist_ok=True)
        try:
            from concurrent_log_handler import ConcurrentRotatingFileHandler

            handler = ConcurrentRotatingFileHandler(cfg.registro, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
        except ImportError:
            handler = RotatingFileHandler(cfg.registro, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    raiz.addHandler(handler)


def _avisar(mensaje: str) -> None:
    """Tell the administrator at start-up: on the console, or in a dialog when there is none (windowed build)."""
    if sys.stderr is not None:
        print(mensaje, file=sys.stderr)
    if sys.stderr is None or config.congelado():
        try:
            import tkinter as tk
            from tkinter import messagebox

            root = tk.Tk()
            root.withdraw()
            messagebox.showerror("Cajero", mensaje, master=root)
            root.destroy()
        except Exception:  # no display either: nothing more can be done
            pass


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = config.cargar(argv)
    except config.ErrorConfig as exc:
        _avisar(f"Error de configuración: {exc}")
        return 2
    _registro(cfg)
    log = logging.getLogger("cajero.atm")
    log.info("cajero %s iniciado; banco %s:%d; llave %s", cfg.ajustes.cajero_id, cfg.host, cfg.port, cfg.llave)

    import tkinter as tk

    from atm_gui.window import CajeroApp

    try:
        root = tk.Tk(className="Cajero")
    except tk.TclError as exc:
        print(f"No se pudo abrir la ventana del cajero (¿hay pantalla?): {exc}", file=sys.stderr)
        return 1
    worker = Worker(cfg.host, cfg.port, lambda: load_key(cfg.llave), cfg.recibos)
    worker.start()
    app = CajeroApp(root, Sesion(cfg.ajustes), worker, destino=f"{cfg.host}:{cfg.port}")
    try:
        root.mainloop()
    except KeyboardInterrupt:
        app.cerrar()
    finally:
        if worker.vivo:
            worker.detener(timeout=3.0)
    log.info("cajero %s cerrado", cfg.ajustes.cajero_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())

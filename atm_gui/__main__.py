"""``python -m atm_gui [HOST PORT]``: start one ATM window.

Why the order below: every file the ATM creates from here on (its log,
receipts, a renewed key) is private to its user, so the umask is set
first; configuration errors are reported before any window opens (in
Spanish, naming the file), the log goes to a file so a customer never
sees a traceback, and the worker thread starts before the window so the
bank probe runs while Tk draws.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler

from atm_gui import config
from atm_gui.key_store import KeyStore
from atm_gui.session import AtmSession
from atm_gui.worker import Worker

PRIVATE_UMASK = 0o077  # files 0600, folders 0700: a log and receipts name cards (masked) and balances


def _private_files() -> None:
    """Whatever this process creates is readable by its user only (the log, its rotations, receipts, keys)."""
    os.umask(PRIVATE_UMASK)


def _setup_logging(cfg: config.AtmConfig) -> None:
    """Log to a rotating file beside the data (never card numbers, PINs or the key).

    Several ATM windows may share one folder (the demo opens two), so the
    handler must rotate safely across processes: concurrent-log-handler,
    already a dependency of the bank, does; the standard one is the fallback.
    """
    logger = logging.getLogger("cajero")
    logger.setLevel(logging.INFO)
    handler: logging.Handler
    try:
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
        if cfg.log_file.exists():  # left by an older version, perhaps readable by all: the umask cannot fix it
            cfg.log_file.chmod(0o600)
        try:
            from concurrent_log_handler import ConcurrentRotatingFileHandler

            handler = ConcurrentRotatingFileHandler(cfg.log_file, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
        except ImportError:
            handler = RotatingFileHandler(cfg.log_file, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def _tell_admin(message: str) -> None:
    """Tell the administrator at start-up: on the console, or in a dialog when there is none (windowed build)."""
    if sys.stderr is not None:
        print(message, file=sys.stderr)
    if sys.stderr is None or config.is_frozen():
        try:
            import tkinter as tk
            from tkinter import messagebox

            root = tk.Tk()
            root.withdraw()
            messagebox.showerror("Cajero", message, master=root)
            root.destroy()
        except Exception:  # no display either: nothing more can be done
            pass


def main(argv: list[str] | None = None) -> int:
    """Run one ATM until its window closes; the exit code is 2 for a bad setting, 1 without a display."""
    _private_files()
    try:
        cfg = config.load(argv)
    except config.ConfigError as exc:
        _tell_admin(f"Error de configuración: {exc}")
        return 2
    _setup_logging(cfg)
    log = logging.getLogger("cajero.atm")
    log.info(
        "cajero %s iniciado; banco %s:%d; llave %s; configuración %s",
        cfg.terminal_id or "(sin llave)",
        cfg.host,
        cfg.port,
        cfg.key_file,
        cfg.ini_file or "(ninguna)",
    )

    import tkinter as tk

    from atm_gui.window import AtmWindow

    try:
        root = tk.Tk(className="Cajero")
    except tk.TclError as exc:
        print(f"No se pudo abrir la ventana del cajero (¿hay pantalla?): {exc}", file=sys.stderr)
        return 1
    worker = Worker(cfg.host, cfg.port, KeyStore(cfg.key_file, cfg.terminal_id), cfg.receipts_dir)
    worker.start()
    window = AtmWindow(root, AtmSession(cfg.settings), worker, destination=worker.destination)
    try:
        root.mainloop()
    except KeyboardInterrupt:
        window.close()
    finally:
        if worker.alive:
            worker.stop(timeout=3.0)
    log.info("cajero %s cerrado", window.session.settings.atm_id or "(sin llave)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

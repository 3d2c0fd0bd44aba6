"""Take the ATM screenshots in this folder, for real, on a virtual X screen.

    python docs/screenshots/capture.py

Needs Xvfb, xdotool and ImageMagick (``apt-get install xvfb xdotool
imagemagick``). It starts its own Xvfb, a demo bank on a free port (which
suspends an ATM's PIN checks after 3 wrong PINs, to photograph that
screen), enrols the terminal ``SUC-CENTRO-01`` as ``cajero-alta`` would,
runs ``python -m atm_gui 127.0.0.1 PORT --config atm.ini`` in a temporary
folder holding that terminal's ``llave.key``, types like a customer with
xdotool, and saves each screen with ``import -window``. Nothing is mocked:
what is in the pictures is what the program draws.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AQUI = Path(__file__).resolve().parent
RAIZ = AQUI.parents[1]
sys.path.insert(0, str(RAIZ))

from common.keys import TerminalKey, write_terminal_key  # noqa: E402
from devtools.bank_process import RunningBank, server_env, start_bank  # noqa: E402
from devtools.display import start_xvfb  # noqa: E402

TERMINAL = "SUC-CENTRO-01"
REGISTRY_DELAY = 2.5  # a terminal enrolled while the bank runs is known to it within 2 s


class Cajeros:
    """The ATM processes on the virtual screen, and the keys typed into them, as a customer would."""

    def __init__(self, env: dict[str, str], banco: RunningBank, ini: Path) -> None:
        self.env = env
        self.banco = banco
        self.ini = ini
        self.procesos: list[subprocess.Popen[bytes]] = []

    def argumentos(self, directorio: Path, *, con_config: bool = True) -> tuple[str, ...]:
        """The bank's address, this folder's key, and the settings (never read from the current folder)."""
        config = ("--config", str(self.ini)) if con_config else ()
        return ("127.0.0.1", str(self.banco.port), "--llave", str(directorio / "llave.key"), *config)

    def xdo(self, *args: str) -> str:
        r = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, check=True, timeout=20)
        return r.stdout

    def abrir(self, directorio: Path, *, con_config: bool = True) -> str:
        command = [sys.executable, "-m", "atm_gui", *self.argumentos(directorio, con_config=con_config)]
        self.procesos.append(subprocess.Popen(command, cwd=directorio, env=self.env))
        ventana = self.xdo("search", "--sync", "--onlyvisible", "--name", "Cajero").split()[0]
        self.xdo("windowfocus", "--sync", ventana)
        time.sleep(0.8)
        return ventana

    def cerrar(self) -> None:
        proc = self.procesos.pop()
        proc.terminate()
        proc.wait(10)

    def foto(self, ventana: str, nombre: str, espera: float = 0.5) -> None:
        time.sleep(espera)
        destino = AQUI / f"{nombre}.png"
        subprocess.run(["import", "-window", ventana, str(destino)], env=self.env, check=True, timeout=20)
        print(destino.relative_to(RAIZ))

    def teclear(self, texto: str) -> None:
        self.xdo("type", "--delay", "40", texto)

    def tecla(self, *nombres: str) -> None:
        self.xdo("key", "--delay", "60", *nombres)


def un_cliente(c: Cajeros, atm_dir: Path) -> None:
    """Screens 01-13: a deposit, its receipt, a withdrawal, movements, the inactivity question."""
    v = c.abrir(atm_dir)
    c.foto(v, "01-bienvenida")
    c.teclear("1111111111111111")
    c.tecla("Return")
    c.teclear("12")
    c.foto(v, "02-pin")
    c.teclear("34")
    c.tecla("Return")
    c.foto(v, "03-menu", 1.0)
    c.teclear("2")
    c.teclear("1500")
    c.foto(v, "04-deposito-monto")
    c.tecla("Return")
    c.foto(v, "05-deposito-confirmar")
    c.tecla("Return")
    c.foto(v, "06-deposito-resultado", 1.0)
    c.tecla("F4")
    c.foto(v, "07-recibo", 1.0)
    c.tecla("Return")
    c.teclear("3")
    c.teclear("250")
    c.tecla("Return")
    c.foto(v, "08-retiro-multiplo")
    c.tecla("F3")
    c.foto(v, "09-retiro-confirmar")
    c.tecla("Return")
    c.foto(v, "10-retiro-resultado", 1.0)
    c.tecla("Return")
    c.teclear("4")
    c.foto(v, "11-movimientos", 1.0)
    time.sleep(6.5)
    c.foto(v, "12-mas-tiempo", 2.0)
    c.tecla("Escape")
    c.foto(v, "13-retire-tarjeta", 0.3)
    c.cerrar()


def pin_incorrecto_y_suspension(c: Cajeros, atm_dir: Path) -> None:
    """Screens 14 and 18: a wrong PIN; then more on other cards until the bank suspends this ATM's PIN checks."""
    v = c.abrir(atm_dir)
    c.teclear("4000123412341234")
    c.tecla("Return")
    c.teclear("9999")
    c.tecla("Return")
    c.foto(v, "14-pin-incorrecto", 1.0)
    c.tecla("Escape")
    time.sleep(5.0)
    for tarjeta in ("5500000000000004", "1111111111111111"):  # wrong PINs 2 and 3; then 4, and 5 is refused
        c.teclear(tarjeta)
        c.tecla("Return")
        for _ in range(2):
            c.teclear("9999")
            c.tecla("Return")
            time.sleep(1.0)
        if tarjeta.startswith("55"):
            c.tecla("Escape")
            time.sleep(5.0)
    c.foto(v, "18-cajero-suspendido", 0.5)
    c.cerrar()


def llaves_rechazadas(c: Cajeros, carpeta: Path, llave: TerminalKey) -> None:
    """Screens 15 and 17: a key the bank does not hold for this terminal; a terminal the bank does not know."""
    otra = carpeta / "otra"
    otra.mkdir()
    write_terminal_key(otra / "llave.key", TerminalKey(TERMINAL, llave.version, bytes([0xAB]) * 32))
    c.foto(c.abrir(otra), "15-llave-incorrecta", 1.0)
    c.cerrar()
    ajena = carpeta / "ajena"
    ajena.mkdir()
    write_terminal_key(ajena / "llave.key", TerminalKey("SUC-SUR-09", 1, bytes([0xCD]) * 32))
    c.foto(c.abrir(ajena, con_config=False), "17-cajero-no-autorizado", 1.0)
    c.cerrar()


def sin_banco(c: Cajeros, atm_dir: Path) -> None:
    """Screen 16: the bank goes away during a session."""
    v = c.abrir(atm_dir)
    c.banco.stop()
    c.teclear("1111111111111111")
    c.tecla("Return")
    c.foto(v, "16-fuera-de-servicio", 1.5)
    c.cerrar()


def main() -> int:
    iniciado = start_xvfb()
    if iniciado is None:
        print("Hace falta Xvfb (apt-get install xvfb).", file=sys.stderr)
        return 1
    xvfb, display = iniciado
    env = {**server_env(), "DISPLAY": display}
    with tempfile.TemporaryDirectory() as tmp:
        carpeta = Path(tmp)
        banco = start_bank(carpeta / "banco", extra_args=["--max-pin-fallidos-cajero", "3"])
        atm_dir = carpeta / "cajero"
        atm_dir.mkdir()
        ini = atm_dir / "atm.ini"
        ini.write_text(f"[cajero]\nid = {TERMINAL}\ninactividad = 6\n", encoding="utf-8")
        c = Cajeros(env, banco, ini)
        try:
            llave = banco.enrol(TERMINAL)  # what cajero-alta does
            write_terminal_key(atm_dir / "llave.key", llave)
            time.sleep(REGISTRY_DELAY)
            un_cliente(c, atm_dir)
            pin_incorrecto_y_suspension(c, atm_dir)
            llaves_rechazadas(c, carpeta, llave)
            sin_banco(c, atm_dir)
        finally:
            while c.procesos:
                c.cerrar()
            if banco.process is not None and banco.process.poll() is None:
                banco.stop()
            xvfb.terminate()
            xvfb.wait(10)
    return 0


if __name__ == "__main__":
    os.environ.pop("DISPLAY", None)
    sys.exit(main())

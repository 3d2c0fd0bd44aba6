"""Take the ATM screenshots in this folder, for real, on a virtual X screen.

    python docs/screenshots/capture.py

Needs Xvfb, xdotool and ImageMagick (``apt-get install xvfb xdotool
imagemagick``). It starts its own Xvfb, a demo bank on a free port and
``python -m atm_gui 127.0.0.1 PORT`` in a temporary folder holding
``llave.key``, types like a customer with xdotool, and saves each screen
with ``import -window``. Nothing is mocked: what is in the pictures is
what the program draws.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AQUI = Path(__file__).resolve().parent
RAIZ = AQUI.parents[1]
sys.path.insert(0, str(RAIZ))

from devtools.bank_process import server_env, start_bank  # noqa: E402
from devtools.display import start_xvfb  # noqa: E402


def main() -> int:
    iniciado = start_xvfb()
    if iniciado is None:
        print("Hace falta Xvfb (apt-get install xvfb).", file=sys.stderr)
        return 1
    xvfb, display = iniciado
    env = {**server_env(), "DISPLAY": display}
    procesos: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        carpeta = Path(tmp)
        banco = start_bank(carpeta / "banco")
        try:
            atm_dir = carpeta / "cajero"
            atm_dir.mkdir()
            shutil.copy(banco.key_path, atm_dir / "llave.key")
            (atm_dir / "atm.ini").write_text("[cajero]\nid = SUC-CENTRO-01\ninactividad = 6\n", encoding="utf-8")

            def xdo(*args: str) -> str:
                r = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, check=True, timeout=20)
                return r.stdout

            def abrir(directorio: Path, *args: str) -> str:
                proc = subprocess.Popen([sys.executable, "-m", "atm_gui", *args], cwd=directorio, env=env)
                procesos.append(proc)
                ventana = xdo("search", "--sync", "--onlyvisible", "--name", "Cajero").split()[0]
                xdo("windowfocus", "--sync", ventana)
                time.sleep(0.8)
                return ventana

            def cerrar() -> None:
                proc = procesos.pop()
                proc.terminate()
                proc.wait(10)

            def foto(ventana: str, nombre: str, espera: float = 0.5) -> None:
                time.sleep(espera)
                destino = AQUI / f"{nombre}.png"
                subprocess.run(["import", "-window", ventana, str(destino)], env=env, check=True, timeout=20)
                print(destino.relative_to(RAIZ))

            def teclear(texto: str) -> None:
                xdo("type", "--delay", "40", texto)

            def tecla(*nombres: str) -> None:
                xdo("key", "--delay", "60", *nombres)

            v = abrir(atm_dir, "127.0.0.1", str(banco.port))
            foto(v, "01-bienvenida")
            teclear("1111111111111111")
            tecla("Return")
            teclear("12")
            foto(v, "02-pin")
            teclear("34")
            tecla("Return")
            foto(v, "03-menu", 1.0)
            teclear("2")
            teclear("1500")
            foto(v, "04-deposito-monto")
            tecla("Return")
            foto(v, "05-deposito-confirmar")
            tecla("Return")
            foto(v, "06-deposito-resultado", 1.0)
            tecla("F4")
            foto(v, "07-recibo", 1.0)
            tecla("Return")
            teclear("3")
            teclear("250")
            tecla("Return")
            foto(v, "08-retiro-multiplo")
            tecla("F3")
            foto(v, "09-retiro-confirmar")
            tecla("Return")
            foto(v, "10-retiro-resultado", 1.0)
            tecla("Return")
            teclear("4")
            foto(v, "11-movimientos", 1.0)
            time.sleep(6.5)
            foto(v, "12-mas-tiempo", 2.0)
            tecla("Escape")
            foto(v, "13-retire-tarjeta", 0.3)
            cerrar()

            # A wrong PIN, then a blocked card.
            v = abrir(atm_dir, "127.0.0.1", str(banco.port))
            teclear("4000123412341234")
            tecla("Return")
            teclear("9999")
            tecla("Return")
            foto(v, "14-pin-incorrecto", 1.0)
            cerrar()

            # An ATM holding another key.
            otra = carpeta / "otra"
            otra.mkdir()
            (otra / "llave.key").write_text("# otra llave\n" + "ab" * 32 + "\n", encoding="utf-8")
            v = abrir(otra, "127.0.0.1", str(banco.port))
            foto(v, "15-llave-incorrecta", 1.0)
            cerrar()

            # The bank goes away during a session.
            v = abrir(atm_dir, "127.0.0.1", str(banco.port))
            banco.stop()
            teclear("1111111111111111")
            tecla("Return")
            foto(v, "16-fuera-de-servicio", 1.5)
            cerrar()
        finally:
            while procesos:
                cerrar()
            if banco.process is not None and banco.process.poll() is None:
                banco.stop()
            xvfb.terminate()
            xvfb.wait(10)
    return 0


if __name__ == "__main__":
    os.environ.pop("DISPLAY", None)
    sys.exit(main())

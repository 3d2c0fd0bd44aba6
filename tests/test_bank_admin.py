"""The administration commands, run as an administrator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bank_server.pins import verify_pin
from devtools.bank_process import RunningBank, server_env, write_key, write_ledger

BLOCKED = "6011000000000012"


def admin(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bank_server", *args],
        cwd=folder,
        env=server_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def test_genkey_creates_a_key_and_never_overwrites(tmp_path: Path):
    first = admin(tmp_path, "genkey")
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "llave.key").read_text()
    again = admin(tmp_path, "genkey")
    assert again.returncode != 0 and "ya existe" in again.stderr
    assert (tmp_path / "llave.key").read_text() == key


def test_missing_key_says_how_to_make_one(tmp_path: Path):
    write_ledger(tmp_path)
    result = admin(tmp_path, "8000")
    assert result.returncode != 0
    assert "llave.key" in result.stderr and "genkey" in result.stderr


def test_malformed_key_names_the_file_and_line(tmp_path: Path):
    write_ledger(tmp_path)
    (tmp_path / "llave.key").write_text("# comentario\nabc123\n")
    result = admin(tmp_path, "8000")
    assert result.returncode != 0
    assert "llave.key, línea 2" in result.stderr and "abc123" not in result.stderr


def test_create_list_unblock_and_reset_pin(tmp_path: Path):
    write_ledger(tmp_path)
    created = admin(tmp_path, "crear", "7000000000000001", "Luisa Fernández", "--saldo", "99.50", "--pin", "8642")
    assert created.returncode == 0, created.stderr
    listing = admin(tmp_path, "listar")
    assert "************0001" in listing.stdout and "Luisa Fernández" in listing.stdout and "$99.50" in listing.stdout
    assert "7000000000000001" not in listing.stdout
    assert "BLOQUEADA" in listing.stdout
    assert admin(tmp_path, "desbloquear", BLOCKED).returncode == 0
    assert "BLOQUEADA" not in admin(tmp_path, "listar").stdout
    assert admin(tmp_path, "cambiar-pin", "7000000000000001", "--pin", "1111").returncode == 0
    text = (tmp_path / "cuenta.txt").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("7000000000000001|"))
    _, titular, saldo, pin, intentos = line.split("|")
    assert (titular, saldo, intentos) == ("Luisa Fernández", "99.50", "0")
    assert verify_pin("1111", pin) and not verify_pin("8642", pin)
    duplicate = admin(tmp_path, "crear", "7000000000000001", "Otra", "--pin", "1234")
    assert duplicate.returncode != 0 and "ya existe" in duplicate.stderr


def test_verificar_names_file_and_line(tmp_path: Path):
    path = write_ledger(tmp_path)
    write_key(tmp_path)
    assert admin(tmp_path, "verificar").returncode == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("15250.50", "15,250.50")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = path.read_bytes()
    result = admin(tmp_path, "verificar")
    assert result.returncode == 1
    assert "cuenta.txt, línea 3" in result.stderr and "saldo" in result.stderr
    served = admin(tmp_path, "0", "--host", "127.0.0.1")
    assert served.returncode != 0 and "cuenta.txt, línea 3" in served.stderr
    assert path.read_bytes() == before, "a ledger that could not be parsed is never rewritten"


@pytest.mark.timeout(60)
def test_admin_changes_reach_a_running_server(bank: RunningBank):
    with bank.client() as atm:
        refused = atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "1357"})
        assert refused["error"] == "TARJETA_BLOQUEADA"
    assert admin(bank.folder, "desbloquear", BLOCKED).returncode == 0
    with bank.client() as atm:
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "1357"})["ok"] is True
        assert atm.request({"op": "DEPOSITAR", "monto": "1.00", "id": "x1"})["saldo"] == "5001.00"
    assert admin(bank.folder, "cambiar-pin", BLOCKED, "--pin", "9753").returncode == 0
    with bank.client() as atm:
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "1357"})["error"] == "PIN_INCORRECTO"
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "9753"})["ok"] is True
        assert atm.request({"op": "CONSULTAR"})["saldo"] == "5001.00"


def test_help_is_in_spanish(tmp_path: Path):
    result = admin(tmp_path, "--ayuda")
    assert result.returncode == 0
    assert "uso:" in result.stdout and "comandos" in result.stdout and "desbloquear" in result.stdout
    served = admin(tmp_path, "servir", "-h")
    assert "--max-cajeros" in served.stdout and "opciones" in served.stdout

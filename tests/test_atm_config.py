"""Where the ATM looks for its bank, key and folders, from source and when frozen."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

from atm_gui import config

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def aqui(tmp_path, monkeypatch):
    """An empty current folder, and a program folder with nothing in it."""
    cwd = tmp_path / "aqui"
    cwd.mkdir()
    programa = tmp_path / "programa"
    programa.mkdir()
    monkeypatch.setattr(config, "carpeta_programa", lambda: programa)
    return cwd, programa


def test_defaults_without_arguments_or_ini(aqui):
    cwd, _ = aqui
    cfg = config.cargar([], cwd=cwd)
    assert (cfg.host, cfg.port) == ("localhost", 8000)
    assert cfg.llave == cwd / "llave.key"
    assert cfg.recibos == cwd / "recibos"
    assert cfg.ajustes.billete_minimo == Decimal(100)
    assert cfg.ini is None


def test_host_and_port_from_the_command_line(aqui):
    cwd, _ = aqui
    cfg = config.cargar(["10.0.0.5", "9000"], cwd=cwd)
    assert (cfg.host, cfg.port) == ("10.0.0.5", 9000)


def test_bad_port_is_a_spanish_error(aqui):
    cwd, _ = aqui
    with pytest.raises(config.ErrorConfig, match="el puerto debe ser un número"):
        config.cargar(["host", "ochenta"], cwd=cwd)
    with pytest.raises(config.ErrorConfig, match="entre 1 y 65535"):
        config.cargar(["host", "70000"], cwd=cwd)


def test_ini_in_the_current_folder(aqui):
    cwd, _ = aqui
    (cwd / "atm.ini").write_text(
        "[cajero]\nhost = banco.local\npuerto = 7000\nllave = claves/banco.key\nid = SUC-07\n"
        "billete_minimo = 200\nmontos_rapidos = 200, 400, 1000\nrecibos = tickets\ninactividad = 45\n",
        encoding="utf-8",
    )
    cfg = config.cargar([], cwd=cwd)
    assert (cfg.host, cfg.port) == ("banco.local", 7000)
    assert cfg.llave == cwd / "claves" / "banco.key"
    assert cfg.recibos == cwd / "tickets"
    assert cfg.ajustes.cajero_id == "SUC-07"
    assert cfg.ajustes.billete_minimo == Decimal(200)
    assert cfg.ajustes.montos_rapidos == (Decimal(200), Decimal(400), Decimal(1000))
    assert cfg.ajustes.inactividad == 45.0
    # arguments still win over the file
    cfg = config.cargar(["127.0.0.1", "8001", "--llave", "otra.key", "--id", "X"], cwd=cwd)
    assert (cfg.host, cfg.port, cfg.llave, cfg.ajustes.cajero_id) == ("127.0.0.1", 8001, Path("otra.key"), "X")


def test_ini_beside_the_program_comes_first(aqui):
    cwd, programa = aqui
    (programa / "atm.ini").write_text("[cajero]\npuerto = 7100\n", encoding="utf-8")
    (cwd / "atm.ini").write_text("[cajero]\npuerto = 7200\n", encoding="utf-8")
    assert config.cargar([], cwd=cwd).port == 7100


def test_broken_ini_names_the_file(aqui):
    cwd, _ = aqui
    (cwd / "atm.ini").write_text("host = x\n", encoding="utf-8")
    with pytest.raises(config.ErrorConfig, match=r"atm\.ini"):
        config.cargar([], cwd=cwd)
    (cwd / "atm.ini").write_text("[cajero]\nbillete_minimo = cien\n", encoding="utf-8")
    with pytest.raises(config.ErrorConfig, match="billete_minimo"):
        config.cargar([], cwd=cwd)


def test_key_order_current_folder_then_beside_the_program(aqui):
    cwd, programa = aqui
    (programa / "llave.key").write_text("x", encoding="utf-8")
    assert config.cargar([], cwd=cwd).llave == programa / "llave.key"
    (cwd / "llave.key").write_text("x", encoding="utf-8")
    assert config.cargar([], cwd=cwd).llave == cwd / "llave.key"
    assert config.cargar(["--llave", "a.key"], cwd=cwd).llave == Path("a.key")


def test_frozen_program_uses_the_executables_folder(tmp_path, monkeypatch):
    exe_dir = tmp_path / "Cajero"
    exe_dir.mkdir()
    (exe_dir / "llave.key").write_text("x", encoding="utf-8")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe_dir / "Cajero.exe"))
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "temporal"), raising=False)
    cwd = tmp_path / "otro"
    cwd.mkdir()
    assert config.carpeta_programa() == exe_dir
    cfg = config.cargar([], cwd=cwd)
    assert cfg.llave == exe_dir / "llave.key"
    assert cfg.recibos == exe_dir / "recibos"
    assert cfg.registro == exe_dir / "cajero_atm.log"


def test_read_only_folder_falls_back_to_the_users_data_folder(aqui, monkeypatch):
    cwd, _ = aqui
    monkeypatch.setattr(config, "escribible", lambda carpeta: False)
    cfg = config.cargar([], cwd=cwd)
    assert cfg.recibos == config.carpeta_usuario() / "recibos"


def test_help_is_spanish(aqui, capsys):
    cwd, _ = aqui
    with pytest.raises(SystemExit) as salida:
        config.cargar(["--ayuda"], cwd=cwd)
    assert salida.value.code == 0
    texto = capsys.readouterr().out
    assert texto.startswith("uso: python -m atm_gui")
    assert "archivo de la llave" in texto and "usage" not in texto


def test_main_reports_a_bad_setting_in_spanish_and_opens_no_window(aqui, capsys, monkeypatch):
    from atm_gui.__main__ import main

    cwd, _ = aqui
    monkeypatch.chdir(cwd)
    assert main(["127.0.0.1", "ochenta"]) == 2
    assert "Error de configuración: PUERTO: el puerto debe ser un número" in capsys.readouterr().err

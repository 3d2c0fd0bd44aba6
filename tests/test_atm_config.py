"""Where the ATM looks for its bank, key and folders, from source and when frozen."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

from atm_gui import config

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """An empty current folder, and a program folder with nothing in it."""
    cwd = tmp_path / "aqui"
    cwd.mkdir()
    program = tmp_path / "programa"
    program.mkdir()
    monkeypatch.setattr(config, "program_dir", lambda: program)
    return cwd, program


def test_defaults_without_arguments_or_ini(here):
    cwd, _ = here
    cfg = config.load([], cwd=cwd)
    assert (cfg.host, cfg.port) == ("localhost", 8000)
    assert cfg.key_file == cwd / "llave.key"
    assert cfg.receipts_dir == cwd / "recibos"
    assert cfg.settings.smallest_note == Decimal(100)
    assert cfg.ini_file is None


def test_host_and_port_from_the_command_line(here):
    cwd, _ = here
    cfg = config.load(["10.0.0.5", "9000"], cwd=cwd)
    assert (cfg.host, cfg.port) == ("10.0.0.5", 9000)


def test_bad_port_is_a_spanish_error(here):
    cwd, _ = here
    with pytest.raises(config.ConfigError, match="el puerto debe ser un número"):
        config.load(["host", "ochenta"], cwd=cwd)
    with pytest.raises(config.ConfigError, match="entre 1 y 65535"):
        config.load(["host", "70000"], cwd=cwd)


def test_ini_in_the_current_folder(here):
    cwd, _ = here
    (cwd / "atm.ini").write_text(
        "[cajero]\nhost = banco.local\npuerto = 7000\nllave = claves/banco.key\nid = SUC-07\n"
        "billete_minimo = 200\nmontos_rapidos = 200, 400, 1000\nrecibos = tickets\ninactividad = 45\n",
        encoding="utf-8",
    )
    cfg = config.load([], cwd=cwd)
    assert (cfg.host, cfg.port) == ("banco.local", 7000)
    assert cfg.key_file == cwd / "claves" / "banco.key"
    assert cfg.receipts_dir == cwd / "tickets"
    assert cfg.settings.atm_id == "SUC-07"
    assert cfg.settings.smallest_note == Decimal(200)
    assert cfg.settings.quick_amounts == (Decimal(200), Decimal(400), Decimal(1000))
    assert cfg.settings.inactivity == 45.0
    # arguments still win over the file
    cfg = config.load(["127.0.0.1", "8001", "--llave", "otra.key", "--id", "X"], cwd=cwd)
    assert (cfg.host, cfg.port, cfg.key_file, cfg.settings.atm_id) == ("127.0.0.1", 8001, Path("otra.key"), "X")


def test_ini_beside_the_program_comes_first(here):
    cwd, program = here
    (program / "atm.ini").write_text("[cajero]\npuerto = 7100\n", encoding="utf-8")
    (cwd / "atm.ini").write_text("[cajero]\npuerto = 7200\n", encoding="utf-8")
    assert config.load([], cwd=cwd).port == 7100


def test_broken_ini_names_the_file(here):
    cwd, _ = here
    (cwd / "atm.ini").write_text("host = x\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"atm\.ini"):
        config.load([], cwd=cwd)
    (cwd / "atm.ini").write_text("[cajero]\nbillete_minimo = cien\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="billete_minimo"):
        config.load([], cwd=cwd)


def test_key_order_current_folder_then_beside_the_program(here):
    cwd, program = here
    (program / "llave.key").write_text("x", encoding="utf-8")
    assert config.load([], cwd=cwd).key_file == program / "llave.key"
    (cwd / "llave.key").write_text("x", encoding="utf-8")
    assert config.load([], cwd=cwd).key_file == cwd / "llave.key"
    assert config.load(["--llave", "a.key"], cwd=cwd).key_file == Path("a.key")


def test_frozen_program_uses_the_executables_folder(tmp_path, monkeypatch):
    exe_dir = tmp_path / "Cajero"
    exe_dir.mkdir()
    (exe_dir / "llave.key").write_text("x", encoding="utf-8")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe_dir / "Cajero.exe"))
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "temporal"), raising=False)
    cwd = tmp_path / "otro"
    cwd.mkdir()
    assert config.program_dir() == exe_dir
    cfg = config.load([], cwd=cwd)
    assert cfg.key_file == exe_dir / "llave.key"
    assert cfg.receipts_dir == exe_dir / "recibos"
    assert cfg.log_file == exe_dir / "cajero_atm.log"


def test_read_only_folder_falls_back_to_the_users_data_folder(here, monkeypatch):
    cwd, _ = here
    monkeypatch.setattr(config, "is_writable", lambda folder: False)
    cfg = config.load([], cwd=cwd)
    assert cfg.receipts_dir == config.user_data_dir() / "recibos"


def test_help_is_spanish(here, capsys):
    cwd, _ = here
    with pytest.raises(SystemExit) as exit_info:
        config.load(["--ayuda"], cwd=cwd)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("uso: python -m atm_gui")
    assert "archivo de la llave" in text and "usage" not in text


def test_main_reports_a_bad_setting_in_spanish_and_opens_no_window(here, capsys, monkeypatch):
    from atm_gui.__main__ import main

    cwd, _ = here
    monkeypatch.chdir(cwd)
    assert main(["127.0.0.1", "ochenta"]) == 2
    assert "Error de configuración: PUERTO: el puerto debe ser un número" in capsys.readouterr().err

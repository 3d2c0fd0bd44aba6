"""Where the ATM looks for its bank, key and folders, from source and when frozen."""

from __future__ import annotations

import logging
import os
import stat
import sys
from decimal import Decimal

import pytest

from atm_gui import config
from common.keys import TerminalKey, write_terminal_key

pytestmark = pytest.mark.timeout(30)

KEY = TerminalKey("SUC-CENTRO-01", 1, bytes(range(32)))


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
    cwd, program = here
    cfg = config.load([], cwd=cwd)
    assert (cfg.host, cfg.port) == ("localhost", 8000)
    assert cfg.key_file == program / "llave.key"
    assert cfg.receipts_dir == cwd / "recibos"
    assert cfg.settings.smallest_note == Decimal(100)
    assert cfg.ini_file is None
    assert cfg.terminal_id is None and cfg.settings.atm_id == ""  # no key yet: the screen will say so


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


FULL_INI = (
    "[cajero]\nhost = banco.local\npuerto = 7000\nllave = claves/cajero.key\nid = SUC-07\n"
    "billete_minimo = 200\nmontos_rapidos = 200, 400, 1000\nrecibos = tickets\ninactividad = 45\n"
)


def test_ini_beside_the_program(here):
    cwd, program = here
    (program / "atm.ini").write_text(FULL_INI, encoding="utf-8")
    cfg = config.load([], cwd=cwd)
    assert cfg.ini_file == program / "atm.ini"
    assert (cfg.host, cfg.port) == ("banco.local", 7000)
    assert cfg.key_file == program / "claves" / "cajero.key"  # relative to atm.ini
    assert cfg.receipts_dir == program / "tickets"
    assert cfg.settings.atm_id == "SUC-07"  # no key file yet: the id the key must name
    assert cfg.settings.smallest_note == Decimal(200)
    assert cfg.settings.quick_amounts == (Decimal(200), Decimal(400), Decimal(1000))
    assert cfg.settings.inactivity == 45.0
    # arguments still win over the file
    cfg = config.load(["127.0.0.1", "8001", "--llave", "otra.key"], cwd=cwd)
    assert (cfg.host, cfg.port, cfg.key_file) == ("127.0.0.1", 8001, cwd / "otra.key")


def test_an_ini_in_the_current_folder_is_never_read(here):
    """Attack 7: a planted atm.ini where the ATM is started must not send it to another bank."""
    cwd, program = here
    (cwd / "atm.ini").write_text("[cajero]\nhost = atacante.example\npuerto = 9\nllave = mala.key\n", encoding="utf-8")
    cfg = config.load([], cwd=cwd)
    assert (cfg.host, cfg.port, cfg.ini_file) == ("localhost", 8000, None)
    assert cfg.key_file == program / "llave.key"
    (program / "atm.ini").write_text("[cajero]\npuerto = 7100\n", encoding="utf-8")
    cfg = config.load([], cwd=cwd)
    assert (cfg.port, cfg.ini_file) == (7100, program / "atm.ini")


def test_an_ini_elsewhere_only_by_flag(here, tmp_path):
    cwd, _ = here
    other = tmp_path / "otra" / "sucursal.ini"
    other.parent.mkdir()
    other.write_text("[cajero]\nhost = banco.sur\npuerto = 7300\nllave = suc.key\n", encoding="utf-8")
    cfg = config.load(["--config", str(other)], cwd=cwd)
    assert (cfg.host, cfg.port, cfg.ini_file, cfg.key_file) == ("banco.sur", 7300, other, other.parent / "suc.key")
    (cwd / "atm.ini").write_text("[cajero]\npuerto = 7400\n", encoding="utf-8")
    assert config.load(["--config", "atm.ini"], cwd=cwd).port == 7400  # named by flag: then it is read
    with pytest.raises(config.ConfigError, match="no existe el archivo de configuración"):
        config.load(["--config", "falta.ini"], cwd=cwd)


def test_broken_ini_names_the_file(here):
    _, program = here
    (program / "atm.ini").write_text("host = x\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match=r"atm\.ini"):
        config.load([], cwd=here[0])
    (program / "atm.ini").write_text("[cajero]\nbillete_minimo = cien\n", encoding="utf-8")
    with pytest.raises(config.ConfigError, match="billete_minimo"):
        config.load([], cwd=here[0])


def test_key_beside_the_program_then_here_only_when_the_bank_is_typed(here):
    cwd, program = here
    write_terminal_key(cwd / "llave.key", KEY)
    assert config.load([], cwd=cwd).key_file == program / "llave.key"  # a double-click never reads this folder
    assert config.load(["127.0.0.1", "8000"], cwd=cwd).key_file == cwd / "llave.key"
    write_terminal_key(program / "llave.key", KEY)
    assert config.load(["127.0.0.1", "8000"], cwd=cwd).key_file == program / "llave.key"
    assert config.load(["--llave", "a.key"], cwd=cwd).key_file == cwd / "a.key"


def test_the_terminal_id_comes_from_the_key_file(here):
    cwd, program = here
    write_terminal_key(program / "llave.key", KEY)
    cfg = config.load([], cwd=cwd)
    assert cfg.terminal_id == cfg.settings.atm_id == "SUC-CENTRO-01"
    (program / "atm.ini").write_text("[cajero]\nid = SUC-CENTRO-01\n", encoding="utf-8")
    assert config.load([], cwd=cwd).settings.atm_id == "SUC-CENTRO-01"  # the same id: fine


def test_an_ini_id_that_disagrees_with_the_key_stops_the_atm(here):
    cwd, program = here
    write_terminal_key(program / "llave.key", KEY)
    (program / "atm.ini").write_text("[cajero]\nid = SUC-NORTE-02\n", encoding="utf-8")
    with pytest.raises(config.ConfigError) as info:
        config.load([], cwd=cwd)
    message = str(info.value)
    assert "SUC-NORTE-02" in message and "SUC-CENTRO-01" in message and str(program / "llave.key") in message
    assert KEY.key.hex()[:16] not in message


def test_the_id_option_is_gone(here):
    """The id is the key file's: there is no option left to print another one on receipts."""
    with pytest.raises(SystemExit) as exit_info:
        config.load(["--id", "X"], cwd=here[0])
    assert exit_info.value.code == 2


def test_frozen_program_uses_the_executables_folder(tmp_path, monkeypatch):
    exe_dir = tmp_path / "Cajero"
    exe_dir.mkdir()
    write_terminal_key(exe_dir / "llave.key", KEY)
    (exe_dir / "atm.ini").write_text("[cajero]\npuerto = 7500\n", encoding="utf-8")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe_dir / "Cajero.exe"))
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "temporal"), raising=False)
    cwd = tmp_path / "otro"
    cwd.mkdir()
    (cwd / "atm.ini").write_text("[cajero]\npuerto = 9\n", encoding="utf-8")
    assert config.program_dir() == exe_dir
    cfg = config.load([], cwd=cwd)
    assert cfg.ini_file == exe_dir / "atm.ini" and cfg.port == 7500
    assert cfg.key_file == exe_dir / "llave.key"
    assert cfg.settings.atm_id == "SUC-CENTRO-01"
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
    assert "Nunca lee atm.ini de la carpeta actual" in " ".join(text.split())


def test_main_reports_a_bad_setting_in_spanish_and_opens_no_window(here, capsys, monkeypatch):
    from atm_gui.__main__ import main

    cwd, _ = here
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(os, "umask", lambda mask: 0o022)  # main() makes its files private; not this test's
    assert main(["127.0.0.1", "ochenta"]) == 2
    assert "Error de configuración: PUERTO: el puerto debe ser un número" in capsys.readouterr().err


def test_main_reports_a_disagreeing_id_in_spanish_without_a_traceback(here, capsys, monkeypatch):
    from atm_gui.__main__ import main

    cwd, program = here
    write_terminal_key(program / "llave.key", KEY)
    (program / "atm.ini").write_text("[cajero]\nid = OTRO\n", encoding="utf-8")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(os, "umask", lambda mask: 0o022)  # main() makes its files private; not this test's
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error de configuración:") and "OTRO" in err and "Traceback" not in err


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_the_atm_log_and_receipts_folder_are_private(here):
    """Attack 3: the log (even one an older version left readable by all) and what the ATM creates are 0600."""
    from atm_gui import __main__ as entry

    cwd, _ = here
    old_log = cwd / "cajero_atm.log"
    old_log.write_text("línea vieja\n", encoding="utf-8")
    old_log.chmod(0o644)
    logger = logging.getLogger("cajero")
    handlers_before = list(logger.handlers)
    old_umask = os.umask(0o022)
    try:
        entry._private_files()
        cfg = config.load([], cwd=cwd)
        entry._setup_logging(cfg)
        logging.getLogger("cajero.atm").info("prueba")
        (cwd / "recibos").mkdir()
        (cwd / "recibos" / "nuevo.txt").write_text("x", encoding="utf-8")
    finally:
        os.umask(old_umask)
        for handler in logger.handlers[len(handlers_before) :]:
            handler.close()
            logger.removeHandler(handler)
    assert stat.S_IMODE(cfg.log_file.stat().st_mode) == 0o600
    assert "prueba" in cfg.log_file.read_text(encoding="utf-8")
    assert stat.S_IMODE((cwd / "recibos").stat().st_mode) == 0o700
    assert stat.S_IMODE((cwd / "recibos" / "nuevo.txt").stat().st_mode) == 0o600
    for path in cwd.iterdir():  # the rotating handler's lock file too
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path

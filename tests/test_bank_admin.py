"""The bank key and the account commands, run as an administrator runs them (real processes)."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bank_server.ledger import escape_unsafe, load_ledger, parse_ledger, titular_warning, unsafe_characters
from bank_server.pins import hash_pin, pin_pepper, verify_pin
from bank_server.terminals import TerminalRegistry
from common.keys import load_bank_key
from devtools.bank_process import TEST_BANK_KEY, RunningBank, server_env, write_bank_key, write_ledger

BLOCKED = "6011000000000012"
NEW_CARD = "7000000000000001"
POSIX = os.name == "posix"
PEPPER = pin_pepper(TEST_BANK_KEY)

# Holder names that attack whoever reads them (issue 11, attack item 6), with the code points named.
HOSTILE_NAMES = {
    "esc-csi": ("Juan\x1b[2J\x1b[31mPérez", ["U+001B"]),
    "osc-title": ("Ana\x1b]0;banco hackeado\x07", ["U+001B", "U+0007"]),
    "c1-csi": ("Luis\x9b31mRojo", ["U+009B"]),
    "rlo": ("Pedro\u202eZ ANUL", ["U+202E"]),
    "isolate": ("Marta\u2066oculto\u2069", ["U+2066", "U+2069"]),
    "zero-width-space": ("Ju\u200ban", ["U+200B"]),
    "line-separator": ("Eva\u2028Otra", ["U+2028"]),
    "tab": ("Raúl\tGil", ["U+0009"]),
    "del": ("Sara\x7f", ["U+007F"]),
}


def admin(folder: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bank_server", *args],
        cwd=folder,
        env=server_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="backslashreplace",
        input=stdin,
        timeout=60,
    )


def bank_folder(tmp_path: Path) -> Path:
    """A stopped bank: the demo ledger (peppered with the test bank key) and that key."""
    write_ledger(tmp_path)
    write_bank_key(tmp_path)
    return tmp_path


def ledger_line(folder: Path, card: str) -> list[str]:
    text = (folder / "cuenta.txt").read_text(encoding="utf-8")
    return next(x for x in text.splitlines() if x.startswith(card + "|")).split("|")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


# -- the bank key -----------------------------------------------------------------------------------


def test_genkey_creates_a_private_bank_key_and_never_overwrites_it(tmp_path: Path) -> None:
    first = admin(tmp_path, "genkey")
    assert first.returncode == 0, first.stderr
    path = tmp_path / "banco.key"
    key = load_bank_key(path)
    assert len(key) == 32
    assert key.hex() not in first.stdout + first.stderr, "the key was printed"
    if POSIX:
        assert mode(path) == 0o600
    before = path.read_bytes()
    again = admin(tmp_path, "genkey")
    assert_one_line_error(again)
    assert "ya existe" in again.stderr and "banco.key" in again.stderr
    assert path.read_bytes() == before
    other = admin(tmp_path, "genkey", "--llave", "otra.key")
    assert other.returncode == 0 and load_bank_key(tmp_path / "otra.key") != key


def test_genkey_refuses_a_new_key_for_a_bank_bound_to_an_old_one(tmp_path: Path) -> None:
    """With banco.key lost, a new key would break every peppered PIN and every terminal: restore it instead."""
    write_ledger(tmp_path)  # peppered hashes
    refused = admin(tmp_path, "genkey")
    assert_one_line_error(refused)
    assert "cuenta.txt" in refused.stderr and "respaldo" in refused.stderr
    assert not (tmp_path / "banco.key").exists()

    registry_only = tmp_path / "registro"
    registry_only.mkdir()
    (registry_only / "cuenta.txt").write_text("# vacío\n", encoding="utf-8")
    TerminalRegistry.for_ledger(registry_only / "cuenta.txt", TEST_BANK_KEY).enrol("SUC-01")
    refused = admin(registry_only, "genkey")
    assert_one_line_error(refused)
    assert "cuenta.cajeros" in refused.stderr
    assert not (registry_only / "banco.key").exists()


def test_missing_bank_key_says_how_to_make_one(tmp_path: Path) -> None:
    write_ledger(tmp_path)
    for command in (["0", "--host", "127.0.0.1"], ["crear", NEW_CARD, "Luisa", "--pin", "8642"]):
        result = admin(tmp_path, *command)
        assert_one_line_error(result)
        assert "banco.key" in result.stderr and "genkey" in result.stderr
    assert NEW_CARD not in (tmp_path / "cuenta.txt").read_text(encoding="utf-8")


def test_malformed_bank_key_names_the_file_and_line_without_echoing_it(tmp_path: Path) -> None:
    write_ledger(tmp_path)
    (tmp_path / "banco.key").write_text("# comentario\nabc123\n", encoding="utf-8")
    result = admin(tmp_path, "0", "--host", "127.0.0.1")
    assert_one_line_error(result)
    assert "banco.key, línea 2" in result.stderr and "abc123" not in result.stderr


def test_a_wrong_bank_key_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    TerminalRegistry.for_ledger(folder / "cuenta.txt", TEST_BANK_KEY).enrol("SUC-01")
    wrong = folder / "otra.key"
    wrong.write_text(bytes(range(1, 33)).hex() + "\n", encoding="utf-8")
    before = (folder / "cuenta.txt").read_bytes()
    for command in (
        ["crear", NEW_CARD, "Luisa", "--pin", "8642"],
        ["cambiar-pin", BLOCKED, "--pin", "8642"],
        ["0", "--host", "127.0.0.1"],
    ):
        result = admin(folder, *command, "--llave", "otra.key")
        assert_one_line_error(result)
        assert "no corresponde" in result.stderr and "otra.key" in result.stderr
    assert (folder / "cuenta.txt").read_bytes() == before
    assert not (folder / "cuenta.diario").exists()


# -- accounts ---------------------------------------------------------------------------------------


def test_create_list_unblock_and_reset_pin_write_peppered_hashes(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    created = admin(folder, "crear", NEW_CARD, "Luisa Fernández", "--saldo", "99.50", "--pin", "8642")
    assert created.returncode == 0, created.stderr
    assert "8642" not in created.stdout and NEW_CARD not in created.stdout
    _, titular, saldo, pin, intentos = ledger_line(folder, NEW_CARD)
    assert (titular, saldo, intentos) == ("Luisa Fernández", "99.50", "0")
    assert pin.startswith("scrypt-p$") and verify_pin("8642", pin, PEPPER)
    assert not verify_pin("8642", pin, pin_pepper(bytes(32))), "the hash must depend on the bank key"

    listing = admin(folder, "listar")
    assert listing.returncode == 0, listing.stderr
    assert "************0001" in listing.stdout and "Luisa Fernández" in listing.stdout and "$99.50" in listing.stdout
    assert NEW_CARD not in listing.stdout and "scrypt" not in listing.stdout
    assert "BLOQUEADA" in listing.stdout
    assert admin(folder, "desbloquear", BLOCKED).returncode == 0
    assert "BLOQUEADA" not in admin(folder, "listar").stdout
    assert admin(folder, "cambiar-pin", NEW_CARD, "--pin", "1357").returncode == 0
    pin = ledger_line(folder, NEW_CARD)[3]
    assert pin.startswith("scrypt-p$") and verify_pin("1357", pin, PEPPER) and not verify_pin("8642", pin, PEPPER)
    duplicate = admin(folder, "crear", NEW_CARD, "Otra", "--pin", "2580")
    assert_one_line_error(duplicate)
    assert "ya existe" in duplicate.stderr


def test_files_made_by_the_commands_are_private(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    (folder / "cuenta.txt").chmod(0o644)
    assert admin(folder, "crear", NEW_CARD, "Luisa", "--pin", "8642").returncode == 0
    if POSIX:
        for name in ("cuenta.txt", "cuenta.diario", "cuenta.bloqueos/cuenta.lock"):
            assert mode(folder / name) == 0o600, name


def test_cambiar_pin_upgrades_an_old_unpeppered_hash(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    path = folder / "cuenta.txt"
    salt = bytes(range(16))
    digest = hashlib.scrypt(b"2468", salt=salt, n=2**10, r=8, p=1, dklen=32)  # LEDGER.md's older form
    old = f"scrypt$1024$8$1${salt.hex()}${digest.hex()}"
    assert verify_pin("2468", old, PEPPER)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines = [line.replace(line.split("|")[3], old) if line.startswith("5500000000000004|") else line for line in lines]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    note = admin(folder, "verificar")
    assert "1 cuentas tienen el PIN en el formato antiguo" in note.stdout
    assert admin(folder, "cambiar-pin", "5500000000000004", "--pin", "8024").returncode == 0
    pin = ledger_line(folder, "5500000000000004")[3]
    assert pin.startswith("scrypt-p$") and verify_pin("8024", pin, PEPPER)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["crear", "1234", "Luisa", "--pin", "8642"], "12 a 19 dígitos"),
        (["crear", NEW_CARD, "   ", "--pin", "8642"], "vacío"),
        (["crear", NEW_CARD, "Luisa|Otra", "--pin", "8642"], "|"),
        (["crear", NEW_CARD, "Luisa", "--pin", "12a4"], "4 a 6 dígitos"),
        (["crear", NEW_CARD, "Luisa", "--pin", "1111"], "fácil de adivinar"),
        (["crear", NEW_CARD, "Luisa", "--pin", "3456"], "fácil de adivinar"),
        (["crear", NEW_CARD, "Luisa", "--saldo", "1,00", "--pin", "8642"], "--saldo"),
        (["crear", NEW_CARD], "faltan argumentos: titular"),
        (["cambiar-pin", BLOCKED, "--pin", "0000"], "fácil de adivinar"),
        (["cambiar-pin", "7999999999999999", "--pin", "8642"], "no existe la tarjeta ************9999"),
        (["desbloquear", "12-34"], "12 a 19 dígitos"),
        (["crear", NEW_CARD, "Luisa", "--pin", "8642", "--cuenta", "otra.txt"], "otra.txt"),
        (["listar", "--sobra"], "argumentos no reconocidos: --sobra"),
        (["servir", "--max-cajeros", "0", "8000"], "--max-cajeros"),
        (["servir", "8000", "--max-pin-fallidos-cajero", "x"], "--max-pin-fallidos-cajero"),
        (["servir", "8000", "--max-por-direccion", "-1"], "--max-por-direccion"),
        (["otro-comando"], "COMANDO"),
    ],
)
def test_bad_input_is_one_spanish_line_and_changes_nothing(tmp_path: Path, args: list[str], says: str) -> None:
    folder = bank_folder(tmp_path)
    assert admin(folder, "listar").returncode == 0  # the store's first opening ties ledger and journal: not a change
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = admin(folder, *args)
    assert_one_line_error(result)
    assert says in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert "8642" not in result.stderr


def test_verificar_names_file_and_line(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    path = folder / "cuenta.txt"
    good = admin(folder, "verificar")
    assert good.returncode == 0, good.stderr
    assert "correcto" in good.stdout
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace("15250.50", "15,250.50")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = path.read_bytes()
    result = admin(folder, "verificar")
    assert result.returncode == 1
    assert "cuenta.txt, línea 3" in result.stderr and "saldo" in result.stderr
    served = admin(folder, "0", "--host", "127.0.0.1")
    assert served.returncode != 0 and "cuenta.txt, línea 3" in served.stderr
    assert path.read_bytes() == before, "a ledger that could not be parsed is never rewritten"


def test_verificar_checks_the_bank_key_and_the_terminal_registry(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    TerminalRegistry.for_ledger(folder / "cuenta.txt", TEST_BANK_KEY).enrol("SUC-01")
    fine = admin(folder, "verificar")
    assert fine.returncode == 0, fine.stderr
    assert "1 cajeros, 1 activos" in fine.stdout
    (folder / "otra.key").write_text(bytes(range(1, 33)).hex() + "\n", encoding="utf-8")
    wrong = admin(folder, "verificar", "--llave", "otra.key")
    assert wrong.returncode == 1 and "no corresponde" in wrong.stderr
    missing = admin(folder, "verificar", "--llave", "nada.key")
    assert missing.returncode == 1 and "nada.key" in missing.stderr
    registry = folder / "cuenta.cajeros"
    registry.write_text(registry.read_text(encoding="utf-8").replace('"activo"', '"quizá"'), encoding="utf-8")
    damaged = admin(folder, "verificar")
    assert damaged.returncode == 1 and "cuenta.cajeros, línea" in damaged.stderr
    assert "Traceback" not in wrong.stderr + missing.stderr + damaged.stderr


# -- holder names with control characters (attack item 6) -------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
def test_crear_refuses_control_characters_in_the_holder_name(tmp_path: Path, name: str) -> None:
    folder = bank_folder(tmp_path)
    titular, codes = HOSTILE_NAMES[name]
    before = (folder / "cuenta.txt").read_bytes()
    result = admin(folder, "crear", NEW_CARD, titular, "--pin", "8642")
    assert_one_line_error(result)
    for code in codes:
        assert code in result.stderr
    assert escape_unsafe(titular) in result.stderr, "the name is shown escaped"
    assert not unsafe_characters(result.stderr.rstrip("\n")), "the name is never echoed raw"
    assert (folder / "cuenta.txt").read_bytes() == before


@pytest.mark.skipif(not POSIX, reason="arguments that are not UTF-8 exist only on POSIX")
def test_crear_refuses_a_holder_name_that_is_not_utf8(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "bank_server", "crear", NEW_CARD, b"Jos\xe9", "--pin", "8642"],
        cwd=folder,
        env=server_env(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    assert b"U+DCE9" in result.stderr
    assert NEW_CARD not in (folder / "cuenta.txt").read_text(encoding="utf-8")


def test_names_some_scripts_need_are_accepted(tmp_path: Path) -> None:
    folder = bank_folder(tmp_path)
    for card, titular in ((NEW_CARD, "Mehr\u200cnaz Karimi"), ("7000000000000002", "Ñandú O'Brien-Müller 山田")):
        result = admin(folder, "crear", card, titular, "--pin", "8642")
        assert result.returncode == 0, result.stderr
        assert ledger_line(folder, card)[1] == titular


def test_a_ledger_with_hostile_names_loads_but_verificar_reports_and_listar_escapes(tmp_path: Path) -> None:
    """LEDGER.md allows any name without |, CR, LF: the bank must not refuse to start over one."""
    folder = bank_folder(tmp_path)
    path = folder / "cuenta.txt"
    text = path.read_text(encoding="utf-8")
    hostile = HOSTILE_NAMES["osc-title"][0], HOSTILE_NAMES["rlo"][0]
    text = text.replace("Juan Pérez Hernández", hostile[0]).replace("Ana Sofía Ramírez Cruz", hostile[1])
    path.write_text(text, encoding="utf-8")
    numbers = [n for n, line in enumerate(text.splitlines(), start=1) if hostile[0] in line or hostile[1] in line]

    ledger, errors = load_ledger(path)
    assert errors == [] and len(ledger.accounts) == 4
    assert [notice.line for notice in ledger.notices] == numbers

    checked = admin(folder, "verificar")
    assert checked.returncode == 1
    for number in numbers:
        assert f"cuenta.txt, línea {number}" in checked.stderr
    assert "U+202E" in checked.stderr and "U+001B" in checked.stderr
    assert not unsafe_characters(checked.stderr.replace("\n", ""))

    listing = admin(folder, "listar")  # opens the bank's store: so the ledger loads
    assert listing.returncode == 0, listing.stderr
    assert not unsafe_characters(listing.stdout.replace("\n", "")), "a name was printed raw"
    assert "Ana\\x1b]0;banco hackeado\\x07" in listing.stdout and "Pedro\\u202eZ ANUL" in listing.stdout


def test_the_checks_themselves() -> None:
    assert titular_warning("Gustavo Ali Gómez Trejo") is None
    assert unsafe_characters("Ju\u200dan\u200c") == []
    assert unsafe_characters("a\x00b\x85c\ufeffd\U000e0041") == ["\x00", "\x85", "\ufeff", "\U000e0041"]
    assert escape_unsafe("a\x1bb\u202ec\U000e0041") == "a\\x1bb\\u202ec\\U000e0041"
    warning = titular_warning("X\x1b" * 10 + "\u202e\u2066\u2067\u2068\u2069")
    assert warning is not None and "U+001B, U+202E, U+2066, U+2067, U+2068, …" in warning
    line = f"1111111111111111|A\x1bB|1.00|{hash_pin('8024', PEPPER, n=2)}|0\n"
    ledger, errors = parse_ledger(line.encode(), "x")
    assert errors == [] and ledger.notices[0].line == 1 and str(ledger.notices[0]).startswith("x, línea 1:")


# -- help, and a running server ---------------------------------------------------------------------


def test_help_is_in_spanish_and_says_how_to_back_up_the_terminal_keys(tmp_path: Path) -> None:
    result = admin(tmp_path, "--ayuda")
    assert result.returncode == 0
    assert "uso:" in result.stdout and "comandos" in result.stdout and "desbloquear" in result.stdout
    assert "cajeros --respaldo" in result.stdout and "banco.key" in result.stdout
    served = admin(tmp_path, "servir", "-h")
    for flag in ("--max-cajeros", "--llave", "--cuenta", "--max-pin-fallidos-cajero", "--max-por-direccion"):
        assert flag in served.stdout
    assert "opciones" in served.stdout
    for command in ("genkey", "crear", "listar", "desbloquear", "cambiar-pin", "verificar"):
        text = admin(tmp_path, command, "--ayuda").stdout
        assert "--cuenta" in text and "--llave" in text, command
    assert re.search(r"respaldo", admin(tmp_path, "cajeros", "--ayuda").stdout)


@pytest.mark.timeout(60)
def test_admin_changes_reach_a_running_server(bank: RunningBank) -> None:
    with bank.client() as atm:
        refused = atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "1357"})
        assert refused["error"] == "TARJETA_BLOQUEADA"
    assert admin(bank.folder, "desbloquear", BLOCKED).returncode == 0
    with bank.client() as atm:
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "1357"})["ok"] is True
        assert atm.request({"op": "DEPOSITAR", "monto": "1.00", "id": "x1"})["saldo"] == "5001.00"
    assert admin(bank.folder, "cambiar-pin", BLOCKED, "--pin", "9753").returncode == 0
    assert admin(bank.folder, "crear", NEW_CARD, "Luisa Fernández", "--saldo", "5.00", "--pin", "8024").returncode == 0
    with bank.client() as atm:
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "1357"})["error"] == "PIN_INCORRECTO"
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": BLOCKED, "pin": "9753"})["ok"] is True
        assert atm.request({"op": "CONSULTAR"})["saldo"] == "5001.00"
    with bank.client() as atm:
        assert atm.request({"op": "IDENTIFICAR", "tarjeta": NEW_CARD, "pin": "8024"})["ok"] is True

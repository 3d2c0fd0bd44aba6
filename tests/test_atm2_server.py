"""ATM2 at a real bank: keys per terminal, refusals before any ServerHello, the 10 s handshake limit,
rotation, revocation, guessing limits per card and per terminal, per-address fairness, private files.

Every test runs ``python -m bank_server`` as a process on 127.0.0.1 (other 127.x addresses stand in
for other hosts) and talks to it over TCP, with the project's client or, where a test must send
what no well-behaved ATM sends, with raw frames.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from atm_gui.bank_client import BankClient, BankRefused, BankWrongKey
from bank_server.ledger import load_ledger
from bank_server.pins import pin_pepper
from bank_server.terminals import TerminalRegistry
from common.framing import encode_frame
from common.handshake import ClientHello
from common.keys import TerminalKey
from devtools.bank_process import TEST_BANK_KEY, DemoAccount, RunningBank, start_bank

CARD, PIN, HOLDER = "1111111111111111", "1234", "Gustavo Ali Gómez Trejo"


def _identify(client: BankClient, card: str = CARD, pin: str = PIN) -> dict:
    return client.request({"op": "IDENTIFICAR", "tarjeta": card, "pin": pin})


def _registry(bank: RunningBank) -> TerminalRegistry:
    return TerminalRegistry.for_ledger(bank.ledger_path, TEST_BANK_KEY)


def _raw_connection(bank: RunningBank, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", bank.port), timeout=15, source_address=(source, 0))
    return sock


def _closed_without_reply(sock: socket.socket, within: float = 5.0) -> bool:
    """True if the bank closes ``sock`` without sending a byte."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def bank(tmp_path: Path):
    running = start_bank(tmp_path / "banco")
    yield running
    running.stop()


# -- keys per terminal ------------------------------------------------------------------------------------------
def test_each_terminal_uses_its_own_key_and_another_terminals_key_fails(bank: RunningBank):
    second = bank.enrol("SUC-NORTE-02")
    for key in (bank.terminal_key, second):
        with bank.client(terminal_key=key) as client:
            assert _identify(client) == {"ok": True, "titular": HOLDER}
    assert bank.terminal_key is not None
    borrowed = TerminalKey("SUC-NORTE-02", second.version, bank.terminal_key.key)  # CAJERO-01's key, wrong id
    with pytest.raises(BankWrongKey):
        bank.client(terminal_key=borrowed)


@pytest.mark.parametrize(
    "hello",
    [
        pytest.param(lambda key: ClientHello("DESCONOCIDO", 1, os.urandom(32), os.urandom(32)).encode(), id="unknown"),
        pytest.param(
            lambda key: ClientHello(key.terminal_id, 7, os.urandom(32), os.urandom(32)).encode(), id="version"
        ),
        pytest.param(lambda key: ClientHello(key.terminal_id, 1, bytes(32), os.urandom(32)).encode(), id="low-order"),
        pytest.param(lambda key: b"ATM1" + os.urandom(32), id="atm1"),
        pytest.param(lambda key: b"ATM2" + bytes([40]) + b"A" * 40 + os.urandom(68), id="bad-id"),
    ],
)
def test_bad_hellos_are_closed_before_any_server_hello(bank: RunningBank, hello):
    sock = _raw_connection(bank)
    with sock:
        sock.sendall(hello(bank.terminal_key))
        assert _closed_without_reply(sock)
    with bank.client() as client:  # the bank goes on serving
        assert _identify(client)["ok"]


def test_a_revoked_terminal_is_refused_before_any_server_hello(bank: RunningBank):
    second = bank.enrol("SUC-SUR-03")
    _registry(bank).revoke("SUC-SUR-03")
    time.sleep(0.6)  # the bank's view of the registry is at most 0.5 s old
    with pytest.raises(BankRefused):
        bank.client(terminal_key=second)
    log = (bank.folder / "banco.log").read_text(encoding="utf-8")
    assert "SUC-SUR-03" in log and "dado de baja" in log


def test_a_hello_followed_by_silence_is_closed_at_ten_seconds(bank: RunningBank):
    sock = _raw_connection(bank)
    with sock:
        started = time.monotonic()
        assert bank.terminal_key is not None
        sock.sendall(
            encode_frame(ClientHello(bank.terminal_key.terminal_id, 1, _public_key(), os.urandom(32)).encode())
        )
        sock.settimeout(15)
        received = b""
        while chunk := sock.recv(4096):  # the ServerHello, then the close
            received += chunk
        waited = time.monotonic() - started
    assert len(received) == 104  # one frame: 4-byte length + 100-byte ServerHello
    assert 9.0 <= waited <= 12.0


def _public_key() -> bytes:
    from common.handshake import EphemeralKey

    return EphemeralKey(os.urandom).public


def _hello(terminal_id: str, version: int, e_c: bytes | None = None) -> bytes:
    """A framed ClientHello (a fresh real ephemeral key unless ``e_c`` is given)."""
    return encode_frame(ClientHello(terminal_id, version, e_c or _public_key(), os.urandom(32)).encode())


# -- rotation and revocation ------------------------------------------------------------------------------------
def test_rotation_end_to_end(bank: RunningBank):
    registry = _registry(bank)
    old = bank.terminal_key
    assert old is not None and old.version == 1
    assert registry.rotate(old.terminal_id) == 2
    time.sleep(0.6)
    with bank.client() as client:
        first = client.renew_key()
        second = client.renew_key()
    assert first is not None and first == second and first.version == 2 and first.key != old.key
    with bank.client() as client:  # the old version still works until the new one is used
        assert _identify(client)["ok"]
    with bank.client(terminal_key=first) as client:
        assert client.request({"op": "RENOVAR_LLAVE"}) == {"ok": True, "version": 2}
    time.sleep(0.6)
    with pytest.raises(BankRefused):
        bank.client(terminal_key=old)
    with bank.client(terminal_key=first) as client:
        assert _identify(client)["ok"]


def test_a_bare_hello_with_the_pending_version_does_not_switch(bank: RunningBank):
    registry = _registry(bank)
    assert bank.terminal_key is not None
    registry.rotate(bank.terminal_key.terminal_id)
    time.sleep(0.6)
    sock = _raw_connection(bank)
    with sock:
        sock.sendall(
            encode_frame(ClientHello(bank.terminal_key.terminal_id, 2, _public_key(), os.urandom(32)).encode())
        )
        sock.settimeout(5)
        assert len(sock.recv(4096)) > 0  # a ServerHello: version 2 is pending, so it is accepted
    with bank.client() as client:  # version 1 is still current: nothing proved version 2
        assert _identify(client)["ok"]


def test_revocation_closes_a_live_session_within_two_seconds(bank: RunningBank):
    with bank.client() as client:
        assert _identify(client)["ok"]
        assert bank.terminal_key is not None
        _registry(bank).revoke(bank.terminal_key.terminal_id)
        revoked_at = time.monotonic()
        client._sock.settimeout(5)  # type: ignore[union-attr]
        assert client._sock.recv(1) == b""  # type: ignore[union-attr]
        assert time.monotonic() - revoked_at < 2.0


# -- guessing ---------------------------------------------------------------------------------------------------
def _bank_with_a_real_cost_hash(tmp_path: Path, extra_args: tuple[str, ...]) -> RunningBank:
    """A bank whose CARD has a hash of the default cost (N=2^14, tens of ms): the tests' cheap hashes
    would finish each check before the next attempt arrives, and hide any race between attempts."""
    from bank_server.pins import hash_pin
    from devtools.bank_process import write_bank_key, write_ledger

    folder = tmp_path / "banco"
    folder.mkdir(parents=True)
    write_bank_key(folder)
    ledger = write_ledger(folder)
    slow = hash_pin(PIN, pin_pepper(TEST_BANK_KEY))
    lines = ledger.read_text(encoding="utf-8").splitlines()
    lines = ["|".join([*line.split("|")[:3], slow, "0"]) if line.startswith(CARD) else line for line in lines]
    ledger.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return start_bank(folder, None, extra_args)


def _simultaneous_log_ins(bank: RunningBank, pins: list[str]) -> Counter:
    answers: list[dict] = []
    barrier = threading.Barrier(len(pins))

    def guess(pin: str) -> None:
        with bank.client(timeout=30) as client:
            barrier.wait(10)
            answers.append(_identify(client, pin=pin))

    threads = [threading.Thread(target=guess, args=(pin,)) for pin in pins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == len(pins)
    return Counter("ok" if a["ok"] else a["error"] for a in answers)


def test_thirty_simultaneous_guesses_on_one_card_evaluate_at_most_three_pins(tmp_path: Path):
    bank = _bank_with_a_real_cost_hash(tmp_path, ("--max-pin-fallidos-cajero", "1000", "--max-por-direccion", "100"))
    try:
        outcomes = _simultaneous_log_ins(bank, [f"{9000 + i}" for i in range(30)])
        assert outcomes == Counter({"PIN_INCORRECTO": 3, "TARJETA_BLOQUEADA": 27}), outcomes
        with bank.client() as client:  # and the card stays blocked, even for the right PIN
            assert _identify(client)["error"] == "TARJETA_BLOQUEADA"
    finally:
        bank.stop()


def test_a_right_pin_among_simultaneous_guesses_wins_only_before_the_third_wrong_one(tmp_path: Path):
    """The ATM1 attack: 29 wrong and 1 right at once were answered ok 11 times in 12. Now the right one
    is accepted only if checked before three wrong ones; when it is, it resets the count (a customer
    logged in), so at most two wrong ones before it and three after it are ever checked."""
    bank = _bank_with_a_real_cost_hash(tmp_path, ("--max-pin-fallidos-cajero", "1000", "--max-por-direccion", "100"))
    try:
        outcomes = _simultaneous_log_ins(bank, [PIN if i == 17 else f"{9000 + i}" for i in range(30)])
        assert outcomes["ok"] + outcomes["PIN_INCORRECTO"] + outcomes["TARJETA_BLOQUEADA"] == 30, outcomes
        if outcomes["ok"]:
            assert outcomes["PIN_INCORRECTO"] <= 5, outcomes
        else:
            assert outcomes["PIN_INCORRECTO"] == 3, outcomes
    finally:
        bank.stop()


def test_three_simultaneous_right_pins_do_not_block_the_card(bank: RunningBank):
    barrier = threading.Barrier(3)
    answers: list[dict] = []

    def login() -> None:
        with bank.client(timeout=30) as client:
            barrier.wait(10)
            answers.append(_identify(client))

    threads = [threading.Thread(target=login) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a["ok"] for a in answers] == [True, True, True]
    with bank.client() as client:
        assert _identify(client)["ok"]


def test_guessing_suspends_the_terminal_across_cards_until_lifted(tmp_path: Path):
    accounts = [DemoAccount(f"50000000000000{i:02d}", f"Cliente {i}", "100.00", "2580") for i in range(6)]
    bank = start_bank(tmp_path / "banco", accounts, extra_args=("--max-pin-fallidos-cajero", "4"))
    try:
        other = bank.enrol("OTRO-CAJERO")
        codes = []
        for account in accounts:  # one wrong PIN per card: no card is blocked, the terminal is
            with bank.client() as client:
                codes.append(_identify(client, account.tarjeta, "1111")["error"])
        assert codes[:5] == ["PIN_INCORRECTO"] * 5 and codes[5] == "CAJERO_SUSPENDIDO"
        with bank.client() as client:  # even the right PIN is not checked
            assert _identify(client, accounts[0].tarjeta, "2580")["error"] == "CAJERO_SUSPENDIDO"
            assert client.request({"op": "RENOVAR_LLAVE"})["ok"]  # other operations are not affected
        with bank.client(terminal_key=other) as client:  # per terminal
            assert _identify(client, accounts[0].tarjeta, "2580")["ok"]
        assert bank.terminal_key is not None
        _registry(bank).reactivate(bank.terminal_key.terminal_id)
        with bank.client() as client:
            assert _identify(client, accounts[1].tarjeta, "2580")["ok"]
        alerts = bank.folder / "banco.alertas.log"
        text = alerts.read_text(encoding="utf-8") if alerts.exists() else (bank.folder / "banco.log").read_text()
        assert "suspendido" in text
    finally:
        bank.stop()


# -- fairness ---------------------------------------------------------------------------------------------------
def test_silent_connections_from_one_address_do_not_keep_another_out(tmp_path: Path):
    bank = start_bank(tmp_path / "banco", extra_args=("--max-cajeros", "10"))
    flood: list[socket.socket] = []
    try:
        for _ in range(30):
            try:
                flood.append(_raw_connection(bank, "127.0.0.2"))
            except OSError:
                pass
        time.sleep(0.5)  # the acceptor has seen them all
        started = time.monotonic()
        sock = _raw_connection(bank, "127.0.0.3")
        with sock:
            assert bank.terminal_key is not None
            sock.sendall(_hello(bank.terminal_key.terminal_id, 1))
            sock.settimeout(5)
            assert len(sock.recv(4096)) > 0  # a ServerHello: served at once
        assert time.monotonic() - started < 1.5
        closed_at_once = sum(_closed_without_reply(s, within=0.2) for s in flood)
        assert closed_at_once >= 20  # the flood's surplus was closed, not queued
    finally:
        for s in flood:
            s.close()
        bank.stop()


# -- hashes and files -------------------------------------------------------------------------------------------
def test_old_hashes_are_upgraded_and_shown_after_a_clean_stop(tmp_path: Path):
    from bank_server.pins import verify_pin

    folder = tmp_path / "banco"
    bank = start_bank(folder)
    bank.stop()
    old = "scrypt$1024$8$1$" + "00" * 16 + "$"
    import hashlib

    digest = hashlib.scrypt(PIN.encode(), salt=bytes(16), n=1024, r=8, p=1, dklen=32).hex()
    text = bank.ledger_path.read_text(encoding="utf-8").splitlines()
    text = ["|".join([*line.split("|")[:3], old + digest, "0"]) if line.startswith(CARD) else line for line in text]
    bank.ledger_path.write_text("\n".join(text) + "\n", encoding="utf-8")
    bank = bank.restart()
    try:
        with bank.client() as client:
            assert _identify(client)["ok"]
    finally:
        assert bank.stop() == 0
    ledger, errors = load_ledger(bank.ledger_path)
    assert errors == []
    field = ledger.accounts[CARD].pin
    assert field.startswith("scrypt-p$") and verify_pin(PIN, field, pin_pepper(TEST_BANK_KEY))


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_every_file_the_bank_writes_is_private(bank: RunningBank):
    with bank.client() as client:
        assert _identify(client)["ok"]
        assert client.request({"op": "DEPOSITAR", "monto": "5.00", "id": "privado-1"})["ok"]
    _identify_wrong(bank)
    bank.stop()
    written = [p for p in bank.folder.rglob("*") if p.name not in ("cuenta.txt", "servidor.err")]
    written.append(bank.ledger_path)  # rewritten by the bank's checkpoint
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name}: {oct(mode)}"


def _identify_wrong(bank: RunningBank) -> None:
    with bank.client() as client:
        assert _identify(client, "4000123412341234", "9999")["error"] == "PIN_INCORRECTO"


def test_no_key_pepper_or_pin_in_any_log_or_output(bank: RunningBank):
    assert bank.terminal_key is not None
    _registry(bank).rotate(bank.terminal_key.terminal_id)
    time.sleep(0.6)
    with bank.client() as client:
        assert _identify(client)["ok"]
        pending = client.renew_key()
        client.request({"op": "CAMBIAR_PIN", "pin_actual": PIN, "pin_nuevo": "8642"})
    _identify_wrong(bank)
    bank.stop()
    assert pending is not None
    secrets = {
        "bank key": TEST_BANK_KEY.hex(),
        "pepper": pin_pepper(TEST_BANK_KEY).hex(),
        "terminal key": bank.terminal_key.key.hex(),
        "pending key": pending.key.hex(),
    }
    texts = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in bank.folder.glob("*.log*")}
    texts["stdout"] = "".join(bank.output)
    texts["stderr"] = bank.stderr_text()
    for name, text in texts.items():
        for what, secret in secrets.items():
            assert secret not in text.lower(), f"{what} in {name}"
        for pin in (PIN, "8642", "9999"):
            assert f" {pin} " not in text and f'"{pin}"' not in text, f"PIN in {name}"


def test_ids_are_scoped_per_terminal(bank: RunningBank):
    second = bank.enrol("SUC-ESTE-04")
    request = {"op": "DEPOSITAR", "monto": "1.00", "id": "mismo-id"}
    with bank.client() as client:
        assert _identify(client)["ok"]
        first = client.request(request)
    with bank.client(terminal_key=second) as client:
        assert _identify(client)["ok"]
        other = client.request(request)
        movements = client.request({"op": "MOVIMIENTOS", "n": 2})
    assert first["ok"] and other["ok"] and "repetida" not in other  # two transactions
    assert [m["id"] for m in movements["movimientos"]] == ["mismo-id", "mismo-id"]


def test_unready_operations_of_the_cash_issue_are_invalid_requests(bank: RunningBank):
    with bank.client() as client:
        for op in ("TRANSFERIR", "REVERSAR", "TOTALES"):
            assert client.request({"op": op})["error"] == "PETICION_INVALIDA"


@pytest.mark.parametrize(
    ("new_pin", "expected"),
    [("1111", "PIN_INVALIDO"), ("1234", "PIN_INVALIDO"), ("012345", "PIN_INVALIDO"), ("98765", "PIN_INVALIDO")],
)
def test_pins_too_easy_to_guess_are_refused(bank: RunningBank, new_pin: str, expected: str):
    with bank.client() as client:
        assert _identify(client)["ok"]
        assert client.request({"op": "CAMBIAR_PIN", "pin_actual": PIN, "pin_nuevo": new_pin})["error"] == expected
        assert client.request({"op": "CAMBIAR_PIN", "pin_actual": PIN, "pin_nuevo": "1212"}) == {"ok": True}
    with bank.client() as client:
        assert _identify(client, pin="1212")["ok"]


def test_one_connection_cannot_spend_unbounded_scrypt_work(bank: RunningBank):
    from bank_server.pin_checks import MAX_CHECKS_PER_CONNECTION

    current, codes = PIN, []
    with bank.client() as client:
        assert _identify(client)["ok"]  # one check
        for i in range(MAX_CHECKS_PER_CONNECTION):
            new = "2580" if i % 2 == 0 else "1357"
            answer = client.request({"op": "CAMBIAR_PIN", "pin_actual": current, "pin_nuevo": new})
            codes.append(answer.get("error", "ok"))
            current = new if answer["ok"] else current
    assert "PETICION_INVALIDA" in codes  # each change costs two scrypt runs: the budget runs out
    assert codes.index("PETICION_INVALIDA") <= MAX_CHECKS_PER_CONNECTION // 2


def test_simultaneous_guesses_on_many_cards_cannot_overrun_the_terminals_limit(tmp_path: Path):
    """Checked and counted in one step: 12 wrong PINs at once on 12 cards, limit 2, check at most 3."""
    accounts = [DemoAccount(f"51000000000000{i:02d}", f"Cliente {i}", "100.00", "2580") for i in range(12)]
    bank = start_bank(
        tmp_path / "banco", accounts, extra_args=("--max-pin-fallidos-cajero", "2", "--max-por-direccion", "50")
    )
    try:
        barrier = threading.Barrier(12)
        answers: list[dict] = []

        def guess(card: str) -> None:
            with bank.client(timeout=30) as client:
                barrier.wait(10)
                answers.append(_identify(client, card, "1111"))

        threads = [threading.Thread(target=guess, args=(a.tarjeta,)) for a in accounts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        outcomes = Counter(a["error"] for a in answers)
        assert len(answers) == 12
        assert outcomes["PIN_INCORRECTO"] <= 3 and outcomes["CAJERO_SUSPENDIDO"] >= 9, outcomes
    finally:
        bank.stop()


def test_right_pins_never_count_against_the_terminal(tmp_path: Path):
    bank = start_bank(tmp_path / "banco", extra_args=("--max-pin-fallidos-cajero", "2"))
    try:
        for _ in range(8):  # many more right log-ins than the limit, from one terminal
            with bank.client() as client:
                assert _identify(client)["ok"]
    finally:
        bank.stop()


def test_simultaneous_right_pins_never_make_the_card_look_blocked(tmp_path: Path):
    # 12 log-ins at once from one terminal are all in flight against its guessing count too (a real ATM
    # serves one customer at a time): the terminal's limit is raised so that the card alone is tested.
    bank = _bank_with_a_real_cost_hash(tmp_path, ("--max-por-direccion", "50", "--max-pin-fallidos-cajero", "100"))
    answers: list[dict] = []
    try:
        barrier = threading.Barrier(12)

        def session(i: int) -> None:
            with bank.client(timeout=30) as client:
                barrier.wait(10)
                answers.append(_identify(client))
                answers.append(client.request({"op": "DEPOSITAR", "monto": "1.00", "id": f"simultaneo-{i}"}))

        threads = [threading.Thread(target=session, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        bank.stop()
    assert len(answers) == 24 and all(a["ok"] for a in answers), [a for a in answers if not a["ok"]]

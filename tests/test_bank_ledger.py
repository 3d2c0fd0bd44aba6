"""The ledger format: parse, errors with file and line, print round-trip."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from bank_server.ledger import Account, index_ledger, parse_ledger, render_ledger
from devtools.bank_process import pin_field

PIN = pin_field("1234")


def ledger_text(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


def test_parses_accounts_comments_and_padding():
    data = ledger_text(
        "# cabecera",
        "",
        f" 1111111111111111 | Gustavo Ali Gómez Trejo |   234444.00 | {PIN} | 0 ",
        f"4000123412341234|María|0.00|{PIN}|3",
    )
    ledger, errors = parse_ledger(data, "cuenta.txt")
    assert errors == []
    gustavo = ledger.accounts["1111111111111111"]
    assert gustavo.titular == "Gustavo Ali Gómez Trejo"
    assert gustavo.saldo == Decimal("234444.00")
    assert ledger.accounts["4000123412341234"].blocked


def test_every_bad_line_is_reported_with_its_number():
    data = ledger_text(
        "# tarjeta|titular|saldo|pin|intentos",
        f"1111111111111111|Ana|12,50|{PIN}|0",
        f"123|Ana|1.00|{PIN}|0",
        "1111111111111112|Ana|1.00|1234|0",
        f"1111111111111113|Ana|1.00|{PIN}|4",
        "1111111111111114|Ana|1.00",
        f"1111111111111115|Ana|1.00|{PIN}|0",
        f"1111111111111115|Ana|1.00|{PIN}|0",
        f"1111111111111116|Ana|-1.00|{PIN}|0",
        f"1111111111111117|Ana|1.5|{PIN}|0",
    )
    _, errors = parse_ledger(data, "cuenta.txt")
    assert [e.line for e in errors] == [2, 3, 4, 5, 6, 8, 9, 10]
    text = [str(e) for e in errors]
    assert text[0].startswith("cuenta.txt, línea 2: el saldo '12,50'")
    assert "12 a 19 dígitos" in text[1]
    assert "scrypt" in text[2]
    assert "0 a 3" in text[3]
    assert "5 campos" in text[4]
    assert "repetida" in text[5]


def test_not_utf8_names_the_line():
    data = b"# ok\n1111111111111111|Jos\xe9|1.00|x|0\n"
    _, errors = parse_ledger(data, "cuenta.txt")
    assert [(e.line, "UTF-8" in e.message) for e in errors] == [(2, True)]


def test_windows_line_endings_and_bom_are_accepted():
    data = b"\xef\xbb\xbf# c\r\n" + f"1111111111111111|Ana|1.00|{PIN}|0\r\n".encode()
    ledger, errors = parse_ledger(data, "cuenta.txt")
    assert errors == [] and ledger.accounts["1111111111111111"].titular == "Ana"


def test_print_keeps_comments_order_and_checkpoint_mark():
    data = ledger_text("# uno", f"2222222222222222|B|2.00|{PIN}|0", "# dos", f"1111111111111111|A|1.00|{PIN}|1")
    ledger, _ = parse_ledger(data, "cuenta.txt")
    text = render_ledger(ledger, ledger.accounts, "ab" * 16, 7)
    again, errors = parse_ledger(text.encode(), "cuenta.txt")
    assert errors == []
    assert again.accounts == ledger.accounts
    assert again.layout == ledger.layout
    assert (again.libro, again.diario) == ("ab" * 16, 7)


titulares = st.text(st.characters(blacklist_characters="|\r\n", blacklist_categories=("Cs",)), max_size=40).map(
    lambda s: s.strip(" \t")
)


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[0-9]{12,19}", fullmatch=True),
            titulares,
            st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False),
            st.integers(0, 3),
        ),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_round_trip_property(rows):
    accounts = {t: Account(t, n, s, PIN, i) for t, n, s, i in rows}
    ledger, _ = parse_ledger(b"", "x")
    text = render_ledger(ledger, accounts, "cd" * 16, 0)
    again, errors = parse_ledger(text.encode("utf-8"), "x")
    assert errors == []
    assert again.accounts == accounts


def test_lazy_index_gives_the_same_accounts_as_the_full_parse():
    data = ledger_text(
        "# cajero: libro=" + "ab" * 16 + " diario=3",
        f"1111111111111111 | Ana |  1.00|{PIN}|0",
        f"2222222222222222|Beto|2.00|{PIN}|3",
    )
    full, errors = parse_ledger(data, "cuenta.txt")
    lazy = index_ledger(data)
    assert errors == [] and (lazy.libro, lazy.diario) == (full.libro, full.diario)
    assert "2222222222222222" in lazy.accounts and len(lazy.accounts) == 2
    assert lazy.accounts.get("1111111111111111") == full.accounts["1111111111111111"]
    assert dict(lazy.accounts.items()) == full.accounts

"""Readers: OFX payments and debits, empty files, pipe separators and the text of input messages."""

from __future__ import annotations

import io

import pytest

from conftest import SHARED_DATA
from test_reject_messages import input_error, read
from producer import InputError, Layout, Rejected, Row, Skipped, read_transactions
from producer.files import publish_file
from producer.layouts import HEADER_SHOWN_CHARS, row_digest, shorten_header
from producer.publisher import Producer
from producer.readers import open_reader

needs_samples = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data is not available")

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
ROW = "t1,u1,Shop,groceries,5.00,5411,2024-05-01T12:00:00Z"
LATIN1_OFX = "ledger-autosync/accented_characters_latin1.ofx"


def read_with_warnings(data: bytes, name: str = "input.csv", **options) -> tuple[list, list[str]]:
    reader = open_reader(io.BytesIO(data), name=name, **options)
    return list(reader), reader.warnings


# OFX transaction types.

def ofx_statement(kind: str, entries: list[tuple[str, str]]) -> bytes:
    """Build an OFX 1.x SGML statement of ``kind`` (STMTRS or CCSTMTRS) with one STMTTRN per (TRNTYPE, TRNAMT)."""
    transactions = "".join(
        f"<STMTTRN><TRNTYPE>{trntype}<DTPOSTED>20240501<TRNAMT>{amount}<FITID>F{index}<NAME>PAYEE {index}</STMTTRN>\n"
        for index, (trntype, amount) in enumerate(entries)
    )
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
        f"<OFX><BANKMSGSRSV1><STMTTRNRS><{kind}><CURDEF>USD<BANKACCTFROM><ACCTID>12345678</BANKACCTFROM>\n"
        f"<BANKTRANLIST>\n{transactions}</BANKTRANLIST></{kind}></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    ).encode()


@pytest.mark.parametrize("kind", ["STMTRS", "CCSTMTRS"])
def test_ofx_payment_skipped(kind):
    outcomes = read(ofx_statement(kind, [("PAYMENT", "-58.73"), ("PAYMENT", "250.00")]))

    assert [type(outcome) for outcome in outcomes] == [Skipped, Skipped]
    assert outcomes[0].reason == (
        "electronic payment, such as a bill payment, a transfer to a person or a payment to the card "
        "(TRNTYPE: PAYMENT), not a purchase"
    )
    assert outcomes[0].transaction_id == f"ofx-5678-F0-{row_digest('me', '12345678', 'F0')}"
    assert "(TRNTYPE: PAYMENT)" in outcomes[1].reason


@pytest.mark.parametrize("trntype", ["DIRECTDEBIT", "REPEATPMT"])
def test_ofx_bank_debits_skipped(trntype):
    outcomes = read(ofx_statement("STMTRS", [(trntype, "-40.00"), ("POS", "-12.00")]))

    assert [type(outcome) for outcome in outcomes] == [Skipped, Row]
    assert "from the bank account" in outcomes[0].reason
    assert outcomes[0].reason.endswith(f"(TRNTYPE: {trntype}), not a purchase")
    assert outcomes[1].transaction.merchant == "PAYEE 1"


@pytest.mark.parametrize("trntype", ["DIRECTDEBIT", "REPEATPMT"])
def test_ofx_card_debits_are_purchases(trntype):
    outcomes = read(ofx_statement("CCSTMTRS", [(trntype, "-15.99")]))

    assert [type(outcome) for outcome in outcomes] == [Row]
    assert str(outcomes[0].transaction.amount_usd) == "15.99"
    assert outcomes[0].transaction.card_used == "card ...5678"


@pytest.mark.parametrize(
    ("trntype", "reason"),
    [
        ("HOLD", "amount on hold, not a posted transaction (TRNTYPE: HOLD), not a purchase"),
        ("ATM", "ATM withdrawal or deposit (TRNTYPE: ATM), not a purchase"),
        ("XFER", "transfer between accounts (TRNTYPE: XFER), not a purchase"),
        ("CHECK", "check (TRNTYPE: CHECK), not a purchase"),
        ("CASH", "cash withdrawal (TRNTYPE: CASH), not a purchase"),
    ],
)
def test_ofx_other_types_skipped(trntype, reason):
    for kind in ("STMTRS", "CCSTMTRS"):
        outcomes = read(ofx_statement(kind, [(trntype, "-20.00")]))

        assert [type(outcome) for outcome in outcomes] == [Skipped], kind
        assert outcomes[0].reason == reason, kind


@pytest.mark.parametrize("trntype", ["DEBIT", "POS", "OTHER", "CREDIT", "debit"])
def test_ofx_signed_types_by_amount(trntype):
    outcomes = read(ofx_statement("STMTRS", [(trntype, "-9.50"), (trntype, "9.50")]))

    assert [type(outcome) for outcome in outcomes] == [Row, Skipped]
    assert "credit of 9.50" in outcomes[1].reason


@needs_samples
def test_latin1_payment_not_published(sync_client, keys, tmp_path):
    summary = publish_file(sync_client, keys, SHARED_DATA / LATIN1_OFX, rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 0
    assert summary.skipped == 1
    assert sync_client.xlen(keys.transactions) == 0
    assert "(TRNTYPE: PAYMENT)" in (tmp_path / "r.jsonl").read_text(encoding="utf-8")


# Empty files and files with a header only.

@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", " (0 bytes)"),
        (b"\n", ": its only line is blank"),
        (b"\n \r\n\t\n", ": each of its 3 lines is blank"),
        (b"\xef\xbb\xbf", ": it contains only a UTF-8 byte-order mark"),
    ],
)
def test_empty_file_named_in_error(tmp_path, data, detail):
    path = tmp_path / "export.csv"
    path.write_bytes(data)

    with pytest.raises(InputError) as raised:
        list(read_transactions(path))

    assert str(raised.value) == f"the file {str(path)!r} is empty{detail}. Check the file path, or export the file again"


@pytest.mark.parametrize("name", ["", "-", "<stdin>"])
def test_empty_stdin_called_input(name):
    with pytest.raises(InputError) as raised:
        list(open_reader(io.BytesIO(b""), name=name))

    assert str(raised.value) == "the input is empty (0 bytes). Check that the data was sent, or export the file again"


def test_comma_only_lines_not_empty():
    message = input_error(b",,,\n\n")

    assert message.startswith("the input has no header line, because each of its 2 lines has only empty fields")
    assert HEADER in message
    assert "is empty" not in message


def test_empty_file_with_header_layout():
    layout = Layout(name="named", header=["id", "user", "shop", "amount", "date"],
                    columns={"transaction_id": "id", "user_id": "user", "merchant": "shop",
                             "amount_usd": "amount", "timestamp": "date"})

    message = input_error(b"\n", layout=layout)
    commas_message = input_error(b",,,,\n", layout=layout)
    outcomes, warnings = read_with_warnings(b"id,user,shop,amount,date\n", layout=layout)

    assert message.startswith("the input is empty: its only line is blank")
    assert commas_message.startswith("the input has no rows, because its only line has only empty fields")
    assert "header" not in commas_message
    assert outcomes == []
    assert warnings == ["the file has a header on line 1 but no rows below it, so it contains no transactions. "
                        "Check the date range of the export, or export the file again"]


@pytest.mark.parametrize("data", [f"{HEADER}\n", f"\n{HEADER}\r\n\r\n,,,,,,\n"])
def test_header_only_warned(data):
    outcomes, warnings = read_with_warnings(data.encode())

    header_line = 1 if data.startswith(HEADER) else 2
    assert outcomes == []
    assert warnings == [f"the file has a header on line {header_line} but no rows below it, so it contains no "
                        "transactions. Check the date range of the export, or export the file again"]


def test_header_with_rows_not_warned():
    rejected_only, rejected_warnings = read_with_warnings(f"{HEADER}\nt1,u1,Shop\n".encode())
    with_row, row_warnings = read_with_warnings(f"{HEADER}\n{ROW}\n".encode())

    assert [type(outcome) for outcome in rejected_only] == [Rejected]
    assert not [warning for warning in rejected_warnings if "no rows" in warning]
    assert [type(outcome) for outcome in with_row] == [Row]
    assert row_warnings == []


def test_header_only_summary_warns(sync_client, keys, tmp_path):
    summary = publish_file(sync_client, keys, io.BytesIO(f"{HEADER}\n".encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 0
    assert any(warning.startswith("the file has a header on line 1 but no rows") for warning in summary.warnings)


@pytest.mark.parametrize("data", [b"", b"\n\n"])
def test_empty_json_lines_warned(data):
    outcomes, warnings = read_with_warnings(data, name="events.jsonl")

    assert outcomes == []
    assert warnings == ["the file 'events.jsonl' is empty, so it contains no transactions. "
                        "Check the file path, or export the file again"]


def test_json_lines_with_row_not_warned():
    line = b'{"transaction_id": "j1", "user_id": "u1", "merchant": "Shop", "amount_usd": 5, "timestamp": "2024-05-01T12:00:00Z"}\n'

    outcomes, warnings = read_with_warnings(b"\n" + line, name="events.jsonl")

    assert [type(outcome) for outcome in outcomes] == [Row]
    assert warnings == []


# Files separated by pipes.

def test_pipe_header_names_separator():
    message = input_error(f"{HEADER.replace(',', '|')}\nr1|u1|Shop|groceries|10.50|5411|2026-02-03\n".encode())

    assert message.startswith(f"the header {HEADER.replace(',', '|')!r} looks separated by pipes, not commas, "
                              "because split at the pipes it has 7 columns, and these are the columns of the "
                              "documented layout.")
    assert "RewardPilot reads comma-separated files only" in message
    assert "decimal comma" not in message
    assert "no header row" not in message
    assert "matches no known layout" not in message


def test_pipe_data_line_needs_header():
    line = "9a33b25c|2012-01-03|12:07:06|1325592426|misc_pos|233.50|0|0|600"

    message = input_error(f"{line}\n".encode())

    assert message.startswith(f"the first line {line!r} looks separated by pipes, not commas, "
                              "because split at the pipes it has 9 columns.")
    assert message.endswith("That line also reads as data, not a header, so the file seems to have no header row: "
                            "add one, or list the columns in order under header: in a layout file passed with --layout")


def test_semicolon_data_line_needs_header():
    message = input_error(b"01/02/2024;Coffee;4.50;x\n")

    assert message.startswith("the first line '01/02/2024;Coffee;4.50;x' looks separated by semicolons")
    assert "decimal comma (12,50)" in message
    assert "seems to have no header row" in message


def test_pipe_rows_with_header_layout():
    layout = Layout(name="named", header=["id", "user", "shop", "amount", "date"],
                    columns={"transaction_id": "id", "user_id": "user", "merchant": "shop",
                             "amount_usd": "amount", "timestamp": "date"})

    outcomes = read(b"r1|u1|Shop|4.00|2026-02-03\n", layout=layout)

    assert [type(outcome) for outcome in outcomes] == [Rejected]
    assert outcomes[0].error.reason == ("the row has 1 field but the header has 5, and split at the pipes it has 5, "
                                        "so the file looks separated by pipes, not commas")


def test_pipe_in_comma_header_ignored():
    message = input_error(b"foo|bar,baz\n1,2\n")

    assert "matches no known layout" in message
    assert "separated by" not in message


@needs_samples
def test_sparkov_merchants_pipes():
    with pytest.raises(InputError) as raised:
        list(read_transactions(SHARED_DATA / "sparkov/merchants.csv"))

    assert str(raised.value).startswith("the header 'category|merchant_name' looks separated by pipes, not commas")


# Message text.

def test_shorten_header_cuts_at_separator():
    columns = [f"Column {index}" for index in range(60)]
    text = ",".join(columns)

    shortened = shorten_header(text)

    assert len(text) > HEADER_SHOWN_CHARS
    assert shortened.endswith(",...")
    assert len(shortened) <= HEADER_SHOWN_CHARS + 3
    assert shortened[:-4].split(",") == columns[:len(shortened[:-4].split(","))]


def test_shorten_header_edge_cases():
    assert shorten_header("a,b") == "a,b"
    assert shorten_header("x" * HEADER_SHOWN_CHARS) == "x" * HEADER_SHOWN_CHARS
    assert shorten_header("x" * 400) == "x" * HEADER_SHOWN_CHARS + "..."
    assert shorten_header("a;" + "b" * 400, separator=";") == "a;..."
    assert shorten_header("ab,cd,ef", limit=5) == "ab,..."
    assert shorten_header("ab,cd,ef", limit=6) == "ab,cd,..."


@needs_samples
def test_paypal_header_cut_at_comma():
    with pytest.raises(InputError) as raised:
        list(read_transactions(SHARED_DATA / "ledger-autosync/paypal.csv"))

    message = str(raised.value)
    assert "Option 2 Value,...' matches no known layout" in message
    assert "Auct'" not in message


def test_long_header_cut_at_comma():
    header = ",".join(f"Unknown Column {index}" for index in range(40))

    message = input_error(f"{header}\n".encode())

    quoted = message.split("'")[1]
    assert quoted.endswith(",...")
    assert quoted[:-3].rstrip(",").split(",")[-1].startswith("Unknown Column ")
    assert header.startswith(quoted[:-3])


def test_long_data_line_cut_at_comma():
    line = ",".join(["05/01/2024", "12.50"] + [f"field {index}" for index in range(60)])

    message = input_error(f"{line}\n".encode())

    assert message.startswith("the first line '05/01/2024,12.50,field 0,")
    assert ",...' looks like data, not a header" in message


def test_headerless_message_ends_with_period():
    message = input_error(b"05/01/2024,COFFEE,4.50\n")

    assert message.endswith("To read the file as it is, list its columns in order under header: in that layout file.")


def test_one_extra_column_singular():
    _, one_column = read_with_warnings(f"{HEADER},note\n{ROW},a\n".encode())
    _, two_columns = read_with_warnings(f"{HEADER},note,memo\n{ROW},a,b\n".encode())

    assert one_column == ["column 'note' is not used by the documented layout and is ignored"]
    assert two_columns == ["columns 'note', 'memo' are not used by the documented layout and are ignored"]


@needs_samples
def test_capital_one_posted_date_singular():
    _, warnings = read_with_warnings((SHARED_DATA / "csv2ofx/capitalone.csv").read_bytes())

    assert "column 'Posted Date' is not used by the capital-one layout and is ignored" in warnings

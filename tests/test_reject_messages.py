"""Messages for files that match no layout, for rows of the wrong width, and in the rejects file."""

from __future__ import annotations

import io
import json

import pytest

from conftest import SHARED_DATA, invoke_cli, one_server
from producer import InputError, Producer, Rejected, detect_layout, publish_file, read_transactions
from producer.bank_layouts import SCHWAB_CHECKING
from producer.layouts import DOCUMENTED, TABFORMER, Layout, missing_columns_message
from producer.rejects import RejectsWriter

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
# The first lines of a bank export saved without a header row: date, description, amount, memo, balance.
HEADERLESS = (
    "01/09/2015,05354 SUBWAY,8.19,,1000.00\n"
    "02/18/2015,WENDY'S #6338,8.55,,1000.00\n"
)
# The documented header with every column renamed except mcc.
RENAMED_HEADER = "tx_id,user,shop,cat,amount,mcc,time"
NO_PRESET_NEAR = "matches no known layout, and it contains no more than half of the required columns of any preset"
VENMO = SHARED_DATA / "ledger-autosync" / "venmo.csv"
PAYPAL = SHARED_DATA / "ledger-autosync" / "paypal.csv"

needs_samples = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data is not available")


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def input_error(data: bytes, **options) -> str:
    with pytest.raises(InputError) as raised:
        read(data, **options)
    return str(raised.value)


def file_error(path) -> str:
    with pytest.raises(InputError) as raised:
        list(read_transactions(path))
    return str(raised.value)


def header_error(header: list[str]) -> str:
    with pytest.raises(InputError) as raised:
        detect_layout(header)
    return str(raised.value)


def rejected(data: bytes) -> list[Rejected]:
    return [outcome for outcome in read(data) if isinstance(outcome, Rejected)]


def test_headerless_file_says_no_header():
    message = input_error(HEADERLESS.encode())

    assert message.startswith("the first line '01/09/2015,05354 SUBWAY,8.19,,1000.00' looks like data, not a header")
    assert "'01/09/2015', '8.19', '1000.00' read as dates or amounts" in message
    assert "the file seems to have no header row" in message
    assert f"Add a header line at the top of the file that names the columns: the documented header {HEADER}" in message
    assert "--layout" in message
    assert "docs/input-formats.md" in message


def test_headerless_file_omits_preset_list():
    message = input_error(HEADERLESS.encode())

    assert "matches no known layout" not in message
    assert "tabformer" not in message
    assert "Merchant City" not in message


def test_headerless_file_with_layout_option():
    message = input_error(HEADERLESS.encode(), layout=DOCUMENTED)

    assert "looks like data, not a header" in message
    assert "missing the column" not in message


def test_one_number_in_header_is_not_data():
    with pytest.raises(InputError) as raised:
        detect_layout(["Date", "Description", "2024"])

    assert "looks like data" not in str(raised.value)
    assert "matches no known layout" in str(raised.value)


def test_missing_column_leads_message():
    message = input_error(f"{HEADER.replace(',amount_usd', '')}\nr-1,u1,Shell,gas,5541,2024-05-01\n".encode())

    assert message.startswith("the header is missing the column(s) 'amount_usd' of the documented layout")
    assert f"the expected header is: {HEADER}." in message
    assert message.index(HEADER) < message.index("Presets")
    assert "Presets, with their headers in docs/input-formats.md: tabformer, documented, chase" in message


def test_missing_column_message_keeps_presets_short():
    message = input_error(f"{HEADER.replace(',amount_usd', '')}\nr-1,u1,Shell,gas,5541,2024-05-01\n".encode())

    assert "Merchant City" not in message  # the tabformer header
    assert "Transaction Date,Post Date" not in message  # the chase header
    assert len(message) < 900


def test_no_known_layout_sentence_capitalized():
    message = input_error(f"{HEADER.replace(',amount_usd', '')}\nr-1,u1,Shell,gas,5541,2024-05-01\n".encode())

    assert "matches no known layout. the" not in message
    assert "The header 'transaction_id,user_id,merchant,category,mcc,timestamp' matches no known layout. " in message
    for sentence in message.split(". ")[1:]:
        assert not sentence[:1].islower(), sentence


def test_header_sharing_no_column():
    message = input_error(b"foo,bar\nx,y\n")

    assert message.startswith("the header 'foo,bar' matches no known layout, and no preset uses any of its columns")
    assert f"write the header {HEADER}" in message
    assert "tabformer layout" not in message


def test_renamed_documented_header_names_no_preset():
    message = input_error(f"{RENAMED_HEADER}\nr-1,u1,Shell,gas,5.00,5541,2024-05-01\n".encode())

    assert message.startswith(f"the header {RENAMED_HEADER!r} {NO_PRESET_NEAR}. ")
    assert f"For rows in the documented layout, write the header {HEADER}. " in message
    assert "missing the column" not in message
    assert "may be a misspelling" not in message
    assert "tabformer layout" not in message
    assert "pass it with --layout" in message


@needs_samples
def test_venmo_sample_names_no_preset():
    message = file_error(VENMO)

    assert message.startswith("the header 'Username,ID,Datetime,Type,Status,")
    assert NO_PRESET_NEAR in message
    assert f"write the header {HEADER}" in message
    assert "schwab-checking layout" not in message
    assert "missing the column" not in message
    assert "may be a misspelling" not in message
    assert "pass it with --layout" in message


@needs_samples
def test_paypal_sample_names_no_preset():
    message = file_error(PAYPAL)

    assert message.startswith("the header 'Date,Time,Time Zone,Name,Type,Status,")
    assert NO_PRESET_NEAR in message
    assert f"write the header {HEADER}" in message
    assert "schwab-checking layout" not in message
    assert "missing the column" not in message
    assert "pass it with --layout" in message


def test_half_of_preset_columns_not_near():
    # Date, Type and Status are 3 of the 6 columns schwab-checking requires.
    message = header_error(["Date", "Time", "Name", "Type", "Status", "Gross"])

    assert NO_PRESET_NEAR in message
    assert "schwab-checking layout" not in message


def test_preset_one_column_short_named():
    header = "Date,Type,CheckNumber,Description,Withdrawal,Deposit,RunningBalance".split(",")

    message = header_error(header)

    assert message.startswith("the header is missing the column(s) 'Status' of the schwab-checking layout; ")
    assert NO_PRESET_NEAR not in message


def test_misspelled_columns_count_toward_preset():
    # Only 3 of the 7 documented columns are spelled right, and the other 4 are misspellings.
    message = header_error("transactionid,userid,merchnt,categroy,amount_usd,mcc,timestamp".split(","))

    assert message.startswith(
        "the header is missing the column(s) 'transaction_id', 'user_id', 'merchant', 'category' of the documented layout"
    )
    assert "'transactionid' may be a misspelling of 'transaction_id'" in message
    assert "'userid' may be a misspelling of 'user_id'" in message
    assert "'merchnt' may be a misspelling of 'merchant'" in message
    assert "'categroy' may be a misspelling of 'category'" in message
    assert f"the expected header is: {HEADER}." in message


@pytest.mark.parametrize(
    ("layout", "found", "missing"),
    [
        (TABFORMER, "amount", "Month"),
        (SCHWAB_CHECKING, "Destination", "Description"),
        (SCHWAB_CHECKING, "Datetime", "Date"),
    ],
)
def test_misspelling_hint_rejects_other_column(layout, found, missing):
    message = missing_columns_message(layout, [found], [missing])

    assert "may be a misspelling" not in message
    assert message.startswith(f"the header is missing the column(s) {missing!r} of the {layout.name} layout; ")


def test_misspelling_hint_skips_known_column():
    message = header_error(["Date", "Amount", "Description"])

    assert "the amex layout" in message
    assert "'Amount' may be a misspelling" not in message
    assert "needs exactly the header Date,Description,Amount" in message


def test_misspelling_hint_pairs_each_column_once():
    layout = Layout(
        name="two-shops",
        columns={
            "transaction_id": "id", "user_id": "user", "merchant": "{Shop name 1} {Shop name 2}",
            "amount_usd": "total", "timestamp": "time",
        },
    )

    message = missing_columns_message(layout, ["Shop name1"], ["Shop name 1", "Shop name 2"])

    assert "('Shop name1' may be a misspelling of 'Shop name 1'); " in message
    assert "of 'Shop name 2'" not in message


def test_short_row_names_unfilled_column():
    error = rejected(f"{HEADER}\nr-2,u1,Shell,gas,40.00,5541\n".encode())[0].error

    assert error.line == 2
    assert error.reason == (
        "the row has 6 fields but the header has 7, so a field is missing and the column(s) 'timestamp' got no value"
    )
    assert "quote" not in error.fix
    assert error.fix == "add the missing field, and keep the comma of an empty field, so the row has 7 fields"


def test_short_row_names_every_unfilled_column():
    error = rejected(f"{HEADER}\nr-2,u1,Shell,gas\n".encode())[0].error

    assert "the column(s) 'amount_usd', 'mcc', 'timestamp' got no value" in error.reason


def test_long_row_keeps_quoting_hint():
    error = rejected(f"{HEADER}\nr-2,u1,Joe's, Inc,gas,40.00,5541,2024-05-01\n".encode())[0].error

    assert error.reason == "the row has 8 fields but the header has 7"
    assert "quote any field that contains a comma" in error.fix


@pytest.mark.parametrize(
    ("row", "column", "reason", "fix"),
    [
        ("r-3,u1,Shell,gas,4x,5541,2024-05-01", "amount_usd", "'4x' is not an amount", "write it like 12.50"),
        ("r-5,u1,Shell,gas,4,5541,2024-13-01", "timestamp",
         "'2024-13-01' is not a real date (month 13 is out of range, months run from 1 to 12)",
         "check the day and month"),
        ("r-7,u1,Shell,gas,4,5541,Tuesday", "timestamp", "'Tuesday' is not a date in an accepted format",
         "write it as ISO 8601"),
        ("r-6,u1,Shell,gas,4,55410,2024-11-01", "mcc",
         "mcc '55410' is not a 4-digit ISO 18245 merchant category code", "write it like 5411, or leave it empty"),
    ],
)
def test_reject_fix_apart_from_reason(row, column, reason, fix):
    error = rejected(f"{HEADER}\n{row}\n".encode())[0].error

    assert error.column == column
    assert error.reason == reason
    assert error.fix.startswith(fix)
    assert error.transaction_id == row.split(",")[0]
    assert error.message == f"line 2, column {column!r}: {error.reason}; {error.fix}"


def test_empty_user_id_reject_value():
    error = rejected(f"{HEADER}\nr-4,,Shell,gas,4,5541,2024-05-01\n".encode())[0].error

    assert error.column == "user_id"
    assert error.value == ""
    assert error.transaction_id == "r-4"
    assert error.fix == "fill it in"


def test_json_lines_reject_keeps_transaction_id():
    line = (
        b'{"transaction_id": "j-1", "user_id": "u1", "merchant": "Shell", '
        b'"amount_usd": "4x", "timestamp": "2024-05-01"}\n'
    )

    error = rejected(line)[0].error

    assert error.transaction_id == "j-1"
    assert error.reason == "'4x' is not an amount"
    assert error.fix.startswith("write it like 12.50")


def test_rejects_file_records(tmp_path):
    data = (
        f"{HEADER}\n"
        "r-2,u1,Shell,gas,40.00,5541\n"
        "r-3,u1,Shell,gas,4x,5541,2024-05-01\n"
        "r-4,,Shell,gas,4,5541,2024-05-01\n"
        "r-5,u1,Shell,gas,4,5541,2024-05-01 noon\n"
        "r-6,u1,Shell,gas,4,55410,2024-11-01\n"
    ).encode()
    path = tmp_path / "in.csv.rejects.jsonl"

    with RejectsWriter(path) as writer:
        for outcome in rejected(data):
            writer.rejected(outcome)

    records = {record["line"]: record for record in map(json.loads, path.read_text().splitlines())}
    assert records[2]["transaction_id"] is None  # a short row's fields may be shifted, so no id is taken
    for line, column in ((3, "amount_usd"), (5, "timestamp"), (6, "mcc")):
        assert records[line]["column"] == column
        assert records[line]["fix"].startswith("write it")
        assert "write it" not in records[line]["reason"]
        assert records[line]["transaction_id"] == f"r-{line}"
    assert records[4]["value"] == ""
    assert records[4]["transaction_id"] == "r-4"


def test_publish_file_rejects_record_id(sync_client, keys, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(f"{HEADER}\nr-1,u1,Shell,gas,4.00,5541,2024-05-01\nr-2,u1,Shell,gas,4x,5541,2024-05-01\n")

    rejects = tmp_path / "in.csv.rejects.jsonl"

    summary = publish_file(sync_client, keys, source, progress=False, rejects_path=rejects,
                           producer=Producer(sync_client, keys, max_backlog=None))

    assert (summary.published, summary.rejected) == (1, 1)
    record = json.loads(rejects.read_text())
    assert record["transaction_id"] == "r-2"
    assert record["reason"] == "'4x' is not an amount"
    assert record["fix"].startswith("write it like 12.50")


@one_server
def test_cli_headerless_file_exit_two(cli_env, keys, tmp_path):
    source = tmp_path / "statement.csv"
    source.write_text(HEADERLESS)

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)

    output = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert "looks like data, not a header" in output
    assert "no header row" in output
    assert "tabformer" not in output


@one_server
def test_cli_renamed_header_exit_two(cli_env, keys, tmp_path):
    source = tmp_path / "wrongheader.csv"
    source.write_text(f"{RENAMED_HEADER}\nr-1,u1,Shell,gas,5.00,5541,2024-05-01\n")

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)

    output = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert NO_PRESET_NEAR in output
    assert f"write the header {HEADER}" in output
    assert "tabformer layout" not in output


@needs_samples
@one_server
def test_cli_venmo_sample_exit_two(cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(VENMO)], cli_env)

    output = " ".join(completed.stderr.split())
    assert completed.returncode == 2
    assert NO_PRESET_NEAR in output
    assert "schwab-checking layout" not in output
    assert "pass it with --layout" in output

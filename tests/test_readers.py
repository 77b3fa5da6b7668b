"""Readers: every kind of bad input is rejected with line, column, value and fix."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from producer import DOCUMENTED, InputError, Rejected, Row, Skipped, load_layout, read_transactions
from producer.duplicates import DuplicateIndex
from producer.readers import CsvReader, open_reader
from producer.values import parse_amount
from conftest import SHARED_DATA

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
TABFORMER_FILE = SHARED_DATA / "tabformer-user0" / "User0_credit_card_transactions.2002-2016.csv"


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def csv_rows(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def only(outcomes: list, kind: type):
    matches = [outcome for outcome in outcomes if isinstance(outcome, kind)]
    assert len(matches) == 1, outcomes
    return matches[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.50", Decimal("12.50")),
        ("1,234.56", Decimal("1234.56")),
        ("$12.50", Decimal("12.50")),
        ("$1,234.56", Decimal("1234.56")),
        ("(45.00)", Decimal("-45.00")),
        ("-$5", Decimal("-5")),
        ("$-99.00", Decimal("-99.00")),
        ("+ $73.01", Decimal("73.01")),
    ],
)
def test_parse_amount_accepts(text, expected):
    assert parse_amount(text) == expected


@pytest.mark.parametrize("text", ["12,50", "NaN", "$", "--5", "(-5)", "1,23,456", "€5", "٣"])
def test_parse_amount_rejects(text):
    with pytest.raises(ValueError, match="write it like"):
        parse_amount(text)


def test_valid_row_published_fields():
    outcomes = read(csv_rows('t1,u1,"Joe\'s, ""Best"" Café",dining,"$1,234.56",5812,2024-05-01T12:30:00-04:00'))

    row = only(outcomes, Row)
    assert row.line == 2
    assert row.transaction.merchant == 'Joe\'s, "Best" Café'
    assert row.transaction.amount_usd == Decimal("1234.56")
    assert row.transaction.timestamp == datetime(2024, 5, 1, 16, 30, tzinfo=timezone.utc)


def test_byte_order_mark_stripped():
    outcomes = read(b"\xef\xbb\xbf" + csv_rows("t1,u1,Shop,groceries,5.00,5411,2024-05-01T00:00:00Z"))

    assert only(outcomes, Row).transaction.transaction_id == "t1"


@pytest.mark.parametrize(
    ("amount", "refund"),
    [("(45.00)", "45.00"), ("-12.50", "12.50"), ("$-99.00", "99.00")],
)
def test_negative_amount_skipped_as_refund(amount, refund):
    outcomes = read(csv_rows(f't1,u1,Shop,groceries,"{amount}",5411,2024-05-01T00:00:00Z'))

    skipped = only(outcomes, Skipped)
    assert skipped.line == 2
    assert f"refund or credit of {refund}" in skipped.reason
    assert skipped.transaction_id == "t1"


def test_zero_amount_skipped():
    skipped = only(read(csv_rows("t1,u1,Shop,groceries,0.00,5411,2024-05-01T00:00:00Z")), Skipped)

    assert "zero amount" in skipped.reason


def test_bad_rows_rejected_and_valid_rows_kept():
    outcomes = read(csv_rows(
        "t1,u1,Shop,groceries,5.00,5411,2024-05-01T00:00:00Z",
        "t2,u1,Shop,groceries,12;50,5411,2024-05-01T00:00:00Z",
        "t3,u1,Shop,groceries,5.00,54111,2024-05-01T00:00:00Z",
        "t4,u1,Shop,groceries,5.00,5411,2024/05/01",
        "t5,u1,Shop,groceries,5.00,5411,2024-05-01T00:00:00Z",
    ))

    assert [outcome.transaction.transaction_id for outcome in outcomes if isinstance(outcome, Row)] == ["t1", "t5"]
    errors = {outcome.line: outcome.error for outcome in outcomes if isinstance(outcome, Rejected)}
    assert sorted(errors) == [3, 4, 5]

    assert errors[3].column == "amount_usd"
    assert "'12;50'" in errors[3].message
    assert "line 3" in errors[3].message
    assert "write it like" in errors[3].message

    assert errors[4].column == "mcc"
    assert "'54111'" in errors[4].message
    assert "4-digit" in errors[4].message

    assert errors[5].column == "timestamp"
    assert "'2024/05/01'" in errors[5].message
    assert "MM/DD/YYYY" in errors[5].message


def test_date_without_zone_read_as_utc_with_warning():
    reader = open_reader(io.BytesIO(csv_rows("t1,u1,Shop,,5.00,5411,05/01/2024 13:45")))
    outcomes = list(reader)

    assert only(outcomes, Row).transaction.timestamp == datetime(2024, 5, 1, 13, 45, tzinfo=timezone.utc)
    assert len(reader.warnings) == 1
    assert "no time zone" in reader.warnings[0]


def test_empty_lines_counted_not_rejected():
    reader = open_reader(io.BytesIO(
        b"\n" + csv_rows("", "t1,u1,Shop,,5.00,5411,2024-05-01", ",,,,,,", "t2,u1,Shop,,5.00,5411,2024-05-01")
    ))
    outcomes = list(reader)

    assert [outcome.line for outcome in outcomes] == [4, 6]
    assert reader.empty_lines == 3


def test_missing_header_column_lists_expected():
    with pytest.raises(InputError) as caught:
        read(csv_rows("t1,u1,Shop,,5.00,5411,2024-05-01", header=HEADER.replace("amount_usd", "amount_usdd")))

    message = str(caught.value)
    assert "'amount_usd'" in message
    assert "'amount_usdd' may be a misspelling of 'amount_usd'" in message
    assert HEADER in message


def test_header_case_and_spaces_ignored():
    header = " Transaction_ID , user_id,MERCHANT,category,amount_usd,mcc,timestamp"

    outcomes = read(csv_rows("t1,u1,Shop,,5.00,5411,2024-05-01", header=header))

    assert only(outcomes, Row).transaction.transaction_id == "t1"


def test_extra_columns_warned_once():
    reader = open_reader(io.BytesIO(csv_rows(
        "t1,u1,Shop,,5.00,5411,2024-05-01T00:00:00Z,a,b",
        "t2,u1,Shop,,5.00,5411,2024-05-01T00:00:00Z,c,d",
        header=HEADER + ",note,memo",
    )))
    outcomes = list(reader)

    assert len([outcome for outcome in outcomes if isinstance(outcome, Row)]) == 2
    assert len(reader.warnings) == 1
    assert "'note', 'memo'" in reader.warnings[0]


def test_empty_file_rejected():
    with pytest.raises(InputError, match="the input is empty"):
        read(b"\n\n")


def test_unquoted_comma_rejected():
    rejected = only(read(csv_rows("t1,u1,Joe's, Inc,,5.00,5411,2024-05-01")), Rejected)

    assert rejected.line == 2
    assert "8 fields but the header has 7" in rejected.error.message
    assert "quote" in rejected.error.fix


def test_stray_quote_rejected():
    rejected = only(read(csv_rows('t1,u1,"Joe"s,,5.00,5411,2024-05-01')), Rejected)

    assert rejected.line == 2
    assert "not valid CSV" in rejected.error.reason


def test_multiline_quoted_field_keeps_line_numbers():
    outcomes = read(csv_rows('t1,u1,"Shop\nSecond line",,5.00,5411,2024-05-01', "t2,u1,Shop,,bad,5411,2024-05-01"))

    assert only(outcomes, Row).transaction.merchant == "Shop\nSecond line"
    assert only(outcomes, Rejected).line == 4


def test_cr_only_line_endings():
    data = csv_rows("t1,u1,Shop,,5.00,5411,2024-05-01", "t2,u1,Shop,,x,5411,2024-05-01").replace(b"\n", b"\r")

    outcomes = read(data)

    assert only(outcomes, Row).line == 2
    assert only(outcomes, Rejected).line == 3


def test_non_ascii_merchant_accepted():
    row = only(read(csv_rows("t1,u1,Café Zürich 東京,,5.00,5812,2024-05-01")), Row)

    assert row.transaction.merchant == "Café Zürich 東京"


def test_invalid_utf8_rejects_only_that_row():
    data = csv_rows("t1,u1,CafX,,5.00,5812,2024-05-01", "t2,u1,Shop,,5.00,5812,2024-05-01").replace(b"X", b"\xe9")

    outcomes = read(data)

    rejected = only(outcomes, Rejected)
    assert rejected.line == 2
    assert rejected.error.column == "merchant"
    assert "b'\\xe9'" in rejected.error.message
    assert "UTF-8" in rejected.error.fix
    assert only(outcomes, Row).transaction.transaction_id == "t2"


def test_field_over_limit_rejected():
    rejected = only(read(csv_rows(f"t1,u1,{'m' * 257},,5.00,5812,2024-05-01")), Rejected)

    assert rejected.error.column == "merchant"
    assert "257 characters" in rejected.error.message
    assert "256" in rejected.error.message


def test_row_over_byte_limit_rejected_then_recovers():
    data = csv_rows('t1,u1,"never closed,,5.00,5812,2024-05-01', *["x" * 50] * 10, header=HEADER)
    data += b't2,u1,Shop,,5.00,5812,2024-05-01\n'

    outcomes = list(CsvReader(io.BytesIO(data), max_record_bytes=200))

    rejected = [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
    assert rejected[0].line == 2
    assert "longer than the limit of 200 bytes" in rejected[0].error.message
    assert only(outcomes, Row).transaction.transaction_id == "t2"


def test_duplicate_id_in_file_rejected():
    rejected = only(read(csv_rows("t1,u1,A,,5.00,5812,2024-05-01", "t1,u1,B,,6.00,5812,2024-05-01")), Rejected)

    assert rejected.line == 3
    assert rejected.error.column == "transaction_id"
    assert "already used on line 2" in rejected.error.message


def test_duplicate_index_after_spill():
    index = DuplicateIndex(spill_after=3)
    try:
        for line in range(10):
            assert index.add(f"t{line}", line) is None
        assert index.add("t1", 20) == 1
        assert index.add("t9", 21) == 9
        assert index.add("t10", 22) is None
    finally:
        index.close()


def write_jsonl(*lines: str, end: str = "\n") -> bytes:
    return ("\n".join(lines) + end).encode()


VALID_JSON = '{"transaction_id": "j1", "user_id": "u1", "merchant": "Shop", "amount_usd": 5.10, "mcc": "5411", "timestamp": "2024-05-01T00:00:00Z"}'


def test_jsonl_valid_line():
    row = only(read(write_jsonl(VALID_JSON)), Row)

    assert row.transaction.amount_usd == Decimal("5.10")


@pytest.mark.parametrize(
    ("line", "column", "needle"),
    [
        ("[1, 2]", None, "JSON array, not an object"),
        ('"text"', None, "JSON string, not an object"),
        ('{"transaction_id": 7, "user_id": "u1", "merchant": "S", "amount_usd": 5, "timestamp": "2024-05-01"}', "transaction_id", "7"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": true, "timestamp": "2024-05-01"}', "amount_usd", "JSON bool"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": "12,50", "timestamp": "2024-05-01"}', "amount_usd", "'12,50'"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": 5, "timestamp": 1714521600}', "timestamp", "JSON number"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": NaN, "timestamp": "2024-05-01"}', None, "not valid JSON"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": 5}', "timestamp", "missing"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": 5, "timestamp": null}',
         "timestamp", "timestamp is a JSON null, not a string"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": null, "timestamp": "2024-05-01"}',
         "amount_usd", "amount_usd is a JSON null, not a number"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "timestamp": "2024-05-01"}',
         "amount_usd", "amount_usd is missing; add it"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": null, "amount_usd": 5, "timestamp": "2024-05-01"}',
         "merchant", "merchant is a JSON null, not a string"),
        ('{"transaction_id": "j", "user_id": ["u1"], "merchant": "S", "amount_usd": 5, "timestamp": "2024-05-01"}',
         "user_id", 'user_id is a JSON array (["u1"]), not a string'),
        # Too many digits for Decimal to round to cents: rejected, not a crash of the whole file.
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": 1e+26, "timestamp": "2024-05-01"}',
         "amount_usd", "above the limit of $10,000,000"),
        ('{"transaction_id": "j", "user_id": "u1", "merchant": "S", "amount_usd": 12345678901234567890123456.5, '
         '"timestamp": "2024-05-01"}', "amount_usd", "above the limit"),
    ],
)
def test_jsonl_bad_line_rejected(line, column, needle):
    outcomes = read(write_jsonl(line, VALID_JSON.replace("j1", "j2")))

    rejected = only(outcomes, Rejected)
    assert rejected.line == 1
    assert rejected.error.column == column
    assert needle in rejected.error.message
    assert only(outcomes, Row).line == 2


def test_jsonl_truncated_last_line():
    outcomes = read(write_jsonl(VALID_JSON, VALID_JSON[:40], end=""))

    rejected = only(outcomes, Rejected)
    assert rejected.line == 2
    assert "truncated" in rejected.error.message


def test_jsonl_refund_skipped():
    skipped = only(read(write_jsonl(VALID_JSON.replace("5.10", "-5.10"))), Skipped)

    assert "refund or credit of 5.10" in skipped.reason


def test_json_array_is_input_error():
    with pytest.raises(InputError, match="one transaction object per line"):
        read(b"[\n  " + VALID_JSON.encode() + b"\n]\n")


def test_utf16_is_input_error():
    with pytest.raises(InputError, match="UTF-16"):
        read("\ufeff".encode("utf-16-le") + HEADER.encode("utf-16-le"))


def test_user_layout_from_yaml(tmp_path):
    config = tmp_path / "capitalone.yaml"
    config.write_text(
        "name: capital one\n"
        "columns:\n"
        "  transaction_id: 'c1-{#line}'\n"
        "  user_id: Card No.\n"
        "  merchant: Description\n"
        "  category: Category\n"
        "  timestamp: Transaction Date\n"
        "debit_column: Debit\n"
        "credit_column: Credit\n"
    )
    data = csv_rows(
        "2024-05-01,2024-05-02,1234,Coffee Shop,Dining,4.50,",
        "2024-05-03,2024-05-03,1234,PAYMENT,Payment/Credit,,100.00",
        header="Transaction Date,Posted Date,Card No.,Description,Category,Debit,Credit",
    )

    outcomes = read(data, layout=load_layout(config))

    row = only(outcomes, Row)
    assert row.transaction.transaction_id == "c1-2"
    assert row.transaction.amount_usd == Decimal("4.50")
    assert row.transaction.category == "Dining"
    assert "refund or credit of 100.00" in only(outcomes, Skipped).reason


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\ncolumns: {merchant: M}\n", "no column or constant for transaction_id"),
        ("name: x\ncolumns: {transaction_id: a, user_id: b, merchant: c, timestamp: d, amount: e}\n", "unknown transaction fields ['amount']"),
        ("columns: [1, 2\n", "not valid YAML"),
        ("name: x\ncolumns: {transaction_id: a, user_id: b, merchant: c, timestamp: d, amount_usd: e}\ntimezone: Mars/Base\n", "Mars/Base"),
    ],
)
def test_user_layout_invalid(tmp_path, text, needle):
    config = tmp_path / "layout.yaml"
    config.write_text(text)

    with pytest.raises(InputError, match="layout.yaml") as caught:
        load_layout(config)

    assert needle in str(caught.value)


@pytest.mark.skipif(not TABFORMER_FILE.exists(), reason="shared sample data not present")
def test_tabformer_sample_counts():
    with open(TABFORMER_FILE, newline="") as handle:
        source = list(csv.DictReader(handle))
    declined = sum(1 for row in source if row["Errors?"])
    refunds = sum(1 for row in source if not row["Errors?"] and row["Amount"].startswith("$-"))
    purchases = len(source) - declined - refunds

    outcomes = list(read_transactions(TABFORMER_FILE))

    assert len(outcomes) == 16_247
    assert purchases == 15_251  # worked out with awk: 16,247 rows - 472 with Errors? - 524 other refunds
    assert sum(isinstance(outcome, Row) for outcome in outcomes) == purchases
    skipped = [outcome for outcome in outcomes if isinstance(outcome, Skipped)]
    assert sum("declined authorization" in outcome.reason for outcome in skipped) == declined
    assert sum("refund or credit" in outcome.reason for outcome in skipped) == refunds
    assert not [outcome for outcome in outcomes if isinstance(outcome, Rejected)]


@pytest.mark.skipif(not TABFORMER_FILE.exists(), reason="shared sample data not present")
def test_tabformer_first_row_mapped():
    first = next(iter(read_transactions(TABFORMER_FILE)))

    # 0,0,2002,9,1,06:21,$134.09,Swipe Transaction,3527213246127876953,La Verne,CA,91750.0,5300,,No
    assert first.transaction.transaction_id == "tabformer-0-0-2"
    assert first.transaction.user_id == "tabformer-0"
    assert first.transaction.amount_usd == Decimal("134.09")
    assert first.transaction.mcc == "5300"
    assert first.transaction.merchant == "merchant 3527213246127876953, La Verne CA"
    assert first.transaction.merchant_country == "US"
    assert first.transaction.timestamp == datetime(2002, 9, 1, 6, 21, tzinfo=timezone.utc)


def test_tabformer_foreign_and_online_country():
    header = "User,Card,Year,Month,Day,Time,Amount,Use Chip,Merchant Name,Merchant City,Merchant State,Zip,MCC,Errors?,Is Fraud?"
    data = csv_rows(
        "0,1,2010,3,4,10:00,$20.00,Chip Transaction,42,Rome,Italy,,5812,,No",
        "0,1,2010,3,4,11:00,$30.00,Online Transaction,43,ONLINE,,,5732,,No",
        "0,1,2010,3,4,12:00,$40.00,Swipe Transaction,44,Austin,TX,78701.0,5411,Bad PIN,No",
        header=header,
    )

    outcomes = read(data)

    countries = [outcome.transaction.merchant_country for outcome in outcomes if isinstance(outcome, Row)]
    assert countries == ["IT", None]
    assert "declined authorization (Errors?: Bad PIN)" in only(outcomes, Skipped).reason


@pytest.mark.slow
def test_large_file_read_in_bounded_memory(tmp_path):
    rows = 60_000
    path = tmp_path / "large.csv"
    with open(path, "w") as handle:
        handle.write(HEADER + "\n")
        for number in range(rows):
            handle.write(f"t{number},u{number % 97},Merchant {number},groceries,{number % 500 + 1}.25,5411,2024-05-01T00:00:00Z\n")

    tracemalloc.start()
    try:
        held = []
        for outcome in read_transactions(path, layout=DOCUMENTED):
            held.append(outcome)
            if len(held) == 2_000:
                break
        held_bytes, _ = tracemalloc.get_traced_memory()
        del held
        tracemalloc.reset_peak()

        count = sum(1 for outcome in read_transactions(path, layout=DOCUMENTED) if isinstance(outcome, Row))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == rows
    # Holding every row would take about held_bytes * rows / 2,000. Streaming
    # keeps one row plus the transaction_ids (a dict up to 50,000, then SQLite,
    # whose own memory tracemalloc does not see).
    assert peak < held_bytes * (rows / 2_000) / 4, (peak, held_bytes)


def test_sub_cent_amounts_warned_once(tmp_path):
    """Rounding 10.005 to 10.01 is recorded as a warning naming the first line, not done silently."""
    source = tmp_path / "sub.csv"
    source.write_text(
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        "s1,u1,Shop,groceries,-3.333,5411,2026-11-02T10:00:00Z\n"
        "s2,u1,Shop,groceries,10.005,5411,2026-11-02T10:00:00Z\n"
        "s3,u1,Shop,groceries,7.129,5411,2026-11-02T10:00:00Z\n"
        "s4,u1,Shop,groceries,12.50,5411,2026-11-02T10:00:00Z\n"
    )
    with source.open("rb") as stream:
        reader = open_reader(stream, name=str(source))
        outcomes = list(reader)

    amounts = [outcome.transaction.amount_usd for outcome in outcomes if hasattr(outcome, "transaction")]
    rounded = [warning for warning in reader.warnings if "rounded half up" in warning]
    assert [str(amount) for amount in amounts] == ["10.01", "7.13", "12.50"]
    assert rounded == ["amounts with more than two decimal places are rounded half up to whole cents "
                       "(first on line 3: 10.005 becomes 10.01)"]


def test_whole_cents_not_warned(tmp_path):
    source = tmp_path / "cents.jsonl"
    source.write_text('{"transaction_id":"j1","user_id":"u1","merchant":"Shop","amount_usd":"7.10",'
                      '"mcc":"5411","timestamp":"2026-11-02T10:00:00Z"}\n')
    with source.open("rb") as stream:
        reader = open_reader(stream, name=str(source))
        list(reader)

    assert not [warning for warning in reader.warnings if "rounded" in warning]


def test_zoneless_warning_names_noon_for_dates():
    reader = open_reader(io.BytesIO(csv_rows("z1,u1,Shop,,5.00,5411,2024-05-01")))
    outcomes = list(reader)

    assert only(outcomes, Row).transaction.timestamp == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert len(reader.warnings) == 1
    assert "a date without a time of day as noon" in reader.warnings[0]

"""Messages for impossible dates, files not separated by commas, and the rounding warning."""

from __future__ import annotations

import io
from datetime import timezone

import pytest

from producer import InputError, Producer, Rejected, Row, publish_file, read_transactions
from producer.layouts import DEFAULT_TIMESTAMP_FORMATS, Layout
from producer.readers import open_reader
from producer.values import parse_timestamp

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
FORMAT_LIST = "is not a date in an accepted format"


def timestamp_error(text: str, formats: tuple[str, ...] = DEFAULT_TIMESTAMP_FORMATS) -> ValueError:
    with pytest.raises(ValueError) as raised:
        parse_timestamp(text, formats=formats, zone=timezone.utc)
    return raised.value


def outcomes(data: str, **options) -> list:
    return list(read_transactions(io.BytesIO(data.encode()), **options))


def input_error(data: str, **options) -> str:
    with pytest.raises(InputError) as raised:
        outcomes(data, **options)
    return str(raised.value)


def read_with_warnings(data: str) -> tuple[list, list[str]]:
    reader = open_reader(io.BytesIO(data.encode()), name="input")
    return list(reader), reader.warnings


def json_line(transaction_id: str, amount: str, timestamp: str) -> str:
    return (f'{{"transaction_id": "{transaction_id}", "user_id": "u1", "merchant": "Shop", '
            f'"amount_usd": "{amount}", "timestamp": "{timestamp}"}}\n')


# Impossible dates and times.

@pytest.mark.parametrize(
    ("text", "reason", "fix"),
    [
        ("2026-02-30T10:00:00Z", "'2026-02-30T10:00:00Z' is not a real date (February 2026 has 28 days)",
         "check the day and month"),
        ("2026-02-29", "'2026-02-29' is not a real date (February 2026 has 28 days)", "check the day and month"),
        ("02/30/2026", "'02/30/2026' is not a real date (February 2026 has 28 days)", "check the day and month"),
        ("2026-04-31 08:00", "'2026-04-31 08:00' is not a real date (April 2026 has 30 days)",
         "check the day and month"),
        ("20260230", "'20260230' is not a real date (February 2026 has 28 days)", "check the day and month"),
        ("2026-02-00", "'2026-02-00' is not a real date (there is no day 0, days run from 1 to 28 in February 2026)",
         "check the day and month"),
        ("2026-13-01", "'2026-13-01' is not a real date (month 13 is out of range, months run from 1 to 12)",
         "check the day and month"),
        ("2026-00-10", "'2026-00-10' is not a real date (month 0 is out of range, months run from 1 to 12)",
         "check the day and month"),
        ("0000-01-01", "'0000-01-01' is not a real date (there is no year 0)",
         "check the date and its format, and write a date from 1900-01-01 on"),
        ("2026-02-03T25:00:00Z",
         "'2026-02-03T25:00:00Z' is not a real time of day (hour 25 is out of range, hours run from 0 to 23)",
         "check the time of day"),
        ("2026-02-03T24:00:00Z",
         "'2026-02-03T24:00:00Z' is not a real time of day (hour 24 is out of range, hours run from 0 to 23)",
         "write midnight at the end of a day as 00:00 on the next day"),
        ("2026-02-03T10:61:00Z",
         "'2026-02-03T10:61:00Z' is not a real time of day (minute 61 is out of range, minutes run from 0 to 59)",
         "check the time of day"),
        ("2026-02-03T10:00:60Z",
         "'2026-02-03T10:00:60Z' is not a real time of day (second 60 is out of range, seconds run from 0 to 59 "
         "and leap seconds are not accepted)",
         "check the time of day"),
        ("02/03/2026 25:00",
         "'02/03/2026 25:00' is not a real time of day (hour 25 is out of range, hours run from 0 to 23)",
         "check the time of day"),
        ("2026-02-03T10:00:00+25:00",
         "'2026-02-03T10:00:00+25:00' has a time zone offset out of range (+25:00, offsets run from -23:59 to +23:59)",
         "check the time zone offset"),
        ("2026-02-30t10:00:00z", "'2026-02-30t10:00:00z' is not a real date (February 2026 has 28 days)",
         "check the day and month"),
    ],
)
def test_impossible_timestamp_named(text, reason, fix):
    error = timestamp_error(text)

    assert error.reason == reason
    assert error.fix == fix


def test_leap_day_still_parses():
    parsed, _ = parse_timestamp("2024-02-29", formats=DEFAULT_TIMESTAMP_FORMATS, zone=timezone.utc)

    assert (parsed.year, parsed.month, parsed.day) == (2024, 2, 29)


@pytest.mark.parametrize("text", ["Tuesday", "2026-1-5", "2026-0230", "31 February", "2026/02/30"])
def test_unknown_format_keeps_format_list(text):
    error = timestamp_error(text)

    assert error.reason == f"{text!r} {FORMAT_LIST}"
    assert error.fix.startswith("write it as ISO 8601")


def test_day_first_date_gets_layout_hint():
    error = timestamp_error("13/01/2026")

    assert error.reason == "'13/01/2026' is not a real date (month 13 is out of range, months run from 1 to 12)"
    assert error.fix.startswith("check the day and month. The format MM/DD/YYYY puts the month first")
    assert '["%d/%m/%Y"]' in error.fix


def test_month_and_day_both_high_no_hint():
    error = timestamp_error("13/31/2026")

    assert error.fix == "check the day and month"


@pytest.mark.parametrize(
    ("text", "layout", "reason"),
    [
        ("31.04.2026", "%d.%m.%Y", "'31.04.2026' is not a real date (April 2026 has 30 days)"),
        ("30 Feb 2026", "%d %b %Y", "'30 Feb 2026' is not a real date (February 2026 has 28 days)"),
        ("30 february 2026", "%d %B %Y", "'30 february 2026' is not a real date (February 2026 has 28 days)"),
        ("02/29/26", "%m/%d/%y", "'02/29/26' is not a real date (February 2026 has 28 days)"),
        ("02/30/2026 Mon", "%m/%d/%Y %a", "'02/30/2026 Mon' is not a real date (February 2026 has 28 days)"),
        ("02/03/2026 13:00 PM", "%m/%d/%Y %I:%M %p",
         "'02/03/2026 13:00 PM' is not a real time of day (hour 13 is out of range for a 12-hour clock "
         "with AM or PM, hours run from 1 to 12)"),
    ],
)
def test_custom_format_ranges_checked(text, layout, reason):
    assert timestamp_error(text, (layout,)).reason == reason


@pytest.mark.parametrize(("text", "layout"), [("30 Foo 2026", "%d %b %Y"), ("2026-400", "%Y-%j")])
def test_unchecked_format_keeps_format_list(text, layout):
    assert FORMAT_LIST in timestamp_error(text, (layout,)).reason


def test_csv_impossible_date_rejects_row():
    data = (f"{HEADER}\n"
            "a1,u1,Shop,groceries,4.00,5411,2026-02-02T10:00:00Z\n"
            "a2,u1,Shop,groceries,4.00,5411,2026-02-30T10:00:00Z\n"
            "a3,u1,Shop,groceries,4.00,5411,2026-02-03T25:00:00Z\n"
            "a4,u1,Shop,groceries,4.00,5411,2026-02-04T10:00:00Z\n")

    results = outcomes(data)

    assert [type(result) for result in results] == [Row, Rejected, Rejected, Row]
    assert results[1].error.message == ("line 3, column 'timestamp': '2026-02-30T10:00:00Z' is not a real date "
                                        "(February 2026 has 28 days); check the day and month")
    assert results[2].error.message == ("line 4, column 'timestamp': '2026-02-03T25:00:00Z' is not a real time "
                                        "of day (hour 25 is out of range, hours run from 0 to 23); "
                                        "check the time of day")
    assert results[1].error.value == "2026-02-30T10:00:00Z"


def test_json_lines_impossible_date_rejects_line():
    data = json_line("j1", "4.00", "2026-02-29") + json_line("j2", "4.00", "2026-02-28")

    results = outcomes(data)

    assert [type(result) for result in results] == [Rejected, Row]
    assert results[0].error.column == "timestamp"
    assert results[0].error.reason == "'2026-02-29' is not a real date (February 2026 has 28 days)"
    assert results[0].error.fix == "check the day and month"


def test_bank_preset_impossible_date():
    data = ("Transaction Date,Post Date,Description,Category,Type,Amount,Memo\n"
            "02/30/2026,02/28/2026,SHOP,Shopping,Sale,-4.00,\n")

    error = outcomes(data, user="me")[0].error

    assert error.column == "Transaction Date"
    assert error.reason == "'02/30/2026' is not a real date (February 2026 has 28 days)"


def test_layout_day_first_date_checked():
    layout = Layout(name="dotted", columns={"transaction_id": "id", "user_id": "user", "merchant": "shop",
                                            "amount_usd": "amount", "timestamp": "date"},
                    timestamp_formats=("%d.%m.%Y",))
    data = "id,user,shop,amount,date\nr1,u1,Shop,4.00,29.02.2026\nr2,u1,Shop,4.00,28.02.2026\n"

    results = outcomes(data, layout=layout)

    assert [type(result) for result in results] == [Rejected, Row]
    assert results[0].error.reason == "'29.02.2026' is not a real date (February 2026 has 28 days)"


# Files separated by semicolons or tabs.

def test_semicolon_header_names_separator():
    data = HEADER.replace(",", ";") + "\nr1;u1;Shop;groceries;10,50;5411;2026-02-03\n"

    message = input_error(data)

    assert message.startswith(f"the header {HEADER.replace(',', ';')!r} looks separated by semicolons, not commas")
    assert "it has 7 columns, and these are the columns of the documented layout" in message
    assert "RewardPilot reads comma-separated files only" in message
    assert "Export the file again as CSV with a comma as the field separator" in message
    assert "decimal comma (12,50)" in message
    assert "matches no known layout" not in message


def test_tab_header_names_separator():
    data = HEADER.replace(",", "\t") + "\nr1\tu1\tShop\tgroceries\t10.50\t5411\t2026-02-03\n"

    message = input_error(data)

    assert "looks separated by tabs, not commas" in message
    assert "these are the columns of the documented layout" in message
    assert "RewardPilot reads comma-separated files only" in message
    assert "decimal comma" not in message


def test_semicolon_bank_header_names_preset():
    data = "Transaction Date;Post Date;Description;Category;Type;Amount;Memo\n"

    message = input_error(data)

    assert "looks separated by semicolons" in message
    assert "these are the columns of the chase layout" in message


def test_semicolon_unknown_columns_still_named():
    message = input_error('Datum;"Betrag, EUR";Text\n1;2;3\n')

    assert "looks separated by semicolons, not commas, because split at the semicolons it has 3 columns." in message
    assert "these are the columns" not in message


def test_comma_header_keeps_layout_message():
    message = input_error("foo,bar;baz\n1,2\n")

    assert "matches no known layout" in message
    assert "separated by" not in message


def test_semicolon_header_with_layout_option():
    layout = Layout(name="mine", columns={"transaction_id": "id", "user_id": "user", "merchant": "shop",
                                          "amount_usd": "amount", "timestamp": "date"})

    message = input_error("id;user;shop;amount;date\nr1;u1;Shop;4.00;2026-02-03\n", layout=layout)

    assert "looks separated by semicolons" in message
    assert "these are the columns of the mine layout" in message


def test_headerless_layout_semicolon_rows():
    layout = Layout(name="named", header=["id", "user", "shop", "amount", "date"],
                    columns={"transaction_id": "id", "user_id": "user", "merchant": "shop",
                             "amount_usd": "amount", "timestamp": "date"})

    results = outcomes("r1;u1;Shop;4.00;2026-02-03\n", layout=layout)

    assert len(results) == 1
    error = results[0].error
    assert error.reason == ("the row has 1 field but the header has 5, and split at the semicolons it has 5, "
                            "so the file looks separated by semicolons, not commas")
    assert error.fix.startswith("RewardPilot reads comma-separated files only")


def test_short_comma_row_keeps_width_message():
    results = outcomes(f"{HEADER}\nr1,u1,Shop;Deli,groceries\n")

    assert "so a field is missing" in results[0].error.reason


# The rounding warning names a published row.

ROUNDED = "amounts with more than two decimal places are rounded half up to whole cents"


def test_json_rounding_skips_rejected_line():
    data = json_line("j1", "10.001", "2026-02-30T10:00:00Z") + json_line("j2", "7.129", "2026-02-03T10:00:00Z")

    results, warnings = read_with_warnings(data)

    assert [type(result) for result in results] == [Rejected, Row]
    assert [warning for warning in warnings if warning.startswith(ROUNDED)] == [
        f"{ROUNDED} (first on line 2: 7.129 becomes 7.13)"
    ]


def test_json_rounding_skips_duplicate():
    data = (json_line("j1", "4.00", "2026-02-03T10:00:00Z") + json_line("j1", "10.006", "2026-02-03T10:00:00Z")
            + json_line("j2", "7.129", "2026-02-03T10:00:00Z"))

    _, warnings = read_with_warnings(data)

    assert [warning for warning in warnings if warning.startswith(ROUNDED)] == [
        f"{ROUNDED} (first on line 3: 7.129 becomes 7.13)"
    ]


def test_csv_rounding_skips_duplicate():
    data = (f"{HEADER}\n"
            "c1,u1,Shop,groceries,4.00,5411,2026-02-03T10:00:00Z\n"
            "c1,u1,Shop,groceries,10.006,5411,2026-02-03T10:00:00Z\n"
            "c2,u1,Shop,groceries,7.129,5411,2026-02-03T10:00:00Z\n")

    results, warnings = read_with_warnings(data)

    assert [type(result) for result in results] == [Row, Rejected, Row]
    assert [warning for warning in warnings if warning.startswith(ROUNDED)] == [
        f"{ROUNDED} (first on line 4: 7.129 becomes 7.13)"
    ]


def test_csv_rounding_skips_impossible_date():
    data = (f"{HEADER}\n"
            "c1,u1,Shop,groceries,10.001,5411,2026-02-30T10:00:00Z\n"
            "c2,u1,Shop,groceries,10.005,5411,2026-02-03T10:00:00Z\n")

    _, warnings = read_with_warnings(data)

    assert [warning for warning in warnings if warning.startswith(ROUNDED)] == [
        f"{ROUNDED} (first on line 3: 10.005 becomes 10.01)"
    ]


def test_rounding_absent_when_all_rejected():
    data = json_line("j1", "10.001", "2026-02-30T10:00:00Z") + json_line("j2", "4.00", "2026-02-03T10:00:00Z")

    _, warnings = read_with_warnings(data)

    assert not [warning for warning in warnings if warning.startswith(ROUNDED)]


def test_publish_rounding_skips_unconverted_row(sync_client, keys, tmp_path):
    data = (f"{HEADER},currency\n"
            "f1,u1,Shop,groceries,10.001,5411,2026-02-03T10:00:00Z,EUR\n"
            "f2,u1,Shop,groceries,4.00,5411,2026-02-03T10:00:00Z,USD\n"
            "f3,u1,Shop,groceries,7.129,5411,2026-02-03T10:00:00Z,USD\n")
    producer = Producer(sync_client, keys, max_backlog=None)

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=producer)

    assert (summary.published, summary.rejected) == (2, 1)
    assert [warning for warning in summary.warnings if warning.startswith(ROUNDED)] == [
        f"{ROUNDED} (first on line 4: 7.129 becomes 7.13)"
    ]

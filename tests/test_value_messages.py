"""Messages for empty and exponent-notation values, the pre-1970 warning and the rejects file line."""

from __future__ import annotations

import io
import json
from datetime import timezone
from decimal import Decimal

import pytest
from rich.console import Console

from conftest import invoke_cli, one_server
from producer import FileSummary, Producer, Rejected, Row, format_summary, publish_file, read_transactions
from producer.errors import InvalidValueError
from producer.values import parse_amount, parse_timestamp
from rewardpilot.cli import publish_cmd

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
FORMATS = ("iso", "%m/%d/%Y")


def read_csv(*rows: str) -> list:
    data = "\n".join([HEADER, *rows]) + "\n"
    return list(read_transactions(io.BytesIO(data.encode())))


def read_jsonl(*objects: dict) -> list:
    data = "".join(json.dumps(item) + "\n" for item in objects)
    return list(read_transactions(io.BytesIO(data.encode())))


def json_row(**changes) -> dict:
    row = {"transaction_id": "j1", "user_id": "u1", "merchant": "Shop", "amount_usd": "12.00",
           "timestamp": "2024-05-01T12:00:00Z"}
    row.update(changes)
    return row


# Empty values.
@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_parse_amount_empty(text):
    with pytest.raises(InvalidValueError) as caught:
        parse_amount(text)

    assert caught.value.reason == "the amount is empty"
    assert caught.value.fix == "fill it in"


@pytest.mark.parametrize("text", ["", "  ", "\t"])
def test_parse_timestamp_empty(text):
    with pytest.raises(InvalidValueError) as caught:
        parse_timestamp(text, formats=FORMATS, zone=timezone.utc)

    assert caught.value.reason == "the timestamp is empty"
    assert caught.value.fix == "fill it in"


@pytest.mark.parametrize(
    ("row", "column", "message"),
    [
        ("e1,u1,Shop,,,5411,2024-05-01", "amount_usd", "line 2, column 'amount_usd': the amount is empty; fill it in"),
        ("e2,u1,Shop,,  ,5411,2024-05-01", "amount_usd", "line 2, column 'amount_usd': the amount is empty; fill it in"),
        ("e3,u1,Shop,,12.00,5411,", "timestamp", "line 2, column 'timestamp': the timestamp is empty; fill it in"),
        ("e4,u1,Shop,,12.00,5411,  ", "timestamp", "line 2, column 'timestamp': the timestamp is empty; fill it in"),
    ],
)
def test_csv_empty_value_message(row, column, message):
    [outcome] = read_csv(row)

    assert isinstance(outcome, Rejected)
    assert outcome.error.column == column
    assert outcome.error.message == message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount_usd": ""}, "line 1, column 'amount_usd': the amount is empty; fill it in"),
        ({"amount_usd": "   "}, "line 1, column 'amount_usd': the amount is empty; fill it in"),
        ({"timestamp": ""}, "line 1, column 'timestamp': the timestamp is empty; fill it in"),
        ({"timestamp": " "}, "line 1, column 'timestamp': the timestamp is empty; fill it in"),
    ],
)
def test_jsonl_empty_string_message(changes, message):
    [outcome] = read_jsonl(json_row(**changes))

    assert isinstance(outcome, Rejected)
    assert outcome.error.message == message


def test_jsonl_null_keeps_type_message():
    [amount, stamp] = read_jsonl(json_row(amount_usd=None), json_row(transaction_id="j2", timestamp=None))

    assert amount.error.reason == "amount_usd is a JSON null, not a number"
    assert stamp.error.reason == "timestamp is a JSON null, not a string"


# Exponent notation.
@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("1e3", "1000.00"),
        ("1E3", "1000.00"),
        ("1.5e2", "150.00"),
        ("$1e3", "1000.00"),
        ("-1e3", "-1000.00"),
        ("(1e3)", "-1000.00"),
        (".5e1", "5.00"),
        ("1.5e-3", "0.0015"),
        ("2e+2", "200.00"),
        ("1e99999", "1000.00"),
    ],
)
def test_parse_amount_exponent_message(text, plain):
    with pytest.raises(InvalidValueError) as caught:
        parse_amount(text)

    assert caught.value.reason == f"{text!r} uses exponent notation, which is not accepted"
    assert caught.value.fix == f"write the amount as a plain number like {plain}"


@pytest.mark.parametrize("text", ["e3", "1e", "1,000e3", "1e3x", "NaN", "Infinity"])
def test_parse_amount_near_exponent_generic(text):
    with pytest.raises(InvalidValueError) as caught:
        parse_amount(text)

    assert caught.value.reason == f"{text!r} is not an amount"


def test_csv_exponent_amount_rejected():
    [outcome] = read_csv("x1,u1,Shop,,1e3,5411,2024-05-01")

    assert isinstance(outcome, Rejected)
    assert outcome.error.message == ("line 2, column 'amount_usd': '1e3' uses exponent notation, which is not "
                                     "accepted; write the amount as a plain number like 1000.00")


def test_jsonl_exponent_string_rejected():
    [outcome] = read_jsonl(json_row(amount_usd="1e3"))

    assert isinstance(outcome, Rejected)
    assert outcome.error.reason == "'1e3' uses exponent notation, which is not accepted"


def test_jsonl_exponent_number_read_exactly():
    data = b'{"transaction_id": "j1", "user_id": "u1", "merchant": "Shop", "amount_usd": 1e2, ' \
           b'"timestamp": "2024-05-01T12:00:00Z"}\n'

    [outcome] = list(read_transactions(io.BytesIO(data)))

    assert isinstance(outcome, Row)
    assert outcome.transaction.amount_usd == Decimal("100.00")
    assert str(outcome.transaction.amount_usd) == "100.00"


# Dates before 1970.
def test_past_dates_published_with_warning(sync_client, keys, tmp_path):
    data = (
        f"{HEADER}\n"
        "p1,u1,Shell,gas,40.00,5541,2024-05-01\n"
        "p2,u1,Shell,gas,41.00,5541,1969-12-31\n"
        "p3,u1,Shell,gas,42.00,5541,1900-01-01\n"
        "p4,u1,Shell,gas,43.00,5541,1970-01-01T00:00:00Z\n"
    )

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 4
    assert summary.rejected == 0
    assert summary.past_dated == 2
    assert summary.first_past_line == 3
    assert summary.future_dated == 0
    assert ("2 row(s) are dated before 1970-01-01 (first on line 3) and were published as they are; "
            "check the date column and its format") in summary.warnings


def test_recent_dates_no_past_warning(sync_client, keys, tmp_path):
    data = f"{HEADER}\np1,u1,Shell,gas,40.00,5541,1970-01-02\n"

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.past_dated == 0
    assert summary.first_past_line is None
    assert not any("before 1970" in warning for warning in summary.warnings)


# The rejects file in the summary.
LONG_NAME = "response-sync-transactions.json.rejects.jsonl"


def render(renderable_or_text, *, width: int = 80) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable_or_text, soft_wrap=isinstance(renderable_or_text, str), highlight=False)
    return console.export_text()


def test_summary_table_folds_long_path():
    summary = FileSummary(source="response-sync-transactions.json", layout="jsonl", rows=2, published=1,
                          skipped=1, rejects_path=LONG_NAME)

    text = render(format_summary(summary))

    assert "…" not in text
    assert "".join(line.strip(" │") for line in text.splitlines()).count("rejects.jsonl") == 1


def test_rejects_line_skipped_only():
    summary = FileSummary(source="s.json", skipped=2, duplicates=1, rejects_path=LONG_NAME)

    text = render(publish_cmd.rejects_file_text(summary), width=40)

    assert text.strip() == f"3 rows skipped or already published; every one is in {LONG_NAME}, with the reason"


def test_rejects_line_rejected():
    summary = FileSummary(source="s.csv", rejected=1, skipped=4, rejects_path="[odd] name.jsonl")

    text = render(publish_cmd.rejects_file_text(summary))

    assert text.strip() == "1 row rejected; it is in [odd] name.jsonl"


def test_print_summary_names_rejects_file(monkeypatch):
    console = Console(record=True, width=60, color_system=None)
    monkeypatch.setattr(publish_cmd, "console", console)
    summary = FileSummary(source="s.json", layout="jsonl", rows=1, skipped=1, rejects_path=LONG_NAME)

    publish_cmd.print_publish_summary(summary)

    lines = console.export_text().splitlines()
    assert f"1 row skipped or already published; it is in {LONG_NAME}, with the reason" in lines


def test_print_summary_no_rejects_file(monkeypatch):
    console = Console(record=True, width=60, color_system=None)
    monkeypatch.setattr(publish_cmd, "console", console)
    summary = FileSummary(source="s.json", layout="jsonl", rows=1, published=1)

    publish_cmd.print_publish_summary(summary)

    assert "every one is in" not in console.export_text()
    assert "it is in" not in console.export_text()


@one_server
def test_cli_skipped_only_names_rejects(cli_env, keys, tmp_path):
    source = tmp_path / "response-sync-transactions.json"
    source.write_text(
        json.dumps(json_row(transaction_id="s1", amount_usd=-5)) + "\n"
        + json.dumps(json_row(transaction_id="s2", timestamp="1969-12-31")) + "\n"
    )
    env = {**cli_env, "COLUMNS": "80"}

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stderr.splitlines()
    assert f"1 row skipped or already published; it is in {LONG_NAME}, with the reason" in lines
    assert "before 1970-01-01 (first on line 2)" in " ".join(line.strip(" │") for line in lines)
    assert (tmp_path / LONG_NAME).exists()


@one_server
def test_cli_json_past_dated(cli_env, keys, tmp_path):
    source = tmp_path / "old.jsonl"
    source.write_text(json.dumps(json_row(timestamp="1900-01-01")) + "\n")

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source), "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["past_dated"] == 1
    assert summary["first_past_line"] == 1
    assert summary["published"] == 1

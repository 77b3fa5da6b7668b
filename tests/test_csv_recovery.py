"""CSV recovery: a stray quote rejects only its own line, and the lines after it are read as rows."""

from __future__ import annotations

import io
import json

import pytest

from conftest import ROOT, invoke_cli, one_server
from producer import InputError, Producer, Rejected, Row, Skipped, publish_file, read_transactions
from producer.readers import CsvReader
from producer.rejects import RejectsWriter

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
EXAMPLE = ROOT / "examples" / "transactions.csv"
QUOTE_FIX = 'close the quote on this line, or write a quote that is part of the text as two quotes ("")'


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def csv_rows(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def row(number: int, merchant: str = "Shop") -> str:
    return f"t{number},u1,{merchant},,{number}.00,5411,2024-05-01T12:00:00Z"


def rejects(outcomes: list) -> list[Rejected]:
    return [outcome for outcome in outcomes if isinstance(outcome, Rejected)]


def lines_of(outcomes: list, kind: type = object) -> list[int]:
    return [outcome.line for outcome in outcomes if isinstance(outcome, kind)]


def example_with_stray_quote(line: int) -> tuple[bytes, str]:
    """Return the example file with a quote opened before the merchant on ``line``, and that line."""
    lines = EXAMPLE.read_text().splitlines()
    transaction_id, user_id, rest = lines[line - 1].split(",", 2)
    lines[line - 1] = f'{transaction_id},{user_id},"{rest}'
    return ("\n".join(lines) + "\n").encode(), lines[line - 1]


def test_example_file_has_no_quotes():
    # The stray-quote tests below rely on the example file having none of its own.
    text = EXAMPLE.read_text()

    assert '"' not in text
    assert len(text.splitlines()) == 3001


def test_stray_quote_mid_file_rejects_one_line():
    data, bad_line = example_with_stray_quote(5)

    outcomes = read(data)

    [rejected] = rejects(outcomes)
    assert rejected.line == 5
    assert rejected.raw == bad_line
    assert rejected.error.value == bad_line
    assert "the quote opened on this line is never closed" in rejected.error.reason
    assert "longer than the limit of 65536 bytes" in rejected.error.reason
    assert rejected.error.fix == QUOTE_FIX
    assert len(outcomes) == 3000
    assert lines_of(outcomes) == list(range(2, 3002))
    assert lines_of(outcomes, Row) == [line for line in range(2, 3002) if line != 5]


def test_stray_quote_mid_file_counts_add_up(sync_client, keys, tmp_path):
    source = tmp_path / "unclosed.csv"
    data, bad_line = example_with_stray_quote(5)
    source.write_bytes(data)
    rejects_path = tmp_path / "unclosed.rej.jsonl"

    summary = publish_file(sync_client, keys, source, rejects_path=rejects_path, progress=False,
                           producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.rows == 3000
    assert (summary.published, summary.rejected) == (2999, 1)
    assert (summary.skipped, summary.duplicates, summary.empty_lines) == (0, 0, 0)
    assert sync_client.xlen(keys.transactions) == 2999
    [record] = [json.loads(line) for line in rejects_path.read_text().splitlines()]
    assert (record["outcome"], record["line"]) == ("rejected", 5)
    assert record["raw"] == bad_line
    assert record["fix"] == QUOTE_FIX


@one_server
def test_cli_stray_quote_summary(cli_env, keys, tmp_path):
    source = tmp_path / "unclosed.csv"
    source.write_bytes(example_with_stray_quote(5)[0])
    rejects_path = tmp_path / "unclosed.rej.jsonl"

    completed = invoke_cli(
        ["--prefix", keys.prefix, "publish", str(source), "--json", "--rejects", str(rejects_path)], cli_env,
    )

    assert completed.returncode == 1, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (summary["rows"], summary["published"], summary["rejected"]) == (3000, 2999, 1)
    assert summary["first_rejects"][0].startswith("line 5: the quote opened on this line is never closed")
    assert len(rejects_path.read_text().splitlines()) == 1


def test_unclosed_quote_before_valid_lines():
    data = csv_rows(row(1), row(2).replace("Shop", '"Shop'), row(3), row(4))

    outcomes = read(data)

    [rejected] = rejects(outcomes)
    assert rejected.line == 3
    assert rejected.raw == row(2).replace("Shop", '"Shop')
    assert rejected.error.reason == "the quote opened on this line is never closed before the file ends on line 5"
    assert rejected.error.fix == QUOTE_FIX
    assert lines_of(outcomes, Row) == [2, 4, 5]
    assert [outcome.transaction.transaction_id for outcome in outcomes if isinstance(outcome, Row)] == ["t1", "t3", "t4"]


def test_malformed_quote_before_valid_lines():
    # Line 4's quote closes the field that line 3 opened, and a letter follows it, which is not valid CSV.
    data = csv_rows(row(1), row(2).replace("Shop", '"Shop'), row(3).replace("Shop", 'Sh"op'), row(4))

    outcomes = read(data)

    rejected = rejects(outcomes)[0]
    assert rejected.line == 3
    assert rejected.raw == row(2).replace("Shop", '"Shop')
    assert "malformed" in rejected.error.reason
    assert "runs on to line 4" in rejected.error.reason
    assert "',' expected after '\"'" in rejected.error.reason
    assert rejected.error.fix == QUOTE_FIX
    assert lines_of(outcomes) == [2, 3, 4, 5]
    assert 5 in lines_of(outcomes, Row)


def test_quote_inside_quoted_field_on_one_line():
    outcomes = read(csv_rows(row(1, '"Joe"s"'), row(2)))

    [rejected] = rejects(outcomes)
    assert rejected.line == 2
    assert "not valid CSV" in rejected.error.reason
    assert rejected.error.fix == 'write a quote inside a quoted field as two quotes ("")'
    assert lines_of(outcomes, Row) == [3]


@pytest.mark.parametrize("ending", ["\n", ""], ids=["newline", "no-newline"])
def test_unclosed_quote_on_last_line(ending):
    last = row(3).replace("Shop", '"Shop')
    data = (f"{HEADER}\n{row(1)}\n{row(2)}\n{last}{ending}").encode()

    outcomes = read(data)

    [rejected] = rejects(outcomes)
    assert rejected.line == 4
    assert rejected.raw == last
    assert rejected.error.reason == "the quote opened on this line is never closed before the file ends"
    assert rejected.error.fix == QUOTE_FIX
    assert lines_of(outcomes, Row) == [2, 3]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_multiline_quoted_field_read_whole(line_end):
    rows = [row(1), 't2,u1,"Shop', "Second line", 'Third, with a comma",,5.00,5411,2024-05-01T12:00:00Z', row(3)]
    data = (line_end.join([HEADER, *rows]) + line_end).encode()

    outcomes = read(data)

    assert rejects(outcomes) == []
    assert lines_of(outcomes, Row) == [2, 3, 6]
    merchant = outcomes[1].transaction.merchant
    assert merchant == f"Shop{line_end}Second line{line_end}Third, with a comma"


def test_joined_row_wrong_width_rejects_first_line():
    # Line 4's quote closes the field that line 3 opened, so the two lines make one row of 6 fields.
    opened = row(2).replace("Shop", '"Shop')
    closed = row(3).replace(",,", ',groceries",')
    data = csv_rows(row(1), opened, closed, row(4))

    outcomes = read(data)

    [rejected] = rejects(outcomes)
    assert rejected.line == 3
    assert rejected.raw == opened
    assert "runs on to line 4" in rejected.error.reason
    assert "has 6 fields but the header has 7" in rejected.error.reason
    assert rejected.error.fix == QUOTE_FIX
    assert lines_of(outcomes, Row) == [2, 4, 5]


def test_stray_quotes_on_many_lines():
    rows = [row(number) for number in range(1, 31)]
    stray = set(range(3, 30, 4))
    for index in stray:
        rows[index] = rows[index].replace("Shop", '"Shop')

    outcomes = read(csv_rows(*rows))

    assert lines_of(outcomes, Rejected) == sorted(index + 2 for index in stray)
    assert lines_of(outcomes) == list(range(2, 32))


def test_record_limit_recovers_every_line():
    # A quote that is never closed, then 10 lines that pass the 200-byte record limit, one of them too long on its own.
    middle = ["x" * 50] * 4 + ["y" * 300] + ["z" * 50] * 5
    data = csv_rows(row(1), row(2).replace("Shop", '"Shop'), *middle, row(3))

    outcomes = list(CsvReader(io.BytesIO(data), max_record_bytes=200))

    rejected = {outcome.line: outcome.error for outcome in rejects(outcomes)}
    assert "the quote opened on this line is never closed" in rejected[3].reason
    assert "longer than the limit of 200 bytes" in rejected[3].reason
    assert rejected[8].reason == "the row is longer than the limit of 200 bytes"
    assert rejected[8].fix == "shorten the row"
    assert lines_of(outcomes) == list(range(2, 15))
    assert lines_of(outcomes, Row) == [2, 14]


def test_rejects_file_records_bad_line(tmp_path):
    bad_line = row(2).replace("Shop", '"Shop')
    data = csv_rows(row(1), bad_line, row(3), "t4,u1,Shop,,-4.00,5411,2024-05-01T12:00:00Z")
    path = tmp_path / "in.csv.rejects.jsonl"

    with RejectsWriter(path) as writer:
        for outcome in read(data):
            if isinstance(outcome, Rejected):
                writer.rejected(outcome)
            elif isinstance(outcome, Skipped):
                writer.skipped(outcome)

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(record["outcome"], record["line"]) for record in records] == [("rejected", 3), ("skipped", 5)]
    assert records[0]["raw"] == bad_line
    assert records[0]["value"] == bad_line
    assert records[0]["reason"] == "the quote opened on this line is never closed before the file ends on line 5"
    assert records[0]["fix"] == QUOTE_FIX


def test_stray_quote_in_header_is_input_error():
    data = csv_rows(row(1), header='transaction_id,"user_id,merchant,category,amount_usd,mcc,timestamp')

    with pytest.raises(InputError) as raised:
        read(data)

    assert "the header on line 1 cannot be read" in str(raised.value)
    assert "the quote opened on this line is never closed" in str(raised.value)

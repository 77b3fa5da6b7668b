"""JSON lines whose first line is longer than the bytes read to tell the format.

Format detection reads ``HEAD_BYTES`` first. A first line cut at that point
is no sign of a JSON document spread over several lines, so detection reads
on to the end of that line, up to the record size limit, before it decides.
"""

from __future__ import annotations

import io
import itertools
import json
import os

import pytest

from conftest import invoke_cli, one_server, run_cli
from producer import InputError, Rejected, Row, publish_file, read_transactions
from producer.readers import HEAD_BYTES, MAX_RECORD_BYTES, open_reader


def row(transaction_id: str, **extra) -> str:
    return json.dumps({"transaction_id": transaction_id, "user_id": "u1", "merchant": "Shell",
                       "category": "gas", "amount_usd": "40.00", "mcc": "5541",
                       "timestamp": "2026-06-01T10:00:00Z", **extra})


LONG = row("L-1", raw="x" * (HEAD_BYTES + 4))
SHORT = row("L-2")
LONG_FIRST = f"{LONG}\n{SHORT}\n".encode()


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def input_error(data: bytes, **options) -> str:
    with pytest.raises(InputError) as raised:
        open_reader(io.BytesIO(data), name="export.json", **options)
    return str(raised.value)


@pytest.mark.parametrize("format", [None, "jsonl"])
def test_long_first_line_read(format):
    assert len(LONG) > HEAD_BYTES

    outcomes = read(LONG_FIRST, format=format)

    assert [type(outcome) for outcome in outcomes] == [Row, Row]
    assert [outcome.transaction.transaction_id for outcome in outcomes] == ["L-1", "L-2"]


def test_long_first_line_with_bom_and_blanks():
    data = b"\xef\xbb\xbf\n\n  " + LONG_FIRST

    outcomes = read(data)

    assert [outcome.transaction.transaction_id for outcome in outcomes] == ["L-1", "L-2"]


def test_long_first_line_crlf():
    outcomes = read(LONG_FIRST.replace(b"\n", b"\r\n"))

    assert [outcome.transaction.transaction_id for outcome in outcomes] == ["L-1", "L-2"]


def test_long_only_line_read():
    outcomes = read(LONG.encode())

    assert [outcome.transaction.transaction_id for outcome in outcomes] == ["L-1"]


def test_long_bad_first_line_rejected_alone():
    """A long first line that is bad JSON is one rejected line, and the lines after it are read."""
    broken = LONG[:-1]

    outcomes = read(f"{broken}\n{SHORT}\n".encode())

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
    assert outcomes[0].line == 1
    assert "is not valid JSON" in outcomes[0].error.message


def test_first_line_over_record_limit_rejected_alone():
    """A first line that does not end within the record size limit after the head is rejected as too long.

    It is not taken for a document spread over several lines, and the lines after it are read.
    """
    huge = row("H-1", raw="x" * (HEAD_BYTES + 2 * MAX_RECORD_BYTES))

    for format in (None, "jsonl"):
        outcomes = read(f"{huge}\n{SHORT}\n".encode(), format=format)

        assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
        assert "longer than the limit" in outcomes[0].error.message


def test_long_first_line_plaid_keys_read_as_plaid():
    """A one-line Plaid response longer than the head is still read as Plaid."""
    document = {
        "added": [{"transaction_id": f"p{index}", "account_id": "acc", "amount": 7.5, "date": "2024-05-01",
                   "name": "Shop " + "x" * 40, "pending": False} for index in range(60)],
        "modified": [],
        "removed": [],
    }
    data = json.dumps(document).encode() + b"\n"
    assert len(data) > HEAD_BYTES

    outcomes = read(data)

    assert len(outcomes) == 60
    assert all(isinstance(outcome, Row) for outcome in outcomes)


def test_object_over_lines_long_first_line():
    """A document whose long first line is not a whole object, and whose next line is no object, still fails whole."""
    text = '{"settings": "' + "x" * (HEAD_BYTES + 10) + '",\n  "other": 1\n}\n'

    message = input_error(text.encode())

    assert "is one JSON object spread over several lines" in message


def test_one_line_array_longer_than_head():
    """A one-line JSON array longer than the head is still caught, with or without an explicit format."""
    rows = [json.loads(row(f"a{index}")) for index in range(60)]
    data = json.dumps(rows).encode()
    assert len(data) > HEAD_BYTES

    assert "is a JSON array" in input_error(data)
    assert "is a JSON array" in input_error(data, format="jsonl")


def test_long_first_line_from_pipe():
    """From a pipe, rows are read once the long first line and the next line arrive, without waiting for more."""
    read_end, write_end = os.pipe()
    # Both lines fit in the pipe buffer (64 KiB on Linux), so the write does not block.
    os.write(write_end, LONG_FIRST)

    def fail_if_waiting(ready: bool) -> None:
        if not ready:
            raise AssertionError("the reader waited for more input before reading the rows it had")

    try:
        with os.fdopen(read_end, "rb") as stream:
            reader = open_reader(stream, name="-", before_read=fail_if_waiting)
            outcomes = list(itertools.islice(reader, 2))
    finally:
        os.close(write_end)

    assert [outcome.transaction.transaction_id for outcome in outcomes] == ["L-1", "L-2"]


@one_server
def test_publish_file_long_first_line(sync_client, keys, tmp_path):
    path = tmp_path / "longline.jsonl"
    path.write_bytes(LONG_FIRST)

    summary = publish_file(sync_client, keys, path)

    assert summary.published == 2
    assert sync_client.xlen(keys.transactions) == 2


@one_server
@pytest.mark.parametrize("source", ["file", "stdin"])
def test_cli_publish_long_first_line(cli_env, keys, sync_client, tmp_path, source):
    path = tmp_path / "longline.jsonl"
    path.write_bytes(LONG_FIRST)
    if source == "file":
        completed = invoke_cli(["--prefix", keys.prefix, "publish", str(path)], cli_env)
    else:
        completed = run_cli(["--prefix", keys.prefix, "publish", "-"], cli_env, input=LONG_FIRST.decode())

    assert completed.returncode == 0, completed.stderr
    assert sync_client.xlen(keys.transactions) == 2

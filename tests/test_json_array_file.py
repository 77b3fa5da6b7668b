"""A JSON array of transactions fails as a whole, before publishing, with the jq fix."""

from __future__ import annotations

import io
import json

import pytest

from conftest import invoke_cli, one_server, run_cli
from producer import InputError, Rejected, Row, read_transactions
from producer.readers import open_reader

ROWS = [
    {"transaction_id": f"t{index}", "user_id": "u1", "merchant": "Shop", "category": "groceries",
     "amount_usd": "5.00", "mcc": "5411", "timestamp": "2024-05-01T12:00:00Z"}
    for index in range(3)
]
VALID_LINE = json.dumps(ROWS[0])


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def array_error(data: bytes, name: str = "array.json", **options) -> str:
    with pytest.raises(InputError) as raised:
        open_reader(io.BytesIO(data), name=name, **options)
    return str(raised.value)


@pytest.mark.parametrize(
    ("label", "text"),
    [
        ("indent 2", json.dumps(ROWS, indent=2)),
        ("indent 4 with BOM", "\ufeff" + json.dumps(ROWS, indent=4)),
        ("one line", json.dumps(ROWS)),
        ("one object per line with commas", "[\n" + ",\n".join(json.dumps(row) for row in ROWS) + "\n]\n"),
        ("leading blank lines", "\n\n  " + json.dumps(ROWS, indent=2)),
        ("empty array", "[]\n"),
    ],
)
def test_array_is_one_error(label, text):
    message = array_error(text.encode("utf-8"))

    assert "the file 'array.json' is a JSON array, not JSON lines, so nothing was published" in message
    assert "jq -c '.[]' array.json > array.jsonl" in message


def test_array_longer_than_head():
    """An array whose first bytes are not all of it is still caught from its opening lines."""
    rows = [{**ROWS[0], "transaction_id": f"t{index}"} for index in range(200)]
    data = json.dumps(rows, indent=2).encode()
    assert len(data) > 4096

    assert "is a JSON array" in array_error(data)


def test_array_without_suffix_or_name():
    data = json.dumps(ROWS, indent=2).encode()

    named = array_error(data, name="export")
    unnamed = array_error(data, name="-")

    assert "the file 'export' is a JSON array" in named
    assert "jq -c '.[]' export > export.jsonl" in named
    assert "the input is a JSON array" in unnamed
    assert "jq -c '.[]' FILE > FILE.jsonl" in unnamed


def test_array_named_jsonl_gets_new_target():
    """The suggested jq command writes to a file other than the one it reads."""
    message = array_error(json.dumps(ROWS, indent=2).encode(), name="data.jsonl")

    assert "jq -c '.[]' data.jsonl > data-lines.jsonl" in message


def test_array_name_with_space_quoted():
    message = array_error(json.dumps(ROWS, indent=2).encode(), name="my export.json")

    assert "jq -c '.[]' 'my export.json' > 'my export.jsonl'" in message


def test_array_with_format_jsonl():
    """An explicit JSON lines format does not skip the check."""
    message = array_error(json.dumps(ROWS, indent=2).encode(), format="jsonl")

    assert "is a JSON array" in message


def test_jsonl_first_line_array_read_by_line():
    """JSON lines whose first line is an array, followed by objects, reject that line only."""
    data = ("[1, 2]\n" + VALID_LINE + "\n").encode()

    outcomes = read(data)

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
    assert "JSON array, not an object" in outcomes[0].error.message


def test_jsonl_bad_first_line_read_by_line():
    """A bad first line that starts with '[' does not make the file an array when the next line is an object."""
    data = ("[broken\n" + VALID_LINE + "\n").encode()

    outcomes = read(data)

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
    assert outcomes[0].line == 1


def test_jsonl_objects_still_read():
    data = "\n".join(json.dumps(row) for row in ROWS).encode() + b"\n"

    outcomes = read(data)

    assert [type(outcome) for outcome in outcomes] == [Row, Row, Row]


def test_plaid_document_still_read():
    """A Plaid response is a JSON object with an array inside, so it is not taken for a JSON array."""
    document = {
        "added": [{"transaction_id": "p1", "account_id": "acc", "amount": 7.5, "date": "2024-05-01",
                   "name": "Shop", "pending": False}],
        "modified": [],
        "removed": [],
    }

    for text in (json.dumps(document, indent=2), json.dumps(document)):
        outcomes = read(text.encode(), format=None)
        assert [type(outcome) for outcome in outcomes] == [Row]
        assert outcomes[0].transaction.transaction_id == "p1"


@one_server
def test_cli_publish_array_stops(cli_env, keys, sync_client, tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps(ROWS, indent=2))

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(path), "--json"], cli_env)

    assert completed.returncode == 2
    error = json.loads(completed.stdout)["error"]
    assert f"the file {str(path)!r} is a JSON array" in error
    assert "jq -c '.[]'" in error
    assert sync_client.exists(keys.transactions) == 0
    assert not (tmp_path / "array.json.rejects.jsonl").exists()


@one_server
def test_cli_publish_array_stdin(cli_env, keys, sync_client):
    completed = run_cli(["--prefix", keys.prefix, "publish", "-"], cli_env, input=json.dumps(ROWS, indent=2))

    assert completed.returncode == 2
    assert "the input is a JSON array" in completed.stderr
    assert sync_client.exists(keys.transactions) == 0

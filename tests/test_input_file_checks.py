"""Input files: warnings and counts that cover published rows only, whole-file errors, and the Python API's arguments."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from conftest import invoke_cli, one_server
from producer import InputError, InvalidOptionError, Rejected, Row, load_layout, publish_file, read_transactions
from producer.layouts import timestamp_format_problem
from producer.publisher import Producer
from rewardpilot.fx import CurrencyConverter

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
ROUNDED = "amounts with more than two decimal places are rounded half up to whole cents"
CHASE = (
    "Transaction Date,Post Date,Description,Category,Type,Amount,Memo\n"
    "05/02/2024,05/03/2024,BLUE BOTTLE COFFEE,Food & Drink,Sale,-5.75,\n"
    "05/01/2024,05/02/2024,WHOLE FOODS,Groceries,Sale,-40.10,\n"
)


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


def input_error(data: bytes, name: str = "input.json") -> str:
    stream = io.BytesIO(data)
    stream.name = name
    with pytest.raises(InputError) as raised:
        list(read_transactions(stream))
    return str(raised.value)


def rounding_warnings(summary) -> list[str]:
    return [warning for warning in summary.warnings if warning.startswith(ROUNDED)]


def publish(client, keys, path, tmp_path, **options):
    producer = Producer(client, keys, max_backlog=None, dedup_window_seconds=options.pop("dedup_window_seconds", 86_400))
    return publish_file(client, keys, path, rejects_path=tmp_path / "rejects.jsonl", progress=False,
                        producer=producer, **options)


# The rounding warning names the first sub-cent row that was published.

@pytest.mark.parametrize("dedup_window_seconds", [86_400, 0])
def test_rounding_after_rejected_currency(sync_client, keys, tmp_path, dedup_window_seconds):
    path = tmp_path / "subcent.csv"
    path.write_text(f"{HEADER},currency\n"
                    "r1,u1,A,dining,1.005,5812,2024-05-01,EUR\n"
                    "r2,u1,B,dining,2.005,5812,2024-05-01,USD\n")

    summary = publish(sync_client, keys, path, tmp_path, dedup_window_seconds=dedup_window_seconds)

    assert (summary.published, summary.rejected) == (1, 1)
    assert rounding_warnings(summary) == [f"{ROUNDED} (first on line 3: 2.005 becomes 2.01)"]


def test_rounding_skips_earlier_publish(sync_client, keys, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text(f"{HEADER}\ns1,u1,A,dining,10.005,5812,2024-05-01\n")
    again = tmp_path / "again.csv"
    again.write_text(f"{HEADER}\ns1,u1,A,dining,10.005,5812,2024-05-01\ns2,u1,B,dining,7.129,5812,2024-05-02\n")
    publish(sync_client, keys, first, tmp_path)

    summary = publish(sync_client, keys, again, tmp_path)

    assert (summary.published, summary.duplicates) == (1, 1)
    assert rounding_warnings(summary) == [f"{ROUNDED} (first on line 3: 7.129 becomes 7.13)"]


def test_rounding_in_reversed_file(sync_client, keys, tmp_path):
    path = tmp_path / "newest_first.csv"
    path.write_text(f"{HEADER}\n"
                    "n3,u1,C,dining,3.005,5812,2024-05-03\n"
                    "n2,u1,B,dining,2.00,5812,2024-05-02\n"
                    "n1,u1,A,dining,1.005,5812,2024-05-01\n")

    summary = publish(sync_client, keys, path, tmp_path)

    assert summary.oldest_first
    assert rounding_warnings(summary) == [f"{ROUNDED} (first on line 4: 1.005 becomes 1.01)"]


def test_rounding_absent_when_only_duplicates(sync_client, keys, tmp_path):
    path = tmp_path / "subcent.csv"
    path.write_text(f"{HEADER}\nd1,u1,A,dining,10.005,5812,2024-05-01\n")
    publish(sync_client, keys, path, tmp_path)

    summary = publish(sync_client, keys, path, tmp_path)

    assert summary.duplicates == 1
    assert rounding_warnings(summary) == []


# Date counts cover published rows only.

def test_out_of_order_skips_duplicate(sync_client, keys, tmp_path):
    old = tmp_path / "y0.csv"
    old.write_text(f"{HEADER}\ny0,u1,Old,dining,1.00,5812,2024-05-01\n")
    later = tmp_path / "y1.csv"
    later.write_text(f"{HEADER}\n"
                     "y1,u1,New,dining,1.00,5812,2024-05-20\n"
                     "y0,u1,Old,dining,1.00,5812,2024-05-01\n"
                     "y2,u1,New2,dining,1.00,5812,2024-05-21\n")
    publish(sync_client, keys, old, tmp_path)

    summary = publish(sync_client, keys, later, tmp_path)

    assert (summary.published, summary.duplicates) == (2, 1)
    assert summary.out_of_order == 0
    assert summary.first_out_of_order_line is None
    assert not [warning for warning in summary.warnings if "dated more than a day before" in warning]


def test_out_of_order_counts_published_rows(sync_client, keys, tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(f"{HEADER}\n"
                    "o1,u1,A,dining,1.00,5812,2024-05-20\n"
                    "o2,u1,B,dining,1.00,5812,2024-05-01\n"
                    "o3,u1,C,dining,1.00,5812,2024-05-21\n")

    summary = publish(sync_client, keys, path, tmp_path, dedup_window_seconds=0)

    assert summary.out_of_order == 1
    assert summary.first_out_of_order_line == 3


@pytest.mark.parametrize(("stamp", "counter"), [("2999-01-01", "future_dated"), ("1960-01-01", "past_dated")])
def test_far_dates_skip_duplicates(sync_client, keys, tmp_path, stamp, counter):
    path = tmp_path / "far.csv"
    path.write_text(f"{HEADER}\nf1,u1,A,dining,1.00,5812,{stamp}\n")
    first = publish(sync_client, keys, path, tmp_path)

    again = publish(sync_client, keys, path, tmp_path)

    assert getattr(first, counter) == 1
    assert again.duplicates == 1
    assert getattr(again, counter) == 0


def test_far_dates_skip_rejected_currency(sync_client, keys, tmp_path):
    path = tmp_path / "far.csv"
    path.write_text(f"{HEADER},currency\nf1,u1,A,dining,1.00,5812,2999-01-01,EUR\n")

    summary = publish(sync_client, keys, path, tmp_path)

    assert summary.rejected == 1
    assert summary.future_dated == 0


# timestamp_formats entries are checked when the layout loads.

def layout_file(tmp_path, formats: str):
    path = tmp_path / "layout.yaml"
    path.write_text(
        "name: x\n"
        "header: [Date, Description, Amount]\n"
        "columns: {transaction_id: \"x-{#row_hash}-{#repeat}\", merchant: Description, amount_usd: Amount, "
        "timestamp: Date}\n"
        "constants: {user_id: me}\n"
        f"timestamp_formats: {formats}\n",
        encoding="utf-8",
    )
    return path


def layout_error(tmp_path, formats: str) -> str:
    with pytest.raises(InputError) as raised:
        load_layout(layout_file(tmp_path, formats))
    return str(raised.value)


def test_layout_bad_directive_rejected(tmp_path):
    message = layout_error(tmp_path, '["iso", "%Q"]')

    assert message.startswith(f"layout file {str(tmp_path / 'layout.yaml')!r} is invalid: timestamp_formats: ")
    assert "entry 2, '%Q', is not a date format strptime can read" in message
    assert "bad directive" in message
    assert 'such as "%d/%m/%Y"' in message


@pytest.mark.parametrize(("formats", "reason"), [
    ('["%d/%m/%Y %"]', "stray %"),
    ('["%Y-%Y"]', "it repeats a directive"),
    ('["%d/%m"]', "does not read a whole date: 2024-05-17 written with it is '17/05', which reads back as 1900-05-17"),
    ('["%Y-%m"]', "which reads back as 2024-05-01"),
    ('["ISO"]', "does not read a whole date"),
])
def test_layout_unusable_format_rejected(tmp_path, formats, reason):
    message = layout_error(tmp_path, formats)

    assert "timestamp_formats: entry 1" in message
    assert reason in message


def test_layout_empty_formats_rejected(tmp_path):
    assert "timestamp_formats: lists no formats" in layout_error(tmp_path, "[]")


@pytest.mark.parametrize("layout", ["iso", "%m/%d/%Y", "%d.%m.%Y %H:%M", "%b %d, %Y", "%Y%m%d", "%m/%d/%y %I:%M %p",
                                    "%Y-%m-%dT%H:%M:%S%z", "%j %Y"])
def test_usable_formats_accepted(layout):
    assert timestamp_format_problem(layout) is None


def test_layout_good_formats_load(tmp_path):
    layout = load_layout(layout_file(tmp_path, '["%d/%m/%Y", "iso"]'))

    assert layout.timestamp_formats == ("%d/%m/%Y", "iso")


@one_server
def test_cli_bad_format_exits_2(cli_env, tmp_path):
    layout = layout_file(tmp_path, '["%Q"]')
    data = tmp_path / "export.csv"
    data.write_text("01/09/2015,SUBWAY,8.19\n")

    result = invoke_cli(["publish", str(data), "--layout", str(layout), "--dedup-window", "0"], cli_env)

    assert result.returncode == 2
    assert "is invalid: timestamp_formats: entry 1, '%Q'" in result.stderr


# --user and the user argument.

@one_server
@pytest.mark.parametrize(("value", "problem"), [("", "is empty"), ("   ", "is blank"), ("u" * 129, "above the limit of 128")])
def test_cli_bad_user_exits_2(cli_env, tmp_path, value, problem):
    data = tmp_path / "chase.csv"
    data.write_text(CHASE)

    result = invoke_cli(["publish", str(data), "--user", value, "--json"], cli_env)

    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error.startswith("--user ")
    assert problem in error
    assert "leave out --user" in error
    assert not (tmp_path / "chase.csv.rejects.jsonl").exists()


@one_server
def test_run_empty_user_exits_before_job(cli_env, keys, sync_client, tmp_path):
    """`run --user ''` exits 2 before the job's keys or its consumers exist."""
    data = tmp_path / "chase.csv"
    data.write_text(CHASE)

    result = invoke_cli(["--prefix", keys.prefix, "run", str(data), "--user", "", "--job", "empty-user", "--json"],
                        cli_env)

    assert result.returncode == 2
    assert json.loads(result.stdout)["error"].startswith("--user ")
    assert sync_client.keys(f"{keys.prefix}job:empty-user:*") == []


@pytest.mark.parametrize(("value", "problem"), [("", "is empty"), (" ", "is blank"), (5, "is an int, not a string")])
def test_api_bad_user_raises(tmp_path, value, problem):
    path = tmp_path / "chase.csv"
    path.write_text(CHASE)

    with pytest.raises(InvalidOptionError) as raised:
        read_transactions(path, user=value)

    assert str(raised.value).startswith(f"user {value!r} {problem}")


def test_publish_file_bad_user_raises(sync_client, keys, tmp_path):
    path = tmp_path / "chase.csv"
    path.write_text(CHASE)

    with pytest.raises(InvalidOptionError, match="user '' is empty"):
        publish(sync_client, keys, path, tmp_path, user="")

    assert sync_client.xlen(keys.transactions) == 0


def test_api_user_applied():
    outcomes = read(CHASE.encode(), user="alice")

    assert [outcome.transaction.user_id for outcome in outcomes] == ["alice", "alice"]


# A JSON object spread over several lines fails as a whole.

PRETTY_OBJECT = json.dumps({"transactions_x": [{"transaction_id": "k1", "user_id": "u1", "merchant": "Ok",
                                                "category": "dining", "amount_usd": "12.50", "mcc": "5812",
                                                "timestamp": "2024-05-01T10:00:00Z"}]}, indent=2).encode()


def test_pretty_object_rejected_whole():
    message = input_error(PRETTY_OBJECT, "obj_pretty.json")

    assert message.startswith("the file 'obj_pretty.json' is one JSON object spread over several lines "
                              "(its keys are 'transactions_x'), not JSON lines, so nothing was published. "
                              "It is not a Plaid response either")
    assert "jq -c '.transactions_x[]' obj_pretty.json > transactions.jsonl, and publish that file" in message


def test_pretty_object_without_json_suffix():
    assert "is one JSON object spread over several lines" in input_error(PRETTY_OBJECT, "export.txt")


def test_large_pretty_object_rejected():
    document = json.dumps({"settings": {f"key{index}": "x" * 40 for index in range(200)}}, indent=2).encode()

    message = input_error(document, "config.json")

    assert "is one JSON object spread over several lines, not JSON lines" in message
    assert "jq -c '.KEY[]' config.json > transactions.jsonl, where KEY names the array of transactions" in message


def test_jsonl_bad_first_line_read():
    good = json.dumps({"transaction_id": "j2", "user_id": "u1", "merchant": "Ok", "category": "dining",
                       "amount_usd": "1.00", "mcc": "5812", "timestamp": "2024-05-01T10:00:00Z"})

    outcomes = read(b'{"transaction_id": "j1",\n' + good.encode() + b"\n")

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]


def test_one_line_object_still_jsonl():
    outcomes = read(b'{"transactions_x": []}\n')

    assert [type(outcome) for outcome in outcomes] == [Rejected]


# Input that is not UTF-8 text fails as a whole, with what it is.

UTF16_TEXT = f"{HEADER}\ne6b,u1,UTF16 Shop,dining,12.50,5812,2024-05-01\n"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16"])
def test_utf16_named(encoding):
    message = input_error(UTF16_TEXT.encode(encoding), "utf16.csv")

    assert message == "utf16.csv is UTF-16 text; save it as UTF-8"


def test_utf8_with_accents_not_utf16():
    outcomes = read(f"{HEADER}\nc1,u1,Café Übel,dining,1.00,5812,2024-05-01\n".encode())

    assert [type(outcome) for outcome in outcomes] == [Row]


def zip_bytes(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<x/>")
    return buffer.getvalue()


def test_xlsx_named_workbook():
    message = input_error(zip_bytes(["[Content_Types].xml", "xl/workbook.xml"]), "export.xlsx")

    assert message.startswith("export.xlsx is a spreadsheet workbook (such as .xlsx), not CSV; ")
    assert "save it as CSV (UTF-8)" in message


# Ids by kind: gzip writes the time into its header, and pytest-xdist needs the same test ids in every worker.
@pytest.mark.parametrize(("data", "expected"), [
    (zip_bytes(["export.csv"]), "is a ZIP archive, not a text file; unzip it"),
    (gzip.compress(b"a,b\n", mtime=0), "is compressed with gzip; decompress it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "is an Excel 97-2003 workbook (.xls), not CSV"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "is a PDF document, not transaction data"),
], ids=["zip", "gzip", "xls", "pdf"])
def test_binary_files_named(data, expected):
    assert expected in input_error(data, "download.csv")


# A space between a comma and a quote.

def test_space_before_quote_named():
    data = f'{HEADER}\ng1, u1, "Joe\'s, Diner", dining, 12.50, 5812, 2024-05-01\n'.encode()

    [outcome] = read(data)

    assert outcome.error.reason == (
        "the row has 8 fields but the header has 7. A space comes between a comma and the quote after it, "
        "so that quote does not start a quoted field, and the comma inside \"Joe's, Diner\" splits the field"
    )
    assert outcome.error.fix.startswith('remove the space between each comma and the quote after it, as in ,"Joe\'s, Diner"')


def test_extra_comma_keeps_quote_fix():
    data = f"{HEADER}\ng1,u1,Joe's, Diner,dining,12.50,5812,2024-05-01\n".encode()

    [outcome] = read(data)

    assert "quote any field that contains a comma" in outcome.error.fix


# Arguments of read_transactions and publish_file.

def test_read_text_stream():
    outcomes = list(read_transactions(io.StringIO(f"{HEADER}\nt1,u1,Café,dining,1.00,5812,2024-05-01\n")))

    assert [outcome.transaction.merchant for outcome in outcomes] == ["Café"]


def test_read_text_file_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("", encoding="utf-8")

    with open(path, encoding="utf-8") as handle, pytest.raises(InputError) as raised:
        list(read_transactions(handle))

    assert str(path) in str(raised.value)


def test_publish_text_stream(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = io.StringIO(f"{HEADER}\nt1,u1,A,dining,1.00,5812,2024-05-01\nt2,u1,B,dining,2.00,5812,2024-05-02\n")
    producer = Producer(sync_client, keys, max_backlog=None)

    summary = publish_file(sync_client, keys, text, progress=False, producer=producer)

    assert summary.published == 2
    assert sync_client.xlen(keys.transactions) == 2


def test_text_stream_date_order_checked(sync_client, keys, tmp_path):
    lines = "".join(
        json.dumps({"transaction_id": f"d{day}", "user_id": "u1", "merchant": "A", "category": "dining",
                    "amount_usd": "1.00", "mcc": "5812", "timestamp": f"{day}/03/2026"}) + "\n"
        for day in (2, 25)
    )
    producer = Producer(sync_client, keys, max_backlog=None)

    with pytest.raises(InputError, match="25/03/2026"):
        publish_file(sync_client, keys, io.StringIO(lines), rejects_path=tmp_path / "r.jsonl", progress=False,
                     producer=producer)

    assert sync_client.xlen(keys.transactions) == 0


def test_layout_preset_name_accepted():
    outcomes = read(CHASE.encode(), layout="chase")

    assert [outcome.transaction.merchant for outcome in outcomes] == ["BLUE BOTTLE COFFEE", "WHOLE FOODS"]


def test_layout_path_accepted(tmp_path):
    layout = layout_file(tmp_path, '["%m/%d/%Y"]')

    outcomes = read(b"01/09/2015,SUBWAY,8.19\n", layout=layout)

    assert [outcome.transaction.merchant for outcome in outcomes] == ["SUBWAY"]


def test_layout_unknown_name_raises():
    with pytest.raises(InputError, match="layout 'chsae' is not found.*Did you mean the preset 'chase'"):
        read_transactions(io.BytesIO(CHASE.encode()), layout="chsae")


@pytest.mark.parametrize(("argument", "value", "expected"), [
    ("layout", 5, "layout 5 is an int; give a Layout, the name of a preset such as 'chase'"),
    ("converter", {"EUR": "1.1"}, "converter {'EUR': '1.1'} is a dict; give a rewardpilot.fx.CurrencyConverter"),
])
def test_wrong_argument_types_raise(argument, value, expected):
    with pytest.raises(InvalidOptionError) as raised:
        read_transactions(io.BytesIO(CHASE.encode()), **{argument: value})

    assert str(raised.value).startswith(expected)


def test_bytes_source_raises():
    with pytest.raises(InvalidOptionError, match=r"source is 4 bytes of data.*io\.BytesIO\(data\)"):
        read_transactions(b"a,b\n")


def test_number_source_raises(sync_client, keys, tmp_path):
    with pytest.raises(InvalidOptionError, match="source 5 is an int; give the path of a file"):
        publish_file(sync_client, keys, 5, rejects_path=tmp_path / "r.jsonl", progress=False)


def test_converter_accepted():
    outcomes = read(f"{HEADER},currency\nc1,u1,A,dining,1.00,5812,2024-05-01,EUR\n".encode(),
                    converter=CurrencyConverter(unconverted="keep"))

    assert [type(outcome) for outcome in outcomes] == [Row]


def test_lone_surrogate_row_rejected_alone(sync_client, keys, tmp_path):
    """A JSON "\\ud800" escape rejects its row with the value shown escaped; the valid row is published."""
    good = {"transaction_id": "s2", "user_id": "u1", "merchant": "Cafe", "amount_usd": "12.00", "mcc": "5812",
            "timestamp": "2026-11-01T00:12:29Z"}
    path = tmp_path / "surrogate.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "transaction_id": "s1", "merchant": "Caf\ud800"})
                    + "\n")

    summary = publish(sync_client, keys, path, tmp_path)

    assert summary.published == 1
    assert summary.rejected == 1
    record = json.loads((tmp_path / "rejects.jsonl").read_text().splitlines()[0])
    assert "unpaired surrogate" in record["reason"]
    assert "Caf\\ud800" in record["value"]

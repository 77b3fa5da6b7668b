"""JSON lines with MM/DD/YYYY timestamps: day and month order checked as for CSV."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
import redis

from conftest import invoke_cli, one_server, run_cli
from producer import InputError, Rejected, Row, Skipped, publish_file
from producer.readers import JsonLinesReader, scan_date_order

ISO_FIX = "write the timestamps in ISO 8601, year first, such as 2026-03-25 or 2026-03-25T12:30:00Z"


def entry(index: int, timestamp: object, amount: object = None) -> str:
    """Return one JSON line: a purchase of a different amount per index, unless ``amount`` is given."""
    return json.dumps({
        "transaction_id": f"t{index}",
        "user_id": "u1",
        "merchant": f"SHOP {index}",
        "category": "groceries",
        "amount_usd": f"{index + 1}.25" if amount is None else amount,
        "timestamp": timestamp,
    })


def jsonl(dates: list[object]) -> bytes:
    return ("\n".join(entry(index, day) for index, day in enumerate(dates)) + "\n").encode()


def jsonl_file(path, dates: list[object]):
    path.write_bytes(jsonl(dates))
    return path


def read(data: bytes, name: str = "export.jsonl") -> tuple[list, JsonLinesReader]:
    reader = JsonLinesReader(io.BytesIO(data), name=name)
    return list(reader), reader


def stream_entries(client: redis.Redis, prefix: str) -> int:
    """Return the number of entries in every stream under ``prefix``."""
    names = client.scan_iter(match=f"{prefix}*", count=1000)
    return sum(client.xlen(name) for name in names if client.type(name) == "stream")


def publish(client, keys, source, tmp_path, **options):
    return publish_file(client, keys, source, progress=False, rejects_path=tmp_path / "rejects.jsonl", **options)


def swapped_warnings(warnings: list[str]) -> list[str]:
    return [warning for warning in warnings if "may have the day and month swapped" in warning]


class CountingReads(io.BytesIO):
    """An in-memory file that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_taken += len(chunk)
        return chunk


def test_jsonl_reads_us_dates_month_first():
    outcomes, _ = read(jsonl(["03/04/2026", "03/04/2026 18:30"]))

    assert [type(outcome) for outcome in outcomes] == [Row, Row]
    assert outcomes[0].transaction.timestamp == datetime(2026, 3, 4, 12, tzinfo=timezone.utc)
    assert outcomes[1].transaction.timestamp == datetime(2026, 3, 4, 18, 30, tzinfo=timezone.utc)


def test_day_first_jsonl_file_stops(sync_client, keys, tmp_path):
    # Every date but the last has a day of 12 or less, so only line 6 shows the order.
    path = jsonl_file(tmp_path / "export.jsonl",
                      ["03/04/2026", "01/02/2026", "05/05/2026", "12/11/2026", "02/03/2026", "25/03/2026"])

    with pytest.raises(InputError) as caught:
        publish(sync_client, keys, str(path), tmp_path)

    message = str(caught.value)
    assert str(path) in message
    assert "put the day first, but the JSON lines reader reads them month first (MM/DD/YYYY)" in message
    assert "line 6 has '25/03/2026', which has no month 25 when read month first" in message
    assert "Nothing was published" in message
    assert ISO_FIX in message
    assert "--layout" not in message  # a layout applies to CSV only
    assert stream_entries(sync_client, keys.prefix) == 0
    assert not (tmp_path / "rejects.jsonl").exists()


def test_day_first_jsonl_error_counts_rows(sync_client, keys, tmp_path):
    path = jsonl_file(tmp_path / "export.jsonl", ["14/03/2026", "03/04/2026", "30/01/2026 08:15", "28/02/2026"])

    with pytest.raises(InputError) as caught:
        publish(sync_client, keys, str(path), tmp_path)

    message = str(caught.value)
    assert "line 1 has '14/03/2026'" in message
    assert "and 2 more row(s) have a date that is real only day first" in message
    assert stream_entries(sync_client, keys.prefix) == 0


def test_month_first_jsonl_publishes(sync_client, keys, tmp_path):
    path = jsonl_file(tmp_path / "export.jsonl", ["03/04/2026", "03/25/2026", "04/30/2026"])

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 3
    assert summary.rejected == 0
    assert swapped_warnings(summary.warnings) == []


def test_low_days_jsonl_publishes_month_first(sync_client, keys, tmp_path):
    # Nothing shows the order, so the dates are read month first as before.
    path = jsonl_file(tmp_path / "export.jsonl", ["03/04/2026", "01/02/2026", "11/12/2026"])

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 3
    assert swapped_warnings(summary.warnings) == []
    first = json.loads(sync_client.xrange(keys.transactions, count=1)[0][1]["data"])
    assert first["timestamp"] == "2026-03-04T12:00:00Z"


def test_mixed_jsonl_publishes_and_warns(sync_client, keys, tmp_path):
    lines = [
        entry(0, "03/04/2026"),
        entry(1, "25/03/2026"),  # real only day first: rejected
        entry(2, "03/25/2026"),  # real only month first
        entry(3, "05/06/2026"),
        entry(4, "05/05/2026"),  # the same date in both orders
        entry(5, "04/05/2026", amount="-9.00"),  # a refund: skipped, so not counted
        entry(6, "06/07/2026"),
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 5
    assert summary.rejected == 1
    assert summary.skipped == 1
    assert stream_entries(sync_client, keys.prefix) == 5
    [warning] = swapped_warnings(summary.warnings)
    assert "line 2 has '25/03/2026', which is a real date only day first" in warning
    assert "line 3 has '03/25/2026', which is a real date only month first" in warning
    assert "3 purchase row(s) (lines 1, 4, 7)" in warning
    assert "If every date" not in warning


def test_day_first_row_fix_names_iso():
    # The first date is ISO 8601, so the file is not checked, and the day-first date is rejected on its own.
    outcomes, reader = read(jsonl(["2026-03-04T10:00:00Z", "25/03/2026"]))

    assert isinstance(outcomes[0], Row)
    rejected = outcomes[1]
    assert isinstance(rejected, Rejected)
    assert rejected.error.line == 2
    assert rejected.error.column == "timestamp"
    assert "month 25 is out of range" in rejected.error.reason
    assert "The format MM/DD/YYYY puts the month first" in rejected.error.fix
    assert ISO_FIX in rejected.error.fix
    assert "--layout" not in rejected.error.fix
    assert not reader.date_order.applies


def test_iso_jsonl_scan_stops_early():
    data = jsonl(["2026-03-04T10:00:00Z"] * 20_000)
    stream = CountingReads(data)

    scan_date_order(stream, name="export.jsonl")

    assert stream.bytes_taken < len(data) // 4
    assert stream.tell() == 0


def test_month_first_scan_stops_at_proof():
    data = jsonl(["03/04/2026", "03/25/2026"] + ["01/02/2026"] * 20_000)
    stream = CountingReads(data)

    scan_date_order(stream, name="export.jsonl")

    assert stream.bytes_taken < len(data) // 4
    assert stream.tell() == 0


def test_scan_passes_over_bad_lines():
    lines = [
        b"not json",
        b"[1, 2]",
        entry(1, 20260304).encode(),  # a number, not a string
        entry(2, None).encode(),
        b'{"transaction_id": "t3", "timestamp": "03/04/2026"',  # cut off
        b"",
        b'{"timestamp": "03/04/2026", "merchant": "\xff"}',  # not UTF-8
        entry(4, "25/03/2026").encode(),
    ]
    data = b"\n".join(lines) + b"\n"

    with pytest.raises(InputError, match="line 8 has '25/03/2026'"):
        scan_date_order(io.BytesIO(data), name="export.jsonl")


def test_bad_lines_give_no_proof():
    lines = ["not json", entry(1, 25032026), "[\"25/03/2026\"]", entry(2, "03/04/2026")]
    data = ("\n".join(lines) + "\n").encode()

    scan_date_order(io.BytesIO(data), name="export.jsonl")
    outcomes, reader = read(data)

    assert [type(outcome) for outcome in outcomes] == [Rejected, Rejected, Rejected, Row]
    assert reader.date_order.first_other_order is None
    assert swapped_warnings(reader.warnings) == []


def test_refund_dates_count_as_proof():
    # A refund is skipped, not published, but its date still shows the order, as in CSV.
    lines = [entry(0, "03/04/2026"), entry(1, "25/03/2026", amount="-5.00")]
    data = ("\n".join(lines) + "\n").encode()

    with pytest.raises(InputError, match="line 2 has '25/03/2026'"):
        scan_date_order(io.BytesIO(data), name="export.jsonl")

    outcomes, _ = read(data)
    assert [type(outcome) for outcome in outcomes] == [Row, Skipped]


def test_unscanned_input_warns():
    outcomes, reader = read(jsonl(["03/04/2026", "25/03/2026", "01/02/2026"]), name="-")

    assert [type(outcome) for outcome in outcomes] == [Row, Rejected, Row]
    [warning] = swapped_warnings(reader.warnings)
    assert "2 purchase row(s) (lines 1, 3)" in warning
    assert f"If every date puts the day first, {ISO_FIX}" in warning


@one_server
def test_stdin_jsonl_warns(cli_env, keys, sync_client, tmp_path):
    text = jsonl(["03/04/2026", "25/03/2026", "01/02/2026", "05/05/2026"]).decode()

    completed = run_cli(["--prefix", keys.prefix, "publish", "-", "--json"], cli_env, input=text)

    assert completed.returncode == 1, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["published"] == 3
    assert summary["rejected"] == 1
    [warning] = swapped_warnings(summary["warnings"])
    assert "line 2 has '25/03/2026', which is a real date only day first" in warning
    assert "2 purchase row(s) (lines 1, 3)" in warning
    assert f"If every date puts the day first, {ISO_FIX}" in warning
    assert stream_entries(sync_client, keys.prefix) == 3


@one_server
@pytest.mark.parametrize("command", ["publish", "run"])
def test_cli_stops_day_first_jsonl(cli_env, keys, sync_client, tmp_path, command):
    path = jsonl_file(tmp_path / "export.jsonl", ["03/04/2026", "01/02/2026", "25/03/2026"])

    completed = invoke_cli(["--prefix", keys.prefix, command, str(path), "--json"], cli_env)

    assert completed.returncode == 2, completed.stderr[-3000:]
    error = json.loads(completed.stdout.strip().splitlines()[-1])
    assert error["exit_code"] == 2
    assert "line 3 has '25/03/2026', which has no month 25" in error["error"]
    assert ISO_FIX in error["error"]
    assert stream_entries(sync_client, keys.prefix) == 0

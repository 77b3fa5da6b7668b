"""Dates in the reverse day and month order of their layout: stopped before publishing, or a warning."""

from __future__ import annotations

import io
import json
from datetime import timezone

import pytest
import redis

from conftest import invoke_cli, one_server, run_cli
from producer import InputError, load_layout, publish_file
from producer.bank_layouts import CHASE
from producer.layouts import DOCUMENTED, TABFORMER
from producer.readers import CsvReader, scan_date_order
from producer.values import US_DATE_FORMATS, DateReading, day_month_order, parse_timestamp

# The header of Chase's credit-card activity export. Purchases are negative.
CHASE_HEADER = "Transaction Date,Post Date,Description,Category,Type,Amount,Memo"
# The header of a US card export that the generic-card preset reads. Purchases are positive.
CARD_HEADER = "Transaction Date,Description,Amount,Category"

DAY_FIRST_LAYOUT = """\
name: daybank
columns:
  transaction_id: "daybank-{#line}-{#row_hash}"
  merchant: Description
  amount_usd: Amount
  timestamp: Transaction Date
  category: Category
constants: {user_id: me}
timestamp_formats: ["%d/%m/%Y"]
"""


def chase_file(path, dates: list[str], kinds: list[str] | None = None):
    """Write a Chase export with one purchase per date, or the row type in ``kinds`` when given."""
    lines = [CHASE_HEADER]
    for index, day in enumerate(dates):
        kind = kinds[index] if kinds else "Sale"
        amount = "25.00" if kind == "Payment" else f"-{index + 1}.50"
        lines.append(f"{day},{day},MERCHANT {index},Shopping,{kind},{amount},")
    path.write_text("\n".join(lines) + "\n")
    return path


def card_file(path, dates: list[str]):
    lines = [CARD_HEADER] + [f"{day},SHOP {index},{index + 1}.25,Groceries" for index, day in enumerate(dates)]
    path.write_text("\n".join(lines) + "\n")
    return path


def stream_entries(client: redis.Redis, prefix: str) -> int:
    """Return the number of entries in every stream under ``prefix``."""
    names = client.scan_iter(match=f"{prefix}*", count=1000)
    return sum(client.xlen(name) for name in names if client.type(name) == "stream")


def publish(client, keys, source, tmp_path, **options):
    return publish_file(client, keys, source, progress=False, rejects_path=tmp_path / "rejects.jsonl", **options)


def swapped_warnings(summary) -> list[str]:
    return [warning for warning in summary.warnings if "may have the day and month swapped" in warning]


class CountingReads(io.BytesIO):
    """An in-memory file that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_taken += len(chunk)
        return chunk


# Reading of one date against the month-first US formats.
@pytest.mark.parametrize(
    ("text", "reading"),
    [
        ("03/25/2026", DateReading.LAYOUT_ORDER_ONLY),
        ("25/03/2026", DateReading.OTHER_ORDER_ONLY),
        ("03/04/2026", DateReading.EITHER_ORDER),
        ("3/4/2026 12:30", DateReading.EITHER_ORDER),
        ("05/05/2026", None),  # the same date in both orders
        ("13/31/2026", None),  # a real date in neither order
        ("31/04/2026", None),  # April has 30 days, so not a real date day first either
        ("02/29/2024", DateReading.LAYOUT_ORDER_ONLY),
    ],
)
def test_date_reading_month_first(text, reading):
    order = day_month_order(US_DATE_FORMATS)

    fit = order.read(text)

    assert fit is not None
    assert fit.reading is reading


@pytest.mark.parametrize(
    "formats",
    [
        ("iso",),
        TABFORMER.timestamp_formats,  # year first, built from separate columns
        ("%d %b %Y", "%B %d, %Y"),  # month names
        ("%d/%m/%Y", "%m/%d/%Y"),  # both orders: strptime takes the first that fits
    ],
)
def test_day_month_order_not_applied(formats):
    assert day_month_order(formats) is None


def test_day_month_order_of_presets():
    chase = day_month_order(CHASE.timestamp_formats)
    documented = day_month_order(DOCUMENTED.timestamp_formats)
    day_first = day_month_order(("%d.%m.%Y", "iso"))

    assert chase.month_first
    assert documented.month_first
    assert documented.other_formats == ("iso",)
    assert not day_first.month_first
    assert day_first.read("2026-03-04") is None
    assert day_first.fits_other_format("2026-03-04")


def test_day_first_layout_rejects_month_first_date():
    with pytest.raises(ValueError) as caught:
        parse_timestamp("03/25/2026", formats=("%d/%m/%Y",), zone=timezone.utc)

    assert "month 25 is out of range" in caught.value.reason
    assert "The format DD/MM/YYYY puts the day first" in caught.value.fix
    assert '["%m/%d/%Y"]' in caught.value.fix


def test_day_first_chase_file_stops(sync_client, keys, tmp_path):
    # Every date but the last has a day of 12 or less, so only line 9 shows the order.
    dates = ["03/04/2026", "01/02/2026", "05/05/2026", "12/11/2026", "02/03/2026", "07/08/2026", "09/10/2026",
             "25/03/2026"]
    path = chase_file(tmp_path / "export.csv", dates)

    with pytest.raises(InputError) as caught:
        publish(sync_client, keys, str(path), tmp_path)

    message = str(caught.value)
    assert str(path) in message
    assert "put the day first" in message
    assert "the chase layout reads them month first (MM/DD/YYYY)" in message
    assert "line 9 has '25/03/2026', which has no month 25" in message
    assert 'timestamp_formats is ["%d/%m/%Y"]' in message
    assert "Nothing was published" in message
    assert stream_entries(sync_client, keys.prefix) == 0
    assert not (tmp_path / "rejects.jsonl").exists()


def test_day_first_error_counts_rows(sync_client, keys, tmp_path):
    path = chase_file(tmp_path / "export.csv", ["14/03/2026", "03/04/2026", "30/01/2026", "28/02/2026"])

    with pytest.raises(InputError) as caught:
        publish(sync_client, keys, str(path), tmp_path)

    message = str(caught.value)
    assert "line 2 has '14/03/2026'" in message
    assert "and 2 more row(s) have a date that is real only day first" in message
    assert stream_entries(sync_client, keys.prefix) == 0


def test_day_first_layout_month_first_stops(sync_client, keys, tmp_path):
    layout_path = tmp_path / "daybank.yaml"
    layout_path.write_text(DAY_FIRST_LAYOUT)
    path = card_file(tmp_path / "card.csv", ["07/06/2017", "07/01/2017", "07/25/2017", "08/02/2017"])

    with pytest.raises(InputError) as caught:
        publish(sync_client, keys, str(path), tmp_path, layout=load_layout(layout_path))

    message = str(caught.value)
    assert "put the month first, but the daybank layout reads them day first (DD/MM/YYYY)" in message
    assert "line 4 has '07/25/2017', which has no month 25 when read day first" in message
    assert 'timestamp_formats is ["%m/%d/%Y"]' in message
    assert stream_entries(sync_client, keys.prefix) == 0


def test_consistent_low_days_publishes(sync_client, keys, tmp_path):
    # Month first, every day 12 or less: nothing shows the order, so it is read month first as before.
    path = chase_file(tmp_path / "export.csv", ["03/04/2026", "01/02/2026", "11/12/2026"])

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 3
    assert summary.rejected == 0
    assert swapped_warnings(summary) == []
    first = json.loads(sync_client.xrange(keys.transactions, count=1)[0][1]["data"])
    assert first["timestamp"] == "2026-03-04T12:00:00Z"


def test_month_first_file_publishes(sync_client, keys, tmp_path):
    path = chase_file(tmp_path / "export.csv", ["03/04/2026", "03/25/2026", "04/30/2026"])

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 3
    assert swapped_warnings(summary) == []


def test_mixed_file_publishes_and_warns(sync_client, keys, tmp_path):
    dates = ["03/04/2026", "25/03/2026", "03/25/2026", "05/06/2026", "05/05/2026", "04/05/2026", "06/07/2026"]
    kinds = ["Sale", "Sale", "Sale", "Sale", "Sale", "Payment", "Sale"]
    path = chase_file(tmp_path / "export.csv", dates, kinds)

    summary = publish(sync_client, keys, str(path), tmp_path)

    # 25/03/2026 is rejected, the payment is skipped, and 05/05/2026 reads the same both ways.
    assert summary.published == 5
    assert summary.rejected == 1
    assert summary.skipped == 1
    assert stream_entries(sync_client, keys.prefix) == 5
    [warning] = swapped_warnings(summary)
    assert "line 3 has '25/03/2026', which is a real date only day first" in warning
    assert "line 4 has '03/25/2026', which is a real date only month first" in warning
    assert "3 purchase row(s) (lines 2, 5, 8)" in warning
    assert "read month first (MM/DD/YYYY)" in warning
    assert "If every date" not in warning


def test_mixed_warning_lists_five_lines(sync_client, keys, tmp_path):
    dates = ["25/03/2026", "03/25/2026"] + ["01/02/2026"] * 7
    path = chase_file(tmp_path / "export.csv", dates)

    summary = publish(sync_client, keys, str(path), tmp_path)

    [warning] = swapped_warnings(summary)
    assert "7 purchase row(s) (lines 4, 5, 6, 7, 8 and more)" in warning


def test_in_memory_file_is_scanned(sync_client, keys, tmp_path):
    data = chase_file(tmp_path / "export.csv", ["03/04/2026", "25/03/2026"]).read_bytes()

    with pytest.raises(InputError, match="line 3 has '25/03/2026'"):
        publish(sync_client, keys, io.BytesIO(data), tmp_path)

    assert stream_entries(sync_client, keys.prefix) == 0


def test_scan_stops_at_first_proof(tmp_path):
    dates = ["03/04/2026", "03/25/2026"] + ["01/02/2026"] * 20_000
    data = chase_file(tmp_path / "export.csv", dates).read_bytes()
    stream = CountingReads(data)

    scan_date_order(stream, name="export.csv")

    assert stream.bytes_taken < len(data) // 4
    assert stream.tell() == 0


def test_iso_file_not_scanned(tmp_path):
    header = ",".join(DOCUMENTED.expected_header)
    rows = [f"t{index},u1,Shop,groceries,12.50,5411,2026-03-04T10:00:00Z" for index in range(20_000)]
    data = ("\n".join([header, *rows]) + "\n").encode()
    stream = CountingReads(data)

    scan_date_order(stream, name="documented.csv")

    assert stream.bytes_taken < len(data) // 4
    assert stream.tell() == 0


def test_iso_rows_skip_check(tmp_path):
    header = ",".join(DOCUMENTED.expected_header)
    rows = ["t1,u1,Shop,groceries,12.50,5411,2026-03-04T10:00:00Z", "t2,u1,Shop,groceries,9.00,5411,25/03/2026"]
    reader = CsvReader(io.BytesIO(("\n".join([header, *rows]) + "\n").encode()), name="documented.csv")

    outcomes = list(reader)

    assert len(outcomes) == 2
    assert reader.date_order is not None
    assert not reader.date_order.applies
    assert "_convert" not in vars(reader)  # the per-row check was removed after the first row
    assert reader.date_order.first_other_order is None


def test_invalid_iso_first_date_settles_format(sync_client, keys, tmp_path):
    # 2026-02-30 is written in ISO 8601 though it is no real date, so the file is not checked
    # for day and month order, and 13/01/2026 is rejected on its own row.
    header = ",".join(DOCUMENTED.expected_header)
    path = tmp_path / "iso.csv"
    path.write_text("\n".join([header, "i1,u1,Shell,gas,10.00,5541,2026-02-30", "i2,u1,Shell,gas,11.00,5541,13/01/2026",
                               "i3,u1,Shell,gas,12.00,5541,2026-03-02"]) + "\n")

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 1
    assert summary.rejected == 2
    assert "February 2026 has 28 days" in summary.first_rejects[0]
    assert "month 13 is out of range" in summary.first_rejects[1]


def test_bad_rows_give_no_proof(sync_client, keys, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        CHASE_HEADER + "\n"
        "03/04/2026,03/04/2026,SHOP,Shopping,Sale,-1.00,\n"
        "25/03/2026,SHOP,Shopping,Sale,-1.00,\n"  # a field short: rejected, and its date is not read
        "not a date,x,SHOP,Shopping,Sale,-2.00,\n"
        ",,SHOP,Shopping,Sale,-3.00,\n"
    )

    summary = publish(sync_client, keys, str(path), tmp_path)

    assert summary.published == 1
    assert summary.rejected == 3
    assert swapped_warnings(summary) == []


@one_server
def test_stdin_warns(cli_env, keys, sync_client, tmp_path):
    text = chase_file(tmp_path / "export.csv", ["03/04/2026", "25/03/2026", "01/02/2026", "05/05/2026"]).read_text()

    completed = run_cli(["--prefix", keys.prefix, "publish", "-", "--json"], cli_env, input=text)

    assert completed.returncode == 1, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["published"] == 3
    assert summary["rejected"] == 1
    [warning] = [item for item in summary["warnings"] if "may have the day and month swapped" in item]
    assert "line 3 has '25/03/2026', which is a real date only day first" in warning
    assert "2 purchase row(s) (lines 2, 4)" in warning
    assert 'If every date puts the day first, pass --layout with a layout file whose timestamp_formats is ["%d/%m/%Y"]' in warning
    assert stream_entries(sync_client, keys.prefix) == 3


@one_server
@pytest.mark.parametrize("command", ["publish", "run"])
def test_cli_stops_day_first_file(cli_env, keys, sync_client, tmp_path, command):
    path = chase_file(tmp_path / "export.csv", ["03/04/2026", "01/02/2026", "25/03/2026"])

    completed = invoke_cli(["--prefix", keys.prefix, command, str(path), "--json"], cli_env)

    assert completed.returncode == 2, completed.stderr[-3000:]
    error = json.loads(completed.stdout.strip().splitlines()[-1])
    assert error["exit_code"] == 2
    assert "line 4 has '25/03/2026', which has no month 25" in error["error"]
    assert stream_entries(sync_client, keys.prefix) == 0

"""Producer: pipelined XADD, idempotent publishing and backpressure on a real server."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from producer import BacklogTimeout, Producer, backlog, exit_status, publish_file, wait_for_backlog
from rewardpilot import codec
from rewardpilot.models import Transaction


def transaction(number: int) -> Transaction:
    return Transaction(
        transaction_id=f"t{number}", user_id="u1", merchant=f"Shop {number}", category="groceries",
        amount_usd=Decimal("12.50"), mcc="5411", timestamp=datetime(2024, 5, 1, tzinfo=timezone.utc),
    )


def test_publish_many_ten_thousand(sync_client, keys):
    producer = Producer(sync_client, keys, max_backlog=None)

    summary = producer.publish_many(transaction(number) for number in range(10_000))

    assert summary.published == 10_000
    assert summary.chunks == 10
    assert sync_client.xlen(keys.transactions) == 10_000
    first = sync_client.xrange(keys.transactions, count=1)[0][1]
    assert codec.decode_transaction(first).transaction_id == "t0"


def test_duplicates_within_window_not_republished(sync_client, keys):
    producer = Producer(sync_client, keys, chunk_size=7, max_backlog=None)
    producer.publish_many(transaction(number) for number in range(20))

    summary = producer.publish_many(transaction(number) for number in range(15, 30))

    assert summary.published == 10
    assert summary.duplicates == 5
    assert summary.duplicate_ids == ["t15", "t16", "t17", "t18", "t19"]
    assert sync_client.xlen(keys.transactions) == 30
    assert producer.publish(transaction(3)) is None


def test_marker_names_its_entry(sync_client, keys):
    producer = Producer(sync_client, keys, dedup_window_seconds=60, max_backlog=None)

    entry_id = producer.publish(transaction(1))

    marked_id, token = sync_client.get(keys.published_marker("t1")).split(" ")
    assert marked_id == entry_id
    assert len(token) == 16
    assert 0 < sync_client.ttl(keys.published_marker("t1")) <= 60
    markers = list(sync_client.scan_iter(match=f"{keys.prefix}published:*", count=1000))
    assert len(markers) == sync_client.xlen(keys.transactions) == 1


def test_no_marker_without_entry(sync_client, keys):
    producer = Producer(sync_client, keys, max_backlog=None)
    sync_client.set(keys.transactions, "not a stream")  # every XADD now fails

    with pytest.raises(Exception, match="WRONGTYPE"):
        producer.publish_many([transaction(1), transaction(2)])

    assert not list(sync_client.scan_iter(match=f"{keys.prefix}published:*", count=1000))


def test_dedup_off_publishes_twice(sync_client, keys):
    producer = Producer(sync_client, keys, dedup_window_seconds=0, max_backlog=None)

    producer.publish(transaction(1))
    producer.publish(transaction(1))

    assert sync_client.xlen(keys.transactions) == 2


def test_backlog_counts_group_lag(sync_client, keys):
    producer = Producer(sync_client, keys, max_backlog=None)
    producer.publish_many(transaction(number) for number in range(10))
    assert backlog(sync_client, keys.transactions, keys.group()) == 10  # no group yet: XLEN

    sync_client.xgroup_create(keys.transactions, keys.group(), id="0")
    sync_client.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=4)

    assert backlog(sync_client, keys.transactions, keys.group()) == 6


def test_wait_for_backlog_times_out(sync_client, keys):
    Producer(sync_client, keys, max_backlog=None).publish_many(transaction(number) for number in range(5))
    messages = []

    with pytest.raises(BacklogTimeout, match="stayed above 2"):
        wait_for_backlog(sync_client, keys.transactions, keys.group(), 2,
                         poll_seconds=0.01, max_wait_seconds=0.1, on_wait=messages.append)

    assert len(messages) == 1
    assert "backlog of 5 entries" in messages[0]


def test_backpressure_waits_then_resumes(sync_client, keys, redis_url):
    import redis

    sync_client.xgroup_create(keys.transactions, keys.group(), id="0", mkstream=True)
    messages = []
    producer = Producer(sync_client, keys, chunk_size=10, max_backlog=25, poll_seconds=0.02,
                        max_wait_seconds=30, on_wait=messages.append)
    reading = threading.Event()

    def consume() -> None:
        reader = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            reading.wait(30)
            read = 0
            for _ in range(2000):  # bounded: stops by itself
                reply = reader.xreadgroup(keys.group(), "c1", {keys.transactions: ">"}, count=5, block=50)
                for _, entries in reply or []:
                    read += len(entries)
                if read >= 100:
                    return
        finally:
            reader.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        producer.publish_many(transaction(number) for number in range(30))
        assert messages == []
        reading.set()
        summary = producer.publish_many(transaction(number) for number in range(30, 100))
    finally:
        reading.set()
        consumer.join(60)

    assert summary.published == 70
    assert summary.waits >= 1
    assert "above 25; waiting" in messages[0]
    assert "rewardpilot consume" in messages[0]
    assert "--max-backlog (now 25)" in messages[0]
    assert sync_client.xlen(keys.transactions) == 100


def test_publish_file_records_every_row(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the rejects file goes to the current directory
    source = tmp_path / "in.csv"
    source.write_bytes(
        b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        b"t1,u1,Shop,,5.00,5411,2024-05-01T00:00:00Z\n"
        b"t2,u1,Shop,,-5.00,5411,2024-05-01T00:00:00Z\n"
        b"t3,u1,Shop,,abc,5411,2024-05-01T00:00:00Z\n"
        b"\n"
        b"t4,u1,Shop,,7.00,5411,2024-05-01T00:00:00Z\n"
    )
    producer = Producer(sync_client, keys, max_backlog=None)
    producer.publish(Transaction(transaction_id="t4", user_id="u1", merchant="Shop", amount_usd="7.00"))

    summary = publish_file(sync_client, keys, source, producer=producer, progress=False)

    assert (summary.rows, summary.published, summary.duplicates) == (4, 1, 1)
    assert (summary.skipped, summary.rejected, summary.empty_lines) == (1, 1, 1)
    assert exit_status(summary) == 1
    records = [json.loads(line) for line in (tmp_path / "in.csv.rejects.jsonl").read_text().splitlines()]
    assert [(record["outcome"], record["line"]) for record in records] == [
        ("skipped", 3), ("rejected", 4), ("duplicate", 6),
    ]
    assert records[1]["column"] == "amount_usd"
    assert records[1]["value"] == "abc"
    assert sync_client.xlen(keys.transactions) == 2


def test_publish_file_clean_input_exit_zero(sync_client, keys, tmp_path):
    stream = io.BytesIO(b'{"transaction_id": "j1", "user_id": "u", "merchant": "S", "amount_usd": 1, "timestamp": "2024-05-01"}\n')

    summary = publish_file(sync_client, keys, stream, rejects_path=tmp_path / "r.jsonl", progress=False,
                           producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 1
    assert exit_status(summary) == 0
    assert summary.rejects_path is None
    assert not (tmp_path / "r.jsonl").exists()


def test_future_dates_published_with_warning(sync_client, keys, tmp_path):
    data = (
        "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        "f1,u1,Shell,gas,40.00,5541,2026-11-02T11:00:00Z\n"
        "f2,u1,Shell,gas,41.00,5541,8999-12-31T23:59:59Z\n"
        "f3,u1,Shell,gas,42.00,5541,2099-01-01\n"
    )

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 3
    assert summary.future_dated == 2
    assert summary.first_future_line == 3
    assert ("2 row(s) are dated more than a day after now (first on line 3) and were published as they are; "
            "check the date column and its format") in summary.warnings
    assert exit_status(summary) == 0


def test_past_dates_no_future_warning(sync_client, keys, tmp_path):
    data = ("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
            "p1,u1,Shell,gas,40.00,5541,1999-11-02T11:00:00Z\n")

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.future_dated == 0
    assert not any("dated more than a day" in warning for warning in summary.warnings)

"""The Python API as a backend uses it: concurrent uploads, other currencies, and Redis errors in publish_many."""

from __future__ import annotations

import io
import threading
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import redis

from producer import Producer, PublishInterrupted, Rejected, Row, publish_file, read_transactions
from rewardpilot.fx import CurrencyConverter
from rewardpilot.models import Transaction
from rewardpilot.streams import StreamKeys

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp,currency\n"


def upload(tag: str, rows: int) -> bytes:
    """Return a CSV of ``rows`` rows where every second row has an invalid amount."""
    lines = [HEADER]
    for index in range(rows):
        amount = "12.50" if index % 2 == 0 else "twelve"
        lines.append(f"{tag}-{index},u1,Whole Foods,groceries,{amount},5411,2026-11-02T10:00:00Z,USD\n")
    return "".join(lines).encode()


def test_concurrent_uploads_keep_rejects(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summaries = {}

    def publish(tag: str) -> None:
        own_keys = StreamKeys(prefix=f"{keys.prefix}{tag}:")
        summaries[tag] = publish_file(sync_client, own_keys, io.BytesIO(upload(tag, 40)), progress=False)

    threads = [threading.Thread(target=publish, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert summaries["a"].rejects_path != summaries["b"].rejects_path
    for tag, summary in summaries.items():
        assert summary.published == 20
        assert summary.rejected == 20
        lines = (tmp_path / summary.rejects_path).read_text().splitlines()
        assert len(lines) == 20
        assert all(f'"{tag}-' in line for line in lines)


def test_named_file_keeps_default_rejects_path(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "upload.csv"
    source.write_bytes(upload("n", 4))

    summary = publish_file(sync_client, keys, source, progress=False)

    assert summary.rejects_path == "upload.csv.rejects.jsonl"


def test_read_transactions_rejects_unconverted_currency():
    data = (HEADER + "e1,u1,Shop,groceries,10.00,5411,2026-11-02T10:00:00Z,EUR\n"
            "d1,u1,Shop,groceries,11.00,5411,2026-11-02T10:00:00Z,USD\n").encode()

    outcomes = list(read_transactions(io.BytesIO(data)))
    kept = list(read_transactions(io.BytesIO(data), converter=CurrencyConverter(unconverted="keep")))

    assert isinstance(outcomes[0], Rejected)
    assert outcomes[0].error.column == "currency"
    assert outcomes[0].error.value == "EUR"
    assert "no rates file" in outcomes[0].error.reason
    assert outcomes[0].raw == "e1,u1,Shop,groceries,10.00,5411,2026-11-02T10:00:00Z,EUR"
    assert isinstance(outcomes[1], Row)
    assert [outcome.transaction.amount_usd for outcome in kept] == [Decimal("10.00"), Decimal("11.00")]
    assert [outcome.transaction.currency for outcome in kept] == ["EUR", "USD"]


def test_publish_many_redis_down_interrupted():
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    producer = Producer(client, StreamKeys(prefix="rptest:down:"))
    transaction = Transaction(transaction_id="t1", user_id="u1", merchant="Shell", amount_usd="10.00",
                              timestamp=datetime(2026, 11, 2, tzinfo=timezone.utc))

    with pytest.raises(PublishInterrupted) as raised:
        producer.publish_many([transaction])

    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    assert raised.value.summary.processed == 0
    assert raised.value.summary.published == 0

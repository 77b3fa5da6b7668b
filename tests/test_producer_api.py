"""The producer's Python API: option checks, item checks, errors that carry a summary, exports, key prefixes."""

from __future__ import annotations

import gc
import inspect
import math
import threading
import warnings
from decimal import Decimal

import pydantic
import pytest
import redis
import redis.asyncio

import producer
import producer.errors
from conftest import invoke_cli, one_server
from producer import (
    BacklogTimeout, InvalidOptionError, NotATransactionError, PartitionCountError, Producer, ProducerError,
    PublishInterrupted, PublishStopped, UnsupportedClientError,
)
from rewardpilot.models import Transaction
from rewardpilot.streams import StreamKeys, normalize_prefix


def purchase(number: int, **changes) -> Transaction:
    values = dict(transaction_id=f"api-{number}", user_id="u1", merchant="Shell", category="gas",
                  amount_usd=Decimal("3.00"), mcc="5541", timestamp="2026-11-02T10:00:00Z")
    values.update(changes)
    return Transaction(**values)


# maxlen

def test_maxlen_rejected_names_trim(sync_client, keys):
    with pytest.raises(InvalidOptionError) as raised:
        Producer(sync_client, keys, maxlen=100)

    assert isinstance(raised.value, ValueError)
    assert "maxlen=100" in str(raised.value)
    assert "rewardpilot trim" in str(raised.value)
    assert "rewardpilot.retention.trim" in str(raised.value)


def test_publish_never_trims_stream(sync_client, keys):
    producer_ = Producer(sync_client, keys, chunk_size=50, max_backlog=None)

    summary = producer_.publish_many(purchase(number) for number in range(500))

    assert summary.published == 500
    assert sync_client.xlen(keys.transactions) == 500


def test_publish_without_dedup_never_trims(sync_client, keys):
    producer_ = Producer(sync_client, keys, chunk_size=50, max_backlog=None, dedup_window_seconds=0)

    producer_.publish_many(purchase(number) for number in range(300))

    assert sync_client.xlen(keys.transactions) == 300


# Options

@pytest.mark.parametrize("value", [0.5, 1.5, -1, -0.5, True, False, math.nan, math.inf, "60", None, Decimal("2.5")])
def test_dedup_window_invalid(sync_client, keys, value):
    with pytest.raises(InvalidOptionError, match="dedup_window_seconds=") as raised:
        Producer(sync_client, keys, dedup_window_seconds=value)

    assert "0 to turn deduplication off" in str(raised.value)


@pytest.mark.parametrize(("value", "stored"), [
    (0, 0), (0.0, 0), (1, 1), (2.0, 2), (Decimal("60"), 60), (86_400, 86_400),
])
def test_dedup_window_whole_seconds(sync_client, keys, value, stored):
    producer_ = Producer(sync_client, keys, dedup_window_seconds=value)

    assert producer_.dedup_window_seconds == stored
    assert type(producer_.dedup_window_seconds) is int


@pytest.mark.parametrize("value", [-1, 1.5, True, math.nan, "10"])
def test_max_backlog_invalid(sync_client, keys, value):
    with pytest.raises(InvalidOptionError, match="max_backlog="):
        Producer(sync_client, keys, max_backlog=value)


@pytest.mark.parametrize("value", [None, 0, 1, 100_000])
def test_max_backlog_valid(sync_client, keys, value):
    assert Producer(sync_client, keys, max_backlog=value).max_backlog == value


@pytest.mark.parametrize(("option", "value"), [
    ("chunk_size", 0), ("chunk_size", 2.5), ("chunk_size", True),
    ("poll_seconds", 0), ("poll_seconds", -1), ("poll_seconds", math.inf),
    ("max_wait_seconds", -1), ("max_wait_seconds", math.nan),
])
def test_other_options_invalid(sync_client, keys, option, value):
    with pytest.raises(InvalidOptionError, match=f"{option}="):
        Producer(sync_client, keys, **{option: value})


def test_partition_count_checked_up_front(sync_client, keys):
    with pytest.raises(PartitionCountError):
        Producer(sync_client, keys, partitions=0)

    assert not sync_client.exists(f"{keys.prefix}partitions")


def test_max_backlog_zero_waits_for_group(sync_client, keys):
    """With 0, the first chunk goes out and the next waits until the group has read everything."""
    producer_ = Producer(sync_client, keys, chunk_size=5, max_backlog=0, poll_seconds=0.02, max_wait_seconds=0.2)

    with pytest.raises(BacklogTimeout) as raised:
        producer_.publish_many(purchase(number) for number in range(20))

    assert sync_client.xlen(keys.transactions) == 5
    assert raised.value.summary.published == 5
    assert raised.value.summary.processed == 5
    assert raised.value.summary.unconfirmed == 0


# Clients

def test_async_client_rejected_up_front(keys):
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/9")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UnsupportedClientError) as raised:
            Producer(client, keys)
        gc.collect()

    assert isinstance(raised.value, TypeError)
    assert "asyncio client" in str(raised.value)
    assert "connect(url)" in str(raised.value)
    assert not [warning for warning in caught if "never awaited" in str(warning.message)]


def test_url_in_place_of_client_rejected(keys):
    with pytest.raises(UnsupportedClientError, match="not a Redis client"):
        Producer("redis://127.0.0.1:6379/9", keys)


# Items that are not transactions

def test_publish_dict_rejected(sync_client, keys):
    with pytest.raises(NotATransactionError) as raised:
        Producer(sync_client, keys).publish({"transaction_id": "t1", "user_id": "u1", "merchant": "X",
                                             "amount_usd": "1.00"})

    assert isinstance(raised.value, TypeError)
    assert "dict" in str(raised.value)
    assert "Transaction.model_validate" in str(raised.value)
    assert not sync_client.exists(keys.transactions)


def test_publish_many_dict_item_keeps_count(sync_client, keys):
    items: list = [purchase(number) for number in range(1500)]
    items[1200] = {"transaction_id": "api-1200", "user_id": "u1", "merchant": "Shell", "amount_usd": "3.00"}

    with pytest.raises(NotATransactionError) as raised:
        Producer(sync_client, keys, max_backlog=None).publish_many(items)

    error = raised.value
    assert error.index == 1200
    assert "item 1200 is a dict" in str(error)
    assert error.summary.published == 1000
    assert error.summary.processed == 1000
    assert error.summary.unconfirmed == 0
    assert sync_client.xlen(keys.transactions) == 1000


def test_publish_many_resume_after_bad_item(sync_client, keys):
    """Publishing again from ``summary.processed`` with the item fixed publishes the rest once."""
    good = [purchase(number) for number in range(30)]
    items: list = list(good)
    items[17] = good[17].model_dump()
    producer_ = Producer(sync_client, keys, chunk_size=10, max_backlog=None)

    with pytest.raises(NotATransactionError) as raised:
        producer_.publish_many(items)
    resumed = producer_.publish_many(good[raised.value.summary.processed:])

    assert raised.value.summary.published == 10
    assert resumed.published == 20
    assert resumed.duplicates == 0
    assert sync_client.xlen(keys.transactions) == 30


@pytest.mark.parametrize("argument", [{"transaction_id": "t1"}, "t1", None, 5])
def test_publish_many_wrong_argument(sync_client, keys, argument):
    with pytest.raises(NotATransactionError, match="takes an iterable of Transaction") as raised:
        Producer(sync_client, keys).publish_many(argument)

    assert raised.value.index is None


def test_publish_many_one_transaction(sync_client, keys):
    with pytest.raises(NotATransactionError, match=r"publish\(transaction\)"):
        Producer(sync_client, keys).publish_many(purchase(1))

    assert not sync_client.exists(keys.transactions)


def test_publish_chunk_bad_item_sends_nothing(sync_client, keys):
    with pytest.raises(NotATransactionError, match="item 2 is a str") as raised:
        Producer(sync_client, keys).publish_chunk([purchase(1), purchase(2), "api-3"])

    assert raised.value.index == 2
    assert not sync_client.exists(keys.transactions)


def test_transaction_subclass_accepted(sync_client, keys):
    class TaggedTransaction(Transaction):
        pass

    entry_id = Producer(sync_client, keys).publish(TaggedTransaction(**purchase(1).model_dump()))

    assert entry_id is not None


# Errors that stop publish_many part-way

def test_generator_error_becomes_interrupted(sync_client, keys):
    def rows():
        for number in range(2000, 3500):
            # Built here, so the ValidationError comes out of the caller's generator.
            yield purchase(number, amount_usd=Decimal("-1") if number == 3200 else Decimal("3.00"))

    with pytest.raises(PublishInterrupted) as raised:
        Producer(sync_client, keys, max_backlog=None).publish_many(rows())

    error = raised.value
    assert isinstance(error.__cause__, pydantic.ValidationError)
    assert error.summary.published == 1000
    assert error.summary.unconfirmed == 0
    assert "ValidationError after 1000 items" in str(error)
    assert sync_client.xlen(keys.transactions) == 1000


def test_redis_error_part_way_interrupted(sync_client, keys):
    """A Redis error while a chunk is sent: the summary counts the chunks before it and flags that chunk."""
    def rows():
        for number in range(25):
            if number == 15:
                # The stream turns into a string, so the XADD of the second chunk fails.
                sync_client.delete(keys.transactions)
                sync_client.set(keys.transactions, "not a stream")
            yield purchase(number)

    producer_ = Producer(sync_client, keys, chunk_size=10, max_backlog=None, dedup_window_seconds=0)
    with pytest.raises(PublishInterrupted) as raised:
        producer_.publish_many(rows())

    error = raised.value
    assert isinstance(error.__cause__, redis.ResponseError)
    assert error.summary.published == 10
    assert error.summary.chunks == 1
    assert error.summary.unconfirmed == 10
    assert "some of the 10 items being sent may be on the stream" in str(error)


def test_publish_stopped_carries_summary(sync_client, keys):
    stop = threading.Event()
    producer_ = Producer(sync_client, keys, chunk_size=10, max_backlog=None, stop=stop)

    def rows():
        for number in range(100):
            if number == 35:
                stop.set()
            yield purchase(number)

    with pytest.raises(PublishStopped) as raised:
        producer_.publish_many(rows())

    assert raised.value.summary.published == 30
    assert raised.value.summary.chunks == 3
    assert raised.value.summary.unconfirmed == 0
    assert sync_client.xlen(keys.transactions) == 30


def test_summary_counts_duplicates_before_error(sync_client, keys):
    producer_ = Producer(sync_client, keys, chunk_size=5, max_backlog=None)
    producer_.publish_many(purchase(number) for number in range(5))
    items: list = [purchase(number) for number in range(10)] + [None]

    with pytest.raises(NotATransactionError) as raised:
        producer_.publish_many(items)

    assert raised.value.summary.duplicates == 5
    assert raised.value.summary.published == 5
    assert raised.value.summary.processed == 10
    assert raised.value.index == 10


def test_first_item_error_interrupted(sync_client, keys):
    def rows():
        raise ValueError("no rows today")
        yield  # a generator that raises on its first item

    with pytest.raises(PublishInterrupted, match="no rows today") as raised:
        Producer(sync_client, keys).publish_many(rows())

    assert isinstance(raised.value.__cause__, ValueError)
    assert raised.value.summary.processed == 0
    assert not sync_client.exists(f"{keys.prefix}partitions")


def test_empty_iterable_stores_nothing(sync_client, keys):
    summary = Producer(sync_client, keys).publish_many([])

    assert summary.processed == 0
    assert summary.chunks == 0
    assert not sync_client.exists(f"{keys.prefix}partitions")


def test_partition_mismatch_raised_as_is(sync_client, keys):
    sync_client.set(f"{keys.prefix}partitions", 4)

    with pytest.raises(PartitionCountError, match="does not match the 4 partitions"):
        Producer(sync_client, keys, partitions=2).publish_many([purchase(1)])

    assert not sync_client.exists(keys.transactions)


def test_keyboard_interrupt_not_wrapped(sync_client, keys):
    def rows():
        yield purchase(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Producer(sync_client, keys, max_backlog=None).publish_many(rows())


def test_summary_none_outside_publish_many():
    assert ProducerError("x").summary is None
    assert PublishStopped("x").summary is None


# Exports

def test_every_producer_error_exported():
    classes = [value for name, value in vars(producer.errors).items()
               if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == "producer.errors"]

    assert classes
    for error_class in classes:
        assert error_class.__name__ in producer.__all__, error_class.__name__
        assert getattr(producer, error_class.__name__) is error_class


def test_publish_stopped_same_class_everywhere():
    from producer.publisher import PublishStopped as from_publisher

    assert producer.PublishStopped is from_publisher
    assert issubclass(producer.PublishStopped, ProducerError)


def test_error_base_classes():
    assert issubclass(InvalidOptionError, ValueError)
    assert issubclass(NotATransactionError, TypeError)
    assert issubclass(UnsupportedClientError, TypeError)
    assert issubclass(BacklogTimeout, TimeoutError)
    for error_class in (InvalidOptionError, NotATransactionError, UnsupportedClientError, PublishInterrupted,
                        PublishStopped, BacklogTimeout):
        assert issubclass(error_class, ProducerError)


# Key prefixes

@pytest.mark.parametrize(("given", "stored"), [
    ("rp:", "rp:"), ("myapp", "myapp:"), ("rp:b", "rp:b:"), ("app1", "app1:"), ("caf\u00e9", "caf\u00e9:"),
    ("rp-", "rp-"), ("rp_", "rp_"), ("rp/", "rp/"), ("rp.", "rp."), ("", ""),
])
def test_prefix_normalized(given, stored):
    assert normalize_prefix(given) == stored
    assert StreamKeys(prefix=given).prefix == stored


def test_prefix_without_colon_key_names():
    keys = StreamKeys(prefix="h5trialnocolon")

    assert keys.transactions == "h5trialnocolon:transactions"
    assert keys.results() == "h5trialnocolon:results"
    assert keys.wallet("u1") == "h5trialnocolon:wallet:u1"
    assert StreamKeys(prefix="h5trialnocolon", job="j1").transactions == "h5trialnocolon:job:j1:transactions"


def test_prefix_forms_equal():
    assert StreamKeys(prefix="myapp") == StreamKeys(prefix="myapp:")
    assert hash(StreamKeys(prefix="myapp")) == hash(StreamKeys(prefix="myapp:"))


@pytest.mark.parametrize("prefix", [None, b"rp:", 5])
def test_prefix_not_text_rejected(prefix):
    with pytest.raises(TypeError, match="not a string"):
        StreamKeys(prefix=prefix)


@one_server
def test_cli_prefix_without_colon(cli_env, keys, tmp_path, sync_client):
    source = tmp_path / "one.csv"
    source.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
                      "c1,u1,Shell,gas,40.00,5541,2026-11-02T10:00:00Z\n")
    bare = keys.prefix.rstrip(":")  # the fixture's prefix without its colon

    completed = invoke_cli(["--prefix", bare, "publish", str(source)], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sync_client.xlen(keys.transactions) == 1
    assert not sync_client.exists(f"{bare}transactions")

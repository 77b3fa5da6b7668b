"""Purchase times before 1900 or from 9000 on, and dates given as ``datetime.date``, in the model, the fast paths and the readers."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pydantic
import pytest

from producer import Producer, Rejected, Row, publish_file, read_transactions
from producer.errors import InvalidValueError
from producer.values import parse_timestamp
from rewardpilot import codec
from rewardpilot.canonical import canonical_transaction, transaction_from_json
from rewardpilot.engine import RulesEngine
from rewardpilot.models import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Transaction

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"
UTC = timezone.utc


def purchase(timestamp, **changes) -> Transaction:
    values = dict(transaction_id="b1", user_id="u1", merchant="Shell", category="gas",
                  amount_usd=Decimal("100.00"), mcc="5541", timestamp=timestamp)
    values.update(changes)
    return Transaction(**values)


def canonical_values(timestamp) -> dict:
    return {"transaction_id": "b1", "user_id": "u1", "merchant": "Shell", "category": "gas",
            "amount_usd": Decimal("100.00"), "mcc": "5541", "timestamp": timestamp}


# The model.

@pytest.mark.parametrize("timestamp", [
    "0001-01-01T00:00:00Z", "0024-05-01", "1899-12-30", "1899-12-31T23:59:59Z", "1899-12-31T23:59:59.999999+00:00",
    "1900-01-01T00:00:00+00:01", datetime(1, 1, 1, tzinfo=UTC), datetime(1850, 6, 1), date(1899, 12, 31),
])
def test_model_rejects_before_1900(timestamp):
    with pytest.raises(pydantic.ValidationError) as raised:
        purchase(timestamp)

    message = raised.value.errors()[0]["msg"]
    assert "before 1900-01-01T00:00:00Z, earlier than any card purchase" in message
    assert "write a date from 1900-01-01 on" in message


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_model_overflow_is_validation_error(timestamp):
    with pytest.raises(pydantic.ValidationError) as raised:
        purchase(timestamp)

    assert "out of the supported date range" in raised.value.errors()[0]["msg"]


@pytest.mark.parametrize(("timestamp", "stored"), [
    ("1900-01-01T00:00:00Z", datetime(1900, 1, 1, tzinfo=UTC)),
    ("1900-01-01", datetime(1900, 1, 1, 12, tzinfo=UTC)),
    ("1900-01-01T00:00:00-05:00", datetime(1900, 1, 1, 5, tzinfo=UTC)),
    ("1950-06-01T10:00:00Z", datetime(1950, 6, 1, 10, tzinfo=UTC)),
])
def test_model_accepts_from_1900(timestamp, stored):
    assert purchase(timestamp).timestamp == stored


def test_earliest_timestamp_value():
    assert EARLIEST_TIMESTAMP == datetime(1900, 1, 1, tzinfo=UTC)


# A datetime.date means the same as the date written as text.

def test_date_object_is_noon_utc():
    assert purchase(date(2025, 10, 1)).timestamp == datetime(2025, 10, 1, 12, tzinfo=UTC)


def test_date_object_equals_date_text():
    assert purchase(date(2025, 10, 1)) == purchase("2025-10-01")


def test_datetime_at_midnight_kept():
    """A datetime is a time of day, even at 00:00, so only a plain date gets noon."""
    assert purchase(datetime(2025, 10, 1)).timestamp == datetime(2025, 10, 1, tzinfo=UTC)


def test_date_object_same_quarter_as_text():
    """$100 at Shell on 2025-10-01 is in the fourth quarter in New York, given as text or as a date."""
    engine = RulesEngine.default()

    from_text = engine.recommend(purchase("2025-10-01"), ["chase-freedom-flex"])
    from_date = engine.recommend(purchase(date(2025, 10, 1)), ["chase-freedom-flex"])

    assert from_date.rewards.cash_value_usd == from_text.rewards.cash_value_usd
    assert from_date.rewards.cash_value_usd == Decimal("1.00")


# The fast paths decline what the model rejects, and accept the bound itself.

def test_canonical_declines_before_1900():
    assert canonical_transaction(canonical_values(datetime(1, 1, 1, tzinfo=UTC))) is None
    assert canonical_transaction(canonical_values(EARLIEST_TIMESTAMP - timedelta(microseconds=1))) is None


def test_canonical_accepts_bound():
    transaction = canonical_transaction(canonical_values(EARLIEST_TIMESTAMP))

    assert transaction == Transaction.model_validate(canonical_values(EARLIEST_TIMESTAMP))


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "0999-01-01T00:00:00+00:00"])
def test_json_fast_decoder_declines_before_1900(stamp):
    document = json.dumps({**json.loads(purchase("2026-01-01T00:00:00Z").model_dump_json()), "timestamp": stamp})

    assert transaction_from_json(document) is None
    with pytest.raises(pydantic.ValidationError):
        codec.decode_transaction({codec.DATA: document})


@pytest.mark.parametrize("stamp", ["1900-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "8999-12-31T23:59:59.999999Z"])
def test_json_fast_decoder_accepts(stamp):
    document = json.dumps({**json.loads(purchase("2026-01-01T00:00:00Z").model_dump_json()), "timestamp": stamp})

    fast = transaction_from_json(document)

    assert fast is not None
    assert fast == Transaction.model_validate_json(document)


# The upper bound: from 9000-01-01 UTC on, the consumer's date arithmetic could pass the end of year 9999.

@pytest.mark.parametrize("timestamp", [
    "9999-12-31T23:59:59Z", "9999-12-31", "9000-01-01T00:00:00Z", "9000-01-01T00:00:00.000001+00:00",
    "8999-12-31T20:00:00-05:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), date(9999, 12, 31), 99991231,
])
def test_model_rejects_from_9000(timestamp):
    with pytest.raises(pydantic.ValidationError) as raised:
        purchase(timestamp)

    message = raised.value.errors()[0]["msg"]
    assert "is on or after 9000-01-01 00:00:00 UTC, too far ahead for any card purchase" in message
    assert "write a date before 9000-01-01" in message


def test_model_rejection_names_value():
    with pytest.raises(pydantic.ValidationError) as raised:
        purchase("9999-12-31T23:59:59Z")

    assert "timestamp 9999-12-31 23:59:59+00:00 is on or after" in raised.value.errors()[0]["msg"]


@pytest.mark.parametrize("timestamp", ["8999-12-31T23:59:59.999999Z", "8999-12-31T18:59:59-05:00", "8999-12-31"])
def test_model_accepts_before_9000(timestamp):
    assert purchase(timestamp).timestamp < LATEST_TIMESTAMP


def test_latest_timestamp_value():
    assert LATEST_TIMESTAMP == datetime(9000, 1, 1, tzinfo=UTC)


def test_engine_computes_last_accepted_time():
    """The last time the model accepts gets a recommendation, where 9999-12-31T23:59:59Z failed in the engine."""
    engine = RulesEngine.default()
    latest = purchase(LATEST_TIMESTAMP - timedelta(microseconds=1))

    recommendation = engine.recommend(latest, ["chase-freedom-flex", "amex-gold"])

    assert recommendation.transaction_id == "b1"


def test_canonical_declines_from_9000():
    assert canonical_transaction(canonical_values(LATEST_TIMESTAMP)) is None
    assert canonical_transaction(canonical_values(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))) is None


def test_canonical_accepts_before_upper_bound():
    stamp = LATEST_TIMESTAMP - timedelta(microseconds=1)

    transaction = canonical_transaction(canonical_values(stamp))

    assert transaction is not None
    assert transaction == Transaction.model_validate(canonical_values(stamp))


@pytest.mark.parametrize("stamp", ["9000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T00:00:00+00:00"])
def test_json_fast_decoder_declines_from_9000(stamp):
    document = json.dumps({**json.loads(purchase("2026-01-01T00:00:00Z").model_dump_json()), "timestamp": stamp})

    assert transaction_from_json(document) is None
    with pytest.raises(pydantic.ValidationError, match="on or after 9000-01-01"):
        codec.decode_transaction({codec.DATA: document})


def test_csv_reader_rejects_year_9999():
    rows = good_csv_rows(3) + ["late,u1,Shell,gas,10.00,5541,9999-12-31T23:59:59Z"] + good_csv_rows(4, start=3)
    data = "\n".join([HEADER, *rows]) + "\n"

    outcomes = list(read_transactions(io.BytesIO(data.encode())))

    rejected = [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
    assert len([outcome for outcome in outcomes if isinstance(outcome, Row)]) == 7
    assert len(rejected) == 1
    assert rejected[0].line == 5
    assert rejected[0].error.column == "timestamp"
    assert rejected[0].error.message == (
        "line 5, column 'timestamp': '9999-12-31T23:59:59Z' is on or after 9000-01-01 (UTC), "
        "too far ahead for any card purchase; check the date and its format, and write a date before 9000-01-01"
    )


def test_jsonl_reader_rejects_year_9999():
    documents = [{"transaction_id": f"j{number}", "user_id": "u1", "merchant": "Shell", "amount_usd": "10.00",
                  "timestamp": "2026-11-02T10:00:00Z"} for number in range(5)]
    documents.insert(2, {**documents[0], "transaction_id": "late", "timestamp": "9999-12-31T23:59:59Z"})
    data = "".join(json.dumps(document) + "\n" for document in documents)

    outcomes = list(read_transactions(io.BytesIO(data.encode())))

    assert [type(outcome) for outcome in outcomes] == [Row, Row, Rejected, Row, Row, Row]
    assert outcomes[2].line == 3
    assert "too far ahead for any card purchase" in outcomes[2].error.message


# parse_timestamp, which every text reader uses.

@pytest.mark.parametrize("text", ["0001-01-01T00:00:00Z", "0001-01-01", "1899-12-31", "12/31/1899", "0024-05-01"])
def test_parse_timestamp_rejects_before_1900(text):
    with pytest.raises(InvalidValueError) as raised:
        parse_timestamp(text, formats=("iso", "%m/%d/%Y"), zone=UTC)

    assert raised.value.reason == f"{text!r} is before 1900-01-01 (UTC), earlier than any card purchase"
    assert raised.value.fix == "check the date and its format, and write a date from 1900-01-01 on"


def test_parse_timestamp_overflow_message():
    with pytest.raises(InvalidValueError) as raised:
        parse_timestamp("0001-01-01T00:00:00+05:00", formats=("iso",), zone=UTC)

    assert raised.value.fix == "write a date from 1900-01-01 up to, not including, 9000-01-01"


def test_parse_timestamp_rejects_from_9000():
    with pytest.raises(InvalidValueError) as raised:
        parse_timestamp("9999-12-31T23:59:59Z", formats=("iso",), zone=UTC)

    assert raised.value.reason == "'9999-12-31T23:59:59Z' is on or after 9000-01-01 (UTC), too far ahead for any card purchase"
    assert "write a date before 9000-01-01" in raised.value.fix


def test_parse_timestamp_accepts_bound():
    parsed, had_zone = parse_timestamp("1900-01-01T00:00:00Z", formats=("iso",), zone=UTC)

    assert parsed == EARLIEST_TIMESTAMP
    assert had_zone is True


# Readers: the row before 1900 is rejected with its line, the rows around it pass.

def good_csv_rows(count: int, start: int = 0) -> list[str]:
    return [f"g{number},u1,Shell,gas,10.00,5541,2026-11-02T10:00:00Z" for number in range(start, start + count)]


def test_csv_reader_rejects_year_one():
    rows = good_csv_rows(7) + ["old,u1,Shell,gas,10.00,5541,0001-01-01T00:00:00Z"] + good_csv_rows(13, start=7)
    data = "\n".join([HEADER, *rows]) + "\n"

    outcomes = list(read_transactions(io.BytesIO(data.encode())))

    rejected = [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
    assert len([outcome for outcome in outcomes if isinstance(outcome, Row)]) == 20
    assert len(rejected) == 1
    assert rejected[0].line == 9
    assert rejected[0].error.column == "timestamp"
    assert rejected[0].error.value == "0001-01-01T00:00:00Z"
    assert "earlier than any card purchase" in rejected[0].error.message


def test_jsonl_reader_rejects_year_one():
    documents = [{"transaction_id": f"j{number}", "user_id": "u1", "merchant": "Shell", "amount_usd": "10.00",
                  "timestamp": "2026-11-02T10:00:00Z"} for number in range(20)]
    documents.insert(7, {**documents[0], "transaction_id": "old", "timestamp": "0001-01-01T00:00:00Z"})
    data = "".join(json.dumps(document) + "\n" for document in documents)

    outcomes = list(read_transactions(io.BytesIO(data.encode())))

    rejected = [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
    assert len([outcome for outcome in outcomes if isinstance(outcome, Row)]) == 20
    assert len(rejected) == 1
    assert rejected[0].line == 8
    assert rejected[0].error.column == "timestamp"
    assert "earlier than any card purchase" in rejected[0].error.message


def test_ofx_reader_rejects_before_1900():
    data = (
        b"OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
        b"<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>USD<CCACCTFROM><ACCTID>4111000011119876</CCACCTFROM>"
        b"<BANKTRANLIST>\n"
        b"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20240501120000[-5:EST]<TRNAMT>-12.34<FITID>A1<NAME>Shop</STMTTRN>\n"
        b"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>18991231<TRNAMT>-1.00<FITID>A2<NAME>Old</STMTTRN>\n"
        b"</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n"
    )

    outcomes = list(read_transactions(io.BytesIO(data)))

    assert [type(outcome) for outcome in outcomes] == [Row, Rejected]
    assert "earlier than any card purchase" in outcomes[1].error.message


def test_publish_file_csv_year_one(sync_client, keys, tmp_path):
    rows = good_csv_rows(7) + ["old,u1,Shell,gas,10.00,5541,0001-01-01T00:00:00Z"] + good_csv_rows(13, start=7)
    data = "\n".join([HEADER, *rows]) + "\n"

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 20
    assert summary.rejected == 1
    assert sync_client.xlen(keys.transactions) == 20
    assert len(summary.first_rejects) == 1
    assert summary.first_rejects[0].startswith("line 9, column 'timestamp'")
    assert "earlier than any card purchase" in summary.first_rejects[0]
    stamps = [orjson.loads(fields["data"])["timestamp"] for _, fields in sync_client.xrange(keys.transactions)]
    assert not any(stamp.startswith("0001") for stamp in stamps)


def test_publish_file_jsonl_year_one(sync_client, keys, tmp_path):
    documents = [{"transaction_id": f"j{number}", "user_id": "u1", "merchant": "Shell", "amount_usd": "10.00",
                  "timestamp": "2026-11-02T10:00:00Z"} for number in range(20)]
    documents.insert(7, {**documents[0], "transaction_id": "old", "timestamp": "0001-01-01T00:00:00Z"})
    data = "".join(json.dumps(document) + "\n" for document in documents)

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 20
    assert summary.rejected == 1
    assert sync_client.xlen(keys.transactions) == 20


def test_publish_file_1900s_warned_not_rejected(sync_client, keys, tmp_path):
    rows = ["p1,u1,Shell,gas,40.00,5541,2024-05-01", "p2,u1,Shell,gas,41.00,5541,1900-01-01",
            "p3,u1,Shell,gas,42.00,5541,1969-12-31T23:59:59Z", "p4,u1,Shell,gas,43.00,5541,1899-12-31"]
    data = "\n".join([HEADER, *rows]) + "\n"

    summary = publish_file(sync_client, keys, io.BytesIO(data.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 3
    assert summary.rejected == 1
    assert summary.past_dated == 2
    assert summary.first_past_line == 3


def test_ofx_time_overflow_is_value_error():
    from producer.ofx import parse_ofx_time

    with pytest.raises(ValueError, match="outside the dates Python can convert to UTC"):
        parse_ofx_time("00010101000000[+5:X]")

"""The fast paths of publishing and decoding give what the general paths give.

Each test compares a fast path with the general path it replaces. The
generated input includes the cases each fast path must decline. Among them
are surrounding whitespace, digits of other scripts and text at and over
the length limits. Others are amounts that round to zero or pass the limit,
times in other zones, lone carriage returns and quoted CSV fields.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import re
import string
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pydantic
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import Producer, publish_file
from producer.files import SWITCH_INTERVAL_SECONDS
from producer.layouts import DEFAULT_TIMESTAMP_FORMATS
from producer.lines import LineSplitter
from producer.publisher import _PUBLISH_ONCE_SHA
from producer.readers import CsvReader
from producer.values import parse_timestamp
from rewardpilot import codec
from rewardpilot.canonical import canonical_transaction, transaction_from_json
from rewardpilot.models import MAX_AMOUNT_USD, MAX_CATEGORY_LENGTH, MAX_ID_LENGTH, MAX_MERCHANT_LENGTH, Transaction
from rewardpilot.streams import StreamKeys
from tests.conftest import SmallReads, ValkeyProcess

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters at the edge of a string that pydantic strips, that only
# str.strip strips (U+001C to U+001F), and that neither strips.
EDGE_CHARACTERS = [" ", "\t", "\n", "\x0b", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u2028", "\u200b", "\x00"]

plain_text = st.text(alphabet=string.ascii_letters + string.digits + "-_.&' ", min_size=1, max_size=24).map(
    str.strip).filter(bool)
texts = st.one_of(
    plain_text,
    st.builds(lambda edge, text, front: edge + text if front else text + edge,
              st.sampled_from(EDGE_CHARACTERS), plain_text, st.booleans()),
    st.sampled_from(["", "caf\u00e9", "\u00e9", "\u0665\u0664", "a\ud800", "\udc80", "x" * MAX_ID_LENGTH,
                     "x" * (MAX_ID_LENGTH + 1), "x" * MAX_MERCHANT_LENGTH, "x" * (MAX_MERCHANT_LENGTH + 1)]),
    st.text(max_size=8),
    st.sampled_from([None, 5, 5.5, True, b"abc", ["a"]]),
)
amounts = st.one_of(
    st.decimals(min_value=Decimal("0.01"), max_value=MAX_AMOUNT_USD, places=2),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal(text) for text in [
        "53.05", "1E+3", "0.001", "0.004999", "0.005", "-1", "0", "-0", "NaN", "sNaN", "Infinity",
        "10000000.00", "10000000.01", "10000000.004", "9999999.995", "12.345", "1E-30"]]),
    st.sampled_from(["53.05", " 5 ", "1e3", "abc", "", 12.5, 3, True, None]),
)
mccs = st.one_of(
    st.from_regex(r"\A[0-9]{4}\Z"),
    st.sampled_from(["", " 5411", "5411 ", "742", "5411.0", "54111", "\u0665\u0664\u0661\u0661", "\uff15\uff14\uff11\uff11",
                     "abcd", None, 5411, 5411.0, True]),
)
zones = st.sampled_from([timezone.utc, timezone(timedelta(0)), timezone(timedelta(hours=-5)), ZoneInfo("UTC"),
                         ZoneInfo("America/New_York"), None])
timestamps = st.one_of(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)),
    st.builds(lambda moment, zone: moment.replace(tzinfo=zone),
              st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)), zones),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                 timezones=st.just(timezone.utc)).map(lambda moment: moment.replace(fold=1)),
    st.sampled_from(["2026-01-01T00:00:06Z", "2026-01-01", " 2026-01-01 ", "2026-01-01T00:00:06+02:00", "soon",
                     1_700_000_000, date(2026, 1, 1), None]),
)
optional_fields = st.fixed_dictionaries({}, optional={
    "category": texts,
    "mcc": mccs,
    "currency": st.sampled_from(["USD", "usd", "eur", "Eur", "US", "EURO", "\u00e9ur", "U5D", " usd", None, 1]),
    "merchant_country": st.sampled_from(["US", "us", "fr", "F", "FRA", "\u00e9s", "1a", None]),
    "card_used": texts,
    "original_amount": st.sampled_from([None, Decimal("5.50"), "5.50"]),
    "original_currency": st.sampled_from([None, "EUR"]),
    "usd_per_unit": st.sampled_from([None, Decimal("1.08")]),
    "rate_date": st.sampled_from([None, date(2026, 1, 1)]),
    "unknown": st.just("x"),
})


@st.composite
def field_values(draw) -> dict:
    """A dict as a reader hands to validation, with any field missing or odd."""
    values = draw(st.fixed_dictionaries({}, optional={
        "transaction_id": texts, "user_id": texts, "merchant": texts, "amount_usd": amounts, "timestamp": timestamps,
    }))
    values.update(draw(optional_fields))
    return values


@st.composite
def canonical_values(draw) -> dict:
    """A dict in the form the CSV reader produces for a documented-layout row."""
    values = {
        "transaction_id": draw(plain_text), "user_id": draw(plain_text), "merchant": draw(plain_text),
        "category": draw(st.one_of(st.just(""), plain_text)),
        "amount_usd": draw(st.decimals(min_value=Decimal("0.005"), max_value=MAX_AMOUNT_USD, places=3)),
        # The readers' times come from astimezone(timezone.utc), which sets fold 0.
        "timestamp": draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                                       timezones=st.just(timezone.utc))).replace(fold=0),
    }
    mcc = draw(st.one_of(st.none(), st.from_regex(r"\A[0-9]{4}\Z")))
    if mcc is not None:
        values["mcc"] = mcc
    return values


def validate_in_full(validate, data) -> Transaction | Exception:
    try:
        return validate(data)
    except Exception as error:  # noqa: BLE001 - any error of full validation means the fast path must decline
        return error


def assert_identical(fast: Transaction, full: Transaction | Exception) -> None:
    assert isinstance(full, Transaction), f"the fast path accepted what full validation rejects: {full!r}"
    assert fast == full
    assert fast.model_dump_json() == full.model_dump_json()
    assert fast.model_fields_set == full.model_fields_set
    assert list(fast.__dict__) == list(full.__dict__)
    assert hash(fast) == hash(full)
    assert fast.timestamp.tzinfo is full.timestamp.tzinfo
    assert type(fast.amount_usd) is Decimal
    assert str(fast.amount_usd) == str(full.amount_usd)


@SETTINGS
@given(field_values())
def test_reader_values_fast_path_matches_full(values):
    fast = canonical_transaction(values)

    if fast is not None:
        assert_identical(fast, validate_in_full(Transaction.model_validate, values))


@SETTINGS
@given(canonical_values())
def test_canonical_values_take_fast_path(values):
    full = validate_in_full(Transaction.model_validate, values)
    fast = canonical_transaction(values)

    if isinstance(full, Transaction):
        assert fast is not None
        assert_identical(fast, full)
    else:
        assert fast is None  # an amount below half a cent, which rounds to $0.00


def test_fast_path_declines_each_departure():
    base = {"transaction_id": "t1", "user_id": "u1", "merchant": "Shell", "category": "fuel",
            "amount_usd": Decimal("40.00"), "mcc": "5541", "timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    changes = [
        {"transaction_id": "t1\x1c"}, {"user_id": "\xa0u1"}, {"category": "x" * (MAX_CATEGORY_LENGTH + 1)},
        {"merchant": "Shell\ud800"}, {"amount_usd": Decimal("0.004")}, {"amount_usd": Decimal("10000000.01")},
        {"amount_usd": Decimal("NaN")}, {"amount_usd": 40}, {"mcc": "\uff15\uff15\uff14\uff11"}, {"mcc": 5541},
        {"timestamp": datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC"))},
        {"timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc, fold=1)},
        {"currency": "US"}, {"merchant_country": "\u00e9s"}, {"card_used": " c1"}, {"usd_per_unit": Decimal("1.1")},
    ]

    assert canonical_transaction(base) is not None
    for change in changes:
        assert canonical_transaction({**base, **change}) is None, change


def test_fast_path_upper_cases_codes():
    values = {"transaction_id": "t1", "user_id": "u1", "merchant": "Shell", "amount_usd": Decimal("40"),
              "timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc), "currency": "eur", "merchant_country": "fr"}

    fast = canonical_transaction(values)

    assert fast is not None
    assert (fast.currency, fast.merchant_country, str(fast.amount_usd)) == ("EUR", "FR", "40.00")
    assert_identical(fast, Transaction.model_validate(values))


# JSON documents: model_dump_json output with one field changed, a key dropped
# or added, or the text changed after encoding. The fields whose validators
# the fast path replaces get values of their own, so they change more often.
json_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6),
    st.sampled_from(["usd", "USD", "fr", "FR", "", " ", "x" * 129, "caf\u00e9", "\u0665"]),
)
special_values = {
    "amount_usd": [
        "53.05", "053.05", "53.5", "53", " 53.05", "53.05 ", "\u200353.05", "53.05\x1c", "1e3", "0.00", "0.01",
        "-1.00", "10000000.00", "10000000.01", "99999999.99", "\u0665\u0663.05", "53.05\n", 53.05,
    ],
    "mcc": ["5411", " 5411", "5411 ", "\u20035411", "5411\x1c", "541", "5411.0", "\u0665\u0664\u0661\u0661", "5411\n", 5411],
    "timestamp": [
        "2026-01-01T00:00:06Z", "2026-01-01T00:00:06.123456Z", "2026-01-01T00:00:06.123Z",
        "2026-01-01T00:00:06+00:00", "2026-01-01T00:00:06-05:00", "2026-01-01T00:00:06", "2026-01-01",
        " 2026-01-01T00:00:06Z", "2026-01-01T00:00:06Z ", "\t2026-01-01T00:00:06Z", "\u20032026-01-01T00:00:06Z",
        "2026-01-01T00:00:06Z\n", "2026-02-30T00:00:06Z", "2026-01-01T24:00:00Z", "2026-01-01T23:59:60Z",
        "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-01-01 00:00:06Z", 1_767_225_606,
    ],
}


@st.composite
def json_documents(draw) -> bytes:
    transaction = Transaction.model_validate(draw(canonical_values()))
    document = json.loads(transaction.model_dump_json())
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(special_values)))
        document[name] = draw(st.sampled_from(special_values[name]))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        action = draw(st.sampled_from(["change", "drop", "add"]))
        name = draw(st.sampled_from(sorted(document) or ["mcc"]))
        if action == "change":
            document[name] = draw(json_values)
        elif action == "drop":
            document.pop(name, None)
        else:
            document[draw(st.sampled_from(["extra", "Amount_usd", "original_amount", "rate_date"]))] = draw(json_values)
    if draw(st.booleans()):
        document = dict(reversed(list(document.items())))
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    edit = draw(st.sampled_from(["none", "none", "truncate", "duplicate key", "not an object", "padding"]))
    if edit == "truncate":
        text = text[:draw(st.integers(min_value=0, max_value=len(text)))]
    elif edit == "duplicate key":
        text = text.replace('"merchant":', '"merchant": "Other", "merchant":', 1)
    elif edit == "not an object":
        text = f"[{text}]"
    elif edit == "padding":
        text = f" \n{text}\t "
    return text.encode()


@SETTINGS
@given(json_documents())
def test_json_fast_path_matches_full(data):
    full = validate_in_full(Transaction.model_validate_json, data)
    fast = transaction_from_json(data)
    decoded = validate_in_full(codec.decode_transaction, {b"data": data})

    if fast is not None:
        assert_identical(fast, full)
    if b'"timestamp"' not in data and isinstance(full, Transaction):
        # Without a timestamp, full validation stamps the current time, so two
        # validations differ in it. The fast path declines such a document.
        assert fast is None
        assert decoded.model_copy(update={"timestamp": full.timestamp}) == full
    elif isinstance(full, Transaction):
        assert_identical(decoded, full)
    else:
        assert type(decoded) is type(full)
        assert str(decoded) == str(full)


@pytest.mark.parametrize(("name", "value"), [
    (name, value) for name, values in sorted(special_values.items()) for value in values
])
def test_json_fast_path_special_values(name, value):
    document = json.loads(Transaction(transaction_id="t1", user_id="u1", merchant="Shop", amount_usd="53.05",
                                      mcc="5411", timestamp="2026-01-01T00:00:06Z").model_dump_json())
    document[name] = value
    data = json.dumps(document).encode()

    fast = transaction_from_json(data)

    if fast is not None:
        assert_identical(fast, validate_in_full(Transaction.model_validate_json, data))


@SETTINGS
@given(canonical_values(), st.sampled_from(["str", "bytes"]))
def test_encoded_entries_decode_on_fast_path(values, kind):
    full = validate_in_full(Transaction.model_validate, values)
    if not isinstance(full, Transaction):
        return
    data = codec.encode_transaction(full)[codec.DATA]
    if kind == "bytes":
        data = data.encode()

    fast = transaction_from_json(data)

    assert fast is not None
    assert fast == full
    assert_identical(fast, Transaction.model_validate_json(data))


# Transactions as validation and currency conversion leave them, for the encoder.
@st.composite
def transactions(draw) -> Transaction:
    values = draw(canonical_values())
    values["merchant"] = draw(st.one_of(plain_text, st.text(min_size=1, max_size=12).map(str.strip).filter(bool)))
    values["currency"] = draw(st.sampled_from(["USD", "EUR"]))
    values["merchant_country"] = draw(st.sampled_from([None, "US", "FR"]))
    values["card_used"] = draw(st.one_of(st.none(), plain_text))
    values["timestamp"] = values["timestamp"].replace(microsecond=draw(st.sampled_from([0, 5, 500000, 999999])))
    if draw(st.booleans()):
        values["original_amount"] = draw(st.decimals(allow_nan=False, allow_infinity=False, places=2))
        values["original_currency"] = "EUR"
        values["usd_per_unit"] = draw(st.sampled_from([Decimal("1.0829"), Decimal("1E+2"), Decimal("0.0000001")]))
        values["rate_date"] = draw(st.one_of(st.none(), st.dates()))
    transaction = validate_in_full(Transaction.model_validate, values)
    if not isinstance(transaction, Transaction):
        transaction = Transaction.model_validate({**values, "amount_usd": Decimal("1.00")})
    return transaction


@pytest.mark.slow
@SETTINGS
@given(st.lists(transactions(), min_size=1, max_size=4))
def test_transaction_json_matches_model_dump_json(chunk):
    expected = [transaction.model_dump_json().encode() for transaction in chunk]

    assert codec.transactions_json(chunk) == expected
    assert [codec.transaction_json(transaction) for transaction in chunk] == expected
    assert [codec.encode_transaction(transaction)[codec.DATA] for transaction in chunk] == [
        data.decode() for data in expected
    ]


class Text(str):
    """A subclass of str, which orjson passes back to the encoder under OPT_PASSTHROUGH_SUBCLASS."""


ODD_VALUES = [1, 2.5, float("nan"), True, None, [1], {"k": 1}, {1: 2}, Text("x"), Decimal("1E+2"), Decimal("sNaN"),
              date(2026, 1, 2), datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))),
              datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")), 2**70, b"x", "\ud800"]


# pydantic warns when it serializes a value of another type than the field's.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(Transaction.model_fields))
def test_transaction_json_of_unvalidated_models(name):
    base = Transaction(transaction_id="t1", user_id="u1", merchant="Shell", amount_usd="40", mcc="5541",
                       timestamp="2026-01-01T00:00:06Z")
    for value in ODD_VALUES:
        transaction = Transaction.model_construct(**{**base.__dict__, name: value})

        expected = validate_in_full(lambda model: model.model_dump_json(warnings=False).encode(), transaction)
        got = validate_in_full(codec.transaction_json, transaction)

        if isinstance(expected, Exception):
            assert type(got) is type(expected), (name, value)
        else:
            assert got == expected, (name, value)


# Timestamps: the fast path for ISO text with a time of day.
def reference_timestamp(text: str, zone) -> tuple[datetime, bool]:
    """The documented result for ISO 8601 text with a time of day."""
    parsed = datetime.fromisoformat(text.strip())
    had_zone = parsed.tzinfo is not None
    if not had_zone:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(timezone.utc), had_zone


iso_texts = st.builds(
    lambda moment, zone, separator, zulu: (
        moment.replace(tzinfo=zone).isoformat(sep=separator).replace("+00:00", "Z" if zulu else "+00:00")
    ),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None]),
    st.sampled_from(["T", " "]),
    st.booleans(),
)


@SETTINGS
@given(iso_texts, st.sampled_from([timezone.utc, ZoneInfo("America/New_York")]))
def test_iso_timestamps_match_reference(text, zone):
    parsed, had_zone = parse_timestamp(text, formats=DEFAULT_TIMESTAMP_FORMATS, zone=zone)

    expected, expected_zone = reference_timestamp(text, zone)
    assert (parsed, had_zone) == (expected, expected_zone)
    assert parsed.tzinfo is timezone.utc
    assert parsed.isoformat() == expected.isoformat()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-01T00:00:06Z", datetime(2026, 1, 1, 0, 0, 6, tzinfo=timezone.utc)),
    ("2026-01-01T00:00:06+00:00", datetime(2026, 1, 1, 0, 0, 6, tzinfo=timezone.utc)),
    ("2026-01-01T01:00:06+01:00", datetime(2026, 1, 1, 0, 0, 6, tzinfo=timezone.utc)),
    ("2026-01-01T00:00:06", datetime(2026, 1, 1, 5, 0, 6, tzinfo=timezone.utc)),
    ("2026-01-01", datetime(2026, 1, 1, 17, tzinfo=timezone.utc)),
    # RFC 3339 lets "T" and "Z" be lower case.
    ("2026-01-01t00:00:06z", datetime(2026, 1, 1, 0, 0, 6, tzinfo=timezone.utc)),
    ("2026-01-01T00:00:06z", datetime(2026, 1, 1, 0, 0, 6, tzinfo=timezone.utc)),
    ("2026-01-01t00:00:06+00:00", datetime(2026, 1, 1, 0, 0, 6, tzinfo=timezone.utc)),
])
def test_timestamps_with_and_without_zone(text, expected):
    parsed, _ = parse_timestamp(text, formats=DEFAULT_TIMESTAMP_FORMATS, zone=ZoneInfo("America/New_York"))

    assert parsed == expected
    assert parsed.tzinfo is timezone.utc


def test_timestamp_fast_path_keeps_errors():
    for text in ["2026-02-30T00:00:06Z", "2026-01-01T24:00:00Z"]:
        with pytest.raises(ValueError, match="is not a real"):
            parse_timestamp(text, formats=DEFAULT_TIMESTAMP_FORMATS, zone=timezone.utc)
    with pytest.raises(ValueError, match="is not a date in an accepted format"):
        parse_timestamp("Tuesday", formats=DEFAULT_TIMESTAMP_FORMATS, zone=timezone.utc)


# Lines and CSV records.
def reference_lines(data: bytes) -> list[tuple[int, bytes, bytes]]:
    data = data.removeprefix(b"\xef\xbb\xbf")  # LineSplitter drops a UTF-8 byte-order mark
    lines = []
    start = 0
    for number, match in enumerate(re.finditer(rb"\r\n|\r|\n", data), start=1):
        lines.append((number, data[start:match.start()], match.group()))
        start = match.end()
    if start < len(data):
        lines.append((len(lines) + 1, data[start:], b""))
    return lines


line_contents = st.binary(max_size=12).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))


@SETTINGS
@given(st.lists(st.tuples(line_contents, st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=12),
       st.sampled_from(["crlf", "lf", "mixed"]), st.integers(min_value=1, max_value=9), st.booleans())
def test_line_ends_match_reference(lines, style, read_size, final_end):
    if style != "mixed":
        lines = [(content, b"\r\n" if style == "crlf" else b"\n") for content, _ in lines]
    data = b"".join(content + ending for content, ending in lines)
    if lines and not final_end:
        data = data[:-len(lines[-1][1])]

    split = [(line.number, line.content, line.ending) for line in LineSplitter(SmallReads(data, read_size))]

    assert split == reference_lines(data)


csv_fields = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + " .-", max_size=8),
    st.sampled_from(["", ",", '"', 'say "hi"', "two\nlines", "cr\rinside", "caf\u00e9", " padded "]),
)


@SETTINGS
@given(st.lists(st.lists(csv_fields, min_size=1, max_size=5), max_size=8), st.sampled_from(["\r\n", "\n", "\r"]),
       st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
def test_csv_records_match_csv_reader(rows, line_end, quoting):
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=line_end, quoting=quoting).writerows(rows)
    text = buffer.getvalue()

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    expected = []
    start = 1
    for fields in reader:
        expected.append((start, fields))
        start = reader.line_num + 1

    records = list(CsvReader(io.BytesIO(text.encode()))._records())

    assert [error for *_, error in records] == [None] * len(records)
    assert [(line, fields) for line, fields, _, _ in records] == expected


def test_csv_split_keeps_limits():
    long_field = "x" * 100
    data = f"a,b\n{long_field},1\nshort,2\n".encode()

    records = list(CsvReader(io.BytesIO(data), max_record_bytes=64)._records())

    assert records[0][1] == ["a", "b"]
    assert records[1][3] is not None and "longer than the limit of 64 bytes" in records[1][3].reason
    assert (records[-1][0], records[-1][1]) == (3, ["short", "2"])


# Publishing: one argument of entry data and one of lengths in place of one per entry.
def shop(number: int, merchant: str = "Shop") -> Transaction:
    return Transaction(
        transaction_id=f"t{number}", user_id="u1", merchant=f"{merchant} {number}", category="groceries",
        amount_usd=Decimal("12.50"), mcc="5411", timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )


def test_publish_chunk_multibyte_entries(sync_client, keys):
    chunk = [shop(number, "Caf\u00e9 \u2615 \U0001f600" + "\u00e9" * number) for number in range(40)]
    producer = Producer(sync_client, keys, chunk_size=15, max_backlog=None)

    summary = producer.publish_many(chunk)

    entries = sync_client.xrange(keys.transactions)
    assert summary.published == 40
    assert [codec.decode_transaction(fields) for _, fields in entries] == chunk


def test_publish_chunk_skips_duplicates_in_place(sync_client, keys):
    producer = Producer(sync_client, keys, max_backlog=None)
    producer.publish_many(shop(number) for number in range(10))
    chunk = [shop(3), shop(100, "New"), shop(5), shop(101, "Newer one"), shop(9)]

    ids = producer.publish_chunk(chunk)

    assert [entry_id is None for entry_id in ids] == [True, False, True, False, True]
    entries = sync_client.xrange(keys.transactions)
    assert [codec.decode_transaction(fields) for _, fields in entries[-2:]] == [chunk[1], chunk[3]]
    assert [entry_id for entry_id, _ in entries[-2:]] == [ids[1], ids[3]]


def test_publish_loads_script_on_new_server(tmp_path):
    server = ValkeyProcess(tmp_path / "valkey")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        fresh_keys = StreamKeys(prefix="fresh:")
        producer = Producer(client, fresh_keys, max_backlog=None)
        assert client.script_exists(_PUBLISH_ONCE_SHA) == [False]

        entry_id = producer.publish(shop(1))

        assert entry_id is not None
        assert client.xlen(fresh_keys.transactions) == 1
        assert client.script_exists(_PUBLISH_ONCE_SHA) == [True]
    finally:
        client.close()
        server.stop()


def test_publish_file_restores_gc_threshold(sync_client, keys, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
                    "t1,u1,Shop,groceries,5.00,5411,2026-01-01T00:00:06Z\n")
    before = gc.get_threshold()

    summary = publish_file(sync_client, keys, str(path), progress=False, rejects_path=tmp_path / "rejects.jsonl",
                           producer=Producer(sync_client, keys, max_backlog=None))

    assert summary.published == 1
    assert gc.get_threshold() == before


class _IntervalRecorder(Producer):
    """A producer that records the thread switch interval each chunk is published under."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.intervals: list[float] = []

    def publish_chunk(self, chunk):
        self.intervals.append(sys.getswitchinterval())
        return super().publish_chunk(chunk)


def test_publish_file_switches_threads_sooner_then_restores(sync_client, keys, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
                    + "".join(f"t{n},u1,Shop,groceries,5.00,5411,2026-01-01T00:00:06Z\n" for n in range(5)))
    producer = _IntervalRecorder(sync_client, keys, max_backlog=None, chunk_size=2)
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_SECONDS  # Python's default, 0.005

    summary = publish_file(sync_client, keys, str(path), progress=False, rejects_path=tmp_path / "rejects.jsonl",
                           producer=producer)

    assert summary.published == 5
    assert producer.intervals == [SWITCH_INTERVAL_SECONDS] * 3
    assert sys.getswitchinterval() == before


def test_full_validation_error_unchanged_for_declined_rows():
    data = (b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
            b"t1,u1, ,groceries,5.00,5411,2026-01-01T00:00:06Z\n"
            b"t2,u1,Shop,groceries,5.00,\xd9\xa5411,2026-01-01T00:00:06Z\n")

    outcomes = list(CsvReader(io.BytesIO(data)))

    assert outcomes[0].error.message.startswith("line 2")
    assert "merchant is empty" in outcomes[0].error.message
    assert "4-digit ISO 18245" in outcomes[1].error.message


def test_pydantic_rejects_surrogates():
    # The fast paths decline text with a lone surrogate because pydantic rejects it.
    with pytest.raises(pydantic.ValidationError):
        Transaction(transaction_id="t\ud800", user_id="u1", merchant="Shop", amount_usd="1")

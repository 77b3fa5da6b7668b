"""The fast paths of the publish path give the same results as the general ones."""

from __future__ import annotations

import io
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SmallReads
from producer import Layout, Rejected, Row, read_transactions
from producer.duplicates import BloomFilter, DuplicateIndex
from producer.lines import LineSplitter, PhysicalLine
from producer.values import parse_amount
from rewardpilot import codec
from rewardpilot.models import Transaction

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp"


def test_bloom_filter_finds_every_added_key():
    bloom = BloomFilter(5_000)
    keys = [f"t-{number}" for number in range(5_000)]
    for key in keys:
        bloom.add(key)

    missing = [key for key in keys if key not in bloom]
    false_positives = sum(f"other-{number}" in bloom for number in range(5_000))

    assert missing == []
    assert false_positives < 5_000 * 0.05


def test_bloom_filter_rejects_zero_capacity():
    with pytest.raises(ValueError, match="capacity 0"):
        BloomFilter(0)


def test_duplicate_index_over_many_filters():
    index = DuplicateIndex(spill_after=10, first_filter_capacity=16)
    try:
        for line in range(1, 501):
            assert index.add(f"t{line}", line) is None

        assert len(index._filters) == 4  # 495 ids spilled into filters of 16, 64, 256 and 1,024 ids
        assert index.add("t1", 1_000) == 1
        assert index.add("t250", 1_001) == 250
        assert index.add("t500", 1_002) == 500
        assert index.add("t501", 1_003) is None
        assert index.add("t501", 1_004) == 1_003
    finally:
        index.close()


def test_duplicate_index_false_positive_lookup():
    # A filter of 64 bits holding 1,000 ids reports every id as seen, so each
    # add goes through the SQLite look-up.
    index = DuplicateIndex(spill_after=5, first_filter_capacity=1)
    index._spill()  # create the database and a first filter of 64 bits
    index._filters[0].capacity = 1_000_000  # so that no larger filter starts
    try:
        for line in range(1, 1_001):
            assert index.add(f"t{line}", line) is None
        assert all(f"never-added-{number}" in index._filters[0] for number in range(20))

        assert index.add("never-added", 2_000) is None
        assert index.add("t3", 2_001) == 3
        assert index.add("t999", 2_002) == 999
    finally:
        index.close()


def test_duplicate_index_usable_after_close():
    index = DuplicateIndex(spill_after=2)
    for line in range(1, 6):
        index.add(f"t{line}", line)
    index.close()

    assert index.add("t9", 9) is None
    assert index.add("t9", 10) == 9


def split(data: bytes, *, read_size: int, max_line_bytes: int) -> list[PhysicalLine]:
    return list(LineSplitter(SmallReads(data, read_size), max_line_bytes=max_line_bytes))


# Lines of at most 15 bytes stay whole and lines of 30 or more are cut at the
# 20-byte limit with either line end, whatever the read size.
LINE_CONTENT = st.one_of(
    st.binary(max_size=15).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(min_value=30, max_value=70).map(lambda size: b"x" * size),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE_CONTENT, max_size=12), st.integers(min_value=1, max_value=9), st.booleans())
def test_lf_lines_match_crlf_lines(contents, read_size, final_end):
    lf = b"\n".join(contents) + (b"\n" if final_end else b"")
    crlf = b"\r\n".join(contents) + (b"\r\n" if final_end else b"")

    lf_lines = split(lf, read_size=read_size, max_line_bytes=20)
    crlf_lines = split(crlf, read_size=read_size, max_line_bytes=20)

    assert [(line.number, line.content, line.too_long) for line in lf_lines] == [
        (line.number, line.content, line.too_long) for line in crlf_lines
    ]
    assert {line.ending for line in lf_lines} <= {b"\n", b""}


def test_lf_lines_cut_and_numbered():
    data = b"short\n" + b"y" * 45 + b"\nnext\nlast"

    lines = split(data, read_size=7, max_line_bytes=20)

    assert lines == [
        PhysicalLine(1, b"short", b"\n"),
        PhysicalLine(2, b"y" * 20, b"", too_long=True),
        PhysicalLine(3, b"next", b"\n"),
        PhysicalLine(4, b"last", b""),
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("12.50", "12.50"),
    ("007.50", "7.50"),
    (" 5 ", "5"),
    (".5", "0.5"),
    ("1,234.56", "1234.56"),
    ("$12.50", "12.50"),
    ("(12.50)", "-12.50"),
])
def test_parse_amount_plain_and_general(text, expected):
    amount = parse_amount(text)

    assert amount == Decimal(expected)
    assert str(amount) == expected


@pytest.mark.parametrize("text", ["12.", "NaN", "\u0661\u0662", "12,50", "1_000"])
def test_parse_amount_rejects_near_plain(text):
    with pytest.raises(ValueError, match="is not an amount"):
        parse_amount(text)


def test_encode_transaction_matches_model_dump_json():
    transaction = Transaction(
        transaction_id="t1", user_id="u1", merchant="Caf\u00e9 \"Le Zinc\"", category="coffee",
        amount_usd="12.345", mcc="742", timestamp=datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc),
        currency="eur", merchant_country="fr", card_used="card-1", original_amount=Decimal("11.40"),
        original_currency="EUR", usd_per_unit=Decimal("1.0829"), rate_date=date(2024, 5, 1),
    )
    plain = Transaction(transaction_id="t2", user_id="u1", merchant="Shop", amount_usd="1")

    assert codec.encode_transaction(transaction) == {codec.DATA: transaction.model_dump_json()}
    assert codec.encode_transaction(plain) == {codec.DATA: plain.model_dump_json()}
    assert codec.decode_transaction(codec.encode_transaction(transaction)) == transaction


def read_csv(text: str, **options) -> list:
    return list(read_transactions(io.BytesIO(text.encode()), **options))


def test_empty_values_dropped_except_category():
    outcomes = read_csv(
        f"{HEADER},currency,merchant_country\n"
        "t1,u1,Shop,,5.00,,2024-05-01T00:00:00Z,,\n"
        "t2,u1,Shop,food,6.00,5812,2024-05-01T00:00:00Z,usd,fr\n"
    )

    assert [type(outcome) for outcome in outcomes] == [Row, Row]
    empty, full = outcomes[0].transaction, outcomes[1].transaction
    assert empty.category == ""
    assert empty.mcc is None
    assert empty.currency == "USD"
    assert empty.merchant_country is None
    assert (full.category, full.mcc, full.currency, full.merchant_country) == ("food", "5812", "USD", "FR")


def test_empty_column_hides_constant():
    layout = Layout(
        name="with-fallback",
        columns={"transaction_id": "id", "user_id": "user", "merchant": "shop", "amount_usd": "amount",
                 "timestamp": "date"},
        constants={"user_id": "fallback-user"},
    )

    outcomes = read_csv("id,user,shop,amount,date\nt1,,Shop,5.00,2024-05-01\nt2,u2,Shop,6.00,2024-05-01\n", layout=layout)

    assert isinstance(outcomes[0], Rejected)
    assert outcomes[0].error.column == "user"
    assert "user_id is empty" in outcomes[0].error.message
    assert isinstance(outcomes[1], Row)
    assert outcomes[1].transaction.user_id == "u2"

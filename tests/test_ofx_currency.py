"""OFX amounts: a transaction's own CURRENCY or ORIGCURRENCY aggregate, and the decimal comma."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import pytest

from producer import Rejected, Row, read_transactions
from producer.ofx import parse_ofx_amount
from rewardpilot.engine import RulesEngine
from rewardpilot.fx import CurrencyConverter, parse_rates

HEADER = (
    "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
    "<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS>{curdef}<CCACCTFROM><ACCTID>4111000011119876</CCACCTFROM>"
    "<BANKTRANLIST>\n"
)
FOOTER = "</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n"
KEEP = CurrencyConverter(unconverted="keep")


def statement(*entries: str, curdef: str = "USD") -> bytes:
    """Build an SGML credit-card statement with one STMTTRN per entry, written as "TRNAMT|elements after NAME"."""
    body = "".join(
        f"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20240501<TRNAMT>{amount}<FITID>F{index}<NAME>Shop {index}{extra}</STMTTRN>\n"
        for index, (amount, extra) in enumerate(entry.split("|", 1) for entry in entries)
    )
    declared = f"<CURDEF>{curdef}" if curdef else ""
    return (HEADER.format(curdef=declared) + body + FOOTER).encode()


def read(data: bytes, converter: CurrencyConverter = KEEP) -> list:
    return list(read_transactions(io.BytesIO(data), converter=converter))


def test_currency_aggregate_converted_with_currate():
    outcomes = read(statement("-100.00|<CURRENCY><CURRATE>1.10<CURSYM>EUR</CURRENCY>"))

    transaction = outcomes[0].transaction
    assert transaction.amount_usd == Decimal("110.00")
    assert transaction.currency == "EUR"
    assert transaction.original_amount == Decimal("100.00")
    assert transaction.original_currency == "EUR"
    assert transaction.usd_per_unit == Decimal("1.10")
    assert transaction.rate_date is None


def test_currency_aggregate_charges_foreign_fee():
    foreign = read(statement("-100.00|<CURRENCY><CURRATE>1.10<CURSYM>EUR</CURRENCY>"))[0].transaction
    domestic = foreign.model_copy(update={"currency": "USD", "original_amount": None, "original_currency": None,
                                          "usd_per_unit": None})
    engine = RulesEngine.default()

    abroad = engine.recommend(foreign, wallet=["chase-freedom-unlimited"])
    at_home = engine.recommend(domestic, wallet=["chase-freedom-unlimited"])

    assert abroad.rewards.cash_value_usd < at_home.rewards.cash_value_usd
    assert "100.00 EUR converted to $110.00 at 1.1 USD per EUR" in abroad.reasoning


def test_currency_aggregate_closed_leaves_in_xml():
    data = statement("-50.00|<CURRENCY><CURRATE>0.75</CURRATE><CURSYM>aud</CURSYM></CURRENCY>")

    transaction = read(data)[0].transaction

    assert (transaction.amount_usd, transaction.currency) == (Decimal("37.50"), "AUD")


def test_currency_rate_with_decimal_comma():
    transaction = read(statement("-100,00|<CURRENCY><CURRATE>1,25<CURSYM>GBP</CURRENCY>"))[0].transaction

    assert transaction.amount_usd == Decimal("125.00")
    assert transaction.usd_per_unit == Decimal("1.25")


def test_currency_converted_amount_rounded_half_even():
    # 0.53 x 0.5 = 0.265, which half-even rounding makes 0.26 (half up would give 0.27).
    outcomes = read(statement("-0.53|<CURRENCY><CURRATE>0.5<CURSYM>EUR</CURRENCY>"))

    assert outcomes[0].transaction.amount_usd == Decimal("0.26")


def test_currency_without_rate_left_to_fx_rates():
    data = statement("-100.00|<CURRENCY><CURSYM>EUR</CURRENCY>")
    rates = CurrencyConverter(parse_rates("currency,usd_per_unit\nEUR,1.08\n"))

    kept = read(data)[0].transaction
    converted = read(data, rates)[0].transaction
    rejected = read(data, CurrencyConverter())[0]

    assert (kept.amount_usd, kept.currency, kept.original_currency) == (Decimal("100.00"), "EUR", None)
    assert (converted.amount_usd, converted.original_amount) == (Decimal("108.00"), Decimal("100.00"))
    assert isinstance(rejected, Rejected)
    assert "EUR" in rejected.error.reason


def test_currency_rate_ignored_without_curdef():
    # The rate converts to CURDEF, so without CURDEF the amount stays in CURSYM for --fx-rates.
    data = statement("-12.00|<CURRENCY><CURRATE>1.0000<CURSYM>AUD</CURRENCY>", curdef="")

    transaction = read(data)[0].transaction

    assert (transaction.amount_usd, transaction.currency, transaction.original_currency) == (
        Decimal("12.00"), "AUD", None)


def test_currency_usd_in_foreign_statement_not_converted():
    data = statement("-20.00|<CURRENCY><CURRATE>0.92<CURSYM>USD</CURRENCY>", curdef="EUR")

    transaction = read(data, CurrencyConverter())[0].transaction

    assert (transaction.amount_usd, transaction.currency) == (Decimal("20.00"), "USD")


def test_currency_in_foreign_statement_converted_twice():
    # 100 EUR at 1.6 AUD per EUR is 160 AUD, which the rates file converts at 0.66 USD per AUD.
    data = statement("-100.00|<CURRENCY><CURRATE>1.6<CURSYM>EUR</CURRENCY>", curdef="AUD")
    rates = CurrencyConverter(parse_rates("currency,usd_per_unit,date\nAUD,0.66,2024-04-01\n"))

    transaction = read(data, rates)[0].transaction

    assert transaction.amount_usd == Decimal("105.60")
    assert (transaction.original_amount, transaction.original_currency) == (Decimal("160.00"), "AUD")
    assert transaction.rate_date == date(2024, 4, 1)


def test_currency_same_as_curdef_is_plain():
    transaction = read(statement("-9.99|<CURRENCY><CURRATE>1<CURSYM>USD</CURRENCY>"))[0].transaction

    assert (transaction.amount_usd, transaction.currency, transaction.original_currency) == (
        Decimal("9.99"), "USD", None)


def test_origcurrency_amount_kept_in_curdef():
    data = statement("-107.00|<ORIGCURRENCY><CURRATE>1.07<CURSYM>EUR</ORIGCURRENCY>")

    transaction = read(data, CurrencyConverter())[0].transaction

    assert transaction.amount_usd == Decimal("107.00")
    assert transaction.currency == "EUR"
    assert transaction.original_currency == "EUR"
    assert transaction.original_amount == Decimal("100.00")
    assert transaction.usd_per_unit == Decimal("1.07")


def test_origcurrency_without_rate():
    data = statement("-30.00|<ORIGCURRENCY><CURSYM>JPY</ORIGCURRENCY>")

    transaction = read(data, CurrencyConverter())[0].transaction

    assert (transaction.amount_usd, transaction.currency, transaction.original_currency) == (
        Decimal("30.00"), "JPY", "JPY")
    assert transaction.original_amount is None


def test_origcurrency_in_foreign_statement_uses_curdef():
    data = statement("-50.00|<ORIGCURRENCY><CURRATE>1.6<CURSYM>EUR</ORIGCURRENCY>", curdef="AUD")
    rates = CurrencyConverter(parse_rates("currency,usd_per_unit\nAUD,0.66\n"))

    transaction = read(data, rates)[0].transaction

    assert (transaction.amount_usd, transaction.original_amount, transaction.original_currency) == (
        Decimal("33.00"), Decimal("50.00"), "AUD")


@pytest.mark.parametrize(
    ("extra", "column", "reason", "fix"),
    [
        ("<CURRENCY><CURRATE>abc<CURSYM>EUR</CURRENCY>", "CURRENCY.CURRATE",
         "<CURRATE> 'abc' of <CURRENCY> is not a positive decimal number", "how many USD one EUR buys"),
        ("<CURRENCY><CURRATE>0<CURSYM>EUR</CURRENCY>", "CURRENCY.CURRATE",
         "<CURRATE> '0' of <CURRENCY> is not a positive decimal number", "delete the <CURRATE> element"),
        ("<CURRENCY><CURRATE>-1.1<CURSYM>EUR</CURRENCY>", "CURRENCY.CURRATE",
         "<CURRATE> '-1.1' of <CURRENCY> is not a positive decimal number", "such as 1.0850"),
        ("<CURRENCY><CURRATE>1.1</CURRENCY>", "CURRENCY.CURSYM",
         "<CURSYM> of <CURRENCY> is empty", "fill it in"),
        ("<CURRENCY><CURRATE>1.1<CURSYM>euro</CURRENCY>", "CURRENCY.CURSYM",
         "<CURSYM> of <CURRENCY> 'euro' is not a three-letter ISO 4217 currency code", "such as EUR or USD"),
        ("<ORIGCURRENCY><CURRATE>x<CURSYM>EUR</ORIGCURRENCY>", "ORIGCURRENCY.CURRATE",
         "<CURRATE> 'x' of <ORIGCURRENCY> is not a positive decimal number", "delete the <CURRATE> element"),
        ("<CURRENCY><CURRATE>1.1<CURSYM>EUR</CURRENCY><ORIGCURRENCY><CURRATE>1.1<CURSYM>EUR</ORIGCURRENCY>",
         "CURRENCY", "both <CURRENCY> and <ORIGCURRENCY>", "keep <CURRENCY> if TRNAMT is in the foreign currency"),
        ("<CURRENCY><CURRATE>0.0001<CURSYM>JPY</CURRENCY>", "CURRENCY.CURRATE",
         "5.00 JPY at the <CURRATE> of 0.0001 USD per JPY is 0.00 USD, less than one cent", "check TRNAMT"),
    ],
)
def test_currency_aggregate_rejected(extra, column, reason, fix):
    outcomes = read(statement(f"-5.00|{extra}", "-1.00|"))

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
    error = outcomes[0].error
    assert error.line == 8
    assert error.column == column
    assert reason in error.reason
    assert fix in error.fix
    assert error.transaction_id.startswith("ofx-9876-F0-")


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("-12,345", Decimal("-12.345")),  # a three-decimal currency written with a decimal comma
        ("-1,234", Decimal("-1.234")),
        ("-5,50", Decimal("-5.50")),
        ("7,5", Decimal("7.5")),
        (",75", Decimal("0.75")),
        ("-12.345", Decimal("-12.345")),
        ("1,234.56", Decimal("1234.56")),  # a point as well: the comma groups thousands
        ("1250", Decimal("1250")),
    ],
)
def test_parse_ofx_amount(text, amount):
    assert parse_ofx_amount(text) == amount


@pytest.mark.parametrize("text", ["12,", "1,2,3,4", "1.234,56", "abc", ""])
def test_parse_ofx_amount_rejects(text):
    with pytest.raises(ValueError):
        parse_ofx_amount(text)


def test_decimal_comma_amount_rounded_to_cents():
    transaction = read(statement("-12,345|"))[0].transaction

    assert transaction.amount_usd == Decimal("12.35")


def test_publish_counts_currate_row_converted(sync_client, keys, tmp_path):
    """A row converted with its own CURRATE counts as converted, with no "published unconverted" warning."""
    from producer import Producer, publish_file

    data = statement("-100.00|<CURRENCY><CURRATE>1.10<CURSYM>EUR</CURRENCY>", "-5.00|")
    producer = Producer(sync_client, keys, max_backlog=None)

    summary = publish_file(sync_client, keys, io.BytesIO(data), rejects_path=tmp_path / "r.jsonl", progress=False,
                           producer=producer)

    assert summary.published == 2
    assert summary.converted == 1
    assert summary.unconverted == {}
    assert not [warning for warning in summary.warnings if "unconverted" in warning]

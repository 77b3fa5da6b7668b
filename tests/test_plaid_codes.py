"""Plaid currency and country codes, and other entry values the Transaction model rejects."""

from __future__ import annotations

import io
import json

import pytest

from producer import Rejected, Row, read_transactions
from producer.values import check_code
from producer.errors import InvalidValueError
from rewardpilot.fx import CurrencyConverter


def plaid_entry(**changes) -> dict:
    entry = {"transaction_id": "t-1", "account_id": "a1", "amount": 25.5, "date": "2024-07-02",
             "name": "Shop", "pending": False, "iso_currency_code": "USD"}
    entry.update(changes)
    return entry


def read(*entries: dict) -> list:
    data = json.dumps({"transactions": list(entries)}).encode()
    return list(read_transactions(io.BytesIO(data), converter=CurrencyConverter(unconverted="keep")))


@pytest.mark.parametrize(
    ("changes", "column", "reason", "fix"),
    [
        ({"location": {"country": "Canada"}}, "transactions[0].location.country",
         "location.country 'Canada' is a country name, not a two-letter ISO 3166-1 alpha-2 country code",
         "write CA, the ISO 3166-1 alpha-2 country code of Canada"),
        ({"location": {"country": "united kingdom"}}, "transactions[0].location.country",
         "location.country 'united kingdom' is a country name", "write GB"),
        ({"location": {"country": "Narnia"}}, "transactions[0].location.country",
         "location.country 'Narnia' is not a two-letter ISO 3166-1 alpha-2 country code",
         "use a two-letter ISO 3166-1 alpha-2 country code such as US or GB"),
        ({"location": {"country": 840}}, "transactions[0].location.country",
         "location.country is a JSON number, not a string", "with location.country as text or null"),
        ({"iso_currency_code": "US"}, "transactions[0].iso_currency_code",
         "iso_currency_code 'US' is not a three-letter ISO 4217 currency code", "such as EUR or USD"),
        ({"name": "x" * 300}, "transactions[0].name",
         "merchant 'xxxxxxxxxxxxxxxxxxxx'... is 300 characters long, above the limit of 256",
         "shorten it to 256 characters"),
        ({"merchant_name": "y" * 257}, "transactions[0].merchant_name",
         "is 257 characters long, above the limit of 256", "shorten it to 256 characters"),
        ({"amount": 20000000}, "transactions[0].amount", "above the limit of $10,000,000",
         "check the amount column and its decimal point"),
    ],
)
def test_plaid_value_rejected_with_fix(changes, column, reason, fix):
    outcomes = read(plaid_entry(**changes), plaid_entry(transaction_id="t-2"))

    assert [type(outcome) for outcome in outcomes] == [Rejected, Row]
    error = outcomes[0].error
    assert error.column == column
    assert reason in error.reason
    assert fix in error.fix
    assert error.transaction_id == "t-1"


@pytest.mark.parametrize("country", [None, "", "  "])
def test_plaid_empty_country_unset(country):
    transaction = read(plaid_entry(location={"country": country}))[0].transaction

    assert transaction.merchant_country is None


def test_plaid_country_code_any_case():
    transaction = read(plaid_entry(location={"country": "ca"}))[0].transaction

    assert transaction.merchant_country == "CA"


def test_check_code_names_country_code():
    with pytest.raises(InvalidValueError) as raised:
        check_code("merchant_country", "France")

    assert raised.value.reason == ("merchant_country 'France' is a country name, not a two-letter "
                                   "ISO 3166-1 alpha-2 country code")
    assert raised.value.fix == "write FR, the ISO 3166-1 alpha-2 country code of France"


def test_csv_country_name_gets_code():
    data = ("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp,merchant_country\n"
            "c1,u1,Shop,dining,5.00,5812,2024-05-01T10:00:00Z,Japan\n")

    outcome = list(read_transactions(io.BytesIO(data.encode())))[0]

    assert isinstance(outcome, Rejected)
    assert outcome.error.column == "merchant_country"
    assert outcome.error.fix == "write JP, the ISO 3166-1 alpha-2 country code of Japan"

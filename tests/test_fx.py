"""Currency conversion: the rates file, the converter, publishing and the command line."""

from __future__ import annotations

import io
import json
from datetime import date
from decimal import Decimal

import pytest

from conftest import SHARED_DATA, invoke_cli
from producer import Producer, exit_status, publish_file
from rewardpilot.codec import decode_transaction
from rewardpilot.engine import RulesEngine
from rewardpilot.fx import (
    ConversionError, CurrencyConverter, MissingRateError, RatesFileError, load_rates, parse_rates,
)
from rewardpilot.models import Transaction

ANZ = SHARED_DATA / "ofxparse" / "anzcc.ofx"
needs_samples = pytest.mark.skipif(not ANZ.exists(), reason="shared sample data is not available")

DATED = "currency,usd_per_unit,date\nAUD,0.75,2017-05-01\nAUD,0.77,2017-05-09\nEUR,1.08,2017-01-01\n"
UNDATED = "currency,usd_per_unit\nAUD,0.6612\neur,1.0850\nUSD,1\n"


def purchase(amount: str = "5.50", currency: str = "AUD", when: str = "2017-05-08T10:00:00Z", **extra) -> Transaction:
    return Transaction(transaction_id="t1", user_id="u1", merchant="CAFE", amount_usd=amount,
                       currency=currency, timestamp=when, mcc="5812", **extra)


# --- the rates file -------------------------------------------------------------

def test_dated_rates_latest_on_or_before():
    rates = parse_rates(DATED)

    assert rates.rate_for("AUD", date(2017, 5, 1)).usd_per_unit == Decimal("0.75")
    assert rates.rate_for("AUD", date(2017, 5, 8)).usd_per_unit == Decimal("0.75")
    assert rates.rate_for("AUD", date(2017, 5, 9)).usd_per_unit == Decimal("0.77")
    assert rates.rate_for("AUD", date(2030, 1, 1)).usd_per_unit == Decimal("0.77")
    assert rates.rate_for("AUD", date(2017, 4, 30)) is None
    assert rates.rate_for("GBP", date(2017, 5, 8)) is None


def test_dated_rates_in_any_row_order():
    text = "currency,usd_per_unit,date\nAUD,0.77,2017-05-09\nAUD,0.75,2017-05-01\n"

    rates = parse_rates(text)

    assert rates.rate_for("AUD", date(2017, 5, 8)).usd_per_unit == Decimal("0.75")
    assert rates.rate_for("AUD", date(2017, 5, 9)).line == 2


def test_undated_rates_apply_on_every_date():
    rates = parse_rates(UNDATED)

    assert rates.currencies == ["AUD", "EUR"]
    assert rates.rate_for("AUD", date(1990, 1, 1)).usd_per_unit == Decimal("0.6612")
    assert rates.rate_for("EUR", date(2030, 1, 1)).usd_per_unit == Decimal("1.0850")
    assert rates.rate_for("EUR", date(2030, 1, 1)).day is None


def test_undated_row_under_date_header():
    rates = parse_rates("currency,usd_per_unit,date\nAUD,0.75,2017-05-01\nGBP,1.27\nEUR,1.08,\n")

    assert rates.rate_for("GBP", date(2030, 1, 1)).usd_per_unit == Decimal("1.27")
    assert rates.rate_for("GBP", date(2030, 1, 1)).day is None
    assert rates.rate_for("EUR", date(1990, 1, 1)).usd_per_unit == Decimal("1.08")


def test_rates_file_with_bom_and_blank_lines(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_bytes(b"\xef\xbb\xbfCurrency,USD_per_unit\r\n\r\nAUD,0.66\r\n")

    rates = load_rates(path)

    assert rates.rate_for("AUD", date(2020, 1, 1)).usd_per_unit == Decimal("0.66")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ["is empty", "currency,usd_per_unit,date"]),
        ("currency,usd_per_unit\n", ["no rates", "AUD,0.6612"]),
        ("code,rate\nAUD,0.66\n", ["line 1", "'code,rate'", "must be 'currency,usd_per_unit'"]),
        ("currency,usd_per_unit\nAUD,0.66\nAUDX,0.5\n", ["line 3", "'AUDX'", "3-letter ISO 4217"]),
        ("currency,usd_per_unit\nAUD,abc\n", ["line 2", "'abc'", "positive decimal", "like 0.6612"]),
        ("currency,usd_per_unit\nAUD,0\n", ["line 2", "'0'", "positive decimal"]),
        ("currency,usd_per_unit\nAUD,-0.66\n", ["line 2", "'-0.66'"]),
        ("currency,usd_per_unit\nAUD,6.6e-1\n", ["line 2", "no exponent"]),
        ("currency,usd_per_unit\nAUD,\"0,66\"\n", ["line 2", "'0,66'"]),
        ("currency,usd_per_unit,date\nAUD,0.66,05/01/2017\n", ["line 2", "'05/01/2017'", "YYYY-MM-DD"]),
        ("currency,usd_per_unit\nAUD,0.66,2017-05-01\n", ["line 2", "3 fields", "header has 2"]),
        ("currency,usd_per_unit,date\nAUD,0.66,2017-05-01\nAUD,0.67,2017-05-01\n",
         ["line 3", "second rate for 2017-05-01", "line 2", "keep one"]),
        ("currency,usd_per_unit,date\nAUD,0.66,\nAUD,0.67,2017-05-01\n",
         ["line 3", "both dated and undated", "line 2"]),
        ("currency,usd_per_unit\nUSD,0.9\n", ["line 2", "USD", "always 1", "remove the row"]),
    ],
)
def test_bad_rates_file_names_line(text, needles):
    with pytest.raises(RatesFileError) as raised:
        parse_rates(text, source="rates.csv")

    message = str(raised.value)
    assert "rates.csv" in message
    for needle in needles:
        assert needle in message


def test_missing_rates_file(tmp_path):
    with pytest.raises(RatesFileError) as raised:
        load_rates(tmp_path / "nowhere.csv")

    assert "cannot read rates file" in str(raised.value)
    assert "nowhere.csv" in str(raised.value)


# --- the converter --------------------------------------------------------------

def test_conversion_rounds_half_even():
    converter = CurrencyConverter(parse_rates(DATED))

    converted, changed = converter.convert(purchase("5.50"))  # 5.50 x 0.75 = 4.125

    assert changed is True
    assert converted.amount_usd == Decimal("4.12")
    assert converted.original_amount == Decimal("5.50")
    assert converted.original_currency == "AUD"
    assert converted.usd_per_unit == Decimal("0.75")
    assert converted.rate_date == date(2017, 5, 1)
    assert converted.currency == "AUD"


def test_conversion_uses_later_rate():
    converter = CurrencyConverter(parse_rates(DATED))

    converted, _ = converter.convert(purchase("5.50", when="2017-05-09T00:00:00Z"))  # 5.50 x 0.77 = 4.235

    assert converted.amount_usd == Decimal("4.24")
    assert converted.rate_date == date(2017, 5, 9)


def test_usd_and_converted_unchanged():
    converter = CurrencyConverter(parse_rates(DATED))
    dollars = purchase("5.50", currency="USD")
    converted, _ = converter.convert(purchase("5.50"))

    assert converter.convert(dollars) == (dollars, False)
    assert converter.convert(converted) == (converted, False)


def test_missing_rate_names_fix():
    converter = CurrencyConverter(parse_rates(DATED))

    with pytest.raises(MissingRateError) as raised:
        converter.convert(purchase(when="2017-04-30T12:00:00Z"))

    error = raised.value
    assert error.value == "AUD"
    assert "no AUD rate on or before 2017-04-30" in error.reason
    assert "first AUD rate is for 2017-05-01" in error.reason
    assert "--fx-rates" in error.fix
    assert "--unconverted-currency keep" in error.fix


def test_missing_rate_without_rates_file():
    with pytest.raises(MissingRateError) as raised:
        CurrencyConverter().convert(purchase(currency="GBP"))

    assert "no rates file was given" in raised.value.reason
    assert "pass --fx-rates FILE with a row like 'GBP," in raised.value.fix


def test_keep_policy_passes_unconverted():
    converter = CurrencyConverter(parse_rates(DATED), "keep")
    original = purchase(currency="GBP")

    assert converter.convert(original) == (original, False)


def test_conversion_below_one_cent_rejected():
    converter = CurrencyConverter(parse_rates("currency,usd_per_unit\nIDR,0.00006\n"))

    with pytest.raises(ConversionError) as raised:
        converter.convert(purchase("50.00", currency="IDR"))

    assert "less than one cent" in raised.value.reason
    assert "line 2 of the rates file" in raised.value.fix


def test_invalid_policy_rejected():
    with pytest.raises(ValueError, match="'drop'"):
        CurrencyConverter(None, "drop")  # type: ignore[arg-type]


def test_old_entry_still_decodes():
    # An entry published before the conversion fields existed.
    data = ('{"transaction_id":"old","user_id":"u1","merchant":"CAFE","category":"","amount_usd":"5.50",'
            '"mcc":"5812","timestamp":"2017-05-08T00:00:00Z","currency":"AUD"}')

    transaction = decode_transaction({"data": data})

    assert transaction.original_amount is None
    assert transaction.original_currency is None
    assert transaction.usd_per_unit is None
    assert transaction.rate_date is None


# --- the engine ----------------------------------------------------------------

def test_reasoning_states_conversion_and_fee():
    converted, _ = CurrencyConverter(parse_rates(DATED)).convert(purchase("100.00", when="2017-05-10T12:00:00Z"))

    rec = RulesEngine.default().recommend(converted, ["chase-freedom-unlimited"])

    assert rec.amount_usd == Decimal("77.00")
    assert "amount is 100.00 AUD converted to $77.00 at 0.77 USD per AUD (rate of 2017-05-09)" in rec.reasoning
    assert "$0.00 on $77.00 after its 3% foreign transaction fee" in rec.reasoning
    assert rec.rewards.cash_value_usd == Decimal("0.00")


def test_reasoning_with_undated_rate():
    converted, _ = CurrencyConverter(parse_rates(UNDATED)).convert(purchase("10.00", currency="EUR"))

    rec = RulesEngine.default().recommend(converted, ["chase-sapphire-reserve"])

    assert "10.00 EUR converted to $10.85 at 1.085 USD per EUR." in rec.reasoning
    assert "rate of" not in rec.reasoning


# --- publishing ------------------------------------------------------------------

MIXED = (
    "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp,currency\n"
    "m1,u1,Corner Cafe,,5.50,5812,2017-05-08,AUD\n"
    "m2,u1,Shell,,40.00,5541,2017-05-08,USD\n"
    "m3,u1,Pret,,8.00,5812,2017-05-08,GBP\n"
)


def test_publish_rejects_unconverted_by_default(sync_client, keys, tmp_path):
    producer = Producer(sync_client, keys, max_backlog=None)
    rejects = tmp_path / "mixed.rejects.jsonl"

    summary = publish_file(sync_client, keys, io.BytesIO(MIXED.encode()), rejects_path=rejects,
                           progress=False, producer=producer)

    assert (summary.rows, summary.published, summary.rejected, summary.converted) == (3, 1, 2, 0)
    assert exit_status(summary) == 1
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(record["line"], record["column"], record["value"]) for record in records] == [
        (2, "currency", "AUD"), (4, "currency", "GBP"),
    ]
    assert "--fx-rates" in records[0]["fix"]
    assert [record["raw"] for record in records] == [
        "m1,u1,Corner Cafe,,5.50,5812,2017-05-08,AUD", "m3,u1,Pret,,8.00,5812,2017-05-08,GBP",
    ]
    assert any("AUD" in message and "line 2" in message for message in summary.first_rejects)


def test_publish_converts_and_keeps(sync_client, keys, tmp_path):
    producer = Producer(sync_client, keys, max_backlog=None)
    converter = CurrencyConverter(parse_rates(DATED), "keep")

    summary = publish_file(sync_client, keys, io.BytesIO(MIXED.encode()), rejects_path=tmp_path / "r.jsonl",
                           progress=False, producer=producer, converter=converter)

    assert (summary.published, summary.rejected, summary.converted) == (3, 0, 1)
    assert summary.unconverted == {"GBP": 1}
    assert any("1 GBP row(s) were published unconverted" in warning for warning in summary.warnings)
    entries = sync_client.xrange(keys.transactions)
    published = {t.transaction_id: t for t in (decode_transaction(fields) for _, fields in entries)}
    assert published["m1"].amount_usd == Decimal("4.12")
    assert published["m1"].original_amount == Decimal("5.50")
    assert published["m2"].amount_usd == Decimal("40.00")
    assert published["m2"].original_currency is None
    assert published["m3"].amount_usd == Decimal("8.00")
    assert published["m3"].currency == "GBP"


# --- the command line --------------------------------------------------------------

@needs_samples
def test_cli_run_anz_ofx_with_rates(cli_env, keys, tmp_path):
    rates = tmp_path / "rates.csv"
    rates.write_text(DATED)
    output = tmp_path / "results.jsonl"

    completed = invoke_cli(["--prefix", keys.prefix, "run", str(ANZ), "--fx-rates", str(rates),
                            "--json", "--output", str(output)], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["input"]["converted_to_usd"] == 1
    assert summary["successful"] == 1
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(results) == 1
    assert Decimal(results[0]["amount_usd"]) == Decimal("4.12")
    assert "5.50 AUD converted to $4.12 at 0.75 USD per AUD (rate of 2017-05-01)" in results[0]["reasoning"]


@needs_samples
def test_cli_publish_anz_without_rates_rejected(cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(ANZ), "--json"], cli_env)

    assert completed.returncode == 1, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (summary["published"], summary["rejected"]) == (0, 1)
    record = json.loads((tmp_path / "anzcc.ofx.rejects.jsonl").read_text().splitlines()[0])
    assert record["value"] == "AUD"
    assert "--fx-rates" in record["fix"]


@needs_samples
def test_cli_publish_anz_keep_unconverted(cli_env, keys, tmp_path):
    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(ANZ), "--unconverted-currency", "keep",
                            "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (summary["published"], summary["rejected"]) == (1, 0)
    assert summary["unconverted"] == {"AUD": 1}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--fx-rates", "RATES"], "line 2: usd_per_unit 'abc' for AUD"),
        (["--fx-rates", "MISSING"], "cannot read rates file"),
        (["--unconverted-currency", "drop"], "--unconverted-currency 'drop' is invalid"),
    ],
)
def test_cli_bad_fx_options_exit_two(cli_env, keys, tmp_path, args, needle):
    rates = tmp_path / "bad-rates.csv"
    rates.write_text("currency,usd_per_unit\nAUD,abc\n")
    source = tmp_path / "in.csv"
    source.write_text(MIXED)
    paths = {"RATES": str(rates), "MISSING": str(tmp_path / "missing.csv")}
    args = [paths.get(arg, arg) for arg in args]

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source), *args], cli_env)

    assert completed.returncode == 2
    assert needle in " ".join(completed.stderr.split())

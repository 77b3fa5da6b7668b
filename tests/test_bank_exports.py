"""Bank exports: issuer CSV presets, Plaid JSON and OFX statements become transactions."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from conftest import SHARED_DATA, invoke_cli, one_server
from producer.bank_layouts import AMEX as AMEX_LAYOUT
from producer import InputError, Rejected, Row, Skipped, load_layout, read_transactions
from rewardpilot.fx import CurrencyConverter
from producer.layouts import detect_layout, row_digest
from producer.ofx import parse_ofx_time
from rewardpilot.engine import RulesEngine

needs_samples = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data is not available")
# The readers are under test, so amounts in other currencies are kept as read.
KEEP_CURRENCY = CurrencyConverter(unconverted="keep")


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), converter=KEEP_CURRENCY, **options))


def read_file(relative: str, **options) -> list:
    return list(read_transactions(SHARED_DATA / relative, converter=KEEP_CURRENCY, **options))


def of_kind(outcomes: list, kind: type) -> list:
    return [outcome for outcome in outcomes if isinstance(outcome, kind)]


def csv_records(relative: str) -> list[dict]:
    """Return the data records of a sample, counted with the csv module alone."""
    text = (SHARED_DATA / relative).read_bytes().decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    return list(csv.DictReader(io.StringIO(text)))


# Each sample with the issuer's rule for a purchase, applied to the csv module's records.
@needs_samples
@pytest.mark.parametrize(
    ("relative", "is_purchase"),
    [
        ("beanhub-extract/chase_credit_card.csv", lambda r: r["Type"] == "Sale" and Decimal(r["Amount"]) < 0),
        ("csv2ofx/capitalone.csv", lambda r: bool(r["Debit"])),
        ("csv2ofx/mint.csv", lambda r: r["Transaction Type"] == "debit" and r["Original Description"] != "Account Transfer"),
        ("beanhub-extract/mercury.csv", lambda r: Decimal(r["Amount"]) < 0 and bool(r["Last Four Digits"])),
        ("csv2ofx/schwab-checking.csv", lambda r: r["Type"] not in ("ATM", "CHECK", "DEPOSIT", "ACH")),
        ("reckon/73-sample.csv", lambda r: True),
        ("beanhub-extract/plaid.csv", lambda r: Decimal(r["amount"]) > 0 and r["pending"] == "False"),
    ],
)
def test_sample_csv_counts(relative, is_purchase):
    records = csv_records(relative)
    outcomes = read_file(relative)

    assert of_kind(outcomes, Rejected) == []
    assert len(of_kind(outcomes, Row)) == sum(1 for record in records if is_purchase(record))
    assert len(outcomes) == len(records)


@needs_samples
def test_chase_first_purchase():
    outcomes = read_file("beanhub-extract/chase_credit_card.csv")

    skipped = of_kind(outcomes, Skipped)[0]
    assert skipped.line == 2
    assert "payment" in skipped.reason
    first = of_kind(outcomes, Row)[0].transaction
    assert first.merchant == "APPLE.COM/BILL"
    assert first.amount_usd == Decimal("1.23")
    assert first.category == "Shopping"
    assert first.timestamp == datetime(2024, 4, 3, 12, tzinfo=timezone.utc)
    assert first.user_id == "me"
    assert first.card_used == "chase"
    assert first.mcc is None


@needs_samples
def test_capital_one_card_number_kept():
    first = of_kind(read_file("csv2ofx/capitalone.csv"), Row)[0].transaction

    assert first.merchant == "Airplanes R Us"
    assert first.amount_usd == Decimal("1000.00")
    assert first.card_used == "capital one ...1234"
    assert first.category == "Other Travel"


@needs_samples
def test_mint_sample_transfers_skipped():
    """The sample holds only transfers between accounts, each skipped with its reason."""
    outcomes = read_file("csv2ofx/mint.csv")

    assert [outcome.line for outcome in outcomes] == [2, 3, 4, 5]
    assert of_kind(outcomes, Row) == []
    reasons = [outcome.reason for outcome in of_kind(outcomes, Skipped)]
    assert reasons.count("transfer between accounts (Original Description: Account Transfer), not a purchase") == 3
    assert "credit to the account (Transaction Type: credit), not a purchase" in reasons


MINT = (
    "Date,Description,Original Description,Amount,Transaction Type,Category,Account Name,Labels,Notes\r"
    "6/12/15,Whole Foods,WHOLEFDS MKT 10234,\"1,000.00\",debit,Groceries,Visa,,\r"
    "6/13/15,Transfer to Savings,Account Transfer,\"2,000.00\",debit,Savings,Checking,,\r"
)


def test_mint_purchase_read():
    outcomes = read(MINT.encode())

    row = of_kind(outcomes, Row)[0].transaction
    assert row.merchant == "Whole Foods"
    assert row.amount_usd == Decimal("1000.00")
    assert row.timestamp == datetime(2015, 6, 12, 12, tzinfo=timezone.utc)
    assert row.card_used == "Visa"
    assert "transfer between accounts" in of_kind(outcomes, Skipped)[0].reason


@needs_samples
def test_mercury_last_four_and_time():
    outcomes = read_file("beanhub-extract/mercury.csv")
    rows = of_kind(outcomes, Row)

    assert [row.transaction.merchant for row in rows] == ["Amazon Web Services", "Adobe"]
    skipped = of_kind(outcomes, Skipped)
    assert [outcome.line for outcome in skipped] == [2, 5]
    assert skipped[0].reason == "paid from a bank account, not with a card (Last Four Digits empty), not a purchase"
    aws = rows[0].transaction
    assert aws.card_used == "Mercury Credit 5678"
    assert aws.amount_usd == Decimal("353.63")
    assert aws.timestamp == datetime(2024, 4, 16, 3, 25, 55, tzinfo=timezone.utc)


@needs_samples
def test_plaid_sync_sample_counts():
    document = json.loads((SHARED_DATA / "firefly-plaid-connector-2/response-sync-transactions.json").read_text())
    added = document["added"]
    expected_rows = [
        entry for entry in added
        if entry["amount"] > 0 and not entry["pending"]
        and entry["personal_finance_category"]["primary"] not in ("LOAN_PAYMENTS", "INCOME")
    ]

    outcomes = read_file("firefly-plaid-connector-2/response-sync-transactions.json")

    assert len(outcomes) == len(added) == 24
    assert of_kind(outcomes, Rejected) == []
    assert len(of_kind(outcomes, Row)) == len(expected_rows) == 15
    first = of_kind(outcomes, Row)[0].transaction
    assert first.transaction_id == "vzddLGKxmaUnxRwWx5RKfLrjpBeEBMiq6nLqk"
    assert first.merchant == "Uber"
    assert first.amount_usd == Decimal("5.40")
    assert first.category == "TRANSPORTATION_TAXIS_AND_RIDE_SHARES"
    assert first.timestamp == datetime(2024, 6, 22, 12, tzinfo=timezone.utc)
    assert first.card_used == "Plaid Checking ...0000"


@needs_samples
def test_ofx_samples():
    anz = read_file("ofxparse/anzcc.ofx")
    checking = read_file("ofxparse/checking.ofx")
    empty_tags = read_file("ofxparse/ofx-v102-empty-tags.ofx")

    card = of_kind(anz, Row)[0].transaction
    assert card.transaction_id == f"ofx-1234-201705080001-{row_digest('me', '1234123412341234', '201705080001')}"
    assert card.amount_usd == Decimal("5.50")
    assert card.currency == "AUD"
    assert card.card_used == "card ...1234"
    assert card.merchant == "SOME MEMO"
    assert [type(outcome) for outcome in checking] == [Skipped, Row, Skipped]
    assert checking[1].transaction.merchant == "AUTOMATIC WITHDRAWAL, ELECTRIC BILL"
    assert checking[1].transaction.amount_usd == Decimal("34.51")
    assert "check" in checking[2].reason
    assert len(empty_tags) == 1
    assert isinstance(empty_tags[0], Skipped)


@needs_samples
def test_ofx_latin1_accents():
    # The sample's one entry is a PAYMENT (a transfer to a person), which is skipped.
    skipped = of_kind(read_file("ledger-autosync/accented_characters_latin1.ofx"), Skipped)[0]
    # The same entry as a DEBIT is read as a purchase.
    data = (SHARED_DATA / "ledger-autosync/accented_characters_latin1.ofx").read_bytes()
    row = of_kind(read(data.replace(b"<TRNTYPE>PAYMENT", b"<TRNTYPE>DEBIT")), Row)[0]

    assert "<NAME>Virement Interac \u00e0: Jean" in skipped.raw
    assert "(TRNTYPE: PAYMENT), not a purchase" in skipped.reason
    assert row.transaction.merchant == "Virement Interac \u00e0: Jean"
    assert row.transaction.timestamp == datetime(2014, 9, 20, 17, 0, tzinfo=timezone.utc)


AMEX = (
    "Date,Description,Card Member,Account #,Amount\n"
    "05/01/2024,BLUE BOTTLE COFFEE,JANE DOE,-41007,4.75\n"
    "05/02/2024,AUTOPAY PAYMENT - THANK YOU,JANE DOE,-41007,-250.00\n"
)
DISCOVER = (
    "Trans. Date,Post Date,Description,Amount,Category\n"
    "05/03/2024,05/04/2024,WHOLE FOODS MARKET,82.10,Supermarkets\n"
    "05/05/2024,05/05/2024,INTERNET PAYMENT - THANK YOU,-100.00,Payments and Credits\n"
)
CITI = (
    "Status,Date,Description,Debit,Credit,Member Name\n"
    "Cleared,05/06/2024,SHELL OIL 5744,41.20,,JOHN DOE\n"
    "Cleared,05/07/2024,PAYMENT THANK YOU,,-41.20,JOHN DOE\n"
    "Pending,05/08/2024,TRADER JOE'S,23.00,,JOHN DOE\n"
)
APPLE = (
    "Transaction Date,Clearing Date,Description,Merchant,Category,Type,Amount (USD),Purchased By\n"
    "05/09/2024,05/10/2024,\"UBER *EATS 8005928996 CA\",Uber Eats,Restaurants,Purchase,18.40,Ann Lee\n"
    "05/11/2024,05/11/2024,ACH DEPOSIT INTERNET TRANSFER,Payment,Payment,Payment,-300.00,Ann Lee\n"
)


@pytest.mark.parametrize(
    ("text", "merchant", "amount", "card_used", "skip_word"),
    [
        (AMEX, "BLUE BOTTLE COFFEE", "4.75", "amex -41007 JANE DOE", "refund or credit of 250.00"),
        (DISCOVER, "WHOLE FOODS MARKET", "82.10", "discover", "refund or credit of 100.00"),
        (CITI, "SHELL OIL 5744", "41.20", "citi JOHN DOE", "refund or credit of 41.20"),
        (APPLE, "Uber Eats", "18.40", "apple card Ann Lee", "payment to the card"),
    ],
)
def test_issuer_layouts_synthetic(text, merchant, amount, card_used, skip_word):
    outcomes = read(text.encode())

    assert of_kind(outcomes, Rejected) == []
    row = of_kind(outcomes, Row)[0].transaction
    assert row.merchant == merchant
    assert row.amount_usd == Decimal(amount)
    assert row.card_used == card_used
    assert skip_word in of_kind(outcomes, Skipped)[0].reason


AMEX_SHORT = (
    "Date,Description,Amount\n"
    "05/01/2024,BLUE BOTTLE COFFEE,4.75\n"
    "05/02/2024,AUTOPAY PAYMENT - THANK YOU,-250.00\n"
    "05/03/2024,AMAZON.COM RETURN,-19.99\n"
)


def test_amex_short_detected_from_exact_header():
    assert detect_layout(["Date", "Description", "Amount"]).name == "amex-short"
    assert detect_layout([" date ", "DESCRIPTION", "amount"]).name == "amex-short"
    assert detect_layout(["Date", "Description", "Card Member", "Account #", "Amount"]).name == "amex"


@pytest.mark.parametrize(
    "header",
    [
        ["Date", "Amount", "Description"],                   # Wells Fargo order, another sign convention
        ["Date", "Description", "Amount", "Running Bal."],  # a checking account with a balance
        ["Date", "Description", "Amount", "Category"],
    ],
)
def test_amex_short_does_not_claim_other_headers(header):
    with pytest.raises(InputError) as raised:
        detect_layout(header)

    assert "needs exactly the header Date,Description,Amount" in str(raised.value)
    assert "--layout" in str(raised.value)


def test_amex_short_charge_is_purchase():
    outcomes = read(AMEX_SHORT.encode())

    assert of_kind(outcomes, Rejected) == []
    row = of_kind(outcomes, Row)[0]
    assert row.line == 2
    assert row.transaction.merchant == "BLUE BOTTLE COFFEE"
    assert row.transaction.amount_usd == Decimal("4.75")
    assert row.transaction.card_used == "amex"
    assert row.transaction.user_id == "me"
    assert row.transaction.timestamp == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert re.fullmatch(r"amex-[0-9a-f]{16}-0", row.transaction.transaction_id)


def test_amex_short_payment_and_refund_skipped():
    skipped = of_kind(read(AMEX_SHORT.encode()), Skipped)

    assert [outcome.line for outcome in skipped] == [3, 4]
    assert "refund or credit of 250.00" in skipped[0].reason
    assert "refund or credit of 19.99" in skipped[1].reason
    assert re.fullmatch(r"amex-[0-9a-f]{16}-0", skipped[1].transaction_id)


def test_amex_short_weekday_date_accepted():
    text = "Date,Description,Amount\n06/01/2019  Sat,NETFLIX.COM,10.99\n"

    row = of_kind(read(text.encode()), Row)[0]

    assert row.transaction.timestamp == datetime(2019, 6, 1, 12, tzinfo=timezone.utc)
    assert row.transaction.amount_usd == Decimal("10.99")


def test_amex_short_bad_amount_rejected_rest_kept():
    text = AMEX_SHORT + "05/04/2024,CORNER STORE,4.7.5\n05/05/2024,SHELL OIL,30.00\n"

    outcomes = read(text.encode())

    rejected = of_kind(outcomes, Rejected)
    assert len(rejected) == 1
    assert rejected[0].error.line == 5
    assert rejected[0].error.column == "Amount"
    assert rejected[0].error.value == "4.7.5"
    assert "write it like" in rejected[0].error.fix
    assert [row.transaction.merchant for row in of_kind(outcomes, Row)] == ["BLUE BOTTLE COFFEE", "SHELL OIL"]


def test_citi_pending_skipped():
    skipped = of_kind(read(CITI.encode()), Skipped)

    assert len(skipped) == 2
    assert "pending" in skipped[1].reason


def test_bom_and_user_option():
    data = b"\xef\xbb\xbf" + DISCOVER.encode()

    row = of_kind(read(data, user="alice"), Row)[0]

    assert row.transaction.user_id == "alice"


def test_user_option_ignored_with_warning_for_documented_file():
    data = b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\nt1,u1,Shop,,5.00,5411,2024-05-01\n"
    outcomes = read(data, user="alice")

    assert of_kind(outcomes, Row)[0].transaction.user_id == "u1"


def test_same_file_gives_same_ids():
    first = [row.transaction.transaction_id for row in of_kind(read(AMEX.encode()), Row)]
    second = [row.transaction.transaction_id for row in of_kind(read(AMEX.encode()), Row)]

    assert first == second
    assert re.fullmatch(r"amex-[0-9a-f]{16}-0", first[0])


def test_identical_rows_get_different_ids():
    text = AMEX + "05/01/2024,BLUE BOTTLE COFFEE,JANE DOE,-41007,4.75\n"

    rows = of_kind(read(text.encode()), Row)

    assert len(rows) == 2
    assert rows[0].transaction.transaction_id != rows[1].transaction.transaction_id


def test_bad_amount_rejected_rest_kept():
    text = DISCOVER + "05/06/2024,05/06/2024,CORNER STORE,12..5,Merchandise\n"

    outcomes = read(text.encode())

    rejected = of_kind(outcomes, Rejected)[0]
    assert rejected.error.line == 4
    assert rejected.error.column == "Amount"
    assert rejected.error.value == "12..5"
    assert "write it like" in rejected.error.fix + rejected.error.reason
    assert len(of_kind(outcomes, Row)) == 1


def test_custom_layout_for_unknown_bank(tmp_path):
    layout_file = tmp_path / "firstbank.yaml"
    layout_file.write_text(
        "name: firstbank\n"
        "columns:\n"
        "  transaction_id: 'firstbank-{#line}-{#row_hash}'\n"
        "  merchant: Payee\n"
        "  amount_usd: Value\n"
        "  timestamp: Booked\n"
        "  category: Kind\n"
        "constants:\n"
        "  user_id: me\n"
        "  card_used: firstbank visa\n"
        "purchases: negative\n"
        "skip_values:\n"
        "  Kind: {Payment: payment to the card}\n"
    )
    data = b"Booked,Payee,Value,Kind\n2024-05-01,GROCERY OUTLET,-23.10,Groceries\n2024-05-02,THANK YOU,50.00,Payment\n"

    outcomes = read(data, layout=load_layout(layout_file))

    row = of_kind(outcomes, Row)[0].transaction
    assert row.merchant == "GROCERY OUTLET"
    assert row.amount_usd == Decimal("23.10")
    assert row.card_used == "firstbank visa"
    assert "payment to the card" in of_kind(outcomes, Skipped)[0].reason


def test_layout_rejected_for_ofx():
    with pytest.raises(InputError, match="applies to CSV only"):
        read(OFX_SGML, layout=AMEX_LAYOUT)


OFX_SGML = (
    b"OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
    b"<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>USD<CCACCTFROM><ACCTID>4111000011119876</CCACCTFROM>"
    b"<BANKTRANLIST>\n"
    b"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20240501120000[-5:EST]<TRNAMT>-12.34<FITID>A1<NAME>Caf\xe9 Roma</STMTTRN>\n"
    b"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>not-a-date<TRNAMT>-1.00<FITID>A2<NAME>BAD DATE</STMTTRN>\n"
    b"<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20240503<TRNAMT>20.00<FITID>A3<NAME>REFUND</STMTTRN>\n"
    b"<STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20240504<TRNAMT>-3,50<FITID>A1<NAME>REPEAT</STMTTRN>\n"
    b"</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n"
)


def test_ofx_sgml_synthetic():
    outcomes = read(OFX_SGML)

    assert [type(outcome) for outcome in outcomes] == [Row, Rejected, Skipped, Rejected]
    first = outcomes[0].transaction
    assert first.merchant == "Caf\u00e9 Roma"
    assert first.timestamp == datetime(2024, 5, 1, 17, 0, tzinfo=timezone.utc)
    assert first.card_used == "card ...9876"
    assert outcomes[0].line == 8
    assert outcomes[1].error.column == "DTPOSTED"
    assert outcomes[1].error.value == "not-a-date"
    assert outcomes[1].error.transaction_id == f"ofx-9876-A2-{row_digest('me', '4111000011119876', 'A2')}"
    assert outcomes[3].error.value == f"ofx-9876-A1-{row_digest('me', '4111000011119876', 'A1')}"


def test_ofx_xml_utf8_closed_tags():
    data = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<?OFX OFXHEADER="200" VERSION="220"?>\n'
        "<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>EUR</CURDEF>"
        "<CCACCTFROM><ACCTID>5500</ACCTID></CCACCTFROM><BANKTRANLIST>"
        "<STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20240601</DTPOSTED><TRNAMT>-9.90</TRNAMT>"
        "<FITID>X9</FITID><NAME>B\u00e4ckerei &amp; Co</NAME><MEMO></MEMO><SIC>5812</SIC></STMTTRN>"
        "</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>"
    ).encode("utf-8")

    row = of_kind(read(data), Row)[0].transaction

    assert row.merchant == "B\u00e4ckerei & Co"
    assert row.currency == "EUR"
    assert row.mcc is None


def test_ofx_unknown_charset_rejected():
    data = b"OFXHEADER:100\nENCODING:USASCII\nCHARSET:KLINGON\n\n<OFX></OFX>"

    with pytest.raises(InputError, match="KLINGON"):
        read(data)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20140920170000[0:GMT]", datetime(2014, 9, 20, 17, 0, tzinfo=timezone.utc)),
        ("20170508", datetime(2017, 5, 8, 12, tzinfo=timezone.utc)),  # a date alone is noon
        ("20130525225731.258", datetime(2013, 5, 25, 22, 57, 31, tzinfo=timezone.utc)),
        ("20240101000000[-8:PST]", datetime(2024, 1, 1, 8, 0, tzinfo=timezone.utc)),
    ],
)
def test_parse_ofx_time(text, expected):
    assert parse_ofx_time(text) == expected


@pytest.mark.parametrize("text", ["2024-01-01", "20241301", "20240101[+99:X]", ""])
def test_parse_ofx_time_rejects(text):
    with pytest.raises(ValueError):
        parse_ofx_time(text)


def plaid_get(*entries, accounts=()) -> bytes:
    return json.dumps({"accounts": list(accounts), "transactions": list(entries)}, indent=2).encode()


def plaid_entry(**overrides) -> dict:
    entry = {
        "transaction_id": "t-1", "account_id": "acc-1", "amount": 25.5, "date": "2024-07-02",
        "authorized_date": "2024-07-01", "name": "SQ *BLUE BOTTLE", "merchant_name": "Blue Bottle Coffee",
        "pending": False, "iso_currency_code": "USD",
        "personal_finance_category": {"primary": "FOOD_AND_DRINK", "detailed": "FOOD_AND_DRINK_COFFEE"},
        "location": {"country": None},
    }
    entry.update(overrides)
    return entry


def test_plaid_get_fields():
    data = plaid_get(
        plaid_entry(),
        plaid_entry(transaction_id="t-2", pending=True),
        plaid_entry(transaction_id="t-3", amount=-4),
        plaid_entry(transaction_id="t-4", amount="12"),
        plaid_entry(transaction_id="t-5", iso_currency_code="GBP", location={"country": "GB"},
                    personal_finance_category=None, category=["Travel", "Airlines and Aviation Services"]),
        accounts=[{"account_id": "acc-1", "name": "Sapphire", "mask": "4242"}],
    )

    outcomes = read(data)

    assert [type(outcome) for outcome in outcomes] == [Row, Skipped, Skipped, Rejected, Row]
    first = outcomes[0].transaction
    assert first.merchant == "Blue Bottle Coffee"
    assert first.amount_usd == Decimal("25.50")
    assert first.timestamp == datetime(2024, 7, 1, 12, tzinfo=timezone.utc)
    assert first.card_used == "Sapphire ...4242"
    assert "pending" in outcomes[1].reason
    assert "refund or credit of 4" in outcomes[2].reason
    assert outcomes[3].error.column == "transactions[3].amount"
    assert outcomes[3].error.transaction_id == "t-4"
    abroad = outcomes[4].transaction
    assert abroad.currency == "GBP"
    assert abroad.merchant_country == "GB"
    assert abroad.category == "Airlines and Aviation Services"


def test_plaid_sync_removed_recorded():
    data = json.dumps({"added": [plaid_entry()], "modified": [], "removed": [{"transaction_id": "gone-1"}]}).encode()

    outcomes = read(data)

    assert isinstance(outcomes[1], Skipped)
    assert outcomes[1].transaction_id == "gone-1"
    assert "removed" in outcomes[1].reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[1, 2]', "not a Plaid transactions response"),
        (b'{\n  "transactions": 5\n}', "'transactions' is a JSON number, not an array"),
        (b'{\n  "added": [\n', "not valid JSON"),
    ],
)
def test_plaid_not_a_response(data, message):
    with pytest.raises(InputError, match=message):
        read(data, format="plaid")


def test_inferred_category_lower_confidence():
    engine = RulesEngine.default()
    text_row = of_kind(read(DISCOVER.encode()), Row)[0].transaction
    with_mcc = text_row.model_copy(update={"mcc": "5411"})

    by_text = engine.recommend(text_row)
    by_mcc = engine.recommend(with_mcc)

    assert by_text.category == "groceries"
    assert by_mcc.category == "groceries"
    assert by_text.confidence < by_mcc.confidence


@needs_samples
@pytest.mark.parametrize(
    ("relative", "purchases"),
    [("beanhub-extract/chase_credit_card.csv", 4), ("ofxparse/checking.ofx", 1)],
)
@one_server
def test_cli_run_on_sample(cli_env, keys, tmp_path, relative, purchases):
    output = tmp_path / "results.jsonl"

    completed = invoke_cli(
        ["--prefix", keys.prefix, "run", str(SHARED_DATA / relative), "--json", "--output", str(output),
         "--user", "cli-user", "--rejects", str(tmp_path / "rejects.jsonl")],
        cli_env,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(results) == purchases
    assert {result["user_id"] for result in results} == {"cli-user"}


@pytest.mark.parametrize("zone", ["America/New_York", "America/Los_Angeles", "Pacific/Honolulu", "Asia/Tokyo"])
def test_date_only_keeps_printed_date(zone):
    """A bank's date alone lands on that date wherever cap periods, quarters and reports cut the day."""
    from zoneinfo import ZoneInfo

    from producer.values import US_DATE_FORMATS, parse_timestamp

    moment, had_zone = parse_timestamp("04/01/2024", formats=US_DATE_FORMATS, zone=timezone.utc)

    assert not had_zone
    assert moment.astimezone(ZoneInfo(zone)).date() == date(2024, 4, 1)

"""Both Plaid readers place an entry by its detailed category when the primary is empty, and skip BANK_FEES.

Also covers ``optional_skip_prefixes``, the Layout option the plaid-csv
preset uses for the detailed category, in layout files.
"""

from __future__ import annotations

import io
import re

import pytest
import redis

from conftest import invoke_cli, one_server
from producer import InputError, Row, Skipped, load_layout
from producer.bank_layouts import PLAID_CSV, PLAID_NOT_PURCHASE_PREFIXES, PLAID_NOT_PURCHASES
from producer.layouts import Layout
from producer.readers import CsvReader
from test_plaid_csv_skips import COLUMNS, DETAILED, PRIMARY, entry, plaid_csv, plaid_json, read


def both(plaid: dict) -> tuple:
    """Return the outcome of one entry read as plaid-csv and as Plaid JSON."""
    [from_csv] = read(plaid_csv([plaid]))
    [from_json] = read(plaid_json([plaid]))
    return from_csv, from_json


# Detailed category with an empty primary


def test_trial_rows_skipped():
    transfer = entry(1, **{PRIMARY: "", DETAILED: "TRANSFER_OUT_ACCOUNT_TRANSFER"})
    atm_fee = entry(2, **{PRIMARY: "BANK_FEES", DETAILED: "BANK_FEES_ATM_FEES"})

    outcomes = read(plaid_csv([transfer, atm_fee]))

    assert [type(outcome).__name__ for outcome in outcomes] == ["Skipped", "Skipped"]
    assert outcomes[0].reason == f"transfer out of the account ({DETAILED}: TRANSFER_OUT_ACCOUNT_TRANSFER), not a purchase"
    assert outcomes[1].reason == f"bank fee or interest charge ({PRIMARY}: BANK_FEES), not a purchase"


@pytest.mark.parametrize("primary", sorted(PLAID_NOT_PURCHASES))
def test_detailed_alone_skipped_by_both(primary):
    detailed = f"{primary}_OTHER_{primary}"

    from_csv, from_json = both(entry(**{PRIMARY: "", DETAILED: detailed}))

    assert isinstance(from_csv, Skipped), from_csv
    assert isinstance(from_json, Skipped), from_json
    assert from_csv.transaction_id == from_json.transaction_id == "tx-1"
    assert from_csv.reason == f"{PLAID_NOT_PURCHASES[primary]} ({DETAILED}: {detailed}), not a purchase"
    assert from_json.reason == f"{PLAID_NOT_PURCHASES[primary]} ({detailed}), not a purchase"


@pytest.mark.parametrize("primary", [None, "missing"])
def test_json_primary_null_or_missing(primary):
    plaid = entry(**{DETAILED: "TRANSFER_OUT_ACCOUNT_TRANSFER"})
    if primary is None:
        plaid["personal_finance_category"]["primary"] = None
    else:
        del plaid["personal_finance_category"]["primary"]

    [outcome] = read(plaid_json([plaid]))

    assert isinstance(outcome, Skipped), outcome
    assert outcome.reason == "transfer out of the account (TRANSFER_OUT_ACCOUNT_TRANSFER), not a purchase"


@pytest.mark.parametrize("detailed", [
    "FOOD_AND_DRINK_COFFEE",
    "TRANSFER_INTERNATIONAL",  # starts with TRANSFER_IN, but not with TRANSFER_IN_
    "GENERAL_SERVICES_BANK_FEES_OTHER",  # names a skipped category, but does not start with it
    "",
])
def test_purchase_detailed_published_by_both(detailed):
    from_csv, from_json = both(entry(**{PRIMARY: "", DETAILED: detailed}))

    assert isinstance(from_csv, Row), from_csv
    assert isinstance(from_json, Row), from_json


def test_primary_reason_comes_first():
    from_csv, from_json = both(entry(**{PRIMARY: "INCOME", DETAILED: "INCOME_WAGES"}))

    assert from_csv.reason == f"income ({PRIMARY}: INCOME), not a purchase"
    assert from_json.reason == "income (INCOME), not a purchase"


def test_json_primary_not_text():
    plaid = entry(**{DETAILED: "FOOD_AND_DRINK_COFFEE"})
    plaid["personal_finance_category"]["primary"] = ["TRANSFER_OUT"]

    [outcome] = read(plaid_json([plaid]))

    assert isinstance(outcome, Row), outcome


def test_csv_without_detailed_column():
    columns = [column for column in COLUMNS if column != DETAILED]

    [outcome] = read(plaid_csv([entry(**{PRIMARY: "", DETAILED: "TRANSFER_OUT_ACCOUNT_TRANSFER"})], columns))

    assert isinstance(outcome, Row), outcome


# BANK_FEES


@pytest.mark.parametrize("detailed", [
    "BANK_FEES_ATM_FEES", "BANK_FEES_FOREIGN_TRANSACTION_FEES", "BANK_FEES_INSUFFICIENT_FUNDS",
    "BANK_FEES_INTEREST_CHARGE", "BANK_FEES_OVERDRAFT_FEES", "BANK_FEES_OTHER_BANK_FEES",
])
def test_bank_fees_skipped_by_both(detailed):
    with_primary = both(entry(**{PRIMARY: "BANK_FEES", DETAILED: detailed}))
    without_primary = both(entry(**{PRIMARY: "", DETAILED: detailed}))

    for outcome in (*with_primary, *without_primary):
        assert isinstance(outcome, Skipped), outcome
        assert outcome.reason.startswith("bank fee or interest charge (")


def test_prefixes_follow_categories():
    assert PLAID_NOT_PURCHASE_PREFIXES == {f"{primary}_": reason for primary, reason in PLAID_NOT_PURCHASES.items()}
    assert "BANK_FEES" in PLAID_NOT_PURCHASES
    assert PLAID_CSV.optional_skip_prefixes == {DETAILED: PLAID_NOT_PURCHASE_PREFIXES}


@one_server
def test_publish_skips_trial_rows(keys, cli_env, tmp_path):
    source = tmp_path / "plaid.csv"
    source.write_bytes(plaid_csv([
        entry(1, **{PRIMARY: "", DETAILED: "TRANSFER_OUT_ACCOUNT_TRANSFER"}),
        entry(2, **{PRIMARY: "BANK_FEES", DETAILED: "BANK_FEES_ATM_FEES"}),
        entry(3),
    ]))

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    client = redis.Redis.from_url(cli_env["REDIS_URL"], decode_responses=True)
    try:
        published = [fields["data"] for _, fields in client.xrange(keys.transactions)]
    finally:
        client.close()
    assert len(published) == 1
    assert '"tx-3"' in published[0]


# optional_skip_prefixes in layout files

LAYOUT = """\
name: firstbank
columns:
  transaction_id: "firstbank-{#line}"
  merchant: Payee
  amount_usd: Value
  timestamp: Booked
constants: {user_id: me}
optional_skip_prefixes:
  Kind: {"transfer_": transfer between accounts}
"""


def read_csv(layout: Layout, text: str) -> list:
    return list(CsvReader(io.BytesIO(text.encode()), layout=layout))


def test_layout_file_prefix_skips(tmp_path):
    path = tmp_path / "firstbank.yaml"
    path.write_text(LAYOUT)
    layout = load_layout(path)

    outcomes = read_csv(layout, "Payee,Value,Booked,Kind\n"
                                "Cafe,4.50,2026-01-02,PURCHASE_CARD\n"
                                "Savings,100,2026-01-03,TRANSFER_TO_SAVINGS\n"
                                "Shop,12,2026-01-04,\n")

    assert [type(outcome).__name__ for outcome in outcomes] == ["Row", "Skipped", "Row"]
    assert outcomes[1].reason == "transfer between accounts (Kind: TRANSFER_TO_SAVINGS), not a purchase"


def test_layout_prefix_column_optional(tmp_path):
    path = tmp_path / "firstbank.yaml"
    path.write_text(LAYOUT)
    layout = load_layout(path)

    outcomes = read_csv(layout, "Payee,Value,Booked\nSavings,100,2026-01-03\n")
    bound = layout.bind(["Payee", "Value", "Booked", "Kind"])

    assert [type(outcome).__name__ for outcome in outcomes] == ["Row"]
    assert bound.extra_columns == []


@pytest.mark.parametrize("rule, message", [
    ("optional_skip_prefixes: {Kind: {'': everything}}\n", "optional_skip_prefixes.Kind: the prefix '' would skip"),
    ("optional_skip_prefixes: {'{Kind}': {X_: x}}\n", "optional_skip_prefixes: '{Kind}' is not a column name"),
    ("optional_skip_prefixes: {Kind: X_}\n", "optional_skip_prefixes.Kind"),
])
def test_invalid_prefix_rule_rejected(tmp_path, rule, message):
    path = tmp_path / "bad.yaml"
    path.write_text(LAYOUT.split("optional_skip_prefixes:")[0] + rule)

    with pytest.raises(InputError, match=re.escape(message)):
        load_layout(path)

"""Presets for the CSV exports of US card issuers, banks and aggregators.

Each preset is a ``Layout``, the same column mapping a user can write in a
file. Bank exports name no user, so ``user_id`` is the constant
``DEFAULT_USER`` until ``--user`` replaces it (``Layout.with_user``). They
rarely carry an id either, so ``_row_id`` builds ``transaction_id`` from the
row's content, never from its line. A later download that adds rows above or
below the old ones gives the old rows the same ids, so publishing it again
skips them as duplicates.

Sign conventions and columns come from these sources:

* Chase, Capital One, Mint, Mercury, Schwab, BeanHub's Plaid CSV and the
  generic card layout: real exports published as test fixtures by
  LaunchPlatform/beanhub-extract, reubano/csv2ofx and cantino/reckon.
* American Express, Discover, Citi and Apple Card: the column names that
  open-source importers expect (no published sample was found), and for
  Citi the Firefly III import configuration ``us/citi/default.json``.

None of these exports carries an MCC, so ``mcc`` stays empty and the
engine places the purchase by the issuer's category text, with the lower
confidence it gives to a category found from text.
"""

from __future__ import annotations

from producer.layouts import Layout
from producer.values import US_DATE_FORMATS

DEFAULT_USER = "me"

PAYMENT = "payment to the card"
REFUND = "return or refund"
PENDING = "pending, not final until it posts"


def _row_id(prefix: str) -> str:
    """Return the transaction_id template of a preset: ``<prefix>-<row hash>-<repeat count>``.

    The row hash (``row_digest``) covers the user_id and the raw row, so the
    same row in two users' files gets two ids. The repeat count is 0 for the
    first row with that text in the file and 1, 2, ... for each identical row
    after it, so two identical purchases on one day stay apart. Every id ends
    with the count, 0 included, so a preset's template is a plain template
    that a layout file can copy.
    """
    return prefix + "-{#row_hash}-{#repeat}"


CHASE = Layout(
    name="chase",
    columns={
        "transaction_id": _row_id("chase"),
        "merchant": "Description",
        "category": "Category",
        "amount_usd": "Amount",
        "timestamp": "Transaction Date",
    },
    constants={"user_id": DEFAULT_USER, "card_used": "chase"},
    purchases="negative",
    timestamp_formats=US_DATE_FORMATS,
    skip_values={"Type": {"Payment": PAYMENT, "Return": REFUND, "Adjustment": "adjustment", "Fee": "card fee"}},
    expected_header="Transaction Date,Post Date,Description,Category,Type,Amount,Memo".split(","),
)

AMEX = Layout(
    name="amex",
    columns={
        "transaction_id": _row_id("amex"),
        "merchant": "Description",
        "amount_usd": "Amount",
        "timestamp": "Date",
        "card_used": "amex {Account #} {Card Member}",
    },
    optional={"category": "Category"},
    constants={"user_id": DEFAULT_USER},
    purchases="positive",
    timestamp_formats=US_DATE_FORMATS,
    expected_header="Date,Description,Card Member,Account #,Amount".split(","),
)

# The short Amex download: the CSV saved with "include additional transaction
# details" unticked. Charges are positive and payments and credits negative,
# and the date may carry the weekday ("06/01/2019  Sat"). Sources: the README
# and convert-amex-to-ynab.py of dmuth/export-amex-to-ynab read a header, then
# date, description and amount, and flip the sign because charges are positive.
# The README of jmcameron/amex2qif lists Date, Description, Amount as the first
# columns of the 2022 download. No published sample file was found.
# A three-column header is common (Wells Fargo writes Date,Amount,Description),
# so this preset is detected only from this exact header in this order.
AMEX_SHORT = Layout(
    name="amex-short",
    columns={
        "transaction_id": _row_id("amex"),
        "merchant": "Description",
        "amount_usd": "Amount",
        "timestamp": "Date",
    },
    constants={"user_id": DEFAULT_USER, "card_used": "amex"},
    purchases="positive",
    timestamp_formats=(*US_DATE_FORMATS, "%m/%d/%Y %a"),
    expected_header=["Date", "Description", "Amount"],
    exact_header=True,
)

DISCOVER = Layout(
    name="discover",
    columns={
        "transaction_id": _row_id("discover"),
        "merchant": "Description",
        "category": "Category",
        "amount_usd": "Amount",
        "timestamp": "Trans. Date",
    },
    constants={"user_id": DEFAULT_USER, "card_used": "discover"},
    purchases="positive",
    timestamp_formats=US_DATE_FORMATS,
    expected_header="Trans. Date,Post Date,Description,Amount,Category".split(","),
)

CITI = Layout(
    name="citi",
    columns={
        "transaction_id": _row_id("citi"),
        "merchant": "Description",
        "timestamp": "Date",
    },
    optional={"card_used": "citi {Member Name}"},
    constants={"user_id": DEFAULT_USER, "card_used": "citi"},
    debit_column="Debit",
    credit_column="Credit",
    timestamp_formats=US_DATE_FORMATS,
    skip_values={"Status": {"Pending": PENDING}},
    expected_header="Status,Date,Description,Debit,Credit".split(","),
)

APPLE_CARD = Layout(
    name="apple-card",
    columns={
        "transaction_id": _row_id("apple-card"),
        "merchant": "Merchant",
        "category": "Category",
        "amount_usd": "Amount (USD)",
        "timestamp": "Transaction Date",
    },
    optional={"card_used": "apple card {Purchased By}"},
    constants={"user_id": DEFAULT_USER, "card_used": "apple card"},
    purchases="positive",
    timestamp_formats=US_DATE_FORMATS,
    skip_values={"Type": {"Payment": PAYMENT, "Credit": REFUND, "Interest": "interest charge"}},
    expected_header=(
        "Transaction Date,Clearing Date,Description,Merchant,Category,Type,Amount (USD)"
    ).split(","),
)

CAPITAL_ONE = Layout(
    name="capital-one",
    columns={
        "transaction_id": _row_id("capital-one"),
        "merchant": "Description",
        "category": "Category",
        "timestamp": "Transaction Date",
        "card_used": "capital one ...{Card No.}",
    },
    constants={"user_id": DEFAULT_USER},
    debit_column="Debit",
    credit_column="Credit",
    expected_header="Transaction Date,Posted Date,Card No.,Description,Category,Debit,Credit".split(","),
)

# Mint writes every amount positive and the direction in "Transaction Type".
MINT = Layout(
    name="mint",
    columns={
        "transaction_id": _row_id("mint"),
        "merchant": "Description",
        "category": "Category",
        "amount_usd": "Amount",
        "timestamp": "Date",
        "card_used": "Account Name",
    },
    constants={"user_id": DEFAULT_USER},
    purchases="positive",
    timestamp_formats=("%m/%d/%Y", "%m/%d/%y", "iso"),
    skip_values={
        "Transaction Type": {"credit": "credit to the account"},
        "Category": {"Transfer": "transfer between accounts", "Credit Card Payment": PAYMENT},
        "Original Description": {"Account Transfer": "transfer between accounts"},
    },
    expected_header=(
        "Date,Description,Original Description,Amount,Transaction Type,Category,Account Name,Labels,Notes"
    ).split(","),
)

# Mercury writes money out negative and the time in UTC ("Date (UTC)").
# NOTE: "Original Currency" sets currency, so a non-USD row is converted with
# --fx-rates or rejected. Whether Mercury's Amount is already in USD for such a
# row is not verified against a real export; if it is, the conversion is wrong.
MERCURY = Layout(
    name="mercury",
    columns={
        "transaction_id": _row_id("mercury"),
        "merchant": "Description",
        "category": "Category",
        "amount_usd": "Amount",
        "timestamp": "Timestamp",
        "card_used": "{Source Account} {Last Four Digits}",
    },
    optional={"currency": "Original Currency"},
    constants={"user_id": DEFAULT_USER},
    purchases="negative",
    timestamp_formats=("%m-%d-%Y %H:%M:%S", "%m-%d-%Y"),
    skip_values={
        "Status": {"Failed": "failed transaction", "Pending": PENDING},
        # Card rows name the card's last four digits. A row without them was paid
        # from a Mercury bank account: an ACH debit, a wire or a Send Money payment.
        "Last Four Digits": {"": "paid from a bank account, not with a card"},
    },
    expected_header=(
        "Date (UTC),Description,Amount,Status,Source Account,Bank Description,Reference,Note,"
        "Last Four Digits,Name On Card,Category,GL Code,Timestamp,Original Currency"
    ).split(","),
)

# A checking account: cash, checks, deposits and transfers are not card purchases.
SCHWAB_CHECKING = Layout(
    name="schwab-checking",
    columns={
        "transaction_id": _row_id("schwab"),
        "merchant": "Description",
        "timestamp": "Date",
    },
    constants={"user_id": DEFAULT_USER, "card_used": "schwab checking"},
    debit_column="Withdrawal",
    credit_column="Deposit",
    timestamp_formats=US_DATE_FORMATS,
    skip_values={
        "Type": {
            "ATM": "cash withdrawal at an ATM",
            "CHECK": "check",
            "DEPOSIT": "deposit",
            "ACH": "bank transfer (ACH)",
            "TRANSFER": "transfer between accounts",
        },
        "Status": {"Pending": PENDING},
    },
    expected_header="Date,Status,Type,CheckNumber,Description,Withdrawal,Deposit,RunningBalance".split(","),
)

# The fields of a Plaid Transaction object that give the merchant and the time
# of a purchase, most preferred first. The Plaid JSON reader (producer/plaid.py)
# and the plaid-csv preset both read them in this order. Field meanings, from
# the plaid Ruby gem's reference (rubydoc.info/gems/plaid, Plaid::Transaction)
# and the Rust plaid crate 9.0.1 (src/model/transaction.rs), both generated
# from Plaid's OpenAPI spec:
# * date is the day a posted transaction posted, and the day a pending one
#   happened. authorized_date is the day the institution authorized it, which
#   Plaid's reference describes as generally the day the user made the purchase.
#   authorized_datetime and datetime are the same two with a time of day, set
#   only when the institution gives one.
# * name is the institution's description of the transaction. merchant_name is
#   the merchant name that Plaid derives from it (the plaid gem 26.0.0 reference,
#   on BaseReportTransaction). It is null where no merchant applies, such as a
#   check or a transfer (MoneyKit's reference for its Plaid-compatible
#   Transaction), and BeanHub's CSV then leaves the column empty.
PLAID_MERCHANT_FIELDS = ("merchant_name", "name")
PLAID_TIME_FIELDS = ("authorized_datetime", "datetime", "authorized_date", "date")
# The keys of personal_finance_category that give the category text, most specific first.
PLAID_CATEGORY_FIELDS = ("detailed", "primary")

# personal_finance_category.primary values of entries that are no purchase from
# a merchant, each with the reason recorded for a skipped entry. Both Plaid
# readers skip these entries.
# Every detailed category starts with its primary category's name and "_", such
# as TRANSFER_OUT_ACCOUNT_TRANSFER under TRANSFER_OUT, so both readers also skip
# an entry whose detailed category starts with one of these and "_". That covers
# an entry whose primary is empty. Source: Plaid's taxonomy CSV
# (plaid.com/documents/transactions-personal-finance-category-taxonomy.csv, linked
# from the plaid gem 38.0.0 reference for Plaid::PersonalFinanceCategory), as
# copied row for row in public code.
# BANK_FEES is here because its detailed categories in that taxonomy are ATM,
# foreign transaction, insufficient funds, overdraft and other bank fees, and
# interest charges. Each is a charge by the bank or card issuer, not a purchase
# from a merchant, so there is no card to recommend for it.
PLAID_NOT_PURCHASES = {
    "LOAN_PAYMENTS": "loan or card payment",
    "TRANSFER_IN": "transfer into the account",
    "TRANSFER_OUT": "transfer out of the account",
    "INCOME": "income",
    "BANK_FEES": "bank fee or interest charge",
}
# The detailed-category prefixes of PLAID_NOT_PURCHASES, with the same reasons.
PLAID_NOT_PURCHASE_PREFIXES = {f"{primary}_": reason for primary, reason in PLAID_NOT_PURCHASES.items()}

# The reason both Plaid readers give for rejecting an entry with an
# unofficial_currency_code, which Plaid sets for currencies without an ISO 4217
# code, such as cryptocurrencies.
PLAID_UNOFFICIAL_CURRENCY = "the amount is in an unofficial currency, which has no ISO 4217 code"

# Plaid transactions as BeanHub flattens them to CSV: nested keys joined with "__".
# Plaid writes money out as a positive amount. The last of the merchant, time and
# category fields is the column the field is read from, and the ones before it
# are read first when the file has them and the row's value is not empty. The
# category, personal_finance_category__primary and unofficial_currency_code
# columns are optional, so a file without them is still read.
# NOTE: a row that has both iso_currency_code and unofficial_currency_code is
# rejected here, while the Plaid JSON reader takes the ISO code. Plaid's OpenAPI
# spec says the two are never set together (as the plaid-openapi 0.1.0 crate
# documents it for TransactionStreamAmount), so real exports should not differ.
PLAID_CSV = Layout(
    name="plaid-csv",
    columns={
        "transaction_id": "transaction_id",
        "merchant": PLAID_MERCHANT_FIELDS[-1],
        "amount_usd": "amount",
        "timestamp": PLAID_TIME_FIELDS[-1],
        "card_used": "plaid account {account_id}",
    },
    optional={
        "category": f"personal_finance_category__{PLAID_CATEGORY_FIELDS[-1]}",
        "currency": "iso_currency_code",
    },
    preferred={
        "merchant": PLAID_MERCHANT_FIELDS[:-1],
        "timestamp": PLAID_TIME_FIELDS[:-1],
        "category": tuple(f"personal_finance_category__{key}" for key in PLAID_CATEGORY_FIELDS[:-1]),
    },
    constants={"user_id": DEFAULT_USER},
    purchases="positive",
    skip_values={"pending": {"True": PENDING}},
    optional_skip_values={"personal_finance_category__primary": PLAID_NOT_PURCHASES},
    optional_skip_prefixes={"personal_finance_category__detailed": PLAID_NOT_PURCHASE_PREFIXES},
    optional_reject_when_present={"unofficial_currency_code": PLAID_UNOFFICIAL_CURRENCY},
    expected_header="date,name,amount,pending,account_id,transaction_id,iso_currency_code".split(","),
)

# A card export from an unnamed US issuer: charges positive, like Amex and Discover.
# NOTE: the sign convention is assumed from one sample; a file that writes
# purchases negative needs a layout file with purchases: negative.
GENERIC_CARD = Layout(
    name="generic-card",
    columns={
        "transaction_id": _row_id("card"),
        "merchant": "Description",
        "category": "Category",
        "amount_usd": "Amount",
        "timestamp": "Transaction Date",
    },
    constants={"user_id": DEFAULT_USER},
    purchases="positive",
    timestamp_formats=US_DATE_FORMATS,
    expected_header="Transaction Date,Description,Amount,Category".split(","),
)

BANK_LAYOUTS = (
    CHASE, AMEX, AMEX_SHORT, DISCOVER, CITI, APPLE_CARD, CAPITAL_ONE, MINT, MERCURY,
    SCHWAB_CHECKING, PLAID_CSV, GENERIC_CARD,
)

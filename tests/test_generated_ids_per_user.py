"""Generated transaction_ids include the user_id, so two users' copies of one row never collide.

Bank presets, layout files with ``{#row_hash}`` and OFX statements build ids
from the entry's content. The same file read for two users must give two sets
of ids, and read twice for one user the same ids, so a re-publish is still
caught as a duplicate. Ids that the input gives stay as they are.
"""

from __future__ import annotations

import io
import json

import pytest

from conftest import SHARED_DATA, invoke_cli, one_server, run_cli
from producer import InputError, Rejected, Row, Skipped, load_layout, read_transactions
from rewardpilot.fx import CurrencyConverter
from producer.layouts import row_digest
from rewardpilot.models import MAX_ID_LENGTH

needs_samples = pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared sample data is not available")

CHASE_CSV = (
    "Transaction Date,Post Date,Description,Category,Type,Amount,Memo\n"
    "04/09/2024,04/09/2024,AUTOMATIC PAYMENT - THANK,,Payment,123.45,\n"
    "04/03/2024,04/05/2024,APPLE.COM/BILL,Shopping,Sale,-1.23,\n"
    "04/02/2024,04/03/2024,COSTCO WHSE #01234,Shopping,Sale,-4.56,\n"
)
# The readers are under test, so amounts in other currencies are kept as read.
KEEP_CURRENCY = CurrencyConverter(unconverted="keep")


def ofx_statement(entries: list[str], account: str = "4111000011119876") -> bytes:
    """Build an OFX 1.x credit-card statement whose STMTTRN bodies are ``entries``."""
    transactions = "".join(f"<STMTTRN>{entry}</STMTTRN>\n" for entry in entries)
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:USASCII\nCHARSET:1252\n\n"
        f"<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>USD<CCACCTFROM><ACCTID>{account}</CCACCTFROM>"
        f"<BANKTRANLIST>\n{transactions}</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>\n"
    ).encode()


def purchase(fitid: str | None, name: str = "CAFE") -> str:
    fitid_tag = f"<FITID>{fitid}" if fitid is not None else ""
    return f"<TRNTYPE>DEBIT<DTPOSTED>20240501<TRNAMT>-12.34{fitid_tag}<NAME>{name}"


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), converter=KEEP_CURRENCY, **options))


def outcome_ids(outcomes: list) -> list[str | None]:
    """Return the transaction_id of every published or skipped outcome, in file order."""
    ids = []
    for outcome in outcomes:
        if isinstance(outcome, Row):
            ids.append(outcome.transaction.transaction_id)
        elif isinstance(outcome, Skipped):
            ids.append(outcome.transaction_id)
    return ids


# Hashing the user_id.

def test_row_digest_depends_on_user():
    assert row_digest("alice", "row") != row_digest("bob", "row")
    assert row_digest("alice", "row") == row_digest("alice", "row")
    assert len(row_digest("alice", "row")) == 16


def test_row_digest_parts_not_joined():
    """Each part is hashed after its length, so text moved from the user_id to the row changes the digest."""
    assert row_digest("ab", "c") != row_digest("a", "bc")
    assert row_digest("a", "b", "c") != row_digest("a", "bc")


# CSV bank presets.

def test_chase_ids_differ_per_user():
    alice = outcome_ids(read(CHASE_CSV.encode(), user="alice"))
    bob = outcome_ids(read(CHASE_CSV.encode(), user="bob"))

    assert len(alice) == 3
    assert all(transaction_id.startswith("chase-") for transaction_id in alice)
    assert set(alice).isdisjoint(bob)


def test_chase_ids_stable_for_one_user():
    first = outcome_ids(read(CHASE_CSV.encode(), user="alice"))
    again = outcome_ids(read(CHASE_CSV.encode(), user="alice"))

    assert first == again


def test_chase_id_format():
    rows = [outcome for outcome in read(CHASE_CSV.encode(), user="alice") if isinstance(outcome, Row)]
    raw = CHASE_CSV.splitlines()[2]

    assert rows[0].line == 3
    assert rows[0].transaction.transaction_id == f"chase-{row_digest('alice', raw)}-0"


def test_default_user_is_me():
    """Without --user the rows belong to ``me``, so their ids are those of ``--user me``."""
    unnamed = outcome_ids(read(CHASE_CSV.encode()))
    named = outcome_ids(read(CHASE_CSV.encode(), user="me"))

    assert unnamed == named


@needs_samples
@pytest.mark.parametrize(
    "relative",
    [
        "beanhub-extract/chase_credit_card.csv",
        "beanhub-extract/mercury.csv",
        "csv2ofx/capitalone.csv",
        "csv2ofx/mint.csv",
        "csv2ofx/schwab-checking.csv",
        "ofxparse/checking.ofx",
        "ofxparse/anzcc.ofx",
    ],
)
def test_sample_ids_per_user(relative):
    path = SHARED_DATA / relative
    alice = outcome_ids(list(read_transactions(path, user="alice", converter=KEEP_CURRENCY)))
    bob = outcome_ids(list(read_transactions(path, user="bob", converter=KEEP_CURRENCY)))
    alice_again = outcome_ids(list(read_transactions(path, user="alice", converter=KEEP_CURRENCY)))

    assert alice, f"{relative} gave no rows"
    assert set(alice).isdisjoint(bob)
    assert alice == alice_again


# Layout files.

def write_layout(tmp_path, text: str):
    path = tmp_path / "layout.yaml"
    path.write_text(text, encoding="utf-8")
    return path


FIRSTBANK = (
    "name: firstbank\n"
    "columns:\n"
    "  transaction_id: 'firstbank-{#line}-{#row_hash}'\n"
    "  merchant: Payee\n"
    "  amount_usd: Value\n"
    "  timestamp: Booked\n"
    "constants: {user_id: me}\n"
)
FIRSTBANK_CSV = b"Booked,Payee,Value\n2024-05-01,Corner Cafe,4.50\n"


def test_layout_row_hash_per_user(tmp_path):
    layout = load_layout(write_layout(tmp_path, FIRSTBANK))

    alice = outcome_ids(read(FIRSTBANK_CSV, layout=layout, user="alice"))
    bob = outcome_ids(read(FIRSTBANK_CSV, layout=layout, user="bob"))
    constant = outcome_ids(read(FIRSTBANK_CSV, layout=layout))

    assert alice == [f"firstbank-2-{row_digest('alice', '2024-05-01,Corner Cafe,4.50')}"]
    assert bob == [f"firstbank-2-{row_digest('bob', '2024-05-01,Corner Cafe,4.50')}"]
    assert constant == [f"firstbank-2-{row_digest('me', '2024-05-01,Corner Cafe,4.50')}"]


def test_layout_row_hash_user_column(tmp_path):
    """A layout that reads user_id from a column hashes that column's value with the row."""
    layout = load_layout(write_layout(tmp_path, FIRSTBANK.replace("constants: {user_id: me}\n", "  user_id: Owner\n")))
    data = b"Booked,Payee,Value,Owner\n2024-05-01,Corner Cafe,4.50, carol \n"

    rows = [outcome for outcome in read(data, layout=layout) if isinstance(outcome, Row)]

    assert rows[0].transaction.user_id == "carol"
    assert rows[0].transaction.transaction_id == f"firstbank-2-{row_digest('carol', '2024-05-01,Corner Cafe,4.50, carol ')}"


def test_layout_user_from_row_hash_rejected(tmp_path):
    text = FIRSTBANK.replace("constants: {user_id: me}\n", "  user_id: 'user-{#row_hash}'\n")

    with pytest.raises(InputError) as raised:
        load_layout(write_layout(tmp_path, text))

    assert "columns.user_id cannot use {#row_hash}" in str(raised.value)
    assert "layout.yaml" in str(raised.value)


def test_given_transaction_id_unchanged():
    data = (
        b"transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"
        b"t-1,u-1,Shop,groceries,5.00,5411,2024-05-01T00:00:00Z\n"
    )

    assert outcome_ids(read(data)) == ["t-1"]
    assert outcome_ids(read(data, user="someone")) == ["t-1"]


def test_jsonl_transaction_id_unchanged():
    line = b'{"transaction_id": "j-1", "user_id": "u-1", "merchant": "Shop", "amount_usd": 5, "timestamp": "2024-05-01"}\n'

    assert outcome_ids(read(line)) == ["j-1"]


def test_plaid_transaction_id_unchanged():
    document = {
        "added": [{"transaction_id": "plaid-tx-1", "account_id": "acc", "amount": 7.5, "date": "2024-05-01",
                   "name": "Shop", "pending": False}],
    }
    data = json.dumps(document).encode()

    assert outcome_ids(read(data, user="alice")) == ["plaid-tx-1"]
    assert outcome_ids(read(data, user="bob")) == ["plaid-tx-1"]


# OFX statements.

def test_ofx_ids_differ_per_user():
    data = ofx_statement([purchase("A1"), purchase("A2")])

    alice = outcome_ids(read(data, user="alice"))
    bob = outcome_ids(read(data, user="bob"))
    unnamed = outcome_ids(read(data))

    assert alice == [f"ofx-9876-A{index}-{row_digest('alice', '4111000011119876', f'A{index}')}" for index in (1, 2)]
    assert set(alice).isdisjoint(bob)
    assert set(unnamed).isdisjoint(alice)
    assert unnamed == outcome_ids(read(data, user="me"))


def test_ofx_ids_stable_for_one_user():
    data = ofx_statement([purchase("A1"), purchase(None)])

    assert outcome_ids(read(data, user="alice")) == outcome_ids(read(data, user="alice"))


def test_ofx_accounts_same_last_four():
    first = outcome_ids(read(ofx_statement([purchase("A1")], account="4111000011119876")))
    second = outcome_ids(read(ofx_statement([purchase("A1")], account="5500000000009876")))

    assert first[0].startswith("ofx-9876-A1-")
    assert second[0].startswith("ofx-9876-A1-")
    assert first != second


def test_ofx_without_fitid_per_user():
    data = ofx_statement([purchase(None)])

    alice = outcome_ids(read(data, user="alice"))
    bob = outcome_ids(read(data, user="bob"))

    assert alice[0].startswith("ofx-9876-")
    assert alice[0].endswith("-0")
    assert alice != bob


def test_ofx_long_fitid_fits_limit():
    fitid = "F" * 200
    rows = [outcome for outcome in read(ofx_statement([purchase(fitid)]), user="alice") if isinstance(outcome, Row)]

    transaction_id = rows[0].transaction.transaction_id
    assert len(transaction_id) <= MAX_ID_LENGTH
    assert transaction_id == f"ofx-9876-{row_digest('alice', '4111000011119876', fitid)}"


def test_ofx_repeated_fitid_still_duplicate():
    outcomes = read(ofx_statement([purchase("A1"), purchase("A1", name="AGAIN")]), user="alice")

    assert [type(outcome) for outcome in outcomes] == [Row, Rejected]
    assert "already used by line 8" in outcomes[1].error.message


# Publishing to Redis through the CLI.

def publish_json(cli_env, keys, path, *extra: str, input: str | None = None) -> dict:
    """Run ``rewardpilot publish --json`` and return its summary."""
    # "-" reads stdin, which only a child process gets as a pipe.
    run = run_cli if str(path) == "-" else invoke_cli
    completed = run(
        ["--prefix", keys.prefix, "publish", str(path), "--json", "--rejects", str(path) + ".rejects.jsonl", *extra],
        cli_env, input=input,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


@one_server
def test_cli_two_users_same_chase_file(cli_env, keys, tmp_path):
    alice_file = tmp_path / "alice_chase.csv"
    bob_file = tmp_path / "bob_chase.csv"
    alice_file.write_text(CHASE_CSV)
    bob_file.write_text(CHASE_CSV)

    alice = publish_json(cli_env, keys, alice_file, "--user", "alice")
    bob = publish_json(cli_env, keys, bob_file, "--user", "bob")
    bob_again = publish_json(cli_env, keys, bob_file, "--user", "bob")

    assert alice["published"] == 2
    assert bob["published"] == 2
    assert bob["duplicates"] == 0
    assert bob_again["published"] == 0
    assert bob_again["duplicates"] == 2


@one_server
def test_cli_ofx_stdin_default_user(cli_env, keys, tmp_path):
    """An OFX file published for one user, then piped in for the default user, is published again."""
    statement = tmp_path / "checking.ofx"
    statement.write_bytes(ofx_statement([purchase("A1")]))

    named = publish_json(cli_env, keys, statement, "--user", "plaiduser")
    piped = publish_json(cli_env, keys, "-", input=statement.read_text())
    piped_again = publish_json(cli_env, keys, "-", input=statement.read_text())

    assert named["published"] == 1
    assert piped["published"] == 1
    assert piped["duplicates"] == 0
    assert piped_again["duplicates"] == 1

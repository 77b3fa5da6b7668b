"""``--layout NAME`` reads a file with the preset of that name when no file has that path."""

from __future__ import annotations

import io
import json

import pytest

from conftest import invoke_cli, one_server
from producer import InputError, Row, Skipped, load_layout, read_transactions
from producer.bank_layouts import AMEX_SHORT, CHASE
from producer.layouts import DOCUMENTED, PRESETS, TABFORMER, detect_layout

CHASE_ROWS = (
    "04/03/2024,04/05/2024,APPLE.COM/BILL,Shopping,Sale,-1.23,\n"
    "04/02/2024,04/03/2024,COSTCO WHSE #01234,Shopping,Sale,-4.56,\n"
)
CHASE_CSV = "Transaction Date,Post Date,Description,Category,Type,Amount,Memo\n" + CHASE_ROWS


def read(data: bytes, **options) -> list:
    return list(read_transactions(io.BytesIO(data), **options))


@pytest.mark.parametrize("layout", PRESETS, ids=lambda layout: layout.name)
def test_every_preset_loads_by_name(layout, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of the preset's name here

    assert load_layout(layout.name) is layout


@pytest.mark.parametrize("name", ["CHASE", "Chase", " chase "])
def test_preset_name_ignores_case(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert load_layout(name) is CHASE


def test_file_wins_over_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chase").write_text(
        "name: my-chase\ncolumns: {transaction_id: Id, user_id: Who, merchant: Shop, amount_usd: Amount, timestamp: When}\n",
        encoding="utf-8",
    )

    layout = load_layout("chase")

    assert layout.name == "my-chase"


def test_unknown_name_lists_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(InputError) as raised:
        load_layout("chse")

    message = str(raised.value)
    assert "layout 'chse' is not found" in message
    assert "Did you mean the preset 'chase'?" in message
    for layout in PRESETS:
        assert layout.name in message


def test_missing_file_path_names_it(tmp_path):
    missing = tmp_path / "layouts" / "firstbank.yaml"

    with pytest.raises(InputError) as raised:
        load_layout(missing)

    message = str(raised.value)
    assert repr(str(missing)) in message
    assert "no file has that path" in message
    assert "Did you mean" not in message


def test_overlong_name_is_input_error(tmp_path, monkeypatch):
    """A value longer than the file system allows in a name is reported as not found, not as an OSError."""
    monkeypatch.chdir(tmp_path)

    with pytest.raises(InputError, match="is not found"):
        load_layout("x" * 5000)


def test_bad_layout_file_still_invalid(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ncolumns: {merchant: Shop}\n", encoding="utf-8")

    with pytest.raises(InputError, match="is invalid"):
        load_layout(path)


def test_preset_replaces_detection():
    """amex-short is detected only from its exact header, but by name it reads a header with extra columns."""
    data = b"Date,Description,Amount,Balance\n05/01/2024,CAFE,4.50,100.00\n"

    outcomes = read(data, layout=load_layout("amex-short"))

    assert [type(outcome) for outcome in outcomes] == [Row]
    assert outcomes[0].transaction.merchant == "CAFE"
    assert outcomes[0].transaction.card_used == "amex"
    with pytest.raises(InputError):
        detect_layout(["Date", "Description", "Amount", "Balance"])


def test_preset_by_name_with_user():
    outcomes = read(CHASE_CSV.encode(), layout=load_layout("chase"), user="alice")

    rows = [outcome for outcome in outcomes if isinstance(outcome, Row)]
    assert len(rows) == 2
    assert {row.transaction.user_id for row in rows} == {"alice"}


def test_preset_wrong_file_names_missing_columns():
    data = b"Date,Description,Amount\n05/01/2024,CAFE,4.50\n"

    with pytest.raises(InputError) as raised:
        read(data, layout=load_layout("chase"))

    message = str(raised.value)
    assert "of the chase layout" in message
    assert "'Transaction Date'" in message


def test_header_error_suggests_preset_name():
    with pytest.raises(InputError) as raised:
        detect_layout(["When", "Where", "How much"])

    assert "pass its name with --layout, such as --layout chase" in str(raised.value)


def test_documented_and_tabformer_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert load_layout("documented") is DOCUMENTED
    assert load_layout("tabformer") is TABFORMER
    assert load_layout("amex-short") is AMEX_SHORT


@one_server
def test_cli_publish_layout_preset(cli_env, keys, tmp_path):
    export = tmp_path / "statement.csv"
    export.write_text(CHASE_CSV)

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(export), "--layout", "chase", "--json"], cli_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout)
    assert summary["layout"] == "chase"
    assert summary["published"] == 2


@one_server
def test_cli_publish_unknown_layout(cli_env, keys, tmp_path):
    export = tmp_path / "statement.csv"
    export.write_text(CHASE_CSV)

    completed = invoke_cli(["--prefix", keys.prefix, "publish", str(export), "--layout", "chse", "--json"], cli_env)

    assert completed.returncode == 2
    error = json.loads(completed.stdout)["error"]
    assert "layout 'chse' is not found" in error
    assert "generic-card" in error


def test_skipped_rows_keep_preset_rules():
    """A Payment row is skipped by the chase preset given by name, as when it is detected."""
    data = (CHASE_CSV + "04/09/2024,04/09/2024,AUTOMATIC PAYMENT - THANK,,Payment,123.45,\n").encode()

    outcomes = read(data, layout=load_layout("chase"))

    assert [type(outcome) for outcome in outcomes] == [Row, Row, Skipped]

"""`report` with an invalid stored valuation: warn, use the default, and value rewards as the consumers did.

The overrides are written straight into the user's valuations hash, as a
value stored by an older version or by hand would be.

Wallet: Amex Gold (4x at U.S. supermarkets, Membership Rewards at 2.0 cents
by default) and Citi Double Cash. One $100.00 Kroger purchase with Gold earns
400 points: $8.00 at the default, $4.00 at a stored 1.0 cent.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from conftest import add_with_result, invoke_cli, one_server
from rewardpilot import wallets
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction
from rewardpilot.report import build_report
from rewardpilot.results import read_results

ENGINE = RulesEngine.default()
WALLET = ["amex-gold", "citi-double-cash"]
AMEX = "Amex Membership Rewards"
CITI = "Citi ThankYou Points"
KROGER = dict(merchant="KROGER #512", amount_usd="100.00", mcc="5411", timestamp="2026-11-03T15:00:00Z",
              card_used="amex-gold")


def store_purchase(client, keys) -> None:
    wallets.set_wallet(client, keys, "u1", WALLET, ENGINE.catalog)
    add_with_result(client, keys, Transaction(transaction_id="t1", user_id="u1", **KROGER), WALLET, ENGINE)


def november(client, keys):
    return build_report(client, keys, "u1", month="2026-11", today=date(2026, 11, 30))


def test_invalid_value_uses_default(sync_client, keys):
    store_purchase(sync_client, keys)
    sync_client.hset(keys.valuations("u1"), AMEX, "abc")

    report = november(sync_client, keys)

    assert report.total.earned == Decimal("8.00")
    assert report.total.best == Decimal("8.00")
    assert len(report.dropped_valuations) == 1
    dropped = report.dropped_valuations[0]
    assert dropped.user_id == "u1"
    assert dropped.program == AMEX
    assert dropped.stored_cents == "abc"
    assert "'abc'" in dropped.reason
    assert dropped.default_cents == Decimal("2.0")
    assert dropped.settable


def test_out_of_range_value_uses_default(sync_client, keys):
    store_purchase(sync_client, keys)
    sync_client.hset(keys.valuations("u1"), AMEX, "250")

    report = november(sync_client, keys)

    assert report.total.earned == Decimal("8.00")
    assert [dropped.stored_cents for dropped in report.dropped_valuations] == ["250"]


def test_valid_override_kept_beside_invalid(sync_client, keys):
    store_purchase(sync_client, keys)
    sync_client.hset(keys.valuations("u1"), mapping={AMEX: "1.0", CITI: "-3"})

    report = november(sync_client, keys)

    assert report.total.earned == Decimal("4.00")
    assert [dropped.program for dropped in report.dropped_valuations] == [CITI]
    assert report.dropped_valuations[0].stored_cents == "-3"


def test_unknown_program_dropped(sync_client, keys):
    store_purchase(sync_client, keys)
    sync_client.hset(keys.valuations("u1"), "No Such Program", "3")

    report = november(sync_client, keys)

    assert report.total.earned == Decimal("8.00")
    assert len(report.dropped_valuations) == 1
    assert report.dropped_valuations[0].default_cents is None
    assert not report.dropped_valuations[0].settable


def test_valid_overrides_not_dropped(sync_client, keys):
    store_purchase(sync_client, keys)
    sync_client.hset(keys.valuations("u1"), AMEX, "1.5")

    report = november(sync_client, keys)

    assert report.total.earned == Decimal("6.00")
    assert report.dropped_valuations == []


@one_server
def test_cli_warns_and_exits_zero(cli_env, keys, sync_client, tmp_path):
    """The consumer and the report both ignore the bad value, so the report's best matches the stored result."""
    source = tmp_path / "kroger.csv"
    source.write_text("transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp,card_used\n"
                      "k1,u1,KROGER #512,groceries,100.00,5411,2026-11-03T15:00:00Z,amex-gold\n")
    wallets.set_wallet(sync_client, keys, "u1", WALLET, ENGINE.catalog)
    sync_client.hset(keys.valuations("u1"), AMEX, "abc")

    published = invoke_cli(["--prefix", keys.prefix, "publish", str(source)], cli_env)
    consumed = invoke_cli(["--prefix", keys.prefix, "consume", "--drain", "--block-ms", "100"], cli_env)
    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11", "--json"], cli_env)

    assert published.returncode == 0, published.stderr[-2000:]
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    assert report["total"]["best"] == "8.00"
    assert report["total"]["earned"] == "8.00"
    [result] = list(read_results(sync_client, keys.results()))
    assert result.rewards.cash_value_usd == Decimal("8.00")

    warning = " ".join(completed.stderr.split())
    assert "warning: user 'u1'" in warning
    assert f"'{AMEX}'" in warning
    assert "'abc'" in warning
    assert "default, 2.0 cents per point" in warning
    assert f"valuations set u1 '{AMEX}' CENTS" in warning
    assert f"valuations unset u1 '{AMEX}'" in warning
    assert f"--prefix {keys.prefix}" in warning
    assert "Traceback" not in completed.stderr


@one_server
def test_cli_unknown_program_unset_only(cli_env, keys, sync_client):
    store_purchase(sync_client, keys)
    sync_client.hset(keys.valuations("u1"), "No Such Program", "3")

    completed = invoke_cli(["--prefix", keys.prefix, "report", "--user", "u1", "--month", "2026-11"], cli_env)

    assert completed.returncode == 0, completed.stderr[-2000:]
    warning = " ".join(completed.stderr.split())
    assert "'No Such Program'" in warning
    assert "'3'" in warning
    assert "valuations unset u1 'No Such Program'" in warning
    assert "valuations set" not in warning

"""A newest-first file is published oldest first, so caps are used up in purchase order; other disorder is reported."""

from __future__ import annotations

import json

from conftest import invoke_cli, one_server
from producer import Producer, publish_file
from rewardpilot.results import read_results
from rewardpilot.streams import StreamKeys

HEADER = "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp\n"


def write_rows(path, days: list[int], amount: str = "3000.00") -> None:
    """Write one Kroger purchase per day of 2026, in the order given; 305 is March 5."""
    lines = [HEADER]
    for day in days:
        lines.append(f"k{day},u1,Kroger,groceries,{amount},5411,2026-{day // 100:02d}-{day % 100:02d}T15:00:00Z\n")
    path.write_text("".join(lines))


def published_ids(client, keys) -> list[str]:
    return [json.loads(fields["data"])["transaction_id"] for _, fields in client.xrange(keys.transactions)]


def test_newest_first_published_oldest_first(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "export.csv"
    write_rows(source, [305, 220, 219, 110, 102])

    summary = publish_file(sync_client, keys, source, progress=False)

    assert summary.published == 5
    assert summary.oldest_first is True
    assert published_ids(sync_client, keys) == ["k102", "k110", "k219", "k220", "k305"]
    assert summary.out_of_order == 0
    assert any("published oldest first" in warning for warning in summary.warnings)


def test_oldest_first_file_unchanged(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "export.csv"
    write_rows(source, [102, 110, 220, 305])

    summary = publish_file(sync_client, keys, source, progress=False)

    assert summary.oldest_first is False
    assert published_ids(sync_client, keys) == ["k102", "k110", "k220", "k305"]
    assert summary.warnings == []


def test_mixed_order_reported(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "export.csv"
    write_rows(source, [102, 305, 110, 220, 310, 115])

    summary = publish_file(sync_client, keys, source, progress=False)

    assert summary.oldest_first is False
    assert published_ids(sync_client, keys) == ["k102", "k305", "k110", "k220", "k310", "k115"]
    assert summary.out_of_order == 3
    assert summary.first_out_of_order_line == 4
    assert any("3 row(s) are dated more than a day before a row published before them (first on line 4)" in warning
               for warning in summary.warnings)


def test_no_dedup_window_keeps_file_order(sync_client, keys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "export.csv"
    write_rows(source, [305, 220, 110])

    summary = publish_file(sync_client, keys, source, progress=False,
                           producer=Producer(sync_client, keys, dedup_window_seconds=0))

    assert summary.oldest_first is False
    assert published_ids(sync_client, keys) == ["k305", "k220", "k110"]
    assert summary.out_of_order == 2


@one_server
def test_run_newest_first_caps_in_purchase_order(keys, sync_client, cli_env, tmp_path):
    # Blue Cash Preferred: 6% at U.S. supermarkets on up to $6,000 a calendar year, then 1%
    # (https://www.americanexpress.com/us/credit-cards/card/blue-cash-preferred/). January and
    # February use the cap up, so March's $3,000 goes on Active Cash at 2%.
    source = tmp_path / "newest-first.csv"
    write_rows(source, [305, 205, 105])
    assert invoke_cli(["--prefix", keys.prefix, "wallet", "set", "u1", "bcp", "wells-fargo-active-cash"],
                      cli_env).returncode == 0

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--job", "order", "--keep", "1h"], cli_env)

    assert done.returncode == 0, done.stderr[-2000:]
    job = StreamKeys(prefix=keys.prefix, job="order")
    cards = {result.transaction_id: result.recommended_card.card_id
             for result in read_results(sync_client, job.results())}
    assert cards == {"k105": "amex-blue-cash-preferred", "k205": "amex-blue-cash-preferred",
                     "k305": "wells-fargo-active-cash"}


@one_server
def test_run_json_input_has_layout_and_warnings(keys, cli_env, tmp_path):
    source = tmp_path / "newest-first.csv"
    write_rows(source, [305, 205, 105])

    done = invoke_cli(["--prefix", keys.prefix, "run", str(source), "--json", "--keep", "1h"], cli_env)

    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["input"]["layout"] == "documented"
    assert summary["input"]["oldest_first"] is True
    assert any("published oldest first" in warning for warning in summary["input"]["warnings"])

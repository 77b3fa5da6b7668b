"""docs/results.md lists every field of a real result, and only fields a result has.

The result comes from the CLI end to end: `wallet set`, `publish`,
`consume --drain`, then `subscribe`, whose lines add `result_id` to the
document in the stream entry's `data` field.
"""

from __future__ import annotations

import json
import re

from conftest import ROOT, invoke_cli, one_server

DOC = ROOT / "docs" / "results.md"
# A wallet of several cards, so the result has alternatives, with Amex Gold, whose capped
# U.S. supermarket rate gives the grocery purchase a spend update.
WALLET = ["amex-gold", "citi-custom-cash", "chase-freedom-flex"]
ROWS = [
    "transaction_id,user_id,merchant,category,amount_usd,mcc,timestamp",
    "doc-1,doc-user,Whole Foods,groceries,84.20,5411,2026-11-02T10:00:00Z",
    "doc-2,doc-user,CVS Pharmacy,drugstore,17.23,5912,2026-11-03",
]
MONEY = re.compile(r"^-?\d+\.\d{2}$")
RATE = re.compile(r"^-?\d+\.\d{4}$")
UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$")


def documented_fields() -> set[str]:
    """Return the names in the first column of each table of the doc whose first header is "Field"."""
    names = set()
    in_field_table = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_field_table = False
            continue
        first_cell = line.split("|")[1].strip()
        if first_cell == "Field":
            in_field_table = True
            continue
        match = re.fullmatch(r"`([A-Za-z_.\[\]]+)`", first_cell)
        if in_field_table and match:
            names.add(match.group(1))
    return names


def field_paths(value, prefix: str = "") -> set[str]:
    """Return every key path of a JSON value: ``rewards.amount``, ``alternatives[].card.name``."""
    paths = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= field_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                paths |= field_paths(item, prefix + "[]")
    return paths


def consumed_results(keys, cli_env, tmp_path, sync_client) -> tuple[list[dict], list[dict]]:
    """Return the `subscribe` lines and the stream entries' fields for ROWS, processed by `consume`."""
    csv_path = tmp_path / "doc.csv"
    csv_path.write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    for args in (["wallet", "set", "doc-user", *WALLET], ["publish", str(csv_path)],
                 ["consume", "--drain", "--block-ms", "100"]):
        completed = invoke_cli(["--prefix", keys.prefix, *args], cli_env)
        assert completed.returncode == 0, completed.stderr[-2000:]
    subscribed = invoke_cli(["--prefix", keys.prefix, "subscribe", "--from-start", "--idle-timeout", "0"], cli_env)
    assert subscribed.returncode == 0, subscribed.stderr[-2000:]
    lines = [json.loads(line) for line in subscribed.stdout.splitlines()]
    entries = [fields for _, fields in sync_client.xrange(keys.results())]
    return lines, entries


@one_server
def test_doc_lists_every_field(keys, cli_env, tmp_path, sync_client):
    lines, entries = consumed_results(keys, cli_env, tmp_path, sync_client)

    documented = documented_fields()
    found = set().union(*(field_paths(line) for line in lines))
    entry_fields = set().union(*(fields.keys() for fields in entries))
    assert len(lines) == 2
    assert "alternatives[].rewards.cash_value_usd" in found
    assert any(line["spend_updates"] for line in lines)
    assert found - documented == set()
    assert entry_fields - documented == set()
    assert documented - found - entry_fields == set()  # no field listed that a result lacks


@one_server
def test_doc_value_formats_hold(keys, cli_env, tmp_path, sync_client):
    """The formats the doc states: money with two places, rates with four, UTC times ending in Z."""
    lines, entries = consumed_results(keys, cli_env, tmp_path, sync_client)

    for line, fields in zip(lines, entries):
        rewards = [line["rewards"], *(alternative["rewards"] for alternative in line["alternatives"])]
        assert json.loads(fields["data"]) == {key: value for key, value in line.items() if key != "result_id"}
        assert list(line)[0] == "result_id"
        assert MONEY.match(line["amount_usd"])
        for reward in rewards:
            assert MONEY.match(reward["cash_value_usd"]), reward
            assert RATE.match(reward["effective_rate"]), reward
            assert re.match(r"^\d+\.\d{2,}$", reward["amount"]), reward
        for name in ("published_at", "completed_at", "timestamp"):
            assert UTC_TIME.match(line[name]), (name, line[name])
        assert line["recommender"] == "in-process"
        assert line["run"] == "live"
        assert line["result_id"] != line["entry_id"]

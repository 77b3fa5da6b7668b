"""``rewardpilot cards`` lists the aliases that name a card, and each alias resolves to that card."""

from __future__ import annotations

import json
import os
import re

from conftest import invoke_cli
from rewardpilot.engine import RulesEngine


def cli_env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "250"}


def test_cards_json_lists_aliases():
    completed = invoke_cli(["cards", "--json"], cli_env())

    assert completed.returncode == 0, completed.stderr[-2000:]
    cards = {card["card_id"]: card for card in json.loads(completed.stdout)}
    assert cards["amex-gold"]["aliases"] == ["Amex Gold", "gold card", "gold"]
    catalog = RulesEngine.default().catalog
    for card_id, card in cards.items():
        for alias in card["aliases"]:
            assert catalog.get(alias).card_id == card_id
            assert catalog.get(alias.upper()).card_id == card_id


def test_cards_table_has_alias_column():
    completed = invoke_cli(["cards"], cli_env())

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "┃ aliases" in completed.stdout
    assert re.search(r"│ amex-gold .*│ Amex Gold", completed.stdout), completed.stdout
    assert "names it in `wallet set`" in completed.stderr

"""docs/results.md lists the columns of `run --output FILE.csv`, and the CSV has the scalar purchase facts.

The doc's table maps each CSV column to a field of the result document, in
the order the file has them, and the section names every top-level field that
the CSV leaves out.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import datetime, timezone

from conftest import ROOT
from rewardpilot.cli.output import CSV_COLUMNS, csv_row, write_results
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Recommendation, Transaction

DOC = ROOT / "docs" / "results.md"
ENGINE = RulesEngine.default()
WALLET = ["amex-gold", "citi-double-cash"]
PUBLISHED = datetime(2026, 12, 5, 23, 56, 24, 162000, tzinfo=timezone.utc)
COMPLETED = datetime(2026, 12, 5, 23, 56, 25, tzinfo=timezone.utc)


def output_section() -> str:
    """Return the text of the doc's `run --output` section."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## `run --output` files")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def documented_columns() -> list[tuple[str, str]]:
    """Return the (CSV column, result field) pairs of the section's table, in order."""
    pairs = []
    for line in output_section().splitlines():
        match = re.fullmatch(r"\| `([a-z_]+)` \| `([a-z_.]+)` \|", line)
        if match:
            pairs.append((match.group(1), match.group(2)))
    return pairs


def result() -> Recommendation:
    purchase = Transaction(transaction_id="o-1", user_id="u1", merchant="KROGER #512", category="groceries",
                           amount_usd="25.00", mcc="5411", timestamp="2026-11-12T13:00:00Z", card_used="=amex")
    return ENGINE.recommend(purchase, WALLET).model_copy(
        update={"published_at": PUBLISHED, "completed_at": COMPLETED, "entry_id": "1796514984162-0"},
    )


def field_value(document: dict, path: str):
    for key in path.split("."):
        document = document[key]
    return document


def test_doc_lists_csv_columns_in_order():
    assert [column for column, _ in documented_columns()] == CSV_COLUMNS


def test_doc_maps_columns_to_fields():
    document = json.loads(result().model_dump_json())
    row = csv_row(result())

    for column, path in documented_columns():
        value = field_value(document, path)
        written = row[column]
        if column == "card_used":
            assert written == "'" + value  # escaped as a formula
        else:
            assert str(written) == str(value), column


def test_doc_names_fields_left_out():
    mapped = {path.split(".")[0] for _, path in documented_columns()}
    left_out = set(Recommendation.model_fields) - mapped
    prose = " ".join(output_section().split())

    assert left_out == {"alternatives", "passed_over", "spend_updates", "recommender", "processing_time_ms",
                        "engine_version", "catalog_version"}
    for field in left_out:
        assert f"`{field}`" in prose, field


def test_csv_has_card_used_and_times(tmp_path):
    path = tmp_path / "out.csv"

    write_results([result()], path)

    with path.open(newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["card_used"] == "'=amex"
    assert row["published_at"] == "2026-12-05T23:56:24.162000Z"
    assert row["completed_at"] == "2026-12-05T23:56:25Z"
    assert row["timestamp"] == "2026-11-12T13:00:00Z"


def test_csv_empty_cells_for_null_times(tmp_path):
    path = tmp_path / "out.csv"

    write_results([result().model_copy(update={"published_at": None, "completed_at": None, "card_used": None})], path)

    with path.open(newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["card_used"], row["published_at"], row["completed_at"]) == ("", "", "")

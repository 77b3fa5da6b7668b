"""Benchmark input: transactions from the project's example-data generator.

``scripts/make_example_data.py`` draws well-known US merchants with their
usual MCC and a typical amount range. Its users have no stored wallet, so
each transaction is judged against the whole card catalog, which is the
engine's slowest case.
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"]
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SEED = 11
DAYS = 30


def rows(count: int, seed: int = SEED):
    """Yield ``count`` transactions as CSV-layout dicts; the same seed yields the same rows."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from scripts.make_example_data import generate

    return generate(count, seed, START, DAYS)


def write_csv(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows(count))

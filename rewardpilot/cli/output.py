"""Writing results to files and tables."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from rich.table import Table
from rich.markup import escape

if TYPE_CHECKING:
    from rewardpilot.models import Recommendation

CSV_COLUMNS = [
    "transaction_id", "user_id", "amount_usd", "category", "card_id", "card_name", "issuer",
    "rewards_amount", "rewards_unit", "program", "cash_value_usd", "effective_rate",
    "confidence", "wallet_source", "reasoning", "entry_id", "run", "timestamp", "merchant",
    "card_used", "published_at", "completed_at",
]

# Text columns whose values come from the input file, the command line or a recommender (which
# may be a remote orchestrator), so a spreadsheet could run one as a formula. The number columns
# are left out, so a negative amount stays a number.
FORMULA_ESCAPED_COLUMNS = frozenset({
    "transaction_id", "user_id", "category", "card_id", "card_name", "issuer", "rewards_unit", "program",
    "wallet_source", "reasoning", "run", "merchant", "card_used",
})

# First characters that get a single quote in front: = + - @, tab, carriage return and NUL. The first
# four start a formula in spreadsheets, and OWASP ASVS 5.0 requirement 1.2.10 lists tab and NUL as well.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


def escape_formula(text: str) -> str:
    """Prefix ``text`` with a single quote when it starts like a spreadsheet formula, so a spreadsheet shows it as text."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_row(result: Recommendation) -> dict:
    """Return the CSV columns of ``result``, with text that starts like a formula escaped by ``escape_formula``."""
    row = _csv_values(result)
    for column in FORMULA_ESCAPED_COLUMNS:
        if isinstance(row[column], str):
            row[column] = escape_formula(row[column])
    return row


def _csv_values(result: Recommendation) -> dict:
    return {
        "transaction_id": result.transaction_id,
        "user_id": result.user_id,
        "amount_usd": result.amount_usd,
        "category": result.category,
        "card_id": result.recommended_card.card_id,
        "card_name": result.recommended_card.name,
        "issuer": result.recommended_card.issuer,
        "rewards_amount": result.rewards.amount,
        "rewards_unit": result.rewards.unit,
        "program": result.rewards.program,
        "cash_value_usd": result.rewards.cash_value_usd,
        "effective_rate": result.rewards.effective_rate,
        "confidence": result.confidence,
        "wallet_source": result.wallet_source,
        "reasoning": result.reasoning,
        "entry_id": result.entry_id,
        "run": result.run,
        "timestamp": _utc_text(result.timestamp),
        "merchant": result.merchant,
        "card_used": result.card_used,
        "published_at": _utc_text(result.published_at),
        "completed_at": _utc_text(result.completed_at),
    }


def _utc_text(moment: datetime | None) -> str | None:
    """Write a UTC time as the result document does, such as ``2026-12-05T23:56:24.162000Z``."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def write_results(results: Iterable[Recommendation], path: Path) -> int:
    """Write results as CSV (``.csv``) or JSON lines (anything else); return the count."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for result in results:
                writer.writerow(csv_row(result))
                count += 1
        else:
            for result in results:
                handle.write(result.model_dump_json() + "\n")
                count += 1
    return count


def cards_table(results: Iterable[Recommendation], title: str = "Recommendations by card") -> Table:
    """Summarise results per recommended card: count, spend and cash value of rewards."""
    counts: Counter[str] = Counter()
    spend: dict[str, Decimal] = defaultdict(Decimal)
    value: dict[str, Decimal] = defaultdict(Decimal)
    names: dict[str, str] = {}
    for result in results:
        card = result.recommended_card
        counts[card.card_id] += 1
        spend[card.card_id] += result.amount_usd
        value[card.card_id] += result.rewards.cash_value_usd
        names[card.card_id] = card.name

    table = Table(title=title)
    table.add_column("card")
    table.add_column("transactions", justify="right")
    table.add_column("spend (USD)", justify="right")
    table.add_column("rewards (USD)", justify="right")
    table.add_column("effective rate", justify="right")
    for card_id, count in counts.most_common():
        rate = value[card_id] / spend[card_id] * 100 if spend[card_id] else Decimal(0)
        table.add_row(escape(names[card_id]), str(count), f"{spend[card_id]:,.2f}", f"{value[card_id]:,.2f}", f"{rate:.2f}%")
    return table


def sample_table(results: list[Recommendation], title: str = "Sample recommendations") -> Table:
    table = Table(title=title)
    table.add_column("transaction")
    table.add_column("user")
    table.add_column("amount", justify="right")
    table.add_column("card")
    table.add_column("rewards (USD)", justify="right")
    table.add_column("why")
    for result in results:
        table.add_row(
            escape(result.transaction_id), escape(result.user_id), f"{result.amount_usd:,.2f}",
            escape(result.recommended_card.name), f"{result.rewards.cash_value_usd:,.2f}", escape(result.reasoning),
        )
    return table

"""Generate the bundled example file: realistic card purchases in the documented layout.

The merchants are well-known US chains with the MCC their card transactions
usually carry (ISO 18245 codes; a merchant's acquirer assigns the code, so a
real statement can differ). Amounts are drawn per merchant from a typical
range. Output is deterministic for a given ``--seed``.

    python scripts/make_example_data.py --rows 3000 --seed 7 --output examples/transactions.csv
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

# (merchant, MCC, category text, low USD, high USD, weight)
MERCHANTS = [
    ("Whole Foods Market", "5411", "groceries", 18, 180, 9),
    ("Trader Joe's", "5411", "groceries", 15, 120, 8),
    ("Safeway", "5411", "groceries", 12, 160, 6),
    ("Kroger", "5411", "groceries", 10, 150, 6),
    ("Costco Wholesale", "5300", "warehouse club", 60, 420, 4),
    ("Target", "5310", "discount store", 15, 200, 5),
    ("Walmart Supercenter", "5411", "superstore", 20, 220, 4),
    ("Starbucks", "5814", "coffee", 4, 18, 10),
    ("Chipotle Mexican Grill", "5814", "fast food", 9, 35, 6),
    ("The Cheesecake Factory", "5812", "restaurant", 35, 180, 4),
    ("DoorDash", "5812", "food delivery", 18, 75, 5),
    ("Shell", "5541", "gas", 25, 90, 6),
    ("Chevron", "5542", "gas", 30, 95, 5),
    ("CVS Pharmacy", "5912", "drugstore", 6, 80, 4),
    ("Walgreens", "5912", "drugstore", 5, 70, 3),
    ("Amazon.com", "5942", "online shopping", 8, 250, 7),
    ("Best Buy", "5732", "electronics", 25, 900, 2),
    ("The Home Depot", "5200", "home improvement", 15, 500, 3),
    ("Netflix", "4899", "streaming", 7, 23, 2),
    ("Spotify", "5815", "streaming", 11, 17, 2),
    ("Uber", "4121", "rideshare", 9, 65, 5),
    ("MTA New York City Transit", "4111", "transit", 3, 34, 3),
    ("Delta Air Lines", "3058", "airfare", 120, 900, 2),
    ("United Airlines", "4511", "airfare", 110, 850, 2),
    ("Marriott", "3509", "hotel", 140, 700, 2),
    ("Hilton Hotels", "7011", "hotel", 130, 650, 2),
    ("Hertz", "3357", "car rental", 60, 420, 1),
    ("Expedia", "4722", "travel agency", 90, 1200, 1),
    ("AMC Theatres", "7832", "entertainment", 12, 60, 2),
    ("Ticketmaster", "7922", "entertainment", 45, 400, 1),
    ("Comcast Xfinity", "4900", "utilities", 60, 180, 2),
    ("Verizon Wireless", "4814", "phone", 45, 160, 2),
    ("Planet Fitness", "7997", "fitness", 10, 25, 1),
    ("Local Corner Shop", "", "groceries", 5, 40, 1),
]

USERS = [
    "demo-foodie", "demo-traveler", "demo-cashback", "demo-student",
    "user-1001", "user-1002", "user-1003", "user-1004", "user-1005", "user-1006",
]


def generate(rows: int, seed: int, start: datetime, days: int):
    rng = random.Random(seed)
    weights = [merchant[5] for merchant in MERCHANTS]
    span = days * 86400
    stamps = sorted(rng.randrange(span) for _ in range(rows))

    for index, offset in enumerate(stamps, start=1):
        name, mcc, category, low, high, _ = rng.choices(MERCHANTS, weights=weights)[0]
        cents = rng.randint(low * 100, high * 100)
        yield {
            "transaction_id": f"ex-{index:06d}",
            "user_id": rng.choice(USERS),
            "merchant": name,
            "category": category,
            "amount_usd": f"{Decimal(cents) / 100:.2f}",
            "mcc": mcc,
            "timestamp": (start + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000, help="number of transactions")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--start", default="2026-11-01T00:00:00+00:00", help="first possible timestamp (ISO 8601)")
    parser.add_argument("--days", type=int, default=30, help="days the timestamps spread over")
    parser.add_argument("--output", type=Path, default=Path("examples/transactions.csv"))
    args = parser.parse_args()

    start = datetime.fromisoformat(args.start).astimezone(timezone.utc)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    columns = ["transaction_id", "user_id", "merchant", "category", "amount_usd", "mcc", "timestamp"]
    with args.output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(generate(args.rows, args.seed, start, args.days))


if __name__ == "__main__":
    main()

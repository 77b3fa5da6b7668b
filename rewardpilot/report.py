"""Missed rewards: what a user earned with the cards used against what the recommended cards would have.

``build_report`` reads a run's results stream for one user and one month or
year (by transaction time, Eastern Time). It fetches each result's
transaction from the transactions stream by its entry id. Then it replays
the period in time order through the engine, computing for each purchase
what the card used earned (``RulesEngine.rewards_for``) and what the best
card in the wallet would have earned.

The replay starts one year before the period, because a year is the longest
cap period. The purchases of that year only add their spend to the
``SpendState``. So a cap that began before the period (a quarterly cap in a
quarter's second month, a yearly cap in November) starts the period with the
spend it had. NOTE: a
purchase whose result was trimmed from the results stream adds no spend.

A purchase whose ``card_used`` names no catalog card counts in the totals
of the recommended card only and is counted in ``unknown_card_used``.

A purchase whose card used earned more than the recommended card counts
the card used as the best, so its missed amount is zero, never negative.
The engine can rank a card lower than the one the user paid with, because
it skips cards that the merchant is known not to take (Costco's U.S.
warehouses take Visa only), but the card used did earn. Such a purchase
counts under the card used in ``by_card_recommended`` too.

Cap status comes from the user's live spend hash (``keys.cap_spend``): the
spend in the current period of each cap, what is left, and the date the cap
runs out at the pace so far in that period.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
import redis

from rewardpilot import caps, wallets
from rewardpilot.codec import decode_transaction
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.state import SpendState, local_date, period_key
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation, Transaction
from rewardpilot.results import read_results
from rewardpilot.streams import LIVE_RUN, StreamKeys
from rewardpilot.user_terms import CASH_BACK_PROGRAM, usable_valuations

log = get_logger(__name__)

ZERO = Decimal("0")


@dataclass
class Totals:
    spend: Decimal = ZERO
    earned: Decimal = ZERO        # with the cards used
    best: Decimal = ZERO          # with the recommended cards
    purchases: int = 0

    @property
    def missed(self) -> Decimal:
        return self.best - self.earned


@dataclass
class CapStatus:
    card_id: str
    tally: str                    # the cap id, or "top:<category>" for a top-category tally
    period: str
    cap_usd: Decimal
    spent_usd: Decimal
    remaining_usd: Decimal
    period_ends: date
    runs_out_on: date | None      # at the pace so far; None when it will not run out this period


@dataclass(frozen=True)
class DroppedValuation:
    """A stored valuation override that the report leaves out, as the consumers do."""

    user_id: str
    program: str
    stored_cents: str
    reason: str
    default_cents: Decimal | None  # the value used instead; None for a program the table does not list

    @property
    def settable(self) -> bool:
        """Whether ``valuations set`` accepts this program, so a new value can replace the stored one."""
        return self.default_cents is not None and self.program != CASH_BACK_PROGRAM


@dataclass
class Report:
    user_id: str
    period: str                   # "2026-11" or "2026"
    purchases: int
    unknown_card_used: int
    total: Totals
    by_category: dict[str, Totals] = field(default_factory=dict)
    by_card_used: dict[str, Totals] = field(default_factory=dict)
    by_card_recommended: dict[str, Totals] = field(default_factory=dict)
    caps: list[CapStatus] = field(default_factory=list)
    # Not in to_json: the CLI prints them as warnings on stderr.
    dropped_valuations: list[DroppedValuation] = field(default_factory=list)

    def to_json(self) -> dict:
        """Convert the report to JSON-ready data: money as strings, dates as ISO 8601."""
        def totals(item: Totals) -> dict:
            return {"spend": str(item.spend), "earned": str(item.earned), "best": str(item.best),
                    "missed": str(item.missed), "purchases": item.purchases}

        return {
            "user_id": self.user_id,
            "period": self.period,
            "purchases": self.purchases,
            "unknown_card_used": self.unknown_card_used,
            "total": totals(self.total),
            "by_category": {name: totals(item) for name, item in self.by_category.items()},
            "by_card_used": {name: totals(item) for name, item in self.by_card_used.items()},
            "by_card_recommended": {name: totals(item) for name, item in self.by_card_recommended.items()},
            "caps": [_cap_json(cap) for cap in self.caps],
        }


def _cap_json(cap: CapStatus) -> dict:
    data = asdict(cap)
    for name in ("cap_usd", "spent_usd", "remaining_usd"):
        data[name] = str(data[name])
    data["period_ends"] = cap.period_ends.isoformat()
    data["runs_out_on"] = cap.runs_out_on.isoformat() if cap.runs_out_on else None
    return data


def parse_period(month: str | None, year: str | None) -> tuple[str, date, date]:
    """Parse exactly one of ``month`` (YYYY-MM) or ``year`` (YYYY) into a label and its first and last day."""
    if (month is None) == (year is None):
        raise ValueError("give exactly one of --month YYYY-MM or --year YYYY")
    if month is not None:
        try:
            first = datetime.strptime(month.strip(), "%Y-%m").date()
        except ValueError:
            raise ValueError(f"month {month!r} is not a month; write it like 2026-11") from None
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        return first.strftime("%Y-%m"), first, last
    text = year.strip()
    if not (len(text) == 4 and text.isdigit()):
        raise ValueError(f"year {year!r} is not a year; write it like 2026")
    return text, date(int(text), 1, 1), date(int(text), 12, 31)


def build_report(
    client: redis.Redis, keys: StreamKeys, user_id: str, *, month: str | None = None, year: str | None = None,
    run: str = LIVE_RUN, engine: RulesEngine | None = None, today: date | None = None,
    card_used: str | None = None,
) -> Report:
    """Build the missed-rewards report of one user for a month or a year.

    ``card_used`` is the catalog card the purchases were made with when
    their export names none (a Chase statement says only "chase"). Raises
    ValueError for a bad period or user, UnknownCardError for ``card_used``.
    A stored valuation override that the consumers leave out (invalid, for
    an unknown program, or for cash back) is left out here too and listed in
    ``Report.dropped_valuations`` for the caller to show.
    """
    engine = engine or RulesEngine.default()
    assumed = engine.catalog.get(card_used).card_id if card_used else None
    user = wallets.check_user_id(user_id)
    label, first, last = parse_period(month, year)

    # Purchases of the year before the period only add spend. Those of the period are reported.
    warm_up_from = first.replace(year=first.year - 1)
    results = [
        rec for rec in read_results(client, keys.results(run), user=user)
        if warm_up_from <= local_date(_moment(rec)) <= last
    ]
    results.sort(key=_moment)
    transactions = _transactions(client, keys, results)

    record = wallets.get_wallet_record(client, keys, user)
    wallet = _known_cards(engine, record, user)
    if wallet is None:
        # Judged against the whole catalog, as the consumers judge a user without a wallet: a card
        # the user may not hold reads and adds no spend, and the default mode applies.
        record, state = None, None
    else:
        state = SpendState()
        state.set_terms(user, activations=record.activations, cycle_day=record.cycle_day)
    valuations, dropped = _usable_valuations(client, keys, engine, user)
    mode = record.mode if record else None

    report = Report(user_id=user, period=label, purchases=0, unknown_card_used=0, total=Totals(),
                    dropped_valuations=dropped)
    for rec, transaction in zip(results, transactions):
        if local_date(_moment(rec)) < first:
            if state is None:
                continue  # no spend state to build up
            # The spend counts as in _add: on the card used when it is known, else on the recommended card.
            engine.evaluate_or_fallback(transaction, wallet, wallet_source=None if wallet is None else "user",
                                        valuations=valuations, mode=mode, state=state)
            continue
        _add(report, engine, rec, transaction, wallet, state, valuations, mode, assumed)

    report.caps = cap_status(client, keys, user, engine, today=today or datetime.now(timezone.utc).date(),
                             cycle_day=record.cycle_day if record else None, run=run)
    return report


def _known_cards(engine: RulesEngine, record: wallets.WalletRecord | None, user: str) -> list[str] | None:
    """Return the stored wallet's cards that the catalog has, warning about the others; None when none is left.

    The consumers leave out a card a later catalog retired in the same way.
    """
    if record is None:
        return None
    known, unknown = wallets.split_known_cards(record.cards, engine.catalog)
    if unknown:
        log.warning(wallets.unknown_cards_message(known, "judging against the whole catalog"),
                    user_id=user, unknown_cards=unknown, cards_left=known)
    return known or None


def _usable_valuations(client: redis.Redis, keys: StreamKeys, engine: RulesEngine, user: str
                       ) -> tuple[dict[str, str] | None, list[DroppedValuation]]:
    """Read a user's valuation overrides and keep those the consumers keep (``usable_valuations``).

    Returns the overrides to value rewards with, or None, and one
    ``DroppedValuation`` for each override left out.
    """
    stored = caps.get_valuations(client, keys, user)
    programs = engine.valuations.programs
    dropped: list[DroppedValuation] = []

    def record_dropped(key: str, message: str, **fields) -> None:
        program = fields["program"]
        if program == CASH_BACK_PROGRAM:
            reason = "cash back is always worth its face value (1 cent per cent earned)"
        elif program not in programs:
            reason = "the valuation table has no program of that name"
        else:
            reason = fields.get("error") or message
        default = programs[program].cents_per_point if program in programs else None
        dropped.append(DroppedValuation(user, program, stored[program], reason, default))

    return usable_valuations(engine, stored, user, record_dropped), dropped


def _moment(rec: Recommendation) -> datetime:
    return rec.timestamp or rec.published_at or rec.completed_at or datetime.min.replace(tzinfo=timezone.utc)


def _transactions(client: redis.Redis, keys: StreamKeys, results: list[Recommendation]) -> list[Transaction]:
    """Fetch each result's transaction in one pipeline, rebuilding it from the result when it was trimmed."""
    pipe = client.pipeline(transaction=False)
    for rec in results:
        pipe.xrange(keys.transactions, min=rec.entry_id or "-", max=rec.entry_id or "-", count=1)
    replies = pipe.execute() if results else []
    found: list[Transaction] = []
    for rec, reply in zip(results, replies):
        transaction = None
        if rec.entry_id and reply:
            transaction = decode_transaction(reply[0][1])
            if transaction.transaction_id != rec.transaction_id:
                transaction = None
        if transaction is None:
            # NOTE: the entry was trimmed, so the category name replaces the MCC. Results written before
            # they carried the merchant leave merchant rules nothing to match.
            transaction = Transaction(
                transaction_id=rec.transaction_id, user_id=rec.user_id, merchant=rec.merchant or "(unknown merchant)",
                category=rec.category, amount_usd=rec.amount_usd, timestamp=_moment(rec), card_used=rec.card_used,
            )
        found.append(transaction)
    return found


def _add(report: Report, engine: RulesEngine, rec: Recommendation, transaction: Transaction,
         wallet: list[str] | None, state: SpendState | None, valuations, mode, assumed: str | None = None) -> None:
    used = assumed
    if transaction.card_used and transaction.card_used in engine.catalog:
        used = engine.catalog.get(transaction.card_used).card_id
    earned = None
    if used is not None:
        earned = engine.rewards_for(transaction, used, valuations=valuations, mode=mode, state=state,
                                    held=wallet).cash_value_usd
    best = engine.recommend_or_fallback(transaction, wallet, wallet_source=None if wallet is None else "user",
                                        valuations=valuations, mode=mode, state=state)
    best_cash = best.rewards.cash_value_usd
    best_card = best.recommended_card.card_id
    if earned is not None and earned > best_cash:
        # The card used earned more than the engine's pick, so it is the best possible for this purchase.
        best_cash, best_card = earned, used

    report.purchases += 1
    if earned is None:
        report.unknown_card_used += 1
        earned_for_totals = best_cash  # no card known: nothing counts as missed
    else:
        earned_for_totals = earned
    for bucket in (
        report.total,
        report.by_category.setdefault(best.category, Totals()),
        report.by_card_used.setdefault(used or "(unknown)", Totals()),
        report.by_card_recommended.setdefault(best_card, Totals()),
    ):
        bucket.spend += transaction.amount_usd
        bucket.earned += earned_for_totals
        bucket.best += best_cash
        bucket.purchases += 1


def cap_status(client: redis.Redis, keys: StreamKeys, user_id: str, engine: RulesEngine, *, today: date,
               cycle_day: int | None = None, run: str = LIVE_RUN) -> list[CapStatus]:
    """List every cap with spend in its current period in ``run``'s cap state, with the forecast run-out date."""
    spend = _top_categories_only(caps.read_spend(client, keys, user_id, run))
    statuses: list[CapStatus] = []
    for name, cents in sorted(spend.items()):
        parts = name.split("|")
        if len(parts) != 3 or parts[0] not in engine.catalog:
            continue
        card_id, tally, period = parts
        card = engine.catalog.get(card_id)
        cap_id = next((r.cap_id for r in card.earn if r.kind == "top_category"), None) if tally.startswith("top:") else tally
        cap = next((c for c in card.caps if c.cap_id == cap_id), None)
        if cap is None:
            continue
        if period != period_key(cap.period, today, cycle_day):
            continue  # a past period
        start, end = period_bounds(period)
        spent = Decimal(cents) / 100
        remaining = max(ZERO, cap.amount_usd - spent)
        statuses.append(CapStatus(
            card_id=card_id, tally=tally, period=period, cap_usd=cap.amount_usd, spent_usd=spent,
            remaining_usd=remaining, period_ends=end, runs_out_on=_run_out(spent, remaining, start, end, today),
        ))
    return statuses


def _top_categories_only(spend: dict[str, int]) -> dict[str, int]:
    """Keep, of a top-category card's tallies in each period, only the category with the most spend.

    Only that category earns the bonus under the cap, so it alone shows how
    much of the cap is used.
    """
    filtered: dict[str, int] = {}
    leaders: dict[tuple[str, str], tuple[int, str]] = {}
    for name, cents in spend.items():
        parts = name.split("|")
        if len(parts) == 3 and parts[1].startswith("top:"):
            card_id, _, period = parts
            if cents > leaders.get((card_id, period), (-1, ""))[0]:
                leaders[(card_id, period)] = (cents, name)
        else:
            filtered[name] = cents
    for cents, name in leaders.values():
        filtered[name] = cents
    return filtered


def period_bounds(period: str) -> tuple[date, date]:
    """First and last day of a period key: "2026", "2026Q4", "2026-11" or "cycle:2026-11-15"."""
    if period.startswith("cycle:"):
        start = date.fromisoformat(period[len("cycle:"):])
        month_later = (start.replace(day=1) + timedelta(days=32)).replace(day=start.day)
        return start, month_later - timedelta(days=1)
    if "Q" in period:
        year, quarter = int(period[:4]), int(period[-1])
        start = date(year, 3 * quarter - 2, 1)
        end = date(year, 12, 31) if quarter == 4 else date(year, 3 * quarter + 1, 1) - timedelta(days=1)
        return start, end
    if "-" in period:
        start = datetime.strptime(period, "%Y-%m").date()
        return start, (start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return date(int(period), 1, 1), date(int(period), 12, 31)


def _run_out(spent: Decimal, remaining: Decimal, start: date, end: date, today: date) -> date | None:
    """Forecast the day the cap runs out at the average daily spend since the period began; None if not this period."""
    if remaining <= 0:
        return today
    days = (min(today, end) - start).days + 1
    if spent <= 0 or days <= 0:
        return None
    per_day = spent / days
    day = today + timedelta(days=int(remaining / per_day))
    return day if day <= end else None

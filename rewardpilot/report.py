"""Missed rewards: what a user earned with the cards used against what the recommended cards would have.

``build_report`` reads a run's results stream for one user and one month or
year (by transaction time, Eastern Time). It fetches each result's
transaction from the transactions stream by its entry id. Then it replays
the period through the engine, computing for each purchase what the card
used earned (``RulesEngine.rewards_for``) and what the best card in the
wallet would have earned. The replay goes in the order of the results
stream, which is the order the consumers settled the purchases and added
their spend under caps, so with the same wallet, mode and valuations its
totals equal the results'. A file published out of date order is settled
out of date order, and ``Report.out_of_order`` counts such purchases: their
capped bonuses can fall on other purchases than the issuer's date order
would give.

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

The purchases are judged against the wallet the consumers use: the user's
stored wallet, else the run's wallet (``run --wallet`` or ``consume
--wallet``, which the caller passes as ``wallet``; ``run`` stores its own
with the job), else the whole catalog.

Cap status comes from the user's spend hash of the run (``keys.cap_spend``):
the spend in the current period of each cap, what is left, and the date the
cap runs out at the pace so far in that period. A cap already used up shows
the date of the purchase that filled it, when the run's results account for
all of its spend. The current period is the one containing today's date in
the card's time zone, where cap periods end at midnight (Eastern Time for
the bundled cards), as in the engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Sequence

import redis

from rewardpilot import caps, wallets
from rewardpilot.codec import decode_transaction
from rewardpilot.engine import RulesEngine
from rewardpilot.engine.evaluation import Evaluation
from rewardpilot.engine.state import DEFAULT_TIME_ZONE, SpendState, local_date, period_key
from rewardpilot.logs import get_logger
from rewardpilot.models import Recommendation, Transaction, WalletSource
from rewardpilot.money import usd_text
from rewardpilot.results import read_results
from rewardpilot.streams import LIVE_RUN, StreamKeys
from rewardpilot.user_terms import CASH_BACK_PROGRAM, usable_mode, usable_valuations

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
    runs_out_on: date | None      # at the pace so far; None when it is used up or will not run out this period
    today: date                   # the date in time_zone that chose the current period
    time_zone: str                # the card's time zone, where its cap periods end at midnight
    used_up_on: date | None = None  # the date of the purchase that filled a used-up cap, when the results show it

    @property
    def used_up(self) -> bool:
        return self.remaining_usd <= 0

    def run_out_text(self) -> str:
        """Describe when the cap runs out, as the text and HTML tables show it."""
        if self.used_up:
            return f"used up on {self.used_up_on.isoformat()}" if self.used_up_on else "used up"
        return self.runs_out_on.isoformat() if self.runs_out_on else "not this period"


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
    caps_today: date | None = None  # today's date in caps_time_zone, which chose each cap's current period
    caps_time_zone: str = DEFAULT_TIME_ZONE
    wallet_source: WalletSource = "catalog"  # "user" (stored), "run" (the wallet argument) or "catalog"
    wallet: list[str] | None = None          # the cards judged against; None for the whole catalog
    # Results of the period that the run judged against a run wallet, and the cards they name.
    run_wallet_results: int = 0
    run_wallet_cards_seen: list[str] = field(default_factory=list)
    # Purchases of the period and the year before it that were settled after a later-dated purchase.
    out_of_order: int = 0
    # Not in to_json: the CLI prints them as warnings on stderr.
    dropped_valuations: list[DroppedValuation] = field(default_factory=list)
    dropped_mode: str | None = None  # why the stored mode was left out, as the consumers leave it out

    def judged_against(self) -> str:
        """Name the wallet the purchases were judged against."""
        if self.wallet_source == "user":
            return f"the user's stored wallet ({', '.join(self.wallet or [])})"
        if self.wallet_source == "run":
            return f"the run's wallet ({', '.join(self.wallet or [])})"
        return "the whole catalog, because no wallet is stored for this user and no --wallet was given"

    def caps_date_text(self) -> str:
        """Name the date and time zone that chose the caps' current periods, for table titles."""
        zones = {cap.time_zone for cap in self.caps}
        if zones - {self.caps_time_zone}:
            return "today's date in each card's time zone, where its cap periods end at midnight"
        day = self.caps_today.isoformat() if self.caps_today else "unknown"
        return f"today is {day} in {self.caps_time_zone}, where cap periods end at midnight"

    def to_json(self) -> dict:
        """Convert the report to JSON-ready data: money as strings, dates as ISO 8601."""
        def totals(item: Totals) -> dict:
            return {"spend": usd_text(item.spend), "earned": usd_text(item.earned), "best": usd_text(item.best),
                    "missed": usd_text(item.missed), "purchases": item.purchases}

        return {
            "user_id": self.user_id,
            "period": self.period,
            "purchases": self.purchases,
            "unknown_card_used": self.unknown_card_used,
            "total": totals(self.total),
            "by_category": {name: totals(item) for name, item in self.by_category.items()},
            "by_card_used": {name: totals(item) for name, item in self.by_card_used.items()},
            "by_card_recommended": {name: totals(item) for name, item in self.by_card_recommended.items()},
            "wallet": {"source": self.wallet_source, "cards": self.wallet,
                       "run_wallet_results": self.run_wallet_results,
                       "run_wallet_cards_seen": self.run_wallet_cards_seen},
            "out_of_order": self.out_of_order,
            "caps_today": self.caps_today.isoformat() if self.caps_today else None,
            "caps_time_zone": self.caps_time_zone,
            "caps": [_cap_json(cap) for cap in self.caps],
        }


def _cap_json(cap: CapStatus) -> dict:
    data = asdict(cap)
    for name in ("cap_usd", "spent_usd", "remaining_usd"):
        data[name] = usd_text(data[name])
    data["period_ends"] = cap.period_ends.isoformat()
    data["runs_out_on"] = cap.runs_out_on.isoformat() if cap.runs_out_on else None
    data["today"] = cap.today.isoformat()
    data["used_up"] = cap.used_up
    data["used_up_on"] = cap.used_up_on.isoformat() if cap.used_up_on else None
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
    now: datetime | None = None, card_used: str | None = None, wallet: Sequence[str] | None = None,
) -> Report:
    """Build the missed-rewards report of one user for a month or a year.

    ``card_used`` is the catalog card the purchases were made with when
    their export names none (a Chase statement says only "chase"). Their
    spend counts against that card's caps, as a ``card_used`` in the file
    does. ``wallet`` is the run's wallet (``run --wallet`` or ``consume
    --wallet``): the cards to judge the user against when no wallet is
    stored, as the consumers do. ``now`` is the moment whose date in each
    card's time zone chooses the caps' current periods (default: the
    current time); ``today`` replaces that date for every card.

    Raises ValueError for a bad period or user, UnknownCardError for
    ``card_used`` or a ``wallet`` card. A stored valuation override that the
    consumers leave out (invalid, for an unknown program, or for cash back)
    is left out here too and listed in ``Report.dropped_valuations`` for the
    caller to show.
    """
    engine = engine or RulesEngine.default()
    assumed = engine.catalog.get(card_used).card_id if card_used else None
    run_wallet = list(dict.fromkeys(engine.catalog.get(card).card_id for card in wallet)) if wallet else None
    user = wallets.check_user_id(user_id)
    label, first, last = parse_period(month, year)

    # Purchases of the year before the period only add spend. Those of the period are reported.
    warm_up_from = first.replace(year=first.year - 1)
    # In settle order: the order the consumers added each purchase's spend under its caps.
    all_results = list(read_results(client, keys.results(run), user=user))
    results = [rec for rec in all_results if warm_up_from <= local_date(_moment(rec)) <= last]
    transactions = _transactions(client, keys, results)

    record = wallets.get_wallet_record(client, keys, user)
    cards = _known_cards(engine, record, user, "judging against the run's wallet" if run_wallet else
                         "judging against the whole catalog")
    source: WalletSource
    if cards is not None:
        source, state = "user", SpendState()
        state.set_terms(user, activations=record.activations, cycle_day=record.cycle_day)
    elif run_wallet is not None:
        # The consumers judge a user without a usable stored wallet against the run's wallet. They keep
        # its cap spend, but no stored cycle day, activations or mode apply.
        record, cards, source, state = None, run_wallet, "run", SpendState()
    else:
        # Judged against the whole catalog, as the consumers judge a user without a wallet: a card
        # the user may not hold reads and adds no spend, and the default mode applies.
        record, source, state = None, "catalog", None
    valuations, dropped = _usable_valuations(client, keys, engine, user)
    mode_errors: list[str] = []
    mode = usable_mode(engine, record.mode if record else None, user,
                       lambda key, message, **fields: mode_errors.append(fields["error"]))
    judge = _Judge(engine, cards, None if cards is None else source, valuations, mode, state)

    report = Report(user_id=user, period=label, purchases=0, unknown_card_used=0, total=Totals(),
                    wallet_source=source, wallet=cards, dropped_valuations=dropped,
                    dropped_mode=mode_errors[0] if mode_errors else None, out_of_order=_out_of_order(results))
    for rec, transaction in zip(results, transactions):
        transaction = _paid_with(engine, transaction, assumed)
        if local_date(_moment(rec)) < first:
            if state is None:
                continue  # no spend state to build up
            # The spend counts as in _add: on the card used when it is known, else on the recommended card.
            judge.best(transaction)
            continue
        _note_run_wallet(report, rec)
        _add(report, judge, transaction)

    moment = now or datetime.now(timezone.utc)
    report.caps_today = today or local_date(moment, report.caps_time_zone)
    report.caps = cap_status(client, keys, user, engine, today=today, now=moment,
                             cycle_day=record.cycle_day if record else None, run=run, results=all_results)
    return report


def _out_of_order(results: Sequence[Recommendation]) -> int:
    """Count the results settled after a result with a later purchase time."""
    count = 0
    latest: datetime | None = None
    for rec in results:
        moment = _moment(rec)
        if latest is not None and moment < latest:
            count += 1
        else:
            latest = moment
    return count


@dataclass(frozen=True)
class _Judge:
    """The engine with one user's wallet, wallet source, valuations, mode and spend state, for the replay."""

    engine: RulesEngine
    wallet: list[str] | None
    wallet_source: WalletSource | None
    valuations: dict[str, str] | None
    mode: str | None
    state: SpendState | None

    def best(self, transaction: Transaction) -> Evaluation:
        """Evaluate the best card, adding the purchase's spend to the state (on ``card_used`` when known)."""
        return self.engine.evaluate_or_fallback(transaction, self.wallet, wallet_source=self.wallet_source,
                                                valuations=self.valuations, mode=self.mode, state=self.state)

    def earned_with(self, transaction: Transaction, card_id: str) -> Decimal:
        """Compute what ``card_id`` earned on the purchase, reading the state without adding to it."""
        return self.engine.rewards_for(transaction, card_id, valuations=self.valuations, mode=self.mode,
                                       state=self.state, held=self.wallet).cash_value_usd


def _paid_with(engine: RulesEngine, transaction: Transaction, assumed: str | None) -> Transaction:
    """Return the transaction with ``card_used`` set to ``assumed`` when it names no catalog card.

    The engine adds a purchase's spend to ``transaction.card_used``, so the
    card given with ``--card-used`` fills its own caps, as it does when the
    file names it.
    """
    if assumed is None or (transaction.card_used and transaction.card_used in engine.catalog):
        return transaction
    return transaction.model_copy(update={"card_used": assumed})


def _note_run_wallet(report: Report, rec: Recommendation) -> None:
    """Count a result that the run judged against its run wallet, and the cards it names."""
    if rec.wallet_source != "run":
        return
    report.run_wallet_results += 1
    for card in [rec.recommended_card, *(alternative.card for alternative in rec.alternatives)]:
        if card.card_id not in report.run_wallet_cards_seen:
            report.run_wallet_cards_seen.append(card.card_id)


def _known_cards(engine: RulesEngine, record: wallets.WalletRecord | None, user: str,
                 none_left: str) -> list[str] | None:
    """Return the stored wallet's cards that the catalog has, warning about the others; None when none is left.

    The consumers leave out a card a later catalog retired in the same way.
    ``none_left`` says how the user is judged when no known card is left.
    """
    if record is None:
        return None
    known, unknown = wallets.split_known_cards(record.cards, engine.catalog)
    if unknown:
        log.warning(wallets.unknown_cards_message(known, none_left),
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


def _add(report: Report, judge: _Judge, transaction: Transaction) -> None:
    engine = judge.engine
    used = None
    if transaction.card_used and transaction.card_used in engine.catalog:
        used = engine.catalog.get(transaction.card_used).card_id
    # What the card used earned is read before the best card's evaluation adds the purchase's spend.
    earned = judge.earned_with(transaction, used) if used is not None else None
    best = judge.best(transaction).to_model()
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


def cap_status(client: redis.Redis, keys: StreamKeys, user_id: str, engine: RulesEngine, *,
               today: date | None = None, now: datetime | None = None, cycle_day: int | None = None,
               run: str = LIVE_RUN, results: Sequence[Recommendation] | None = None) -> list[CapStatus]:
    """List every cap with spend in its current period in ``run``'s cap state, with the forecast run-out date.

    The current period is the one containing ``now``'s date (default: the
    current time) in the card's time zone, because the engine ends cap
    periods at midnight there. ``today`` replaces that date for every card.
    For a cap that is used up, ``results`` (the user's results in ``run`` in
    settle order, read when not given) give the date of the purchase that
    filled it.
    """
    moment = now or datetime.now(timezone.utc)
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
        card_today = today or local_date(moment, card.time_zone)
        if period != period_key(cap.period, card_today, cycle_day):
            continue  # a past period
        start, end = period_bounds(period)
        spent = Decimal(cents) / 100
        remaining = max(ZERO, cap.amount_usd - spent)
        status = CapStatus(
            card_id=card_id, tally=tally, period=period, cap_usd=cap.amount_usd, spent_usd=spent,
            remaining_usd=remaining, period_ends=end, runs_out_on=None, today=card_today,
            time_zone=card.time_zone,
        )
        if status.used_up:
            if results is None:
                results = list(read_results(client, keys.results(run), user=user_id))
            status.used_up_on = _used_up_on(results, name, cents, int(cap.amount_usd * 100), card.time_zone)
        else:
            status.runs_out_on = _run_out(spent, remaining, start, end, card_today)
        statuses.append(status)
    return statuses


def _used_up_on(results: Sequence[Recommendation], name: str, recorded_cents: int, cap_cents: int,
                time_zone: str) -> date | None:
    """Find the local date of the purchase whose spend filled the cap's tally ``name``; None when unknown.

    ``results`` must be in settle order (the results stream's), the order
    their spend was added. The date is known only when the
    results' ``spend_updates`` for the tally add up to the ``recorded_cents``
    of the spend hash. When they do not (results trimmed from the stream, or
    spend recorded by another writer), the purchase that filled the cap is
    not known.
    """
    total = 0
    filled_on: date | None = None
    for rec in results:
        for field_name, cents in rec.spend_updates:
            if field_name != name:
                continue
            total += cents
            if filled_on is None and total >= cap_cents:
                filled_on = local_date(_moment(rec), time_zone)
    return filled_on if total == recorded_cents else None


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
    """Forecast the day a cap with ``remaining`` left runs out at the average daily spend since the period began.

    Returns None when it does not run out this period. A used-up cap has no
    forecast: ``_used_up_on`` gives the day it ran out.
    """
    days = (min(today, end) - start).days + 1
    if spent <= 0 or days <= 0:
        return None
    per_day = spent / days
    day = today + timedelta(days=int(remaining / per_day))
    return day if day <= end else None

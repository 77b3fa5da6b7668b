"""``rewardpilot wallet set|show|delete|activate`` and ``rewardpilot cards``."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from rewardpilot.cli.context import app_context, check_redis, console, program_name, stdout_console
from rewardpilot.cli.options import split_cards

if TYPE_CHECKING:
    from rewardpilot.wallets import WalletRecord

# The earliest year `wallet activate` takes; an earlier quarter, such as 0000Q1, is taken as a typing mistake.
MIN_QUARTER_YEAR = 1900

app = typer.Typer(help="Manage the cards in each user's wallet.", no_args_is_help=True)


def _engine():
    from rewardpilot.engine import RulesEngine

    return RulesEngine.default()


def _cycle_day_text(record: WalletRecord) -> str:
    return str(record.cycle_day) if record.cycle_day is not None else "calendar months"


def _mode_text(record: WalletRecord) -> str:
    return record.mode or "cash (default)"


def _activation_lines(record: WalletRecord) -> list[str]:
    return [f"{card}: {', '.join(quarters)}" for card, quarters in sorted(record.activations.items()) if quarters]


def _activations_text(record: WalletRecord) -> str:
    return "\n".join(_activation_lines(record)) or "none"


def _stored_settings(record: WalletRecord) -> list[str]:
    """List the settings a wallet stores, such as "cycle day 15", for a one-line summary."""
    settings = []
    if record.cycle_day is not None:
        settings.append(f"cycle day {record.cycle_day}")
    if record.mode:
        settings.append(f"mode {record.mode}")
    settings += [f"{card} activated for {', '.join(quarters)}"
                 for card, quarters in sorted(record.activations.items()) if quarters]
    return settings


@app.command("set")
def set_wallet(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user_id the wallet belongs to."),
    cards: list[str] = typer.Argument(..., help="Card ids from `rewardpilot cards`."),
    cycle_day: int = typer.Option(
        None, "--cycle-day", help="Day of the month (1-28) on which the user's statement cycles start; "
        "unset means calendar months.", show_default=False,
    ),
    mode: str = typer.Option(
        None, "--mode", help="How cards are ranked: cash (highest cash value, the default), cashback, "
        "or program:NAME to prefer one reward program.", show_default=False,
    ),
) -> None:
    """Replace a user's wallet with the given cards; activations, cycle day and mode are kept unless given."""
    from rewardpilot import wallets

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    card_ids = split_cards(cards) or []
    keys = context.keys()
    try:
        if mode is not None:
            mode = _engine().check_mode(mode)
        stored = wallets.set_wallet(client, keys, user, card_ids, _engine().catalog,
                                    cycle_day=cycle_day, mode=mode)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None

    # Read the wallet back, so the output shows the catalog ids and the settings kept from an earlier wallet.
    record = wallets.get_wallet_record(client, keys, user)
    if record is None:  # deleted by another client since the write
        record = wallets.WalletRecord(cards=stored)
    settings = _stored_settings(record)
    console.print(f"wallet of {wallets.check_user_id(user)}: {', '.join(record.cards)}"
                  + (f" ({', '.join(settings)})" if settings else ""), markup=False, soft_wrap=True)


@app.command("show")
def show_wallet(
    ctx: typer.Context,
    user: str = typer.Argument(None, help="Show one user's wallet; all wallets when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: an object mapping each user id to its card ids."),
    with_settings: bool = typer.Option(
        False, "--with-settings",
        help="With --json, map each user id to an object of its cards and settings, as the table shows them: "
        "cards, cycle_day (null: calendar months), mode (null: cash, the default) and activations "
        "(card id to activated quarters).",
    ),
) -> None:
    """Show one wallet, or every wallet."""
    from rewardpilot import wallets

    if with_settings and not as_json:
        raise typer.BadParameter("--with-settings only applies with --json (the table always shows the settings); "
                                 "add --json")
    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys()
    # An empty USER is rejected by get_wallet_record, not taken as omitted, so `show "$USER_ID"`
    # with an unset variable does not list every wallet.
    if user is not None:
        try:
            found = wallets.get_wallet_record(client, keys, user)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        if found is None:
            console.print(f"[red]error:[/red] no wallet for user {escape(repr(user))}; set one with "
                          f"`rewardpilot wallet set {escape(user)} CARD...`")
            raise typer.Exit(1)
        records = {user: found}
    else:
        listing = wallets.list_wallets(client, keys)
        # One more MGET for the settings, because list_wallets returns only the cards. A wallet
        # deleted in between is shown with its cards and no settings.
        raws = client.mget([keys.wallet(owner) for owner in listing]) if listing else []
        records = {
            owner: wallets.decode_wallet_record(raw) or wallets.WalletRecord(cards=card_ids)
            for (owner, card_ids), raw in zip(listing.items(), raws)
        }

    if as_json:
        # Without --with-settings, each value stays the bare card list that --json printed before
        # wallets had settings, so scripts reading that shape keep working.
        if with_settings:
            typer.echo(json.dumps({owner: _wallet_json(record) for owner, record in records.items()}))
        else:
            typer.echo(json.dumps({owner: record.cards for owner, record in records.items()}))
        return
    if not records:
        # Only the listing of all wallets gets here, because a missing single wallet exits above.
        console.print(_no_wallets_hint(context.prefix), soft_wrap=True, markup=False, highlight=False)
        return
    stdout_console().print(_wallet_table(records))


def _no_wallets_hint(prefix: str) -> str:
    """Return the line printed in place of an empty wallets table, with the command that adds a wallet."""
    from rewardpilot.streams import DEFAULT_PREFIX

    prefix_option = "" if prefix == DEFAULT_PREFIX else f" --prefix {shlex.quote(prefix)}"
    return (f"no wallets stored under prefix {prefix!r}; add one with: "
            f"{program_name()}{prefix_option} wallet set USER CARD... (card ids from `{program_name()} cards`)")


def _wallet_json(record: WalletRecord) -> dict:
    """Return a wallet's cards and settings, with the activations the table shows (cards with quarters)."""
    return {
        "cards": record.cards,
        "cycle_day": record.cycle_day,
        "mode": record.mode,
        "activations": {card: quarters for card, quarters in sorted(record.activations.items()) if quarters},
    }


def _wallet_table(records: dict[str, WalletRecord]) -> Table:
    """Build the wallets table, with a column for each setting that some wallet stores."""
    catalog = _engine().catalog
    table = Table(title="Wallets")
    table.add_column("user")
    table.add_column("cards")
    settings = [
        ("cycle day", any(record.cycle_day is not None for record in records.values()), _cycle_day_text),
        ("mode", any(record.mode for record in records.values()), _mode_text),
        ("activations", any(_activation_lines(record) for record in records.values()), _activations_text),
    ]
    for name, stored_by_any, _ in settings:
        if stored_by_any:
            table.add_column(name)
    for owner, record in sorted(records.items()):
        cards = ", ".join(_card_label(catalog, card_id) for card_id in record.cards)
        cells = [render(record) for _, stored_by_any, render in settings if stored_by_any]
        table.add_row(escape(owner), escape(cards), *(escape(cell) for cell in cells))
    return table


def _card_label(catalog, card_id: str) -> str:
    """Return "Name (id)", or "id (not in the catalog)" for a card a later catalog retired or renamed."""
    if card_id not in catalog:
        return f"{card_id} (not in the catalog; consumers skip it)"
    return f"{catalog.get(card_id).name} ({card_id})"


@app.command("delete")
def delete_wallet(ctx: typer.Context, user: str = typer.Argument(..., help="The user_id.")) -> None:
    """Delete a user's wallet; their transactions are then judged against the run's wallet or the catalog."""
    from rewardpilot import wallets

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    try:
        deleted = wallets.delete_wallet(client, context.keys(), user)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    if not deleted:
        console.print(f"no wallet for user {user!r}")
        raise typer.Exit(1)
    console.print(f"wallet of {user} deleted")


@app.command("activate")
def activate(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user_id the wallet belongs to."),
    card: str = typer.Argument(..., help="A rotating-category card in the wallet, e.g. chase-freedom-flex."),
    quarter: str = typer.Argument(..., help="The quarter activated, e.g. 2026Q4."),
) -> None:
    """Record that a card's 5% quarterly categories were activated for a quarter."""
    from rewardpilot import wallets

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    catalog = _engine().catalog
    check_quarter_year(quarter)
    try:
        key = wallets.activate_quarter(client, context.keys(), user, card, quarter, catalog)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None
    found = catalog.get(card)
    console.print(f"{found.card_id}: {key} activated for {wallets.check_user_id(user)}",
                  markup=False, soft_wrap=True)
    if not _quarter_has_bonus(found, key):
        # The activation stays stored, so it applies once the catalog's calendar lists the quarter.
        unit = "%" if found.unit == "USD" else "x"
        console.print(f"[yellow]warning:[/yellow] the catalog has no quarterly bonus categories for "
                      f"{escape(found.card_id)} in {key}, so outside its everyday bonus categories the card earns "
                      f"its base rate ({found.base_rate}{unit}) that quarter until the catalog has them",
                      soft_wrap=True)


def check_quarter_year(quarter: str) -> None:
    """Exit 2 naming QUARTER when its year is before ``MIN_QUARTER_YEAR``, such as a mistyped 0000Q1.

    A malformed quarter passes here and is rejected by ``wallets.activate_quarter``.
    """
    from rewardpilot import wallets

    try:
        key = wallets.check_quarter(quarter)
    except ValueError:
        return
    if int(key[:4]) < MIN_QUARTER_YEAR:
        console.print(f"[red]error:[/red] quarter {escape(repr(quarter))} is invalid: the year is before "
                      f"{MIN_QUARTER_YEAR}; write the quarter the card was activated for, such as 2026Q4",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(2)


def _quarter_has_bonus(card, quarter: str) -> bool:
    """Return True when a rotating rule's calendar lists categories, MCCs or merchants for ``quarter`` (``2026Q4``)."""
    calendar_quarter = quarter.replace("Q", "-Q")
    for rule in card.earn:
        if rule.kind != "rotating":
            continue
        for entry in rule.calendar:
            if entry.quarter == calendar_quarter and (entry.categories or entry.mcc or entry.merchants):
                return True
    return False


def cards(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the card catalog: ids, issuers, fees, programs, and the aliases that name a card in its place."""
    catalog = _engine().catalog
    if as_json:
        typer.echo(json.dumps([
            {"card_id": c.card_id, "name": c.name, "issuer": c.issuer, "annual_fee_usd": str(c.annual_fee_usd),
             "program": c.program, "aliases": _aliases(c)}
            for c in catalog.cards
        ]))
        return
    table = Table(title=f"Card catalog {catalog.version}")
    table.add_column("card id", no_wrap=True)  # the id is copied into commands, so it is never cut
    for column in ("name", "issuer", "annual fee", "program", "aliases"):
        table.add_column(column)
    for card in catalog.cards:
        table.add_row(card.card_id, card.name, card.issuer, f"${card.annual_fee_usd}", card.program,
                      escape(", ".join(_aliases(card))))
    stdout_console().print(table)
    console.print("A card's id, name, short name or alias, in any case, names it in `wallet set`, --wallet "
                  "and card_used.", markup=False, soft_wrap=True, highlight=False)


def _aliases(card) -> list[str]:
    """Return the short name and aliases that also name ``card``, without repeats of its id or name."""
    seen = {card.card_id.casefold(), card.name.casefold()}
    names = []
    for name in (card.short_name, *card.aliases):
        if name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
    return names

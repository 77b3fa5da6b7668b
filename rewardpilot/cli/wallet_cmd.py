"""``rewardpilot wallet set|show|delete|activate`` and ``rewardpilot cards``."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from rewardpilot.cli.context import app_context, check_redis, console, stdout_console
from rewardpilot.cli.options import split_cards

app = typer.Typer(help="Manage the cards in each user's wallet.", no_args_is_help=True)


def _engine():
    from rewardpilot.engine import RulesEngine

    return RulesEngine.default()


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
    try:
        if mode is not None:
            mode = _engine().check_mode(mode)
        wallets.set_wallet(client, context.keys(), user, card_ids, _engine().catalog,
                           cycle_day=cycle_day, mode=mode)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None
    console.print(f"wallet of {user}: {', '.join(card_ids)}")


@app.command("show")
def show_wallet(
    ctx: typer.Context,
    user: str = typer.Argument(None, help="Show one user's wallet; all wallets when omitted."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one wallet, or every wallet."""
    from rewardpilot import wallets

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    keys = context.keys()
    if user:
        found = wallets.get_wallet(client, keys, user)
        if found is None:
            console.print(f"[red]error:[/red] no wallet for user {user!r}; set one with "
                          f"`rewardpilot wallet set {user} CARD...`")
            raise typer.Exit(1)
        listing = {user: found}
    else:
        listing = wallets.list_wallets(client, keys)

    if as_json:
        typer.echo(json.dumps(listing))
        return
    catalog = _engine().catalog
    table = Table(title="Wallets")
    table.add_column("user")
    table.add_column("cards")
    for owner, card_ids in sorted(listing.items()):
        table.add_row(owner, ", ".join(f"{catalog.get(c).name} ({c})" for c in card_ids))
    stdout_console().print(table)


@app.command("delete")
def delete_wallet(ctx: typer.Context, user: str = typer.Argument(..., help="The user_id.")) -> None:
    """Delete a user's wallet; their transactions are then judged against the run's wallet or the catalog."""
    from rewardpilot import wallets

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    if not wallets.delete_wallet(client, context.keys(), user):
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
    try:
        key = wallets.activate_quarter(client, context.keys(), user, card, quarter, _engine().catalog)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc.args[0] if exc.args else exc}")
        raise typer.Exit(2) from None
    console.print(f"{card}: {key} activated for {user}")


def cards(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the card catalog: ids, issuers, fees and programs."""
    catalog = _engine().catalog
    if as_json:
        typer.echo(json.dumps([
            {"card_id": c.card_id, "name": c.name, "issuer": c.issuer, "annual_fee_usd": str(c.annual_fee_usd),
             "program": c.program}
            for c in catalog.cards
        ]))
        return
    table = Table(title=f"Card catalog {catalog.version}")
    table.add_column("card id", no_wrap=True)  # the id is copied into commands, so it is never cut
    for column in ("name", "issuer", "annual fee", "program"):
        table.add_column(column)
    for card in catalog.cards:
        table.add_row(card.card_id, card.name, card.issuer, f"${card.annual_fee_usd}", card.program)
    stdout_console().print(table)

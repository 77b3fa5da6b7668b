"""``rewardpilot valuations set|unset|show``: a user's cents per point for each reward program."""

from __future__ import annotations

import json
import shlex

import typer
from rich.table import Table
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_redis, console, program_name, stdout_console
from rewardpilot.streams import DEFAULT_PREFIX

app = typer.Typer(help="Set what each reward program's points are worth to a user.", no_args_is_help=True)


def _table():
    from rewardpilot.engine import RulesEngine

    return RulesEngine.default().valuations


@app.command("set")
def set_valuation(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user_id."),
    program: str = typer.Argument(..., help='A program name, e.g. "Amex Membership Rewards". Not "cash back", '
                                  "which is always worth its face value."),
    cents: str = typer.Argument(..., help="Cents per point, from 0 to 100, e.g. 1.5."),
) -> None:
    """Store a user's valuation of one program, used instead of the default."""
    from rewardpilot import caps
    from rewardpilot.user_terms import check_settable_program

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    try:
        check_settable_program(program)
        stored = caps.set_valuation(client, context.keys(), user, program, cents, _table())
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"{user}: {program} valued at {stored} cents per point")


@app.command("unset")
def unset_valuation(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user_id."),
    programs: list[str] = typer.Argument(..., help='Program names, e.g. "Amex Membership Rewards".'),
) -> None:
    """Remove a user's stored valuations of these programs, so the defaults apply again.

    Exits 2 before removing anything when a program is neither a known
    program nor stored for the user. A stored value of a program the rules
    no longer know can still be removed.
    """
    from rewardpilot import caps
    from rewardpilot.user_terms import check_known_program

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    try:
        stored = caps.get_valuations(client, context.keys(), user)
        known = _table().programs
        for program in programs:
            if program not in stored:
                check_known_program(program, known)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    for program in programs:
        removed = caps.unset_valuation(client, context.keys(), user, program)
        state = "now uses the default" if removed else "had no stored value, so it already uses the default"
        console.print(f"{escape(user)}: {escape(program)} {state}", soft_wrap=True)


@app.command("show")
def show_valuations(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user_id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show every program's cents per point for a user: the user's own value or the default."""
    from rewardpilot import caps
    from rewardpilot.user_terms import CASH_BACK_PROGRAM

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    overrides = caps.get_valuations(client, context.keys(), user)
    ignored = overrides.pop(CASH_BACK_PROGRAM, None)
    if ignored is not None:
        # Stored before `valuations set` rejected cash back, or written to Redis directly. Consumers skip it.
        prefix = [] if context.prefix == DEFAULT_PREFIX else ["--prefix", context.prefix]
        command = shlex.join([program_name(), *prefix, "valuations", "unset", user, CASH_BACK_PROGRAM])
        console.print(f"[yellow]warning:[/yellow] the stored {CASH_BACK_PROGRAM!r} value {escape(repr(ignored))} is "
                      f"ignored, because cash back is always worth its face value. Remove it with: {escape(command)}",
                      soft_wrap=True)
    table = _table()
    rows = {
        name: {"cents_per_point": overrides.get(name, format(program.cents_per_point, "f")),
               "source": "user" if name in overrides else "default"}
        for name, program in sorted(table.programs.items())
    }
    if as_json:
        typer.echo(json.dumps(rows))
        return
    view = Table(title=f"Valuations for {escape(user)}")
    for column in ("program", "cents per point", "from"):
        view.add_column(column)
    for name, row in rows.items():
        view.add_row(name, row["cents_per_point"], row["source"])
    stdout_console().print(view)

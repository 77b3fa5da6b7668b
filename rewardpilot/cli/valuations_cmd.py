"""``rewardpilot valuations set|unset|show``: a user's cents per point for each reward program."""

from __future__ import annotations

import json
import re
import shlex

from decimal import Decimal

import typer
from rich.table import Table
from rich.markup import escape

from rewardpilot.cli.context import app_context, check_redis, console, program_name, stdout_console
from rewardpilot.streams import DEFAULT_PREFIX

app = typer.Typer(help="Set what each reward program's points are worth to a user.", no_args_is_help=True)

# A number of cents as a person types it: digits with an optional fraction and sign.
# Decimal would also read "1e1" (10), "1_5" (15), "Infinity" and "NaN".
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_EXPONENT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)[eE][+-]?\d+")


def check_plain_cents(program: str, cents: str) -> None:
    """Raise ValueError unless ``cents`` is a plain decimal number, such as 1.5 or -1.

    Only the command line checks this: a typo such as 1e1 for 1.1 would
    otherwise store 10 cents. Stored values and ``caps.set_valuation`` take
    any number Decimal reads, and the range check follows in either case.
    """
    text = cents.strip()
    if _PLAIN_DECIMAL.fullmatch(text):
        return
    if _EXPONENT.fullmatch(text):
        plain = format(Decimal(text), "f")
        # The value it reads as, unless that is too long to help, as for 1e400.
        read_as = f" ({text} is {plain})" if len(plain) <= 20 else ""
        raise ValueError(f"valuation for {program!r}: {cents!r} uses exponent notation, which is not accepted; "
                         f"write the cents as a plain decimal number, such as 1.5{read_as}")
    raise ValueError(f"valuation for {program!r} must be a plain decimal number of cents from 0 to 100, "
                     f"such as 1.5, got {cents!r}")


def _table():
    from rewardpilot.engine import RulesEngine

    return RulesEngine.default().valuations


# ignore_unknown_options: a negative value such as -1 reaches the range check as CENTS, where
# click would otherwise reject it as an unknown option.
@app.command("set", context_settings={"ignore_unknown_options": True})
def set_valuation(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="The user_id."),
    program: str = typer.Argument(..., help='A program name, e.g. "Amex Membership Rewards". Not "cash back", '
                                  "which is always worth its face value."),
    cents: str = typer.Argument(..., help="Cents per point, a plain decimal number from 0 to 100, e.g. 1.5."),
) -> None:
    """Store a user's valuation of one program, used instead of the default.

    Exits 2 for an unknown program, and for CENTS outside 0 to 100 or not
    written as a plain decimal number (1e1 is rejected, not read as 10).
    """
    from rewardpilot import caps
    from rewardpilot.user_terms import check_settable_program

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    try:
        check_settable_program(program)
        check_plain_cents(program, cents)
        stored = caps.set_valuation(client, context.keys(), user, program, cents, _table())
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
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
    """Show every program's cents per point for a user: the user's own value or the default.

    A stored value that the consumers leave out gets a warning on stderr
    with the command that fixes it, and the exit status stays 0. An invalid
    value's row shows the default that applies instead, and in --json the
    stored value as invalid_user_value. A program the valuation table does
    not list has no row.
    """
    from rewardpilot import caps
    from rewardpilot.engine import RulesEngine
    from rewardpilot.user_terms import CASH_BACK_PROGRAM

    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    try:
        overrides = caps.get_valuations(client, context.keys(), user)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    ignored = overrides.pop(CASH_BACK_PROGRAM, None)
    if ignored is not None:
        # Stored before `valuations set` rejected cash back, or written to Redis directly. Consumers skip it.
        command = shlex.join([*_valuations_command(context.prefix), "unset", user, CASH_BACK_PROGRAM])
        console.print(f"[yellow]warning:[/yellow] the stored {CASH_BACK_PROGRAM!r} value {escape(repr(ignored))} is "
                      f"ignored, because cash back is always worth its face value. Remove it with: {escape(command)}",
                      soft_wrap=True)
    engine = RulesEngine.default()
    invalid = _invalid_overrides(engine, overrides, user)
    for program, reason in invalid.items():
        console.print(_invalid_override_text(user, program, overrides[program], reason, engine.valuations,
                                             context.prefix), soft_wrap=True, highlight=False, markup=False)

    rows = {}
    for name, program in sorted(engine.valuations.programs.items()):
        default = format(program.cents_per_point, "f")
        if name in invalid:
            rows[name] = {"cents_per_point": default, "source": "default", "invalid_user_value": overrides[name]}
        elif name in overrides:
            rows[name] = {"cents_per_point": overrides[name], "source": "user"}
        else:
            rows[name] = {"cents_per_point": default, "source": "default"}
    if as_json:
        typer.echo(json.dumps(rows))
        return
    view = Table(title=f"Valuations for {escape(user)}")
    for column in ("program", "cents per point", "from"):
        view.add_column(column)
    for name, row in rows.items():
        source = row["source"]
        if "invalid_user_value" in row:
            source = f"default (stored {row['invalid_user_value']!r} is invalid)"
        view.add_row(escape(name), escape(row["cents_per_point"]), escape(source))
    stdout_console().print(view)


def _valuations_command(prefix: str) -> list[str]:
    """Return the words that start a ``valuations`` command under ``prefix``, for a hint to copy."""
    return [program_name(), *([] if prefix == DEFAULT_PREFIX else ["--prefix", prefix]), "valuations"]


def _invalid_overrides(engine, overrides: dict[str, str], user: str) -> dict[str, str]:
    """Return the reason for each stored override the consumers leave out, by program.

    The check is ``usable_valuations``, the one the consumers and the report
    run, so this command flags the same values they ignore.
    """
    from rewardpilot.user_terms import usable_valuations

    reasons: dict[str, str] = {}

    def record(key: str, message: str, **fields) -> None:
        program = fields["program"]
        if program not in engine.valuations.programs:
            reasons[program] = "the valuation table has no program of that name"
        else:
            reasons[program] = fields.get("error") or message

    usable_valuations(engine, overrides, user, record)
    return reasons


def _invalid_override_text(user: str, program: str, stored: str, reason: str, table, prefix: str) -> str:
    """Build the warning for one stored override the consumers leave out, with the command that fixes it."""
    command = _valuations_command(prefix)
    unset = shlex.join([*command, "unset", user, program])
    text = f"warning: user {user!r}: the stored valuation {stored!r} for program {program!r} is invalid: {reason}. "
    if program not in table.programs:
        return text + f"The consumers and the report ignore it. Remove it with: {unset}"
    default = format(table.programs[program].cents_per_point, "f")
    set_command = shlex.join([*command, "set", user, program])
    return (text + f"The consumers and the report use the default instead, {default} cents per point. "
            f"Store a valid value with: {set_command} CENTS, or remove the stored one with: {unset}")

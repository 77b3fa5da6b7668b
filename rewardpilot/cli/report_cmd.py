"""``rewardpilot report --user USER --month YYYY-MM | --year YYYY``: the missed-rewards report."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from rewardpilot.cli.context import (
    app_context, check_job_exists, check_redis, console, program_name, stdout_console,
)
from rewardpilot.cli.paths import check_output_path
from rewardpilot.streams import DEFAULT_PREFIX, LIVE_RUN

if TYPE_CHECKING:
    from rewardpilot.report import DroppedValuation, Report, Totals


def report(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", help="The user_id to report on."),
    month: str = typer.Option(None, "--month", help="A month, YYYY-MM (by transaction date, Eastern Time)."),
    year: str = typer.Option(None, "--year", help="A year, YYYY."),
    job: str = typer.Option(None, "--job", help="Read the results of this `rewardpilot run` job instead of live."),
    run: str = typer.Option(LIVE_RUN, "--run", help="The run whose results and cap state to read (a replay's name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    html_file: Path = typer.Option(None, "--html", help="Also write a self-contained HTML page with a chart."),
    png_file: Path = typer.Option(None, "--png", help="Also write the chart as a PNG (needs matplotlib)."),
    card_used: str = typer.Option(None, "--card-used", help="Card id the purchases were made with when the export names none (see `rewardpilot cards`).", show_default=False),
    wallet: list[str] = typer.Option(
        None, "--wallet",
        help="The cards given to `run --wallet` or `consume --wallet` (repeat or comma-separate): the report "
        "judges a user without a stored wallet against them, as the run did. With --job, the cards that job's "
        "`run --wallet` stored are used when this is left out.",
    ),
) -> None:
    """Show what a user earned with the cards used, what the recommended cards would have earned, and the caps."""
    from rewardpilot.cli.options import split_cards
    from rewardpilot.job import stored_run_wallet
    from rewardpilot.report import build_report
    from rewardpilot.report_charts import render_html, render_png

    check_output_path(html_file, "--html")
    check_output_path(png_file, "--png", suffixes={".png": "PNG"})
    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    check_job_exists(client, context, context.keys(job), run)
    run_wallet = split_cards(wallet)
    stored_wallet = False
    if run_wallet is None and job is not None:
        run_wallet = stored_run_wallet(client, context.keys(job))
        stored_wallet = run_wallet is not None
    try:
        result = build_report(client, context.keys(job), user, month=month, year=year, run=run,
                              card_used=card_used, wallet=run_wallet)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for dropped in result.dropped_valuations:
        console.print(dropped_valuation_text(dropped, context.prefix), soft_wrap=True, highlight=False,
                      markup=False)
    if result.dropped_mode is not None:
        console.print(f"warning: the stored mode of {user} is left out, as the consumers leave it out, so the "
                      f"highest cash value decides: {result.dropped_mode}. Store a valid mode with "
                      f"`{context.command('wallet', 'set')} {user} CARD... --mode MODE`",
                      soft_wrap=True, highlight=False, markup=False)
    if result.out_of_order:
        console.print(f"warning: {result.out_of_order} of {user}'s purchases were processed after a purchase dated "
                      "later, because they were published out of date order. The report applies cap spend in the "
                      "order the consumers did, so its totals match the results, but a capped bonus can fall on "
                      "other purchases than in the issuer's date order. Publish files oldest first to avoid this.",
                      soft_wrap=True, highlight=False, markup=False)
    if stored_wallet and result.wallet_source == "run":
        console.print(f"judged against the wallet that `run --wallet` stored with job {job!r}: "
                      f"{', '.join(run_wallet or [])} (give --wallet to judge against other cards)",
                      soft_wrap=True, highlight=False, markup=False)
    for warning in wallet_warnings(result, None if stored_wallet else run_wallet, job):
        console.print(f"warning: {warning}", soft_wrap=True, highlight=False, markup=False)

    if html_file is not None:
        try:
            html_file.write_text(render_html(result), encoding="utf-8")
        except OSError as exc:
            _exit_not_written("--html", html_file, exc)
        console.print(f"wrote {html_file}")
    if png_file is not None:
        try:
            render_png(result, png_file)
        except RuntimeError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        except OSError as exc:
            _exit_not_written("--png", png_file, exc)
        console.print(f"wrote {png_file}")
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    print_report(result)
    if not result.purchases:
        _print_no_results_hint(client, context.keys(job), context.prefix, job, run, result)


def dropped_valuation_text(dropped: DroppedValuation, prefix: str) -> str:
    """Build the warning for a stored valuation override the report left out, with the command that fixes it."""
    command = [program_name(), *([] if prefix == DEFAULT_PREFIX else ["--prefix", prefix]), "valuations"]
    unset = shlex.join([*command, "unset", dropped.user_id, dropped.program])
    text = (f"warning: user {dropped.user_id!r}: the report ignores the stored valuation {dropped.stored_cents!r} "
            f"for program {dropped.program!r}, as the consumers do: {dropped.reason}. ")
    if dropped.default_cents is not None:
        text += f"It uses the default, {dropped.default_cents} cents per point. "
    if dropped.settable:
        set_command = shlex.join([*command, "set", dropped.user_id, dropped.program])
        return text + f"Store a valid value with: {set_command} CENTS, or remove the stored one with: {unset}"
    return text + f"Remove the stored one with: {unset}"


def wallet_warnings(result: Report, run_wallet: list[str] | None, job: str | None) -> list[str]:
    """List the wallet warnings: a --wallet the report did not use, or results judged against a run wallet it lacks."""
    warnings = []
    if run_wallet and result.wallet_source == "user":
        warnings.append(f"user {result.user_id!r} has a stored wallet, so the report judges against it and "
                        "not the --wallet cards, as the consumers do.")
    if result.wallet_source == "catalog" and result.run_wallet_results:
        where = f"job {job!r}" if job else "the run"
        warnings.append(
            f"{result.run_wallet_results} result(s) of {where} in {result.period} were judged against the wallet "
            "given to `run --wallet` or `consume --wallet` (wallet_source \"run\"). No such wallet is stored "
            "with the job (`consume --wallet` stores none, and a later `run` without --wallet removes it), so the "
            "report judged them against the whole catalog, and its totals can differ from the results. Pass the "
            "same cards with --wallet; the results name these: "
            f"{', '.join(result.run_wallet_cards_seen)}."
        )
    return warnings


def _exit_not_written(option: str, path: Path, exc: OSError) -> NoReturn:
    """Exit 2 for a file that passed the checks at the start but could not be written (a full disk, say)."""
    console.print(f"[red]error:[/red] {option} {escape(repr(str(path)))}: could not write the file: "
                  f"{escape(str(exc))}; fix the path and run the report again", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


def _print_no_results_hint(client, keys, prefix: str, job: str | None, run: str, result: Report) -> None:
    """Explain an empty report: name the user and period, and count the results stored for other users or periods.

    For a replay run without a results stream, the hint reports that the run has no results at all.
    """
    stream = keys.results(run)
    where = f"of job {job!r} under prefix {prefix!r}" if job else f"under prefix {prefix!r}"
    if run != LIVE_RUN and not client.exists(stream):
        # No command lists runs, so the hint names the command that creates them.
        text = (f"No results exist for run {run!r} {where}: its results stream {stream} does not "
                "exist. A run gets its name and its results from `rewardpilot replay --run NAME`. "
                "Without --run, report reads the results of the live run.")
        console.print(text, soft_wrap=True, markup=False, highlight=False)
        return

    if run != LIVE_RUN:
        source = f"in run {run!r} {where}"
    elif job is not None:
        source = f"in job {job!r} under prefix {prefix!r}"
    else:
        source = "on the live streams"
    # XLEN is one call, where finding the users with results would read the whole stream.
    stored = client.xlen(stream)
    if stored:
        noun = "result" if stored == 1 else "results"
        found = f"The results stream {stream} has {stored} {noun}, none for this user in that period."
    else:
        found = f"The results stream {stream} is empty."
    text = f"No results for user {result.user_id!r} in {result.period} {source}. {found}"
    if run == LIVE_RUN and job is None:
        text += (" The results of `rewardpilot run` stay in that run's job: pass --job ID, "
                 "with the id the run printed.")
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _usd(value) -> str:
    """Format dollars with the sign before the symbol: -$15.86, not $-15.86."""
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _table(title: str, first: str, rows: dict[str, Totals]) -> Table:
    table = Table(title=title)
    for column in (first, "purchases", "spend", "earned", "best", "missed"):
        table.add_column(column, justify="left" if column == first else "right")
    for name, totals in sorted(rows.items(), key=lambda item: (-item[1].missed, item[0])):
        table.add_row(escape(name), str(totals.purchases), _usd(totals.spend), _usd(totals.earned),
                      _usd(totals.best), _usd(totals.missed))
    return table


def print_report(result: Report) -> None:
    out = stdout_console()
    total = result.total
    # The headline starts with fixed words, so it reads the same whatever the user id, and it is one
    # line at any width. The user id is escaped, so "[" in an id is printed, never read as markup.
    out.print(f"Report for [bold]{escape(result.user_id)}[/bold], {result.period}: {result.purchases} "
              f"purchase(s), {_usd(total.spend)} spent; earned {_usd(total.earned)}, the recommended cards "
              f"would have earned {_usd(total.best)}: [bold red]{_usd(total.missed)} missed[/bold red]",
              soft_wrap=True)
    out.print(f"Judged against {result.judged_against()}.", soft_wrap=True, markup=False, highlight=False)
    if result.unknown_card_used:
        out.print(f"{result.unknown_card_used} purchase(s) named no known card and count as earning the best "
                  "amount. If the export comes from one card, name it with --card-used CARD "
                  "(ids: `rewardpilot cards`).")
    out.print(_table("By category", "category", result.by_category))
    out.print(_table("By card used", "card used", result.by_card_used))
    # Each cap is shown in the period that contains today, whatever period the report covers.
    caps = Table(title=escape(f"Caps in their current period ({result.caps_date_text()})"))
    for column in ("card", "cap", "period", "spent", "cap amount", "left", "runs out at this pace"):
        caps.add_column(column)
    for cap in result.caps:
        caps.add_row(cap.card_id, cap.tally, cap.period, _usd(cap.spent_usd), _usd(cap.cap_usd),
                     _usd(cap.remaining_usd), cap.run_out_text())
    out.print(caps)
    if result.purchases:
        out.print("Each purchase was judged again with the wallet named above and the mode and valuations stored "
                  "now, so after a `wallet set` or `valuations set` these totals can differ from the stored results.",
                  soft_wrap=True, markup=False, highlight=False)

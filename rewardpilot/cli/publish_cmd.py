"""``rewardpilot publish FILE|-``: validate transactions and publish them."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from rewardpilot.cli.context import app_context, check_redis, console
from rewardpilot.cli.partition_options import agreed_partitions, partitions_option

if TYPE_CHECKING:
    from rewardpilot.fx import CurrencyConverter


USER_HELP = "user_id for bank exports, OFX and Plaid files, which name no user (default: me)."
FX_RATES_HELP = (
    "CSV of exchange rates, header currency,usd_per_unit[,date]: the US dollars one unit buys. "
    "Non-USD amounts are converted with the latest rate on or before the transaction's date."
)
UNCONVERTED_HELP = (
    "What happens to a non-USD row with no rate: reject (default) sends it to the rejects file; "
    "keep publishes its amount unconverted, as if it were USD."
)


def fx_rates_option():
    return typer.Option(None, "--fx-rates", help=FX_RATES_HELP, dir_okay=False)


def unconverted_option():
    return typer.Option("reject", "--unconverted-currency", help=UNCONVERTED_HELP)


def load_converter(rates_path: Path | None, unconverted: str) -> CurrencyConverter:
    """Build the currency converter from the command-line options; exit 2 on a bad rates file or policy."""
    from rewardpilot.fx import UNCONVERTED_POLICIES, CurrencyConverter, RatesFileError, load_rates

    policy = unconverted.lower()
    if policy not in UNCONVERTED_POLICIES:
        console.print(f"[red]error:[/red] --unconverted-currency {unconverted!r} is invalid; "
                      f"use {' or '.join(UNCONVERTED_POLICIES)}")
        raise typer.Exit(2)
    rates = None
    if rates_path is not None:
        try:
            rates = load_rates(rates_path)
        except RatesFileError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
    return CurrencyConverter(rates, policy)


def load_layout_option(path: Path | None):
    if path is None:
        return None
    from producer import InputError, load_layout

    try:
        return load_layout(path)
    except (InputError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def publish_source(client, keys, source: Path, *, layout, rejects, progress: bool = True, user: str | None = None,
                   converter: CurrencyConverter | None = None, producer=None):
    """Publish a file or stdin (``-``); return ``(FileSummary, seconds)``. Exits 2 on an unreadable file."""
    from producer import InputError, publish_file

    target = sys.stdin.buffer if str(source) == "-" else source
    started = time.perf_counter()
    try:
        summary = publish_file(client, keys, target, layout=layout, rejects_path=rejects,
                               progress=progress, console=console, user=user, converter=converter,
                               producer=producer)
    except (InputError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    return summary, time.perf_counter() - started


def print_publish_summary(summary) -> None:
    from producer import format_summary

    console.print(format_summary(summary))  # its "warning" rows list the input warnings
    for message in summary.first_rejects:
        console.print(f"[red]rejected:[/red] {message}", highlight=False)
    if summary.rejected > len(summary.first_rejects):
        console.print(f"... and {summary.rejected - len(summary.first_rejects)} more")
    if summary.rejected:
        noun = "row" if summary.rejected == 1 else "rows"
        console.print(f"[yellow]{summary.rejected} {noun} rejected; every one is in {summary.rejects_path}[/yellow]",
                      soft_wrap=True)


def publish(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="CSV or JSON lines file; - for stdin."),
    job: str = typer.Option(None, "--job", help="Publish onto this job's streams instead of the live ones."),
    layout: Path = typer.Option(None, "--layout", help="A column-mapping file describing the input layout."),
    rejects: Path = typer.Option(None, "--rejects", help="Where rejected rows go (default: FILE.rejects.jsonl)."),
    user: str = typer.Option(None, "--user", help=USER_HELP),
    fx_rates: Path = fx_rates_option(),
    unconverted_currency: str = unconverted_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    partitions: int = partitions_option(),
    dedup_window: str = typer.Option(
        "24h", "--dedup-window",
        help="How long a published transaction_id is remembered, so the same id is not published twice "
        "(such as 12h or 7d); 0 turns the check off.",
    ),
) -> None:
    """Validate every row and publish the transactions with pipelined XADD.

    Exit status: 0 when every row was published or skipped with a reason, 1
    when any row was rejected, 2 when the file could not be read at all.
    """
    from producer import Producer, exit_status
    from rewardpilot.cli.options import age_seconds

    window = 0 if dedup_window.strip() == "0" else int(age_seconds(dedup_window, "--dedup-window"))
    converter = load_converter(fx_rates, unconverted_currency)
    context = app_context(ctx)
    client = context.client()
    check_redis(client, context)
    agreed_partitions(client, context.keys(job), partitions)

    producer = Producer(client, context.keys(job), dedup_window_seconds=window)
    summary, seconds = publish_source(client, context.keys(job), file, layout=load_layout_option(layout),
                                      rejects=rejects, user=user, converter=converter, producer=producer)
    if as_json:
        typer.echo(json.dumps({**asdict(summary), "seconds": round(seconds, 3)}, default=str))
    else:
        print_publish_summary(summary)
        rate = summary.published / seconds if seconds > 0 else 0.0
        Console(stderr=True, emoji=False).print(f"published {summary.published} in {seconds:.2f} s ({rate:,.0f}/s)")
    raise typer.Exit(exit_status(summary))

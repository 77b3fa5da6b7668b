"""``rewardpilot server status|stop``: the embedded Valkey server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from rewardpilot.cli.context import console

if TYPE_CHECKING:
    from pathlib import Path

    from rewardpilot.embedded import ConnectedClient

app = typer.Typer(help="Manage the embedded Valkey server (used when REDIS_URL is unset).", no_args_is_help=True)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """Show whether the embedded server runs, its pid, port and data directory.

    Exit status: 0 when the server runs, 1 when it does not, 2 when RP_HOME names a file, not a directory.
    """
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
        "started_at": state.started_at if state else None,
    }
    if as_json:
        typer.echo(json.dumps(info))
    elif running:
        # The status is the command's output, so it goes to stdout, as with --json.
        typer.echo(f"embedded Valkey running: pid {state.pid}, 127.0.0.1:{state.port}, data in {home}")
    elif state is not None:
        typer.echo(f"embedded Valkey not running (data directory {home}); the next command starts it "
                   f"again on port {state.port} when that port is free")
    else:
        typer.echo(f"embedded Valkey not running (data directory {home})")
    raise typer.Exit(0 if running else 1)


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

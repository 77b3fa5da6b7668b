"""``rewardpilot server status|stop``: the embedded Valkey server."""

from __future__ import annotations

import json

import typer

from rewardpilot.cli.context import console

app = typer.Typer(help="Manage the embedded Valkey server (used when REDIS_URL is unset).", no_args_is_help=True)


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print the status as JSON.")) -> None:
    """Show whether the embedded server runs, its pid, port and data directory."""
    from rewardpilot.embedded import home_dir, is_alive, read_state

    home = home_dir()
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
    else:
        typer.echo(f"embedded Valkey not running (data directory {home})")
    raise typer.Exit(0 if running else 1)


@app.command("stop")
def stop() -> None:
    """Stop the embedded server; its data stays in the data directory."""
    from rewardpilot.embedded import stop_server

    if stop_server():
        console.print("embedded Valkey stopped")
    else:
        console.print("embedded Valkey was not running")

"""The state every command shares: the stream keys, Redis clients and the console.

redis-py and the connection helpers are imported inside the methods that use
them, so commands that never talk to Redis (``--help``, ``cards``) start
without them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from rewardpilot.streams import DEFAULT_PREFIX, LIVE_RUN, StreamKeys, normalize_prefix

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

# emoji=False: key names and user data can contain emoji codes, such as the ":b:" of a prefix "rp:b:".
console = Console(stderr=True, emoji=False)


def stdout_console() -> Console:
    """Return a console for tables on stdout, 120 columns wide when stdout is not a terminal."""
    probe = Console(emoji=False)
    return probe if probe.is_terminal else Console(width=120, emoji=False)


@dataclass
class AppContext:
    """Options given before the command name, resolved once."""

    prefix: str = DEFAULT_PREFIX
    redis_url: str | None = None
    _resolved: str | None = None

    def __post_init__(self) -> None:
        # The same form StreamKeys stores, so job look-ups and hints name the keys that exist.
        self.prefix = normalize_prefix(self.prefix)

    def url(self) -> str:
        if self._resolved is None:
            from rewardpilot.connection import resolve_url
            from rewardpilot.embedded import STATE_FILE, EmbeddedServerError, home_dir

            embedded = not (self.redis_url or os.environ.get("REDIS_URL"))
            home = home_dir()
            first_start = embedded and not (home / STATE_FILE).exists()
            try:
                self._resolved = resolve_url(self.redis_url)
            except (EmbeddedServerError, ValueError) as exc:
                console.print(f"[red]error:[/red] {exc}")
                raise typer.Exit(2) from None
            if first_start:
                reach = ("keep RP_HOME set to reach the same data again" if os.environ.get("RP_HOME")
                         else "run rewardpilot from this directory (or set RP_HOME) to reach the same data again")
                # soft_wrap: the path is printed whole, not cut at the console's width.
                console.print(f"started a new embedded Valkey server with its data in {home}; {reach}, "
                              "or set REDIS_URL.", soft_wrap=True)
        return self._resolved

    def command(self, *words: str) -> str:
        """Return a command to print in a hint, with this invocation's global options, quoted for a shell."""
        return shlex.join([*base_command(self.prefix, self.redis_url), *words])

    def redis_cli(self, *words: str) -> str:
        """Return a redis-cli command for a hint that reaches this server, without its password.

        The embedded server has a random port and a password, so it is reached through
        ``rewardpilot server cli``. Another server is named by REDIS_URL, left for the shell to expand.
        """
        if self.redis_url or os.environ.get("REDIS_URL"):
            url = '"$REDIS_URL"' if not self.redis_url else "URL"
            return " ".join(["redis-cli", "-u", url, *(shlex.quote(word) for word in words)])
        return self.command("server", "cli", *words)

    def keys(self, job: str | None = None) -> StreamKeys:
        return StreamKeys(prefix=self.prefix, job=job)

    def client(self, *, block_ms: int = 0) -> redis.Redis:
        from rewardpilot.connection import connect

        return connect(self.url(), block_ms=block_ms)

    def async_client(self, *, block_ms: int = 0) -> aioredis.Redis:
        from rewardpilot.connection import connect_async

        return connect_async(self.url(), block_ms=block_ms)

    def describe_server(self) -> str:
        from rewardpilot.connection import redact

        if self.redis_url or os.environ.get("REDIS_URL"):
            return redact(self.url())
        return f"embedded Valkey ({redact(self.url())})"


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    if obj is None:
        obj = AppContext()
        ctx.find_root().obj = obj
    return obj


def wait_for_redis(client: redis.Redis, context: AppContext, timeout_seconds: float) -> None:
    """Wait up to ``timeout_seconds`` for Redis to reply to PING, for long-running commands.

    A consumer started alongside its server (docker-compose, a restart) should
    wait for it rather than exit. A rejected password still exits at once.
    """
    import time

    import redis

    from rewardpilot.connection import redact
    from rewardpilot.logs import get_logger

    deadline = time.monotonic() + timeout_seconds
    delay = 0.1
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError:
            check_redis(client, context)
        except redis.RedisError as exc:
            if time.monotonic() + delay > deadline:
                check_redis(client, context)
            get_logger("cli").warning("Redis not reachable yet; waiting", error=str(exc),
                                      retry_in_seconds=delay, url=redact(context.url()))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def check_redis(client: redis.Redis, context: AppContext) -> None:
    """Exit with a clear message when Redis does not reply to PING."""
    import redis

    from rewardpilot.connection import password_given, redact

    try:
        client.ping()
    except redis.AuthenticationError:
        if password_given(context.url()):
            console.print(f"[red]error:[/red] Redis at {redact(context.url())} rejected the password; "
                          "check REDIS_URL or REDIS_PASSWORD")
        else:
            console.print(f"[red]error:[/red] Redis at {redact(context.url())} requires a password, and none was "
                          "given; set REDIS_PASSWORD, or put it in REDIS_URL as redis://:PASSWORD@host:port/db")
        raise typer.Exit(2) from None
    except redis.ConnectionError as exc:
        console.print(f"[red]error:[/red] cannot reach Redis at {redact(context.url())}: {str(exc).rstrip('.')}. "
                      f"{_tls_hint(context.url())}"
                      "Start it, fix REDIS_URL, or unset REDIS_URL to use the embedded server.")
        raise typer.Exit(2) from None
    except redis.TimeoutError as exc:
        console.print(f"[red]error:[/red] Redis at {redact(context.url())} timed out: "
                      f"{str(exc).rstrip('.')}. {_tls_hint(context.url())}"
                      "Check that the host and port belong to a Redis server that is up.")
        raise typer.Exit(2) from None
    except redis.RedisError as exc:
        console.print(f"[red]error:[/red] Redis at {redact(context.url())} returned an error: "
                      f"{str(exc).rstrip('.')}. Check the URL, for example its database number.")
        raise typer.Exit(2) from None


def _tls_hint(url: str) -> str:
    """Return a hint for a TLS URL, whose handshake hangs or fails against a plain server; else ""."""
    if url.startswith("rediss://"):
        return "The URL asks for TLS (rediss://); for a server without TLS, use redis://. "
    return ""


def check_job_exists(client: redis.Redis, context: AppContext, keys: StreamKeys, run: str = LIVE_RUN) -> None:
    """Exit 2 when ``keys.job`` is set but no job with that id has streams under the prefix.

    A job's streams exist once its run has published, so a mistyped id would
    otherwise wait forever (``subscribe``) or show only zeros (``status``).
    """
    if keys.job is None:
        return
    from rewardpilot.job import job_exists

    if not job_exists(client, keys, run):
        console.print(f"[red]error:[/red] no job {escape(repr(keys.job))} under prefix {escape(repr(context.prefix))} "
                      "on this server; "
                      "use the job id that `rewardpilot run` printed")
        raise typer.Exit(2)


def base_command(prefix: str = DEFAULT_PREFIX, redis_url: str | None = None) -> list[str]:
    """Return the start of a command to print in a hint: the program, ``--redis-url`` and ``--prefix``.

    ``--redis-url`` is the one given on the command line. It is left out
    when it contains a password, which a hint must never show, and then the
    printed command needs ``REDIS_URL`` set. ``--prefix`` is left out when it
    is the default.
    """
    from rewardpilot.connection import redact

    words = [program_name()]
    if redis_url and redact(redis_url) == redis_url:
        words += ["--redis-url", redis_url]
    if prefix != DEFAULT_PREFIX:
        words += ["--prefix", prefix]
    return words


def program_name() -> str:
    """Return how to type this CLI in a hint: ``rewardpilot`` when that is on PATH, else the path it was run by.

    After ``make run`` the command is ``.venv/bin/rewardpilot``, which is not
    on PATH until the virtual environment is activated.
    """
    invoked = Path(sys.argv[0])
    found = shutil.which("rewardpilot")
    if invoked.name != "rewardpilot" or (found is not None and Path(found).resolve() == invoked.resolve()):
        return "rewardpilot"
    try:
        return str(invoked.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(invoked)

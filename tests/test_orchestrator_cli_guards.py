"""``rewardpilot orchestrator`` rejects a bad log level and an address it cannot bind, before it starts."""

from __future__ import annotations

import socket

import pytest

from conftest import free_port, invoke_cli
from rewardpilot.orchestrator.server import ListenError, check_listen, check_log_level


def offline_env(tmp_path) -> dict[str, str]:
    """Return an environment for ``--no-wallets`` runs, which never reach Redis."""
    from test_cli_imports import child_env

    return child_env(tmp_path, columns=200)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_log_level_unknown_exit_two(tmp_path):
    completed = invoke_cli(["orchestrator", "--no-wallets", "--port", str(free_port()), "--uvicorn-log-level", "loud"],
                           offline_env(tmp_path))

    message = flat(completed.stderr)
    assert completed.returncode == 2
    assert "'loud' is invalid" in message
    assert "critical, error, warning, info, debug, trace" in message
    assert "Traceback" not in completed.stderr
    assert "orchestrator started" not in completed.stderr


def test_log_level_any_case_accepted():
    assert check_log_level("DEBUG") == "debug"
    assert check_log_level("warning") == "warning"
    with pytest.raises(ValueError, match="'verbose' is invalid"):
        check_log_level("verbose")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_port_in_use_exit_two(tmp_path, host):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        completed = invoke_cli(["orchestrator", "--no-wallets", "--host", host, "--port", str(port)],
                               offline_env(tmp_path))

    message = flat(completed.stderr)
    assert completed.returncode == 2
    assert f"cannot listen on {host}:{port}" in message
    assert "already in use" in message
    assert "--port" in message
    assert "Traceback" not in completed.stderr
    assert "orchestrator started" not in completed.stderr


def test_unknown_host_exit_two(tmp_path, monkeypatch):
    # The name fails to resolve here, without a query to the system's DNS resolver.
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "no-such-host.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    completed = invoke_cli(
        ["orchestrator", "--no-wallets", "--host", "no-such-host.invalid", "--port", str(free_port())],
        offline_env(tmp_path),
    )

    message = flat(completed.stderr)
    assert completed.returncode == 2
    assert "cannot listen on no-such-host.invalid:" in message
    assert "check --host" in message
    assert "Traceback" not in completed.stderr


def test_check_listen_leaves_port_free():
    port = free_port()
    check_listen("127.0.0.1", port)

    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
        again.listen()
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}: the port is already in use"):
            check_listen("127.0.0.1", port)

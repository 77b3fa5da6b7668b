"""A --prefix without its trailing colon names the same keys as with it, in every command."""

from __future__ import annotations

from conftest import invoke_cli, one_server
from test_cli_trial_fixes import write_gas_csv


@one_server
def test_prefix_without_colon_finds_job(keys, cli_env, sync_client, tmp_path):
    bare = keys.prefix.rstrip(":")
    write_gas_csv(tmp_path / "gas.csv")

    ran = invoke_cli(["--prefix", bare, "run", str(tmp_path / "gas.csv"), "--job", "j1", "--json"], cli_env)
    status = invoke_cli(["--prefix", bare, "status", "--job", "j1", "--json"], cli_env)

    assert ran.returncode == 0, ran.stderr[-2000:]
    assert sync_client.exists(f"{keys.prefix}job:j1:transactions")
    assert status.returncode == 0, status.stderr[-2000:]
    assert "no job" not in status.stderr

"""The README's Python API examples run as written, and the names they document exist.

Each example is taken from the "Python API" section of README.md and run as
a script with RP_PREFIX set to the test's key prefix and REDIS_URL to the
test's server. The first example of the section (publish, then subscribe)
is covered by test_readme_example.py.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import tomllib
from decimal import Decimal

import pytest

from conftest import ROOT, add_with_result, one_server
from producer import Producer
from rewardpilot.engine import RulesEngine
from rewardpilot.models import Transaction


def python_api_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Python API")
    end = readme.find("\n## ", start)
    section = readme[start:end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def example(marker: str) -> str:
    """Return the one Python API example whose code contains ``marker``."""
    found = [block for block in python_api_blocks() if marker in block]
    assert len(found) == 1, f"expected one README example containing {marker!r}, found {len(found)}"
    return found[0]


def run_example(code: str, cli_env: dict[str, str], keys, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "example.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], env={**cli_env, "RP_PREFIX": keys.prefix}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def purchase(transaction_id: str = "t-1") -> Transaction:
    return Transaction(transaction_id=transaction_id, user_id="u-1", merchant="Whole Foods", category="groceries",
                       amount_usd=Decimal("84.20"), mcc="5411", timestamp="2026-11-02T10:00:00Z")


# The examples, run as written


@one_server
def test_resume_example_skips_handled(cli_env, keys, sync_client, tmp_path):
    add_with_result(sync_client, keys, purchase("t-1"), ["amex-gold"], RulesEngine.default())
    code = example("subscribe_entries")

    first = run_example(code, cli_env, keys, tmp_path)
    add_with_result(sync_client, keys, purchase("t-2"), ["amex-gold"], RulesEngine.default())
    second = run_example(code, cli_env, keys, tmp_path)

    newest = sync_client.xrevrange(keys.results(), count=1)[0][0]
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.splitlines() == ["t-1 amex-gold"]
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.splitlines() == ["t-2 amex-gold"]
    assert (tmp_path / "last-result-id.txt").read_text() == newest


@one_server
def test_pool_example_stops(cli_env, keys, sync_client, tmp_path):
    Producer(sync_client, keys, max_backlog=None).publish(purchase())

    completed = run_example(example("ConsumerPool"), cli_env, keys, tmp_path)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines() == ["1 results, 0 dead letters"]
    assert sync_client.xlen(keys.results()) == 1


@one_server
def test_replay_example_compares(cli_env, keys, sync_client, tmp_path):
    add_with_result(sync_client, keys, purchase(), None, RulesEngine.default())

    completed = run_example(example("replay_async"), cli_env, keys, tmp_path)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines() == ["1 results, 0 differ from the live run"]
    assert sync_client.xlen(keys.results("rerun")) == 1


@one_server
def test_wallet_example_stores(cli_env, keys, sync_client, tmp_path):
    completed = run_example(example("set_wallet"), cli_env, keys, tmp_path)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines() == ["['amex-gold', 'chase-sapphire-preferred']"]
    assert sync_client.exists(keys.wallet("u-1"))


@one_server
def test_engine_example_prints_card(cli_env, keys, tmp_path):
    completed = run_example(example("engine.recommend("), cli_env, keys, tmp_path)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines() == ["citi-double-cash 0.80"]


# The names and defaults the section states


def test_documented_signatures():
    from consumer import ConsumerPool, ConsumerSettings
    from rewardpilot.replay import replay, replay_async
    from rewardpilot.results import subscribe, subscribe_entries
    from rewardpilot.wallets import get_wallet, set_wallet

    assert list(inspect.signature(ConsumerPool.__init__).parameters)[1:3] == ["client", "settings"]
    assert callable(ConsumerPool.stop)
    assert list(inspect.signature(replay).parameters) == ["url", "keys", "options"]
    assert {"start", "run", "block_ms", "compare"} <= set(inspect.signature(replay_async).parameters)
    assert list(inspect.signature(set_wallet).parameters)[:5] == ["client", "keys", "user_id", "card_ids", "catalog"]
    assert list(inspect.signature(get_wallet).parameters) == ["client", "keys", "user_id"]
    assert list(inspect.signature(RulesEngine.recommend).parameters)[1:3] == ["transaction", "wallet"]
    assert inspect.signature(subscribe).parameters.keys() == inspect.signature(subscribe_entries).parameters.keys()
    settings = ConsumerSettings()
    assert settings.shutdown_grace_seconds == 10.0
    assert settings.wallet_cache_seconds == 5.0


def test_engine_exports_errors():
    from rewardpilot import engine

    transaction = Transaction(transaction_id="x", user_id="u", merchant="Costco Wholesale", category="groceries",
                              amount_usd=Decimal("10"))
    default = engine.RulesEngine.default()

    assert {"UnknownCardError", "NoUsableCardError", "InvalidModeError"} <= set(engine.__all__)
    with pytest.raises(engine.NoUsableCardError):
        default.recommend(transaction, ["amex-gold"])
    with pytest.raises(engine.InvalidModeError):
        default.recommend(transaction, ["citi-double-cash"], mode="bogus")
    with pytest.raises(engine.UnknownCardError):
        default.recommend(transaction, ["nope"])
    assert issubclass(engine.NoUsableCardError, ValueError)
    assert issubclass(engine.InvalidModeError, ValueError)


def test_replay_busy_message_fits_python():
    from rewardpilot.replay import ReplayBusyError

    message = str(ReplayBusyError("nightly", "host-1", "2026-12-05T07:00:00Z"))

    assert "run 'nightly' is already being replayed by host-1 since 2026-12-05T07:00:00Z" in message
    assert "replay under another run name (--run on the command line, run= in Python)" in message


@pytest.mark.parametrize("package", ["rewardpilot", "consumer", "producer"])
def test_package_ships_py_typed(package):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert (ROOT / package / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"][package]
